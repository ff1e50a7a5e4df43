package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/wip"
)

// backupJob takes the WIP store's backups (config backup:): on the active,
// once every `every` (the newest backup in the directory counts, so a
// restart or a failover onto a node sharing the directory does not take
// one at once); and on the operator's request on any role (tandemctl
// backup). One at a time; each is followed by pruning to `keep`. A failure
// raises the condition alarm backup-failed, which the next success clears.
// Run owns it: run ends with ctx.
type backupJob struct {
	dir    string
	every  time.Duration
	keep   int
	node   string
	store  *wip.Store
	clk    clock.Clock
	log    *zap.Logger
	ev     *eventLog
	active func() bool

	mu     sync.Mutex // one backup at a time; guards last, tried
	last   time.Time  // the newest backup's creation
	tried  time.Time  // the last failed scheduled attempt
	status atomic.Pointer[api.BackupStatus]
}

// errNoBackupDir: backups are not configured.
var errNoBackupDir = errors.New("backup.dir is not set in the configuration")

func (b *backupJob) init() {
	st := api.BackupStatus{Dir: b.dir, Every: b.every, Keep: b.keep}
	b.status.Store(&st)
	if b.dir == "" {
		return
	}
	bs, err := wip.ListBackups(b.dir)
	if err != nil {
		b.log.Warn("cannot list the existing backups", zap.Error(err))
		return
	}
	if len(bs) > 0 {
		b.last = bs[len(bs)-1].Created
	}
}

// run takes the scheduled backups while this node is active.
func (b *backupJob) run(ctx context.Context) {
	if b.dir == "" || b.every <= 0 {
		return
	}
	tick := min(max(b.every/4, 100*time.Millisecond), time.Minute)
	retry := min(b.every, time.Minute)
	clock.Loop(ctx, b.clk, tick, func(now time.Time) time.Duration {
		b.mu.Lock()
		due := now.Sub(b.last) >= b.every && now.Sub(b.tried) >= retry
		b.mu.Unlock()
		if due && b.active() {
			if _, err := b.take("scheduled"); err != nil {
				b.mu.Lock()
				b.tried = now
				b.mu.Unlock()
			}
		}
		return tick
	})
}

// take takes one backup now and prunes the directory.
func (b *backupJob) take(why string) (api.BackupInfo, error) {
	if b.dir == "" {
		return api.BackupInfo{}, errNoBackupDir
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	start := b.clk.Now()
	bk, err := b.store.Backup(b.dir, b.node)
	took := b.clk.Since(start)
	st := *b.status.Load()
	if err != nil {
		st.Failed++
		st.LastError, st.LastErrorAt = err.Error(), b.clk.Now()
		b.status.Store(&st)
		b.log.Error("backup failed", zap.String("why", why), zap.Error(err))
		if b.ev.raise(b.clk.Now(), "backup-failed", "warning", "the WIP store's backup failed: "+err.Error()) {
			b.ev.add(b.clk.Now(), "backup", fmt.Sprintf("%s backup failed: %v", why, err))
		}
		return api.BackupInfo{}, err
	}
	info := backupInfo(bk)
	info.Took = took
	b.last = bk.Created
	st.Taken++
	st.Last, st.LastError, st.LastErrorAt = &info, "", time.Time{}
	removed, perr := wip.PruneBackups(b.dir, b.keep)
	if perr != nil {
		// The backup is whole; the directory keeps more than it should.
		st.LastError, st.LastErrorAt = "pruning: "+perr.Error(), b.clk.Now()
		b.log.Warn("backup pruning failed", zap.Error(perr))
	}
	b.status.Store(&st)
	b.log.Info("backup taken", zap.String("why", why), zap.String("path", bk.Path), zap.Uint64("epoch", bk.Epoch),
		zap.Uint64("lsn", bk.LSN), zap.Int64("bytes", bk.Bytes), zap.Duration("took", took), zap.Int("pruned", len(removed)))
	now := b.clk.Now()
	b.ev.add(now, "backup", fmt.Sprintf("%s backup %s: epoch %d, LSN %d, %s in %v", why, bk.Path, bk.Epoch, bk.LSN, mib(bk.Bytes), took.Round(time.Millisecond)))
	if b.ev.clear("backup-failed") {
		b.ev.add(now, "alarm", "backup-failed cleared")
	}
	return info, nil
}

func backupInfo(b wip.Backup) api.BackupInfo {
	return api.BackupInfo{Path: b.Path, Created: b.Created, Node: b.Node, Epoch: b.Epoch, LSN: b.LSN, Bytes: b.Bytes}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// register adds the backup routes to the local API.
func (b *backupJob) register(srv *api.Server) {
	srv.Handle("POST /v1/admin/backup", func(w http.ResponseWriter, r *http.Request) {
		if err := api.DecodeBody(r, &struct{}{}); err != nil {
			srv.Reply(w, r, nil, err)
			return
		}
		info, err := b.take("operator")
		switch {
		case errors.Is(err, errNoBackupDir), errors.Is(err, wip.ErrBackupInconsistent):
			err = fmt.Errorf("%w: %v", api.ErrConflict, err)
		case errors.Is(err, wip.ErrClosed):
			err = fmt.Errorf("%w: %v", api.ErrUnavailable, err)
		}
		// Anything else (an I/O error) is the server's: 500, logged.
		srv.Reply(w, r, info, err)
	})
	srv.Handle("GET /v1/backups", func(w http.ResponseWriter, r *http.Request) {
		if b.dir == "" {
			srv.Reply(w, r, nil, fmt.Errorf("%w: %v", api.ErrConflict, errNoBackupDir))
			return
		}
		bs, err := wip.ListBackups(b.dir)
		out := make([]api.BackupInfo, 0, len(bs))
		for _, x := range bs {
			out = append(out, backupInfo(x))
		}
		srv.Reply(w, r, out, err)
	})
}
