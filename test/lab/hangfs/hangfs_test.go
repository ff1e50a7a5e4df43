package hangfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// waitLimit bounds every wait; reaching it is a failure, never a result.
const waitLimit = 20 * time.Second

// childEnv makes the test binary a child writer (see TestMain).
const childEnv = "HANGFS_TEST_CHILD_WRITE"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(childWrite(path))
	}
	os.Exit(m.Run())
}

// childWrite is the child process of TestKillBlockedWriter: it writes to
// path and syncs, and blocks there while the mount is frozen.
func childWrite(path string) int {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if _, err := f.Write([]byte("from the child")); err != nil {
		fmt.Fprintln(os.Stderr, "child: write:", err)
		return 3
	}
	if err := f.Sync(); err != nil {
		fmt.Fprintln(os.Stderr, "child: sync:", err)
		return 4
	}
	return 0
}

// mountT mounts a hangfs over a fresh directory, backed by another, and
// unmounts it when the test ends, checking that no mount is left.
func mountT(t *testing.T) (h *FS, backing, mnt string) {
	t.Helper()
	testenv.RequireFUSE(t)
	h, err := Mount(t.TempDir(), t.TempDir(), t.Logf)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		if mounted(t, h.Mountpoint()) {
			t.Errorf("%s is still mounted after Unmount", h.Mountpoint())
		}
	})
	return h, h.Backing(), h.Mountpoint()
}

// mounted reports whether /proc/self/mounts lists a mount at dir.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && unescapeMountinfo(fields[1]) == dir {
			return true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return false
}

// waitFor polls cond until it holds; waitLimit passing is a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	c := clock.Real()
	deadline := c.Now().Add(waitLimit)
	for !cond() {
		if c.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		_ = clock.Sleep(context.Background(), c, time.Millisecond)
	}
}

// waitDone waits for the result of a goroutine; waitLimit passing is a failure.
func waitDone(t *testing.T, what string, done <-chan error) error {
	t.Helper()
	timer := clock.Real().NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C():
		t.Fatalf("timed out after %v waiting for %s to return", waitLimit, what)
		return nil
	}
}

// stillBlocked fails if the goroutine reporting on done has returned.
func stillBlocked(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned while frozen (err %v)", what, err)
	default:
	}
}

// within runs fn in a goroutine and returns its result, failing the test if
// it takes waitLimit: a read that hangs in the kernel must not hang the test
// binary, which also serves the mount.
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	return waitDone(t, what, done)
}

// readsGoOn checks, while frozen, that stat and readdir of the mount's root
// and (if file is not "") reading a file in it do not block.
func readsGoOn(t *testing.T, mnt, file string) {
	t.Helper()
	if err := within(t, "stat of the mount", func() error { _, err := os.Stat(mnt); return err }); err != nil {
		t.Fatalf("stat of the mount while frozen: %v", err)
	}
	if err := within(t, "readdir of the mount", func() error {
		ents, err := os.ReadDir(mnt)
		if err == nil && len(ents) == 0 {
			err = errors.New("no entries")
		}
		return err
	}); err != nil {
		t.Fatalf("readdir of the mount while frozen: %v", err)
	}
	if file == "" {
		return
	}
	if err := within(t, "reading "+file, func() error {
		_, err := os.ReadFile(filepath.Join(mnt, file)) // open, read, close
		return err
	}); err != nil {
		t.Fatalf("reading %s while frozen: %v", file, err)
	}
}

func readBacking(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func implements[T any](v any) bool {
	_, ok := v.(T)
	return ok
}

// TestGatesAreTheOnesGoFuseCalls checks the dispatch rules hangfs relies on:
// go-fuse prefers a node's Write/Fsync/Flush/Allocate to the file handle's,
// so the node must implement none of them for the gated file handle to be
// reached; and a directory handle's Fsyncdir is preferred to the node's
// Fsync, so the loopback's directory handle must be one hangfs can wrap.
func TestGatesAreTheOnesGoFuseCalls(t *testing.T) {
	n := any(&node{})
	for name, ok := range map[string]bool{
		"NodeWriter":    implements[fs.NodeWriter](n),
		"NodeWritever":  implements[fs.NodeWritever](n),
		"NodeFsyncer":   implements[fs.NodeFsyncer](n),
		"NodeFlusher":   implements[fs.NodeFlusher](n),
		"NodeAllocater": implements[fs.NodeAllocater](n),
	} {
		if ok {
			t.Errorf("node implements fs.%s: go-fuse would call it instead of the gated file handle", name)
		}
	}
	ds, errno := fs.NewLoopbackDirStream(t.TempDir())
	if errno != 0 {
		t.Fatal(errno)
	}
	defer ds.Close()
	if !implements[loopbackDir](ds) {
		t.Errorf("the loopback directory handle %T is not a loopbackDir: directory fsync would not be gated", ds)
	}
	if _, ok := (&file{}).PassthroughFd(); ok {
		t.Error("file offers a passthrough fd: the kernel would write to backing directly")
	}
}

func TestPassThrough(t *testing.T) {
	h, backing, mnt := mountT(t)
	data := bytes.Repeat([]byte("tandem hangfs\n"), 1000)

	f, err := os.Create(filepath.Join(mnt, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readBacking(t, filepath.Join(backing, "a")); !bytes.Equal(got, data) {
		t.Fatalf("backing holds %d bytes, want the %d written through the mount", len(got), len(data))
	}

	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "a"), filepath.Join(mnt, "d", "b")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "d", "b")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through the mount: %d bytes, %v", len(got), err)
	}
	if _, err := os.Stat(filepath.Join(backing, "d", "b")); err != nil {
		t.Fatalf("rename through the mount not in backing: %v", err)
	}
	if err := os.Remove(filepath.Join(mnt, "d", "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(backing, "d", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unlink through the mount: backing stat says %v", err)
	}
	if n := h.Held(); n != 0 {
		t.Fatalf("Held() = %d without a freeze", n)
	}
}

// TestFreezeHangsWriterUntilThaw is the lab scenario: a writer is stuck in
// write+fsync while reads of the mount go on; Thaw lets it finish.
func TestFreezeHangsWriterUntilThaw(t *testing.T) {
	h, backing, mnt := mountT(t)
	defer h.Thaw() // release the writer if the test fails early
	if err := os.WriteFile(filepath.Join(mnt, "ro"), []byte("readable"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := []byte("record 1\n")

	h.Freeze()
	done := make(chan error, 1)
	go func() {
		_, err := f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		done <- err
	}()
	waitFor(t, "the writer to block", func() bool { return h.Held() >= 1 })
	stillBlocked(t, "write+fsync", done)

	// Reads go on while frozen, the blocked file's attributes included.
	readsGoOn(t, mnt, "ro")
	if err := within(t, "stat of the blocked file", func() error {
		_, err := os.Stat(filepath.Join(mnt, "wal"))
		return err
	}); err != nil {
		t.Fatalf("stat of the blocked file while frozen: %v", err)
	}
	if got := readBacking(t, filepath.Join(backing, "wal")); len(got) != 0 {
		t.Fatalf("backing got %q while frozen", got)
	}
	stillBlocked(t, "write+fsync", done)

	h.Thaw()
	if err := waitDone(t, "write+fsync", done); err != nil {
		t.Fatalf("write+fsync after Thaw: %v", err)
	}
	if got := readBacking(t, filepath.Join(backing, "wal")); !bytes.Equal(got, data) {
		t.Fatalf("backing holds %q after Thaw, want %q", got, data)
	}
	if n := h.Held(); n != 0 {
		t.Fatalf("Held() = %d after the writer returned", n)
	}
}

// FreezeSyncs holds fsync(2) of a file and of a directory, and nothing
// else: the write before the sync, a create, a rename go on and reach
// backing while the sync waits.
func TestFreezeSyncsHoldsOnlySyncs(t *testing.T) {
	h, backing, mnt := mountT(t)
	defer h.Thaw() // release the syncs if the test fails early
	f, err := os.Create(filepath.Join(mnt, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := []byte("record 1\n")

	h.FreezeSyncs()
	h.Freeze() // a second freeze while frozen does nothing: still syncs only
	if err := within(t, "write while syncs are frozen", func() error {
		_, err := f.Write(data)
		return err
	}); err != nil {
		t.Fatalf("write while syncs are frozen: %v", err)
	}
	if got := readBacking(t, filepath.Join(backing, "wal")); !bytes.Equal(got, data) {
		t.Fatalf("backing holds %q after the write, want %q", got, data)
	}
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	waitFor(t, "the file's fsync to block", func() bool { return h.Held() == 1 })
	stillBlocked(t, "fsync", done)
	if err := within(t, "create and rename while syncs are frozen", func() error {
		if err := os.WriteFile(filepath.Join(mnt, "tmp"), data, 0o644); err != nil {
			return err
		}
		return os.Rename(filepath.Join(mnt, "tmp"), filepath.Join(mnt, "renamed"))
	}); err != nil {
		t.Fatalf("create and rename while syncs are frozen: %v", err)
	}
	if got := readBacking(t, filepath.Join(backing, "renamed")); !bytes.Equal(got, data) {
		t.Fatalf("backing holds %q in renamed, want %q", got, data)
	}
	d, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dirDone := make(chan error, 1)
	go func() { dirDone <- d.Sync() }()
	waitFor(t, "the directory's fsync to block", func() bool { return h.Held() == 2 })
	stillBlocked(t, "fsync", done)
	stillBlocked(t, "directory fsync", dirDone)

	h.Thaw()
	if err := waitDone(t, "fsync", done); err != nil {
		t.Fatalf("fsync after Thaw: %v", err)
	}
	if err := waitDone(t, "directory fsync", dirDone); err != nil {
		t.Fatalf("directory fsync after Thaw: %v", err)
	}
	if n, a := h.Held(), h.Abandoned(); n != 0 || a != 0 {
		t.Fatalf("Held() = %d, Abandoned() = %d after the syncs returned; want 0, 0", n, a)
	}
}

// TestFreezeBlocksEveryMutation runs each write-side operation against a
// frozen mount: it must block (Held counts it, the caller has not returned)
// and, after Thaw, complete and reach backing.
func TestFreezeBlocksEveryMutation(t *testing.T) {
	h, backing, mnt := mountT(t)
	// The operations run in ops/: one blocked in a directory holds that
	// directory's lock in the kernel, so readdir of the same directory
	// would hang too (as on a real disk); the root stays readable.
	if err := os.Mkdir(filepath.Join(mnt, "ops"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := func(name string) string { return filepath.Join(mnt, "ops", name) }
	b := func(name string) string { return filepath.Join(backing, "ops", name) }
	mustWrite := func(t *testing.T, name, content string) {
		t.Helper()
		if err := os.WriteFile(m(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	open := func(t *testing.T, name string, flag int) *os.File {
		t.Helper()
		f, err := os.OpenFile(m(name), flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	wantContent := func(name, want string) func(t *testing.T) {
		return func(t *testing.T) {
			t.Helper()
			if got := readBacking(t, b(name)); string(got) != want {
				t.Fatalf("backing %s holds %q, want %q", name, got, want)
			}
		}
	}
	wantExists := func(name string, exists bool) func(t *testing.T) {
		return func(t *testing.T) {
			t.Helper()
			_, err := os.Lstat(b(name))
			if exists && err != nil {
				t.Fatalf("backing %s: %v", name, err)
			}
			if !exists && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("backing %s should be gone: %v", name, err)
			}
		}
	}

	xattrOK := unix.Setxattr(b("."), "user.hangfs-probe", []byte("1"), 0) == nil

	cases := []struct {
		name  string
		setup func(t *testing.T) func() error // unfrozen; returns the operation
		check func(t *testing.T)              // after Thaw
		skip  bool
	}{
		{name: "write", setup: func(t *testing.T) func() error {
			f := open(t, "write", os.O_CREATE|os.O_WRONLY)
			return func() error { _, err := f.Write([]byte("abc")); return err }
		}, check: wantContent("write", "abc")},
		{name: "fsync", setup: func(t *testing.T) func() error {
			f := open(t, "fsync", os.O_CREATE|os.O_WRONLY)
			if _, err := f.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			return f.Sync
		}, check: wantContent("fsync", "abc")},
		{name: "fdatasync", setup: func(t *testing.T) func() error {
			f := open(t, "fdatasync", os.O_CREATE|os.O_WRONLY)
			return func() error { return unix.Fdatasync(int(f.Fd())) }
		}, check: wantExists("fdatasync", true)},
		{name: "close of a written file (flush)", setup: func(t *testing.T) func() error {
			f, err := os.OpenFile(m("flush"), os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			return f.Close
		}, check: wantContent("flush", "abc")},
		{name: "fsync of a directory", setup: func(t *testing.T) func() error {
			if err := os.Mkdir(m("syncdir"), 0o755); err != nil {
				t.Fatal(err)
			}
			d := open(t, "syncdir", os.O_RDONLY)
			return d.Sync
		}, check: wantExists("syncdir", true)},
		{name: "create", setup: func(t *testing.T) func() error {
			return func() error {
				f, err := os.OpenFile(m("create"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
				if err == nil {
					err = f.Close()
				}
				return err
			}
		}, check: wantExists("create", true)},
		{name: "open with O_TRUNC", setup: func(t *testing.T) func() error {
			mustWrite(t, "otrunc", "old")
			return func() error {
				f, err := os.OpenFile(m("otrunc"), os.O_WRONLY|os.O_TRUNC, 0)
				if err == nil {
					err = f.Close()
				}
				return err
			}
		}, check: wantContent("otrunc", "")},
		{name: "truncate", setup: func(t *testing.T) func() error {
			mustWrite(t, "truncate", "abc")
			return func() error { return os.Truncate(m("truncate"), 1) }
		}, check: wantContent("truncate", "a")},
		{name: "chmod", setup: func(t *testing.T) func() error {
			mustWrite(t, "chmod", "")
			return func() error { return os.Chmod(m("chmod"), 0o600) }
		}, check: func(t *testing.T) {
			st, err := os.Stat(b("chmod"))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("backing chmod: %v, %v", st.Mode(), err)
			}
		}},
		{name: "fallocate", setup: func(t *testing.T) func() error {
			f := open(t, "fallocate", os.O_CREATE|os.O_RDWR)
			return func() error { return unix.Fallocate(int(f.Fd()), 0, 0, 4096) }
		}, check: func(t *testing.T) {
			if st, err := os.Stat(b("fallocate")); err != nil || st.Size() != 4096 {
				t.Fatalf("backing fallocate: %v", err)
			}
		}},
		{name: "copy_file_range", setup: func(t *testing.T) func() error {
			mustWrite(t, "cfr-src", "copied")
			src := open(t, "cfr-src", os.O_RDONLY)
			dst := open(t, "cfr-dst", os.O_CREATE|os.O_WRONLY)
			return func() error {
				n, err := unix.CopyFileRange(int(src.Fd()), nil, int(dst.Fd()), nil, 6, 0)
				if err == nil && n != 6 {
					err = fmt.Errorf("copied %d bytes, want 6", n)
				}
				return err
			}
		}, check: wantContent("cfr-dst", "copied")},
		{name: "mkdir", setup: func(t *testing.T) func() error {
			return func() error { return os.Mkdir(m("mkdir"), 0o755) }
		}, check: wantExists("mkdir", true)},
		{name: "rmdir", setup: func(t *testing.T) func() error {
			if err := os.Mkdir(m("rmdir"), 0o755); err != nil {
				t.Fatal(err)
			}
			return func() error { return os.Remove(m("rmdir")) }
		}, check: wantExists("rmdir", false)},
		{name: "unlink", setup: func(t *testing.T) func() error {
			mustWrite(t, "unlink", "x")
			return func() error { return os.Remove(m("unlink")) }
		}, check: wantExists("unlink", false)},
		{name: "rename", setup: func(t *testing.T) func() error {
			mustWrite(t, "rename-from", "x")
			return func() error { return os.Rename(m("rename-from"), m("rename-to")) }
		}, check: func(t *testing.T) {
			wantExists("rename-from", false)(t)
			wantContent("rename-to", "x")(t)
		}},
		{name: "link", setup: func(t *testing.T) func() error {
			mustWrite(t, "link-target", "x")
			return func() error { return os.Link(m("link-target"), m("link")) }
		}, check: wantContent("link", "x")},
		{name: "symlink", setup: func(t *testing.T) func() error {
			return func() error { return os.Symlink("somewhere", m("symlink")) }
		}, check: func(t *testing.T) {
			if got, err := os.Readlink(b("symlink")); err != nil || got != "somewhere" {
				t.Fatalf("backing symlink: %q, %v", got, err)
			}
		}},
		{name: "mknod", setup: func(t *testing.T) func() error {
			return func() error { return unix.Mkfifo(m("fifo"), 0o600) }
		}, check: func(t *testing.T) {
			if st, err := os.Lstat(b("fifo")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
				t.Fatalf("backing fifo: %v", err)
			}
		}},
		{name: "setxattr", skip: !xattrOK, setup: func(t *testing.T) func() error {
			mustWrite(t, "setxattr", "")
			return func() error { return unix.Setxattr(m("setxattr"), "user.hangfs", []byte("v"), 0) }
		}, check: func(t *testing.T) {
			buf := make([]byte, 16)
			if n, err := unix.Getxattr(b("setxattr"), "user.hangfs", buf); err != nil || string(buf[:n]) != "v" {
				t.Fatalf("backing xattr: %q, %v", buf[:max(n, 0)], err)
			}
		}},
		{name: "removexattr", skip: !xattrOK, setup: func(t *testing.T) func() error {
			mustWrite(t, "removexattr", "")
			if err := unix.Setxattr(m("removexattr"), "user.hangfs", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			return func() error { return unix.Removexattr(m("removexattr"), "user.hangfs") }
		}, check: func(t *testing.T) {
			if _, err := unix.Getxattr(b("removexattr"), "user.hangfs", nil); !errors.Is(err, unix.ENODATA) {
				t.Fatalf("backing xattr after removexattr: %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.skip {
				// Not a skip of the test: the backing file system
				// (t.TempDir) has no user xattrs, so there is
				// nothing to check.
				t.Logf("backing file system has no user xattrs; %s not checked", c.name)
				return
			}
			op := c.setup(t)
			h.Freeze()
			defer h.Thaw()
			done := make(chan error, 1)
			go func() { done <- op() }()
			waitFor(t, c.name+" to block", func() bool { return h.Held() >= 1 })
			stillBlocked(t, c.name, done)
			readsGoOn(t, mnt, "")
			stillBlocked(t, c.name, done)
			h.Thaw()
			if err := waitDone(t, c.name, done); err != nil {
				t.Fatalf("%s after Thaw: %v", c.name, err)
			}
			if n := h.Held(); n != 0 {
				t.Fatalf("Held() = %d after %s returned", n, c.name)
			}
			c.check(t)
		})
	}
}

// TestUnmountWhileFrozen unmounts with a writer blocked and its file still
// open (so the mount is busy): Unmount must thaw, detach, end the server,
// and the writer must return.
func TestUnmountWhileFrozen(t *testing.T) {
	h, backing, mnt := mountT(t)
	f, err := os.Create(filepath.Join(mnt, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	h.Freeze()
	done := make(chan error, 1)
	go func() {
		_, err := f.Write([]byte("last words"))
		if err == nil {
			err = f.Sync()
		}
		done <- err
	}()
	waitFor(t, "the writer to block", func() bool { return h.Held() >= 1 })
	stillBlocked(t, "write+fsync", done)

	unmounted := make(chan error, 1)
	go func() { unmounted <- h.Unmount() }()
	if err := waitDone(t, "Unmount", unmounted); err != nil {
		t.Fatalf("Unmount while frozen: %v", err)
	}
	if mounted(t, mnt) {
		t.Fatalf("%s still mounted after Unmount", mnt)
	}
	werr := waitDone(t, "the blocked writer", done)
	t.Logf("blocked writer returned: %v; backing holds %q", werr, readBacking(t, filepath.Join(backing, "wal")))
	if err := f.Close(); err != nil {
		t.Logf("close of a file of the detached mount: %v", err)
	}
	if n := h.Held(); n != 0 {
		t.Fatalf("Held() = %d after Unmount", n)
	}
	if err := h.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	h.Freeze() // a no-op once unmounted
	if h.Held() != 0 {
		t.Fatal("Held() != 0 after Freeze on an unmounted FS")
	}
}

// TestKillBlockedWriter checks that a process stuck in a frozen write stays
// stuck through a non-fatal signal (Go retries EINTR), does not inherit the
// FUSE device, and is ended by SIGKILL; the abandoned write never reaches
// backing.
func TestKillBlockedWriter(t *testing.T) {
	h, backing, mnt := mountT(t)
	defer h.Thaw()
	victim := filepath.Join(mnt, "victim")
	if err := os.WriteFile(victim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.Freeze()

	cmd, out, exited := startChild(t, victim)
	reaped := false
	defer func() {
		if !reaped {
			_ = cmd.Process.Kill()
			h.Thaw()
			_ = waitDone(t, "the child", exited)
		}
	}()
	childBlocked := func(what string) {
		t.Helper()
		waitFor(t, what, func() bool {
			select {
			case err := <-exited:
				reaped = true
				t.Fatalf("child exited while frozen: %v\n%s", err, out.String())
			default:
			}
			_, pid := h.abandonedCount()
			return h.Held() >= 1 && pid != 0
		})
	}
	childBlocked("the child's write to block")

	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, e.Name())); target == "/dev/fuse" {
			t.Errorf("the child inherited the FUSE device as fd %s", e.Name())
		}
	}

	// A non-fatal signal to the blocked thread interrupts the request;
	// hangfs abandons it with EINTR and the Go child sends it again.
	before, tid := h.abandonedCount()
	if err := unix.Tgkill(cmd.Process.Pid, int(tid), unix.SIGURG); err != nil {
		t.Fatalf("tgkill SIGURG: %v", err)
	}
	waitFor(t, "the interrupt to reach hangfs", func() bool { n, _ := h.abandonedCount(); return n > before })
	childBlocked("the child to block again after SIGURG")

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = waitDone(t, "the SIGKILLed child", exited)
	reaped = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL\n%s", err, out.String())
	}
	waitFor(t, "the killed write to be released", func() bool { return h.Held() == 0 })
	h.Thaw()
	if got := readBacking(t, filepath.Join(backing, "victim")); len(got) != 0 {
		t.Fatalf("backing got %q from the killed writer", got)
	}
}

// TestUninterruptibleHoldsThroughSignals: with SetUninterruptible, a
// signal to a thread blocked in the frozen mount is not answered: the
// write stays blocked (no EINTR for the caller) and completes, reaching
// backing, once thawed, as on a real hung disk.
func TestUninterruptibleHoldsThroughSignals(t *testing.T) {
	h, backing, mnt := mountT(t)
	defer h.Thaw()
	victim := filepath.Join(mnt, "victim")
	if err := os.WriteFile(victim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.SetUninterruptible(true)
	h.Freeze()

	cmd, out, exited := startChild(t, victim)
	reaped := false
	defer func() {
		if !reaped {
			h.Thaw()
			_ = waitDone(t, "the child", exited)
		}
	}()
	waitFor(t, "the child's write to block", func() bool {
		_, pid := h.abandonedCount()
		return h.Held() >= 1 && pid != 0
	})
	abandoned, tid := h.abandonedCount()
	if err := unix.Tgkill(cmd.Process.Pid, int(tid), unix.SIGURG); err != nil {
		t.Fatalf("tgkill SIGURG: %v", err)
	}
	waitFor(t, "the interrupt to reach hangfs", func() bool { return h.ignoredCount() > 0 })
	if n, _ := h.abandonedCount(); n != abandoned || h.Held() != 1 {
		t.Fatalf("after the ignored interrupt: %d abandoned (was %d), %d held; want the write still held", n, abandoned, h.Held())
	}
	h.Thaw()
	err := waitDone(t, "the child", exited)
	reaped = true
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	if got := readBacking(t, filepath.Join(backing, "victim")); string(got) != "from the child" {
		t.Fatalf("backing got %q, want the child's write", got)
	}
}

// startChild starts this test binary as the child writer (childWrite) of
// victim, and returns it with its output and a channel that gets its
// exit.
func startChild(t *testing.T, victim string) (*exec.Cmd, *bytes.Buffer, <-chan error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+victim)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, &out, exited
}

// TestFailReadsIsABadSector: FailReads makes the reads of one file that
// cover one byte fail with EIO, as the kernel reports a disk's unreadable
// sector to read(2) (*fs.PathError, op "read"); the rest of that file,
// its writes and other files work, through a handle opened before the
// call as well (the page cache dropped) as after it (direct I/O).
// HealReads ends it.
func TestFailReadsIsABadSector(t *testing.T) {
	h, _, mnt := mountT(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	for _, name := range []string{"000009.sst", "000010.sst"} {
		if err := os.WriteFile(filepath.Join(mnt, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	early, err := os.Open(filepath.Join(mnt, "000009.sst"))
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	buf := make([]byte, 4096)
	if _, err := early.ReadAt(buf, 128<<10); err != nil { // in the page cache now
		t.Fatal(err)
	}
	h.FailReads("000009.sst", 128<<10+100)
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200); err != nil {
		t.Fatalf("dropping the page cache: %v", err)
	}
	late, err := os.Open(filepath.Join(mnt, "000009.sst"))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	for _, f := range []*os.File{early, late} {
		_, err := f.ReadAt(buf, 128<<10)
		var pe *iofs.PathError
		if !errors.Is(err, syscall.EIO) || !errors.As(err, &pe) || pe.Op != "read" {
			t.Fatalf("reading the bad sector through %s: %v, want the kernel's EIO of a read", f.Name(), err)
		}
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatalf("reading the start of the file: %v", err)
		}
	}
	other, err := os.ReadFile(filepath.Join(mnt, "000010.sst"))
	if err != nil || !bytes.Equal(other, data) {
		t.Fatalf("another file: %d bytes, %v", len(other), err)
	}
	if n := h.BadReads(); n < 2 {
		t.Fatalf("BadReads = %d, want at least 2", n)
	}
	h.HealReads()
	if _, err := late.ReadAt(buf, 128<<10); err != nil {
		t.Fatalf("after HealReads: %v", err)
	}
}
