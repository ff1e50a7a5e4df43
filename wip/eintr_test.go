package wip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab/hangfs"
)

// An fdatasync interrupted by a signal (EINTR) is made again, as often as
// it is interrupted; one that failed (EIO) is not: the commit fails.
func TestInterruptedSyncIsMadeAgain(t *testing.T) {
	// The WAL's fdatasync fails with *inject while fail is above zero;
	// calls counts them.
	var (
		inject      atomic.Pointer[error]
		fail, calls atomic.Int32
	)
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind != errorfs.OpFileSyncData || !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		calls.Add(1)
		if fail.Add(-1) >= 0 {
			return *inject.Load()
		}
		return nil
	}))
	s := openT(t, "db", Options{Mode: Async, FS: fs})
	defer s.Close()
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	commitKV(t, s, "before", "x")
	eintr, eio := error(syscall.EINTR), error(syscall.EIO)
	inject.Store(&eintr)
	before := calls.Load()
	fail.Store(3)
	commitKV(t, s, "interrupted", "x")
	if got := calls.Load() - before; got < 4 {
		t.Errorf("SyncData called %d times for the interrupted commit, want 3 interrupted and 1 more", got)
	}
	if st := s.Status(); st.Failed != "" {
		t.Fatalf("the store failed on EINTR: %s", st.Failed)
	}

	inject.Store(&eio)
	before = calls.Load()
	fail.Store(1)
	bt := s.NewBatch()
	bt.Set([]byte("failed"), []byte("x"))
	if _, err := s.Commit(context.Background(), bt); err == nil {
		t.Fatal("a commit whose fdatasync failed with EIO succeeded")
	}
	if got := calls.Load() - before; got != 1 {
		t.Errorf("SyncData called %d times for the commit that got EIO, want 1 (never retried)", got)
	}
}

// eintrChildEnv makes the test binary the child of
// TestSignalDuringFdatasyncOnFUSE (see TestMain): a store in the named
// directory, committing on request.
const eintrChildEnv = "TANDEM_WIP_EINTR_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(eintrChildEnv); dir != "" {
		os.Exit(eintrChild(dir))
	}
	os.Exit(m.Run())
}

// eintrChild opens a store in dir and reads commands from stdin, one a
// line: "commit K" commits key K and prints "ok K" or "err K <error>";
// "status" prints "failed <Status.Failed>". It closes the store at EOF.
func eintrChild(dir string) int {
	s, err := Open(dir, Options{Mode: Async, StallTimeout: time.Minute, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println("open", err)
		return 2
	}
	defer s.Close()
	if err := s.Promote(context.Background(), 1); err != nil {
		fmt.Println("promote", err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "commit":
			bt := s.NewBatch()
			bt.Set([]byte(arg), []byte("x"))
			if _, err := s.Commit(context.Background(), bt); err != nil {
				fmt.Println("err", arg, strings.ReplaceAll(err.Error(), "\n", " "))
				continue
			}
			fmt.Println("ok", arg)
		case "status":
			fmt.Println("failed", s.Status().Failed)
		}
	}
	return 0
}

// A store on an interruptible file system (FUSE here; NFS mounted intr,
// Lustre) whose fdatasync is interrupted by a signal: the sync is made
// again and the commit succeeds once the disk answers, instead of failing
// the store with "interrupted system call". The store runs in a child
// process (hangfs's server must not share a process with a thread stuck
// in its mount); the test holds the child's fdatasync with FreezeSyncs,
// finds the thread in /proc, and signals it (SIGURG, which the Go runtime
// takes for a preemption request) until the sync has been interrupted
// three times.
func TestSignalDuringFdatasyncOnFUSE(t *testing.T) {
	testenv.RequireFUSE(t)
	h, err := hangfs.Mount(t.TempDir(), t.TempDir(), t.Logf)
	if err != nil {
		t.Fatalf("hangfs.Mount: %v", err)
	}
	defer func() {
		if err := h.Unmount(); err != nil {
			t.Errorf("hangfs.Unmount: %v", err)
		}
	}()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), eintrChildEnv+"="+filepath.Join(h.Mountpoint(), "wip"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	ended := false
	defer func() { // a failed test: thaw, so that the child can end, and end it
		if !ended {
			h.Thaw()
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatalf("to the child: %v", err)
		}
	}
	answer := func(want string) {
		t.Helper()
		if got := recv(t, "the child's answer", lines); got != want {
			t.Fatalf("the child answered %q, want %q", got, want)
		}
	}

	say("commit before")
	answer("ok before")
	h.FreezeSyncs()
	say("commit interrupted")
	// held waits for the child's fdatasync to be held, failing at once if
	// the child answers instead (its commit failed on the interrupt).
	held := func(what string) {
		t.Helper()
		var early string
		waitFor(t, what, func() bool {
			select {
			case early = <-lines:
				return true
			default:
				return h.Held() == 1
			}
		})
		if early != "" {
			t.Fatalf("the child answered %q while its fdatasync should be held", early)
		}
	}
	pid := cmd.Process.Pid
	for range 3 {
		held("the child's fdatasync held")
		// Count from what is abandoned by now, and signal the thread in
		// fdatasync again every 100 ms until an interrupt comes: the
		// kernel asks hangfs to abandon a request only for a signal that
		// finds the thread waiting for it.
		was, polls := h.Abandoned(), 0
		waitFor(t, "the interrupt", func() bool {
			if h.Abandoned() > was {
				return true
			}
			if polls++; polls%20 == 1 {
				tids := threadsIn(t, pid, unix.SYS_FDATASYNC)
				if len(tids) != 1 {
					t.Fatalf("threads of the child in fdatasync: %v, want one", tids)
				}
				if err := unix.Tgkill(pid, tids[0], unix.SIGURG); err != nil {
					t.Fatalf("tgkill %d: %v", tids[0], err)
				}
			}
			return false
		})
	}
	held("the fdatasync made again after the third interrupt")
	h.Thaw()
	answer("ok interrupted")
	say("status")
	answer("failed ")
	say("commit after")
	answer("ok after")
	stdin.Close()
	if err := recv(t, "the child's exit", exited); err != nil {
		t.Fatalf("the child: %v", err)
	}
	ended = true
}

// threadsIn returns the IDs of the threads of process pid that are in
// system call nr (/proc/PID/task/TID/syscall).
func threadsIn(t *testing.T, pid int, nr int) []int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the thread exited
			}
			t.Fatal(err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == strconv.Itoa(nr) {
			tid, _ := strconv.Atoi(task.Name())
			found = append(found, tid)
		}
	}
	return found
}
