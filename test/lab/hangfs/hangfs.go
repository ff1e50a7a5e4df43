// Package hangfs simulates a hung disk for real processes: a FUSE
// pass-through (loopback) file system mounted over a directory, whose
// write-side operations can be frozen so that they block in the kernel, as
// on a disk whose I/O never completes, and later thawed.
//
// Lab tests mount it over a node's data directory (e.g. tandemd's
// data-dir/wip), Freeze it while the daemon writes, and check that the pair
// fails over. It needs root and /dev/fuse; it mounts with mount(2) directly,
// so no fusermount binary is needed.
//
// # Contract
//
// Mount(mountpoint, backing, log) mounts a loopback of backing at mountpoint
// (both must be existing directories). Every operation on the mount is
// carried out on backing.
//
// Freeze: from then on every FUSE request that changes data or metadata
// blocks until Thaw, before it touches backing:
//
//   - data: WRITE (write(2), pwrite(2), writev(2), writeback of a shared
//     mapping), FSYNC (fsync(2) and fdatasync(2) of a file), FSYNCDIR
//     (fsync(2) of a directory), FALLOCATE, COPY_FILE_RANGE, and FLUSH of a
//     handle opened for writing: close(2) of a file opened O_WRONLY or O_RDWR
//     blocks (as on NFS), close(2) of a read-only handle does not. The
//     kernel flushes on every close(2) of every descriptor, dup(2)ed ones
//     included, so a shell redirection (echo x >> f) blocks already when the
//     shell closes the descriptor it dup2(2)ed onto stdout;
//   - metadata: CREATE (open(2) with O_CREAT of a new name), TMPFILE, MKDIR,
//     MKNOD, SYMLINK, LINK, RENAME, UNLINK, RMDIR, SETATTR (truncate(2),
//     ftruncate(2), chmod(2), chown(2), utimes(2), and open(2) with O_TRUNC of
//     an existing file, which the kernel sends as a SETATTR of the size),
//     SETXATTR and REMOVEXATTR.
//
// Every other request goes on while frozen: LOOKUP, GETATTR/STATX, READDIR,
// READLINK, GETXATTR/LISTXATTR, STATFS, READ, LSEEK, RELEASE, IOCTL, and
// OPEN of an existing file in any mode (O_WRONLY and O_RDWR do not block;
// the first write does). So stat(2), ls and reads of the mount do not hang a
// test, with one exception that a real hung disk shares: the kernel holds a
// directory's lock while a request on one of its entries (CREATE, MKDIR,
// UNLINK, RENAME, ...) is blocked, and a file's lock while a WRITE or FSYNC
// on it is, so another process reading that directory, looking up a new
// name in it, or writing that file waits in the kernel (D state, killable)
// without its request ever reaching hangfs.
//
// Held reports how many requests are blocked by the freeze right now (not
// callers queued behind a kernel lock), so a test can wait until a writer is
// stuck instead of sleeping.
//
// SetUninterruptible(true) makes blocked requests ignore the kernel's
// interrupts, as I/O on a real hung disk does (D state): a caller that is
// stopped (SIGSTOP, a paused VM) stays in its system call and sees it
// complete after Thaw, not fail with EINTR and make it again (tandem's
// WIP store retries EINTR; pebble's own vfs does not); a SIGKILLed caller
// stays until Thaw or Unmount. Otherwise:
//
// A blocked request is abandoned with EINTR, without touching backing, when
// the kernel interrupts it (FUSE_INTERRUPT: the calling thread got a
// signal). That makes a process stuck in the mount killable: kill -9 ends
// it, rather than leaving it in D state until Thaw (a FUSE request already
// read by the server is not abandoned by the kernel on SIGKILL; the server
// has to answer it). Go programs retry EINTR inside package os, so for them
// a non-fatal signal does not end the hang of a read or write: the request
// is sent again and blocks again. Package os's Sync retries too, but
// golang.org/x/sys/unix's Fsync and Fdatasync (which pebble's vfs calls) do
// not: the caller sees EINTR. A C program may see a system call fail with EINTR on a
// caught signal. Unlike on a real hung disk, a thread blocked in hangfs is
// in state S (wchan request_wait_answer), not D.
//
// FreezeSyncs freezes only FSYNC and FSYNCDIR: a disk whose writes land
// in its cache but whose cache flushes never complete. A test uses it to
// hold a caller in fsync(2)/fdatasync(2) itself rather than in the write
// before it. Abandoned counts the blocked requests an interrupt ended.
//
// FailReads(path, off) puts a bad sector under a file: its READ requests
// that cover byte off fail with EIO (the caller's read(2) fails with EIO,
// as on a disk's unreadable sector); the rest of the file, writes and
// other files work, and files opened after it are opened for direct I/O
// so that the page cache does not answer for the disk. HealReads removes
// the bad sectors; BadReads counts the reads that failed.
//
// Thaw releases every blocked request; they then proceed normally and their
// data reaches backing. Freeze, FreezeSyncs and Thaw are idempotent (a
// second freeze of either kind while frozen does nothing).
//
// Unmount thaws, unmounts, and waits until the server goroutine has ended.
// If the mount is busy (a process still has a file or its working directory
// in it), it forces the unmount, which aborts the FUSE connection, and
// detaches the mount lazily: later operations on files still open in the
// detached tree fail with ENOTCONN, and a request the Thaw released races
// with the abort, so it may reach backing and still report ECONNABORTED to
// its caller. Unmount is idempotent and safe for concurrent use; after it,
// Freeze does nothing.
//
// The kernel's FUSE passthrough (reads and writes served from the backing
// file without asking the server) is disabled, since it would bypass the
// freeze. The mount's source is "tandem-hangfs" and its type
// "fuse.tandem-hangfs", so `grep hangfs /proc/self/mounts` finds it.
//
// # The serving process must not die while its own threads are stuck
//
// The FUSE server runs in the process that called Mount. If that process
// is killed (or a go test timeout ends it) while one of its own threads is
// blocked in the frozen mount, it cannot finish exiting: its server threads
// are gone, but /dev/fuse stays open until its last thread exits, and that
// thread waits for an answer only the server could give. The process stays
// in D state and the mount stays listed. Keep the frozen writers in other
// processes (tandemd in the lab), bound every wait in the serving process,
// and Thaw before failing a test. To recover, abort the connection whose
// number Mount logs: mount -t fusectl none /sys/fs/fuse/connections (if it
// is not mounted) and echo 1 > /sys/fs/fuse/connections/N/abort.
package hangfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Name is the FUSE file system name: the mount's source, and its type is
// "fuse." + Name.
const Name = "tandem-hangfs"

// FS is one mounted hangfs. Its methods are safe for concurrent use.
type FS struct {
	mountpoint string
	backing    string
	logf       func(format string, args ...any)

	server *fuse.Server
	served chan struct{} // closed when server.Serve has returned
	conn   string        // fusectl connection number, for recovery by hand

	mu        sync.Mutex
	frozen    bool
	syncsOnly bool             // FreezeSyncs: only fsync requests block
	thawed    chan struct{}    // closed by Thaw; replaced by Freeze
	held      int              // operations blocked right now
	abandoned int              // blocked operations ended by a FUSE interrupt
	hard      bool             // SetUninterruptible: interrupts are not answered
	ignored   int              // interrupts not answered (hard)
	lastPid   uint32           // thread ID of the caller most recently blocked
	closed    bool             // Unmount has begun
	bad       map[string]int64 // FailReads: path in the mount -> its bad byte
	badReads  int              // reads that failed on a bad sector

	unmountOnce sync.Once
	unmountErr  error
}

// FailReads puts a bad sector under the file at path (relative to the
// mount) at byte off: from then on a READ of it that covers off fails
// with EIO, as a disk's unreadable sector does; the rest of the file,
// writes, and every other file work. Files opened after the call are
// opened for direct I/O (FOPEN_DIRECT_IO), so that every read reaches
// hangfs; pages of handles opened before it may still be in the page
// cache (drop them: /proc/sys/vm/drop_caches). Several calls add
// sectors, one per file.
func (h *FS) FailReads(path string, off int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad == nil {
		h.bad = map[string]int64{}
	}
	h.bad[filepath.Clean(path)] = off
	h.logf("hangfs: reads of %s covering byte %d fail with EIO from now on", path, off)
}

// HealReads removes every bad sector FailReads put.
func (h *FS) HealReads() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bad = nil
}

// BadReads counts the reads that failed on a bad sector.
func (h *FS) BadReads() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.badReads
}

// badSector reports whether a read of n bytes at off of path covers a bad
// sector, and counts it.
func (h *FS) badSector(path string, off int64, n int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.bad[path]
	if ok && off <= at && at < off+int64(n) {
		h.badReads++
		return true
	}
	return false
}

// hasBadSector reports whether path has one.
func (h *FS) hasBadSector(path string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.bad[path]
	return ok
}

// Mount mounts a loopback of backing at mountpoint and starts serving it.
// Both must be existing directories. log receives hangfs's own messages
// (freezes, blocked operations, unmount fallbacks); it may be nil.
func Mount(mountpoint, backing string, log func(format string, args ...any)) (*FS, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	mnt, err := realDir(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("hangfs: mountpoint: %w", err)
	}
	back, err := realDir(backing)
	if err != nil {
		return nil, fmt.Errorf("hangfs: backing: %w", err)
	}
	h := &FS{
		mountpoint: mnt,
		backing:    back,
		logf:       log,
		served:     make(chan struct{}),
		thawed:     make(chan struct{}),
	}
	close(h.thawed)

	rootOps, err := fs.NewLoopbackRoot(back)
	if err != nil {
		return nil, fmt.Errorf("hangfs: loopback root %s: %w", back, err)
	}
	lr, ok := rootOps.(*fs.LoopbackNode)
	if !ok {
		return nil, fmt.Errorf("hangfs: loopback root is a %T, not *fs.LoopbackNode", rootOps)
	}
	root := &node{LoopbackNode: lr, h: h}
	lr.RootData.RootNode = root

	timeout := time.Second
	opts := &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: fuse.MountOptions{
			// We are root: mount(2) directly. Strict: never fall back to a
			// fusermount binary, which may be absent and would hide the
			// real error.
			DirectMount:       true,
			DirectMountStrict: true,
			AllowOther:        true,
			FsName:            Name,
			Name:              Name,
			// Passthrough would let the kernel write to backing without
			// asking us, bypassing the freeze.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
	}

	// go-fuse opens /dev/fuse without O_CLOEXEC when it mounts directly, so
	// every process started later (tandemd, dd) would inherit the FUSE
	// device. Hold the fork lock, as package syscall asks of code creating
	// descriptors non-atomically, until the flag is set.
	syscall.ForkLock.RLock()
	server, err := fuse.NewServer(fs.NewNodeFS(root, opts), mnt, &opts.MountOptions)
	var cloexecErr error
	if err == nil {
		cloexecErr = cloexecFuseDevice()
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		// NewServer can fail after mount(2) succeeded (in the INIT
		// handshake); do not leave that mount behind.
		if _, found, _ := findMount(mnt); found {
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
		return nil, fmt.Errorf("hangfs: mount %s: %w", mnt, err)
	}
	h.server = server
	go func() {
		defer close(h.served)
		server.Serve()
	}()
	err = cloexecErr
	if err == nil {
		err = server.WaitMount()
	}
	if err == nil {
		var found bool
		h.conn, found, err = findMount(mnt)
		if err == nil && !found {
			err = errors.New("not listed in /proc/self/mountinfo")
		}
	}
	if err != nil {
		if uerr := h.Unmount(); uerr != nil {
			log("hangfs: cleaning up a failed mount: %v", uerr)
		}
		return nil, fmt.Errorf("hangfs: mount %s: %w", mnt, err)
	}
	log("hangfs: mounted %s over %s (fuse connection %s)", back, mnt, h.conn)
	return h, nil
}

// Mountpoint returns the absolute, symlink-free path the file system is
// mounted at.
func (h *FS) Mountpoint() string { return h.mountpoint }

// Backing returns the absolute, symlink-free path of the backing directory.
func (h *FS) Backing() string { return h.backing }

// Freeze makes every write-side operation block until Thaw (see the package
// comment for the list). It does nothing if already frozen or unmounted.
func (h *FS) Freeze() { h.freeze(false) }

// FreezeSyncs makes only fsync(2) and fdatasync(2), of files and of
// directories, block until Thaw: a disk whose writes land in its cache
// but whose cache flushes never complete. Writes, creates and the rest go
// on. It does nothing if already frozen or unmounted.
func (h *FS) FreezeSyncs() { h.freeze(true) }

func (h *FS) freeze(syncsOnly bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.frozen || h.closed {
		return
	}
	h.frozen, h.syncsOnly = true, syncsOnly
	h.thawed = make(chan struct{})
	if syncsOnly {
		h.logf("hangfs: %s frozen (syncs only)", h.mountpoint)
		return
	}
	h.logf("hangfs: %s frozen", h.mountpoint)
}

// Thaw releases every blocked operation; they proceed normally. It does
// nothing if not frozen.
func (h *FS) Thaw() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.frozen {
		return
	}
	h.frozen = false
	close(h.thawed)
	h.logf("hangfs: %s thawed, releasing %d blocked operation(s)", h.mountpoint, h.held)
}

// SetUninterruptible sets whether blocked requests ignore the kernel's
// interrupts (see the package doc); it applies to requests that block from
// then on.
func (h *FS) SetUninterruptible(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hard = on
}

// Abandoned reports how many blocked requests a FUSE interrupt ended with
// EINTR (their callers got a signal while blocked).
func (h *FS) Abandoned() int {
	n, _ := h.abandonedCount()
	return n
}

// ignoredCount reports how many interrupts blocked requests ignored.
func (h *FS) ignoredCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ignored
}

// Held reports how many operations are blocked by the freeze right now.
func (h *FS) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// abandonedCount reports how many blocked operations a FUSE interrupt
// ended, and the thread ID of the caller most recently blocked.
func (h *FS) abandonedCount() (abandoned int, lastPid uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.abandoned, h.lastPid
}

// hold blocks the calling FUSE request while the file system is frozen. It
// returns EINTR if the kernel interrupts the request first (the caller got a
// signal, or the connection died); the operation must then not be carried
// out.
func (h *FS) hold(ctx context.Context, op string) syscall.Errno { return h.holdOp(ctx, op, false) }

// holdSync is hold for an fsync request, which FreezeSyncs blocks too.
func (h *FS) holdSync(ctx context.Context, op string) syscall.Errno {
	return h.holdOp(ctx, op, true)
}

func (h *FS) holdOp(ctx context.Context, op string, sync bool) syscall.Errno {
	h.mu.Lock()
	if !h.frozen || (h.syncsOnly && !sync) {
		h.mu.Unlock()
		return 0
	}
	var pid uint32
	if fc, ok := ctx.(*fuse.Context); ok {
		pid = fc.Caller.Pid
	}
	thawed, hard := h.thawed, h.hard
	h.held++
	h.lastPid = pid
	h.mu.Unlock()
	h.logf("hangfs: %s blocked (frozen), caller thread %d", op, pid)

	var errno syscall.Errno
	for interrupted := ctx.Done(); ; {
		select {
		case <-thawed:
		case <-interrupted:
			if hard {
				h.mu.Lock()
				h.ignored++
				h.mu.Unlock()
				h.logf("hangfs: %s interrupted while frozen (caller thread %d got a signal): not answered (uninterruptible)", op, pid)
				interrupted = nil
				continue
			}
			errno = syscall.EINTR
		}
		break
	}

	h.mu.Lock()
	h.held--
	if errno != 0 {
		h.abandoned++
	}
	h.mu.Unlock()
	if errno != 0 {
		h.logf("hangfs: %s interrupted while frozen (caller thread %d got a signal): abandoned with EINTR", op, pid)
	}
	return errno
}

// Unmount thaws, unmounts (if the mount is busy: forcibly, which aborts the
// FUSE connection, and lazily) and waits for the server goroutine to end.
// Later calls return the first call's result.
func (h *FS) Unmount() error {
	h.unmountOnce.Do(func() { h.unmountErr = h.unmount() })
	return h.unmountErr
}

func (h *FS) unmount() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.Thaw()

	if err := unix.Unmount(h.mountpoint, 0); err != nil {
		h.logf("hangfs: unmount %s: %v; forcing (aborts the FUSE connection) and detaching lazily", h.mountpoint, err)
		// A busy FUSE mount, once detached, lives on (and so does the
		// server) until the last file open in it is closed. MNT_FORCE
		// makes the kernel abort the connection first (fuse_umount_begin),
		// whether or not the unmount itself then succeeds.
		ferr := unix.Unmount(h.mountpoint, unix.MNT_FORCE)
		if ferr != nil {
			// EINVAL: no longer a mount point (someone else unmounted it).
			if derr := unix.Unmount(h.mountpoint, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
				return fmt.Errorf("hangfs: unmount %s: %v; forced: %v; lazy detach: %w", h.mountpoint, err, ferr, derr)
			}
		}
	}
	// Bounded: a test's cleanup must not hang its run. The server lives
	// on while a process holds a file in the detached mount, or a mount
	// namespace made while it was mounted (`ip netns exec` makes one per
	// process) still holds a copy of it.
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-h.served:
	case <-t.C:
		return fmt.Errorf("hangfs: %s: the FUSE server still runs 30s after the unmount: a process holds a file in it, or a mount namespace a copy of the mount (fuse connection %s)", h.mountpoint, h.conn)
	}
	h.logf("hangfs: %s unmounted", h.mountpoint)
	return nil
}

// node is a loopback node whose mutating operations wait for the freeze.
// Data operations (WRITE, FSYNC, FLUSH, FALLOCATE) are gated on the file
// handle instead: go-fuse calls a node's Write/Fsync/Flush/Allocate in
// preference to the handle's, and LoopbackNode implements none of them, so
// node must not either (hangfs_test checks).
type node struct {
	*fs.LoopbackNode
	h *FS
}

var (
	_ fs.NodeWrapChilder     = (*node)(nil)
	_ fs.NodeOpener          = (*node)(nil)
	_ fs.NodeCreater         = (*node)(nil)
	_ fs.NodeTmpfiler        = (*node)(nil)
	_ fs.NodeOpendirHandler  = (*node)(nil)
	_ fs.NodeMkdirer         = (*node)(nil)
	_ fs.NodeMknoder         = (*node)(nil)
	_ fs.NodeSymlinker       = (*node)(nil)
	_ fs.NodeLinker          = (*node)(nil)
	_ fs.NodeRenamer         = (*node)(nil)
	_ fs.NodeUnlinker        = (*node)(nil)
	_ fs.NodeRmdirer         = (*node)(nil)
	_ fs.NodeSetattrer       = (*node)(nil)
	_ fs.NodeSetxattrer      = (*node)(nil)
	_ fs.NodeRemovexattrer   = (*node)(nil)
	_ fs.NodeCopyFileRanger  = (*node)(nil)
	_ fs.NodeLookuper        = (*node)(nil)
	_ fs.NodeGetattrer       = (*node)(nil)
	_ fs.NodeReaddirer       = (*node)(nil)
	_ fs.NodeStatfser        = (*node)(nil)
	_ fs.NodeReadlinker      = (*node)(nil)
	_ fs.NodeGetxattrer      = (*node)(nil)
	_ fs.NodeListxattrer     = (*node)(nil)
	_ fs.NodeStatxer         = (*node)(nil)
	_ fs.InodeEmbedder       = (*node)(nil)
	_ fs.FileHandle          = (*file)(nil)
	_ fs.FileWriter          = (*file)(nil)
	_ fs.FileWritever        = (*file)(nil)
	_ fs.FileFsyncer         = (*file)(nil)
	_ fs.FileFlusher         = (*file)(nil)
	_ fs.FileAllocater       = (*file)(nil)
	_ fs.FileSetattrer       = (*file)(nil)
	_ fs.FilePassthroughFder = (*file)(nil)
	_ fs.FileReader          = (*file)(nil)
	_ fs.FileReleaser        = (*file)(nil)
	_ fs.FileGetattrer       = (*file)(nil)
	_ fs.FileLseeker         = (*file)(nil)
	_ fs.FileFsyncdirer      = (*dir)(nil)
	_ fs.FileReaddirenter    = (*dir)(nil)
	_ fs.FileReleasedirer    = (*dir)(nil)
	_ fs.FileSeekdirer       = (*dir)(nil)
)

// WrapChild makes every node the loopback creates (LOOKUP, CREATE, MKDIR,
// ...) a gated node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln, h: n.h}
	}
	return ops
}

// wrap gates a file handle the loopback returned.
func (n *node) wrap(fh fs.FileHandle, flags uint32) fs.FileHandle {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		if fh != nil {
			n.h.logf("hangfs: unexpected file handle type %T: its writes are not gated", fh)
		}
		return fh
	}
	return &file{LoopbackFile: lf, h: n.h, path: n.name(), writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
}

// unwrap returns the loopback's own handle, for loopback methods that
// type-assert it (CopyFileRange) or would call back into the gated wrapper
// (Setattr).
func unwrap(fh fs.FileHandle) fs.FileHandle {
	switch f := fh.(type) {
	case *file:
		return f.LoopbackFile
	case *dir:
		return f.loopbackDir
	}
	return fh
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// The kernel sends O_TRUNC as a separate SETATTR unless the server
	// asks for atomic truncation, which go-fuse does not; gate it here
	// too in case that changes.
	if flags&syscall.O_TRUNC != 0 {
		if errno := n.h.hold(ctx, "open(O_TRUNC) "+n.name()); errno != 0 {
			return nil, 0, errno
		}
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	if n.h.hasBadSector(n.name()) {
		fuseFlags |= fuse.FOPEN_DIRECT_IO // FailReads: no page cache answers for the disk
	}
	return n.wrap(fh, flags), fuseFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.h.hold(ctx, "create "+n.child(name)); errno != 0 {
		return nil, nil, 0, errno
	}
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, n.wrap(fh, flags), fuseFlags, 0
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.h.hold(ctx, "tmpfile in "+n.name()); errno != 0 {
		return nil, nil, 0, errno
	}
	ch, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, n.wrap(fh, flags), fuseFlags, 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	ld, ok := fh.(loopbackDir)
	if !ok {
		n.h.logf("hangfs: unexpected directory handle type %T: its fsync is not gated", fh)
		return fh, fuseFlags, 0
	}
	return &dir{loopbackDir: ld, h: n.h}, fuseFlags, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.h.hold(ctx, "mkdir "+n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.h.hold(ctx, "mknod "+n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.h.hold(ctx, "symlink "+n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.h.hold(ctx, "link "+n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := n.h.hold(ctx, "rename "+n.child(name)); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.h.hold(ctx, "unlink "+n.child(name)); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.h.hold(ctx, "rmdir "+n.child(name)); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.h.hold(ctx, "setattr "+n.name()); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Setattr(ctx, unwrap(f), in, out)
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := n.h.hold(ctx, "setxattr "+n.name()); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := n.h.hold(ctx, "removexattr "+n.name()); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Removexattr(ctx, attr)
}

func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	if errno := n.h.hold(ctx, "copy_file_range from "+n.name()); errno != 0 {
		return 0, errno
	}
	// The loopback only copies between its own *LoopbackFile handles.
	return n.LoopbackNode.CopyFileRange(ctx, unwrap(fhIn), offIn, out, unwrap(fhOut), offOut, length, flags)
}

// name is the node's path relative to the mount, for log messages.
func (n *node) name() string {
	p := n.Path(nil)
	if p == "" {
		return "/"
	}
	return p
}

func (n *node) child(name string) string {
	return filepath.Join(n.name(), name)
}

// file is a loopback file handle whose data operations wait for the freeze.
type file struct {
	*fs.LoopbackFile
	h        *FS
	path     string // in the mount, as FailReads names it
	writable bool   // opened with O_WRONLY or O_RDWR
}

// Read fails with EIO where FailReads put a bad sector.
func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f.h.badSector(f.path, off, len(dest)) {
		return nil, syscall.EIO
	}
	return f.LoopbackFile.Read(ctx, dest, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.h.hold(ctx, "write"); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Write(ctx, data, off)
}

// Writev must be gated too: go-fuse uses it for scattered write requests,
// and LoopbackFile implements it.
func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if errno := f.h.hold(ctx, "write"); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Writev(ctx, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.h.holdSync(ctx, "fsync"); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}

// Flush (sent on every close(2)) blocks only for handles opened for
// writing, so that readers can close their files while frozen.
func (f *file) Flush(ctx context.Context) syscall.Errno {
	if f.writable {
		if errno := f.h.hold(ctx, "flush (close)"); errno != 0 {
			return errno
		}
	}
	return f.LoopbackFile.Flush(ctx)
}

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if errno := f.h.hold(ctx, "fallocate"); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}

// Setattr is reached only through the loopback node's Setattr, which
// node.Setattr gates and calls with the unwrapped handle; it is gated too in
// case go-fuse ever calls the handle directly.
func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := f.h.hold(ctx, "setattr"); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Setattr(ctx, in, out)
}

// PassthroughFd refuses kernel passthrough, which would bypass the freeze.
func (f *file) PassthroughFd() (int, bool) { return -1, false }

// loopbackDir is what go-fuse's loopback directory handle implements.
type loopbackDir interface {
	fs.FileReaddirenter
	fs.FileSeekdirer
	fs.FileReleasedirer
	fs.FileFsyncdirer
	fs.FileIoctler
}

// dir is a loopback directory handle whose fsync waits for the freeze.
// go-fuse calls a directory handle's Fsyncdir in preference to the node's
// Fsync, so FSYNCDIR must be gated here.
type dir struct {
	loopbackDir
	h *FS
}

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.h.holdSync(ctx, "fsync (directory)"); errno != 0 {
		return errno
	}
	return d.loopbackDir.Fsyncdir(ctx, flags)
}

// realDir returns dir as an absolute path without symlinks (as the kernel
// lists it in /proc/self/mountinfo), checking that it is a directory.
func realDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory", resolved)
	}
	return resolved, nil
}

// cloexecFuseDevice sets close-on-exec on every descriptor of this process
// open on /dev/fuse.
func cloexecFuseDevice() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != "/dev/fuse" {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("set close-on-exec on /dev/fuse descriptor %d: %w", fd, err)
		}
	}
	return nil
}

// findMount looks up the topmost hangfs mount at mountpoint in
// /proc/self/mountinfo and returns its fusectl connection name: the kernel's
// encoding of the super block's device number, MAJOR<<20|MINOR, in decimal.
func findMount(mountpoint string) (conn string, found bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// 36 35 0:52 / /mnt rw,relatime shared:1 - fuse.tandem-hangfs tandem-hangfs rw,...
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) {
			continue
		}
		if fields[sep+1] != "fuse."+Name || unescapeMountinfo(fields[4]) != mountpoint {
			continue
		}
		majMin := strings.SplitN(fields[2], ":", 2)
		if len(majMin) != 2 {
			continue
		}
		major, err1 := strconv.ParseUint(majMin[0], 10, 32)
		minor, err2 := strconv.ParseUint(majMin[1], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		conn, found = strconv.FormatUint(major<<20|minor, 10), true // the last match is the top of the stack
	}
	return conn, found, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escaping (\040 for a space)
// of paths in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
