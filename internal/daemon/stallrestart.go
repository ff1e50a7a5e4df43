package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/pair"
)

// A store failed on a stalled disk stays failed until it is reopened,
// even once the disk answers again (wip: Status.StallOver), since a write
// that never returned cannot be taken back. The node reopens it by
// restarting itself: once the disk has answered for
// disk.restart-after-stall, the driver stops the node in order and Run
// returns errStallRestart, for systemd (Restart=always) to start tandemd
// again.
//
// An active whose store failed hands the role over when its peer can take
// it (storeHandover), and restarts as the passive it then is. One whose
// peer cannot (not heard, outdated, not in sync) stays active without
// committing: nothing runs until its store is reopened, so it restarts
// too. It boots passive and takes the role again as any node does (I5: the
// peer that cannot take over now cannot then either; a node alone waits
// startup-wait and the tie-breaker), and its jobs resume from their
// checkpoints. Not in maintenance, where no promotion would follow: there
// the restart is the operator's.
//
// A disk that flaps would restart the node again and again, and each time
// its store hangs again the active holds its commits for a
// peer-ack-timeout: the restarts are recorded in data-dir/
// stall-restarts.json (kept across restarts, the point of it) and at most
// config.MaxStallRestarts in an hour are made; after that, failedAlarm
// says that a restart by hand is needed.
const stallRestartsFile = "stall-restarts.json"

// errStallRestart ends Run after the driver stopped the node to reopen
// its store; tandemd exits non-zero and systemd starts it again.
var errStallRestart = errors.New("daemon: restarting to reopen the WIP store after its disk stall ended")

// stallRestartWindow is the period MaxStallRestarts counts over.
const stallRestartWindow = time.Hour

type stallRestartLog struct {
	At []time.Time `json:"at"` // the restarts made, oldest first
}

// loadStallRestarts reads dir's restart record; a missing file is none.
func loadStallRestarts(dir string) (stallRestartLog, error) {
	var l stallRestartLog
	b, err := os.ReadFile(filepath.Join(dir, stallRestartsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("%s: %w", filepath.Join(dir, stallRestartsFile), err)
	}
	return l, nil
}

// recent returns the restarts within stallRestartWindow before now.
func (l stallRestartLog) recent(now time.Time) []time.Time {
	var r []time.Time
	for _, t := range l.At {
		if now.Sub(t) < stallRestartWindow {
			r = append(r, t)
		}
	}
	return r
}

// stallRestartPlan says, for failedAlarm, what becomes of a failed store
// whose disk answers again: when the node restarts itself, or why it
// does not (the operator restarts it then).
func (d *driver) stallRestartPlan(st pair.Status) (at time.Time, refused string) {
	switch {
	case d.restartAfter <= 0:
		return time.Time{}, "disk.restart-after-stall is 0"
	case st.Role == pair.RoleActive && st.Maintenance:
		return time.Time{}, "this node is active in maintenance, where nothing would promote it after a restart"
	case st.Role == pair.RoleActive && handsOver(st):
		return time.Time{}, "this node hands the active role over first"
	case d.restartRefused != "":
		return time.Time{}, d.restartRefused
	}
	return d.stallOverAt.Add(d.restartAfter), ""
}

// stallRestart is the driver's tick for a failed store whose disk answers
// again: when the restart is due (stallRestartPlan), it records it and
// reports true; the caller stops the node. A restart refused for the
// limit or an unwritable record is logged and evented once
// (restartRefused), and failedAlarm says so; one for the limit is
// looked at again when the oldest restart leaves the hour (refusedUntil).
func (d *driver) stallRestart(rs api.ReplicationStatus, st pair.Status) bool {
	if d.restarting || rs.Failed == "" || !rs.StallOver || d.stallOverAt.IsZero() {
		return false
	}
	now := d.clk.Now()
	if d.restartRefused != "" && !d.refusedUntil.IsZero() && !now.Before(d.refusedUntil) {
		d.restartRefused, d.refusedUntil = "", time.Time{} // the oldest restart has left the window
	}
	at, refused := d.stallRestartPlan(st)
	if refused != "" || now.Before(at) {
		return false
	}
	var l stallRestartLog
	err := d.boundedIO(func() (err error) { l, err = loadStallRestarts(d.dir); return err })
	if err != nil {
		d.refuseStallRestart(fmt.Sprintf("its record cannot be read (%v; remove the file to allow it again)", err))
		return false
	}
	l.At = append(l.recent(now), now)
	if n := len(l.At) - 1; n >= config.MaxStallRestarts {
		d.refuseStallRestart(fmt.Sprintf("tandemd restarted itself for a stalled disk %d times in the last %v, the most it does", n, stallRestartWindow))
		d.refusedUntil = l.At[n-config.MaxStallRestarts].Add(stallRestartWindow)
		return false
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err == nil {
		err = d.boundedIO(func() error { return replaceFile(d.dir, stallRestartsFile, append(b, '\n')) })
	}
	if err != nil {
		d.refuseStallRestart(fmt.Sprintf("its record cannot be written (%v)", err))
		return false
	}
	d.restarting = true
	text := fmt.Sprintf("the disk under the failed WIP store has answered again for %v: stopping to restart (systemd starts tandemd again) and reopen the store; restart %d of at most %d in %v",
		now.Sub(d.stallOverAt).Round(time.Second), len(l.At), config.MaxStallRestarts, stallRestartWindow)
	d.log.Warn(text)
	d.ev.add(now, "replication", text)
	return true
}

// boundedIO runs f, an I/O of the data directory, waiting at most
// passivePersistWait: the data directory may be on the disk that hung,
// and the driver must not hang with it. An f given up on goes on in its
// goroutine, which ends when f returns (as the persister's writes: on a
// disk that hangs, only the process's exit ends it); what it would have
// set is not looked at.
func (d *driver) boundedIO(f func() error) error {
	done := make(chan error, 1)
	d.answering.Add(1)
	go func() {
		defer d.answering.Add(-1)
		done <- f()
	}()
	t := d.clk.NewTimer(passivePersistWait)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C():
		return fmt.Errorf("not done in %v: the disk hangs again?", passivePersistWait)
	}
}

func (d *driver) refuseStallRestart(why string) {
	d.restartRefused = "no automatic restart: " + why
	d.log.Warn("the disk under the failed WIP store answers again, but tandemd does not restart itself", zap.String("why", why))
	d.ev.add(d.clk.Now(), "replication", "the failed WIP store's disk answers again; "+d.restartRefused+": restart tandemd by hand")
}
