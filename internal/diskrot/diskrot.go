// Package diskrot damages a pebble store's files on disk the way bit rot
// does, for the tests of what the WIP store and the daemon do about it.
// It is test support: nothing in tandemd imports it.
package diskrot

import (
	"fmt"
	"os"
	"path/filepath"
)

// MinTable is the smallest sstable FlipLargestTable accepts: with 32 KiB
// data blocks, one of this size has a data block, not an index or a
// footer, wherever in its middle the byte lies.
const MinTable = 64 << 10

// FlipLargestTable inverts the byte at frac (0..1) of the size of the
// largest sstable in dir and returns the file. A WIP store's keys are in
// the order l/ (log records), m/ (a few meta keys), u/ (user keys), so in
// a store whose log window was pruned early the middle is a block of user
// keys. The store may be running: pebble reads the file again on the
// next read of that block that its cache does not serve.
func FlipLargestTable(dir string, frac float64) (string, error) {
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return "", err
	}
	var path string
	var size int64
	for _, p := range ssts {
		if fi, err := os.Stat(p); err == nil && fi.Size() > size {
			path, size = p, fi.Size()
		}
	}
	if size < MinTable {
		return "", fmt.Errorf("diskrot: largest sstable in %s is %q, %d bytes: too small to hit a data block", dir, path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	off := int64(frac * float64(size))
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return "", err
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		return "", err
	}
	return path, f.Sync()
}
