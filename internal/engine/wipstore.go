package engine

import (
	"context"

	"github.com/tandem-ha/tandem/wip"
)

// OnWIP is the runtime's view of a replicated WIP store: each Commit is one
// wip batch, acknowledged as the store's mode says (in sync mode, once the
// peer holds it durable).
func OnWIP(s *wip.Store) Store { return wipStore{s} }

type wipStore struct{ s *wip.Store }

func (w wipStore) Get(k []byte) ([]byte, bool, error)              { return w.s.Get(k) }
func (w wipStore) Scan(p []byte, fn func(k, v []byte) error) error { return w.s.Scan(p, fn) }
func (w wipStore) ScanReverse(p []byte, fn func(k, v []byte) error) error {
	return w.s.ScanReverse(p, fn)
}
func (w wipStore) Commit(ctx context.Context, ops []Op) error {
	b := w.s.NewBatch()
	for _, op := range ops {
		if op.Delete {
			b.Delete(op.Key)
		} else {
			b.Set(op.Key, op.Value)
		}
	}
	_, err := w.s.Commit(ctx, b)
	return err
}

// Terms implements TermStore from the store's epoch history.
func (w wipStore) Terms() (uint64, []uint64) {
	var writers []uint64
	for _, t := range w.s.Terms() {
		if t.Last >= t.First {
			writers = append(writers, t.Epoch)
		}
	}
	return w.s.Status().Epoch, writers
}

var _ TermStore = wipStore{}
