package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/pair"
)

// passivePersistWait bounds the driver's wait for a persist of a state
// that is not active: a demotion's or a handover's (the VIP is already
// released), an epoch seen, a flag of a passive node. None of them guards
// an outward act (a node that boots from "active" starts passive, and
// epochs fence), and on a disk that hangs the wait would hold the driver
// loop, the handover's advert with it, until the service watchdog (5 s
// in image/tandemd.service) kills the daemon. Below that watchdog, and
// far above a healthy fsync of a small file.
const passivePersistWait = 2 * time.Second

// persister writes the pair state file, one write at a time
// (replaceFile's temporary name has a single writer). Each write runs in
// a goroutine of its own, which ends when the write returns: on a disk
// that hangs, only the process's exit ends it. A write that a bounded
// wait gave up on stays under way, and the next one waits for it first.
type persister struct {
	dir   string
	clk   clock.Clock
	bound time.Duration                             // 0: passivePersistWait
	write func(dir string, st pair.Persisted) error // nil: saveState

	mu      sync.Mutex
	pending chan struct{} // closed when the write under way returns; nil when none
}

// save makes st durable. An active state (a promotion: I1, I3) is waited
// for however long it takes, as before the bound existed; any other for at
// most passivePersistWait, or until ctx ends, after which save returns an
// error and the write goes on.
func (p *persister) save(ctx context.Context, st pair.Persisted) error {
	var bound <-chan time.Time
	if st.Role == pair.RoleActive {
		ctx = context.Background()
	} else {
		t := p.clk.NewTimer(p.wait())
		defer t.Stop()
		bound = t.C()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	await := func(done <-chan struct{}) error {
		select {
		case <-done:
			return nil
		case <-bound:
			return fmt.Errorf("persist pair state: a write of it has not completed in %v (the disk hangs?); it goes on in the background", p.wait())
		case <-ctx.Done():
			return fmt.Errorf("persist pair state: %w", ctx.Err())
		}
	}
	if p.pending != nil {
		if err := await(p.pending); err != nil {
			return err
		}
		p.pending = nil
	}
	done := make(chan struct{})
	p.pending = done
	write := p.write
	if write == nil {
		write = func(dir string, st pair.Persisted) error { return saveState(dir, st) }
	}
	var err error
	go func() {
		err = write(p.dir, st)
		close(done)
	}()
	if werr := await(done); werr != nil {
		return werr
	}
	p.pending = nil
	return err
}

func (p *persister) wait() time.Duration {
	if p.bound > 0 {
		return p.bound
	}
	return passivePersistWait
}
