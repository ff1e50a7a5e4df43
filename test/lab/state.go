package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateDir holds the registry of lab runs. It is on tmpfs, like the
// namespaces it describes, so both vanish together at reboot.
const StateDir = "/run/tandem-lab"

// basePrefix starts every lab prefix, namespace and registry file.
const basePrefix = "tdl"

// record is the persistent description of one run (<prefix>.json).
type record struct {
	Prefix     string       `json:"prefix"`
	Persistent bool         `json:"persistent"`
	HALinks    int          `json:"ha_links"`
	Namespaces []string     `json:"namespaces"`
	Procs      []procRecord `json:"procs"`
}

type procRecord struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // /proc/PID/stat field 22, clock ticks since boot
	Name      string `json:"name"`
}

func newPrefix() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return basePrefix + hex.EncodeToString(b[:])[:5], nil
}

func validPrefix(p string) error {
	if !strings.HasPrefix(p, basePrefix) || len(p) < len(basePrefix)+1 || len(p) > 10 {
		return fmt.Errorf("lab: prefix %q must be %q followed by 1 to 7 characters", p, basePrefix)
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("lab: prefix %q may hold only lower-case letters and digits", p)
		}
	}
	return nil
}

func lockPath(prefix string) string   { return filepath.Join(StateDir, prefix+".lock") }
func recordPath(prefix string) string { return filepath.Join(StateDir, prefix+".json") }

// acquire creates and flocks the run's lock file. The descriptor is
// close-on-exec, so processes the run starts never inherit the lock.
func acquire(prefix string) (*os.File, error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: state dir: %w", err)
	}
	f, err := os.OpenFile(lockPath(prefix), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: prefix %s is in use by a live run: %w", prefix, err)
	}
	return f, nil
}

func writeRecord(r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := recordPath(r.Prefix) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("lab: write record: %w", err)
	}
	return os.Rename(tmp, recordPath(r.Prefix))
}

func readRecord(prefix string) (*record, error) {
	b, err := os.ReadFile(recordPath(prefix))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("lab: record %s: %w", recordPath(prefix), err)
	}
	return &r, nil
}

// procStartTime returns field 22 of /proc/pid/stat, which together with the
// PID identifies a process uniquely since boot.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("lab: malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("lab: short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// RunInfo describes one registered run, as Runs lists them.
type RunInfo struct {
	Prefix     string
	Live       bool // its owner holds the lock
	Persistent bool
	Namespaces []string
}

// Runs lists lab runs found on this machine: registered ones, and
// namespaces carrying the lab's base prefix without a registry entry.
func Runs() ([]RunInfo, error) {
	byPrefix := map[string]*RunInfo{}
	get := func(p string) *RunInfo {
		if byPrefix[p] == nil {
			byPrefix[p] = &RunInfo{Prefix: p}
		}
		return byPrefix[p]
	}
	entries, err := os.ReadDir(StateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if p, ok := strings.CutSuffix(e.Name(), ".lock"); ok && validPrefix(p) == nil {
			ri := get(p)
			ri.Live = lockHeld(p)
			if r, err := readRecord(p); err == nil {
				ri.Persistent = r.Persistent
			}
		}
	}
	nss, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		if p, _, ok := strings.Cut(ns, "-"); ok && validPrefix(p) == nil {
			ri := get(p)
			ri.Namespaces = append(ri.Namespaces, ns)
		}
	}
	out := make([]RunInfo, 0, len(byPrefix))
	for _, ri := range byPrefix {
		sort.Strings(ri.Namespaces)
		out = append(out, *ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix < out[j].Prefix })
	return out, nil
}

// lockHeld reports whether a live process holds prefix's lock.
func lockHeld(prefix string) bool {
	f, err := os.OpenFile(lockPath(prefix), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// listNamespaces returns the names under /run/netns.
func listNamespaces() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, nil
}

// Sweep removes every lab run whose owner is dead, except persistent ones.
// It is safe to call while other runs are live.
func Sweep(ctx context.Context, logf func(string, ...any)) error { return sweep(ctx, logf, false) }

// SweepAll is Sweep that also removes persistent labs whose creator has
// exited (the tdlab CLI's leftovers).
func SweepAll(ctx context.Context, logf func(string, ...any)) error { return sweep(ctx, logf, true) }

func sweep(ctx context.Context, logf func(string, ...any), all bool) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	runs, err := Runs()
	if err != nil {
		return err
	}
	var errs []error
	for _, ri := range runs {
		if ri.Live || (ri.Persistent && !all) {
			continue
		}
		if err := removeRun(ctx, ri.Prefix, logf); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeRun deletes a dead run: its processes, namespaces and files. It
// takes the run's lock first, so it never races the run's owner.
func removeRun(ctx context.Context, prefix string, logf func(string, ...any)) error {
	lock, err := acquire(prefix)
	if err != nil {
		return nil // came alive, or another sweeper has it: not ours to remove
	}
	defer lock.Close()
	logf("lab: removing run %s", prefix)
	if r, err := readRecord(prefix); err == nil {
		for _, p := range r.Procs {
			killRecorded(p, logf)
		}
	}
	nss, err := listNamespaces()
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss {
		if !strings.HasPrefix(ns, prefix+"-") {
			continue
		}
		killNamespacePIDs(ctx, ns, logf)
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.Remove(recordPath(prefix))
		os.Remove(lockPath(prefix))
	}
	return errors.Join(errs...)
}

// killRecorded kills a process the run recorded, if it is still the same
// process (same PID and start time).
func killRecorded(p procRecord, logf func(string, ...any)) {
	st, err := procStartTime(p.PID)
	if err != nil || st != p.StartTime {
		return
	}
	logf("lab: killing leftover process %s (pid %d)", p.Name, p.PID)
	syscall.Kill(p.PID, syscall.SIGKILL)
}

// killNamespacePIDs kills whatever still runs inside one of the lab's own
// namespaces (children of the processes it started), so the namespace can go.
func killNamespacePIDs(ctx context.Context, ns string, logf func(string, ...any)) {
	out, err := run(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		logf("lab: killing pid %d left in namespace %s", pid, ns)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// Give the kernel a moment to reap them before the namespace goes; a
	// namespace with processes left would linger unnamed.
	for i := 0; i < 50; i++ {
		out, err := run(ctx, "ip", "netns", "pids", ns)
		if err != nil || strings.TrimSpace(string(out)) == "" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
