package daemon

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/pair"
)

// A passive persist on a disk that hangs gives up after the bound and
// leaves the write under way; a later one waits for it first (one writer
// of the state file at a time), and a promotion's persist waits however
// long it takes. The write itself is a fake that blocks until released.
func TestPersisterBoundsAPassiveWrite(t *testing.T) {
	release := make(chan struct{})
	var writes, concurrent, most atomic.Int32
	var last atomic.Pointer[pair.Persisted]
	p := &persister{dir: t.TempDir(), clk: clock.Real(), bound: 50 * time.Millisecond,
		write: func(_ string, st pair.Persisted) error {
			n := concurrent.Add(1)
			if n > most.Load() {
				most.Store(n)
			}
			if writes.Add(1) == 1 {
				<-release // the first write hangs
			}
			last.Store(&st)
			concurrent.Add(-1)
			return nil
		}}
	ctx := context.Background()
	passive := pair.Persisted{Epoch: 1, Role: pair.RolePassive}
	if err := p.save(ctx, passive); err == nil || !strings.Contains(err.Error(), "has not completed in 50ms") {
		t.Fatalf("a hung passive persist: %v, want the bound's error", err)
	}
	if err := p.save(ctx, pair.Persisted{Epoch: 2, Role: pair.RolePassive}); err == nil {
		t.Fatal("a second passive persist behind the hung one returned nil")
	}
	if n := writes.Load(); n != 1 {
		t.Fatalf("%d writes started while the first hangs, want 1", n)
	}
	done := make(chan error, 1)
	go func() { done <- p.save(ctx, pair.Persisted{Epoch: 3, Role: pair.RoleActive}) }()
	close(release) // the disk comes back
	if err := <-done; err != nil {
		t.Fatalf("the promotion's persist: %v", err)
	}
	if n, m := writes.Load(), most.Load(); n != 2 || m != 1 {
		t.Fatalf("%d writes, at most %d at once; want 2, 1", n, m)
	}
	if st := last.Load(); st.Epoch != 3 {
		t.Fatalf("last write %+v, want epoch 3", st)
	}
	// A healthy write is not bounded away, and reaches the file.
	p.write = nil
	if err := p.save(ctx, passive); err != nil {
		t.Fatal(err)
	}
}
