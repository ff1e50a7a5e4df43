package tiebreak

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Watchdog is an open /dev/watchdog-style device. Once opened the device is
// armed: if nothing kicks it within its timeout the machine resets. The
// daemon kicks it only while the active's lease holds, so an active that
// hangs (and can no longer fence itself) is reset before the passive's
// promotion deadline, provided the device timeout is set below it.
type Watchdog struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// OpenWatchdog opens (and so arms) the device at path for writing.
func OpenWatchdog(path string) (*Watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrWatchdog, path, err)
	}
	return &Watchdog{f: f, path: path}, nil
}

// kickByte is what Kick writes: any byte but the magic 'V' keeps the timer
// alive (Documentation/watchdog/watchdog-api.rst).
const kickByte = 0

// Kick restarts the device's countdown.
func (w *Watchdog) Kick() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("%w: %s: kick after disarm", ErrWatchdog, w.path)
	}
	if _, err := w.f.Write([]byte{kickByte}); err != nil {
		return fmt.Errorf("%w: kick %s: %v", ErrWatchdog, w.path, err)
	}
	return nil
}

// Disarm writes the magic 'V' and closes the device, which stops drivers
// that support magic close (a driver built with nowayout keeps counting:
// the machine then resets unless it is opened and kicked again). Disarm is
// idempotent.
func (w *Watchdog) Disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	_, werr := w.f.Write([]byte{'V'})
	cerr := w.f.Close()
	w.f = nil
	if werr != nil {
		return fmt.Errorf("%w: disarm %s: %v", ErrWatchdog, w.path, werr)
	}
	if cerr != nil {
		return fmt.Errorf("%w: close %s: %v", ErrWatchdog, w.path, cerr)
	}
	return nil
}

// KickWhile kicks w every period while holds reports true (the active's
// lease), checking it before each kick, until ctx ends. When holds turns
// false it only stops kicking: a daemon that is still alive fences itself
// and then calls Disarm; one that hangs never does, and the device resets
// the machine. Set the device timeout so that the reset lands before the
// passive's promotion deadline. It runs on the caller's goroutine.
func (w *Watchdog) KickWhile(ctx context.Context, clk clock.Clock, period time.Duration, holds func() bool) error {
	if period <= 0 {
		return fmt.Errorf("%w: kick period must be positive, got %v", ErrWatchdog, period)
	}
	tk := clk.NewTicker(period)
	defer tk.Stop()
	for {
		if holds() {
			if err := w.Kick(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C():
		}
	}
}
