package wip

import (
	"errors"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// eintrFS wraps the store's file system so that the calls pebble's vfs
// makes straight to the kernel retry EINTR, as package os does for the
// reads and writes: fdatasync(2) (SyncData and SyncTo), sync_file_range(2)
// (SyncTo), fallocate(2) (Preallocate) and readahead(2) (Prefetch).
//
// A local disk's file system does not return EINTR from these, but an
// interruptible one does when the calling thread gets a signal while the
// call waits: a FUSE mount, NFS mounted intr, Lustre. There, without the
// retry, a signal to tandemd at the wrong moment (a SIGSTOP, a debugger,
// the Go runtime's own preemption) fails the store with an I/O error,
// which only a restart recovers and which hands the active role over. An
// interrupted call did not complete and reported nothing about the data,
// so calling it again is what the caller meant; it is not the retry of a
// failed fsync (EIO), which must never be retried, and this does not
// retry that. Close is not wrapped: Linux releases the descriptor even
// when close(2) returns EINTR, so it must not be called again.
type eintrFS struct{ vfs.FS }

// withEINTRRetry wraps fs (see eintrFS).
func withEINTRRetry(fs vfs.FS) vfs.FS { return eintrFS{fs} }

func (fs eintrFS) Unwrap() vfs.FS { return fs.FS }

func (fs eintrFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return eintrWrap(fs.FS.Create(name, c))
}

func (fs eintrFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return eintrWrap(fs.FS.Open(name, opts...))
}

func (fs eintrFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return eintrWrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func (fs eintrFS) OpenDir(name string) (vfs.File, error) {
	return eintrWrap(fs.FS.OpenDir(name))
}

func (fs eintrFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return eintrWrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

func eintrWrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return eintrFile{f}, nil
}

// eintrFile is a file of eintrFS.
type eintrFile struct{ vfs.File }

func (f eintrFile) Sync() error     { return retryEINTR(f.File.Sync) }
func (f eintrFile) SyncData() error { return retryEINTR(f.File.SyncData) }

func (f eintrFile) SyncTo(length int64) (fullSync bool, err error) {
	err = retryEINTR(func() error {
		var e error
		fullSync, e = f.File.SyncTo(length)
		return e
	})
	return fullSync, err
}

func (f eintrFile) Preallocate(offset, length int64) error {
	return retryEINTR(func() error { return f.File.Preallocate(offset, length) })
}

func (f eintrFile) Prefetch(offset, length int64) error {
	return retryEINTR(func() error { return f.File.Prefetch(offset, length) })
}

// retryEINTR calls op until it returns anything but EINTR. Each EINTR
// needs a new signal to the thread while the call waits, so the loop ends
// when the signals do.
func retryEINTR(op func() error) error {
	for {
		if err := op(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
