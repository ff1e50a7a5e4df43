// Package kvtest is a real pebble implementation of engine.Store for the
// runtime's tests and benchmarks: every Commit is one pebble batch
// committed with pebble.Sync, like the WIP store's local half. Open takes
// any vfs.FS, so tests can run on disk (vfs.Default) or on
// vfs.NewCrashableMem and take crash clones (only synced data survives).
//
// It has no goroutines of its own beyond pebble's, which Close stops.
package kvtest

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tandem-ha/tandem/internal/engine"
)

// Store is a pebble database behind engine.Store.
type Store struct {
	db *pebble.DB
	// NoSync commits without fsync (tests that simulate losing a commit).
	NoSync bool
}

// Open opens (creating) the database in dir on fs (nil: the OS).
func Open(dir string, fs vfs.FS) (*Store, error) {
	if fs == nil {
		fs = vfs.Default
	}
	db, err := pebble.Open(dir, &pebble.Options{FS: fs, Logger: quiet{}})
	if err != nil {
		return nil, fmt.Errorf("kvtest: open %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Get implements engine.Store.
func (s *Store) Get(key []byte) ([]byte, bool, error) {
	v, c, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	return append([]byte(nil), v...), true, nil
}

// Scan implements engine.Store.
func (s *Store) Scan(prefix []byte, fn func(k, v []byte) error) error {
	return s.scan(prefix, false, fn)
}

// ScanReverse implements engine.Store.
func (s *Store) ScanReverse(prefix []byte, fn func(k, v []byte) error) error {
	return s.scan(prefix, true, fn)
}

func (s *Store) scan(prefix []byte, reverse bool, fn func(k, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper(prefix)})
	if err != nil {
		return err
	}
	first, next := it.First, it.Next
	if reverse {
		first, next = it.Last, it.Prev
	}
	// The slices fn gets are valid only during the call, as with the WIP
	// store (a pebble iterator's): they are one buffer, overwritten with
	// 0xEE after each call, so a caller that keeps them fails here too.
	var kb, vb []byte
	poison := func() {
		for i := range kb {
			kb[i] = 0xEE
		}
		for i := range vb {
			vb[i] = 0xEE
		}
	}
	for ok := first(); ok; ok = next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		kb, vb = append(kb[:0], it.Key()...), append(vb[:0], v...)
		err = fn(kb, vb)
		poison()
		if err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

func upper(p []byte) []byte {
	u := append([]byte(nil), p...)
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] < 0xff {
			u[i]++
			return u[:i+1]
		}
	}
	return nil
}

// Commit implements engine.Store: one batch, pebble.Sync.
func (s *Store) Commit(ctx context.Context, ops []engine.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, op := range ops {
		var err error
		if op.Delete {
			err = b.Delete(op.Key, nil)
		} else {
			err = b.Set(op.Key, op.Value, nil)
		}
		if err != nil {
			return err
		}
	}
	opt := pebble.Sync
	if s.NoSync {
		opt = pebble.NoSync
	}
	return b.Commit(opt)
}
