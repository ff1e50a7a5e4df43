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
	return path, flipAt(path, int64(frac*float64(size)))
}

// TrailerOffset is how far before its end FlipTrailers hits a table:
// inside the blocks that precede the footer (the properties, the index),
// which pebble reads and checks when it opens the table. A store opening
// reads its meta keys and its log window, and so opens the tables that
// hold them.
const TrailerOffset = 200

// minTrailerTable: a table this small (a flush of one commit) still has
// more than TrailerOffset bytes of blocks before its footer.
const minTrailerTable = 400

// FlipTrailers inverts the byte TrailerOffset bytes before the end of
// every sstable in dir of at least minTrailerTable bytes, and returns the
// files.
func FlipTrailers(dir string) ([]string, error) {
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return nil, err
	}
	var hit []string
	for _, p := range ssts {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() < minTrailerTable {
			continue
		}
		if err := flipAt(p, fi.Size()-TrailerOffset); err != nil {
			return hit, err
		}
		hit = append(hit, p)
	}
	if len(hit) == 0 {
		return nil, fmt.Errorf("diskrot: no sstable of %d bytes or more in %s", minTrailerTable, dir)
	}
	return hit, nil
}

// flipAt inverts the byte at off of the file at path, durably.
func flipAt(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}
