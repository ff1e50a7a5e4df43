package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	sdd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
)

// systemd is the service manager's side: readiness, status lines and the
// service watchdog. Outside systemd ($NOTIFY_SOCKET unset) every call is a
// no-op.
type systemd struct {
	log *zap.Logger
}

func (s systemd) notify(state string) {
	if _, err := sdd.SdNotify(false, state); err != nil {
		s.log.Warn("sd_notify failed", zap.String("state", state), zap.Error(err))
	}
}

// ready tells systemd the daemon is up (Type=notify).
func (s systemd) ready() { s.notify(sdd.SdNotifyReady) }

// stopping tells systemd the orderly stop began.
func (s systemd) stopping() { s.notify(sdd.SdNotifyStopping) }

// status sets the one-line status `systemctl status` shows.
func (s systemd) status(line string) { s.notify("STATUS=" + line) }

// watchdog pings systemd's watchdog at half its interval while alive()
// holds (the driver loop answered recently), until ctx ends. A daemon
// whose driver is stuck stops pinging and systemd restarts it: a hung
// active must not keep the VIP. It returns at once when WatchdogSec is
// not set.
func (s systemd) watchdog(ctx context.Context, clk clock.Clock, alive func() bool) {
	every, err := sdd.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	clock.Loop(ctx, clk, every/2, func(time.Time) time.Duration {
		if alive() {
			s.notify(sdd.SdNotifyWatchdog)
		} else {
			s.log.Error("driver loop stuck: not pinging the systemd watchdog")
		}
		return every / 2
	})
}

// setRealtime puts every thread of the process under SCHED_RR at prio.
// Threads the Go runtime starts later inherit the policy from the thread
// that creates them, so doing it for every existing thread at start covers
// the process (sched_setattr is per thread on Linux).
func setRealtime(prio int) error {
	if prio == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("realtime-priority: %w", err)
	}
	attr := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: uint32(prio)}
	var errs []error
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetAttr(tid, attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("realtime-priority %d (needs CAP_SYS_NICE): %w", prio, errors.Join(errs...))
	}
	return nil
}

// aliveWithin reports whether t is less than d before now: the driver's
// heartbeat for the systemd watchdog.
func aliveWithin(clk clock.Clock, last func() time.Time, d time.Duration) func() bool {
	return func() bool { return clk.Since(last()) < d }
}
