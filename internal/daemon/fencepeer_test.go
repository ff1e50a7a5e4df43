package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/wip"
)

func TestGoAloneGate(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
	g := newGoAloneGate(clk, 250*time.Millisecond)
	if err := g.check(); !errors.Is(err, wip.ErrFenced) {
		t.Fatalf("before any role: %v, want ErrFenced", err)
	}
	g.set(true, "active/paired")
	g.ticked(clk.Now())
	if err := g.check(); err != nil {
		t.Fatalf("current active: %v", err)
	}
	// Frozen: no tick for a second. Still "active", but stale: refused,
	// not fenced (the driver has not decided yet).
	clk.Advance(time.Second)
	if err := g.check(); err == nil || errors.Is(err, wip.ErrFenced) || !strings.Contains(err.Error(), "last ran") {
		t.Fatalf("stale driver: %v", err)
	}
	g.ticked(clk.Now())
	g.set(false, "passive/syncing")
	if err := g.check(); !errors.Is(err, wip.ErrFenced) || !strings.Contains(err.Error(), "passive/syncing") {
		t.Fatalf("demoted: %v", err)
	}
}
