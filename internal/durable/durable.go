// Package durable holds the two fsync steps that make a file system change
// survive a crash, shared by the WIP store's backups, the daemon's state
// file and the file connector: a file's contents synced before it is
// closed, and a directory synced after entries were created, renamed or
// removed in it. No goroutines; errors are the file system's, unwrapped.
package durable

import "os"

// WriteFile creates or truncates path with perm, writes b and syncs it
// before closing.
func WriteFile(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// SyncDir syncs the directory dir, so that the entries created, renamed or
// removed in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
