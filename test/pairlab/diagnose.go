package pairlab

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Diagnose describes a node's running tandemd for a failed test: the
// state and kernel wait channel of each of its threads (a process stopped
// by a signal shows as "T", one waiting on a disk as "D"), then the Go
// runtime's dump of every goroutine, which a SIGQUIT makes it write to
// its log before it exits (a stopped process is continued first so that
// it can). It waits up to grace for the exit. It says so when no tandemd
// runs. The dump is compacted (compactDump) and cut to maxLines lines.
func (n *Node) Diagnose(grace time.Duration, maxLines int) string {
	p := n.Proc()
	if p == nil || p.Exited() {
		return n.Name + ": no tandemd running"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: tandemd pid %d: %s\n", n.Name, p.PID, threadStates(p.PID))
	before := len(n.Log())
	syscall.Kill(p.PID, syscall.SIGCONT)
	if err := syscall.Kill(p.PID, syscall.SIGQUIT); err != nil {
		fmt.Fprintf(&b, "SIGQUIT: %v\n", err)
		return b.String()
	}
	t := clock.Real().NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.Done():
	case <-t.C():
		fmt.Fprintf(&b, "no exit %v after SIGQUIT\n", grace)
	}
	dump := n.Log()
	if len(dump) < before {
		before = 0
	}
	dump = dump[before:]
	if i := strings.Index(dump, "SIGQUIT: quit"); i >= 0 {
		dump = dump[i:]
	}
	lines := compactDump(strings.Split(strings.TrimRight(dump, "\n"), "\n"))
	if len(lines) > maxLines {
		lines = append(lines[:maxLines], fmt.Sprintf("... (%d more lines of the dump in %s)", len(lines)-maxLines, n.LogPath))
	}
	b.WriteString(strings.Join(lines, "\n"))
	return b.String()
}

// threadStates summarizes /proc/PID/task/*/{stat,wchan}: how many threads
// are in each state, with their wait channels.
func threadStates(pid int) string {
	root := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(root)
	if err != nil {
		return err.Error()
	}
	count := map[string]int{}
	for _, t := range tasks {
		dir := filepath.Join(root, t.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // the thread exited
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		s := string(stat)
		state := "?"
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			state = s[i+2 : i+3]
		}
		wchan, _ := os.ReadFile(filepath.Join(dir, "wchan"))
		w := strings.TrimSpace(string(wchan))
		if w == "" || w == "0" {
			w = "-"
		}
		count[state+" "+w]++
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %s", count[k], k))
	}
	return fmt.Sprintf("%d threads (state wchan): %s", len(tasks), strings.Join(parts, ", "))
}

// compactDump keeps, of a Go traceback, each goroutine's header line
// ("goroutine 7 [select, 2 minutes]:") and its first four calls outside
// package runtime, without file lines and frame addresses; other lines
// (the signal's header) are kept as they are.
func compactDump(lines []string) []string {
	var out []string
	calls := -1 // calls kept of the current goroutine; -1: outside one
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "goroutine "):
			out, calls = append(out, l), 0
		case calls < 0:
			if l != "" {
				out = append(out, l)
			}
		case l == "" || strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "runtime.") || calls >= 4:
		default:
			if i := strings.LastIndexByte(l, '('); i > 0 && strings.HasSuffix(l, ")") {
				l = l[:i] // the arguments
			}
			out, calls = append(out, "    "+l), calls+1
		}
	}
	return out
}
