// Package testenv decides, in one place, what a test does when something it
// needs is missing from the machine, hands out the loopback ports that
// tests must know before anything listens on them (LoopbackAddr, ports.go),
// and serves a test's listener (Serve, serve.go).
//
// The rule (DEVELOPERS.md): under CI=true a missing prerequisite fails the
// run; it never skips. Outside CI a developer without root may skip the lab
// tests, and `go test -short` skips them on purpose (make check). The
// internal/lint test forbids calling t.Skip anywhere but here, so every skip
// in the module goes through these functions and obeys the rule.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run under CI (CI=true), where nothing may be skipped.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipIfShort skips t in -short mode (make check runs the unit tests this way).
// Under CI=true it does nothing: CI runs everything.
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() && !CI() {
		t.Skipf("skipped in -short mode: %s", why)
	}
}

// Missing reports a missing prerequisite: a failure under CI=true, a skip
// otherwise, with the reason in both cases.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("prerequisite missing under CI=true (this is a failure, not a skip): %s", msg)
	}
	t.Skipf("prerequisite missing: %s (run as root via `make test`)", msg)
}

// RequireRoot requires root and network-namespace support, the conditions of
// every lab test. It also skips in -short mode.
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipIfShort(t, "lab test (root, network namespaces)")
	if os.Geteuid() != 0 {
		Missing(t, "lab tests need root (euid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		Missing(t, "no network namespace support: %v", err)
	}
}

// RequireCommands requires the named programs on PATH.
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Missing(t, "%s not on PATH (make test installs it): %v", n, err)
		}
	}
}

// RequireFUSE requires root and a usable /dev/fuse, the conditions of a
// test that mounts hangfs (test/lab/hangfs). It also skips in -short mode.
func RequireFUSE(t testing.TB) {
	t.Helper()
	SkipIfShort(t, "FUSE test (root, /dev/fuse)")
	if os.Geteuid() != 0 {
		Missing(t, "hangfs mounts FUSE file systems and needs root (euid %d)", os.Geteuid())
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		Missing(t, "no usable /dev/fuse (make test loads the fuse module): %v", err)
	}
	f.Close()
}
