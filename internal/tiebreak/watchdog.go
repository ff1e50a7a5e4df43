package tiebreak

import (
	"fmt"
	"os"
	"sync"
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
