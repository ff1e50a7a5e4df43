package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// Fault is one injected fault. Clear undoes it; clearing twice is harmless.
type Fault struct {
	desc  string
	lab   *Lab
	once  sync.Once
	undo  []func(context.Context) error // run in reverse order
	err   error
	owned bool
}

func (f *Fault) String() string { return f.desc }

// Clear removes the fault.
func (f *Fault) Clear() error {
	f.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var errs []error
		for i := len(f.undo) - 1; i >= 0; i-- {
			if err := f.undo[i](ctx); err != nil {
				errs = append(errs, err)
			}
		}
		f.err = errors.Join(errs...)
		if f.owned {
			f.lab.mu.Lock()
			delete(f.lab.faults, f)
			f.lab.mu.Unlock()
		}
		f.lab.logf("lab: cleared %s", f.desc)
	})
	return f.err
}

// newFault registers a fault with the lab so Close clears it.
func (l *Lab) newFault(desc string) (*Fault, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: fault on a closed lab")
	}
	f := &Fault{desc: desc, lab: l, owned: true}
	l.faults[f] = true
	return f, nil
}

// install runs the fault's set-up steps; on failure it undoes what was done.
func (l *Lab) install(f *Fault, steps ...func(*Fault) error) (*Fault, error) {
	for _, s := range steps {
		if err := s(f); err != nil {
			return nil, errors.Join(err, f.Clear())
		}
	}
	l.logf("lab: %s", f.desc)
	return f, nil
}

func (l *Lab) tableName() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextTable++
	return fmt.Sprintf("tdl_f%d", l.nextTable)
}

func (l *Lab) checkIf(host, ifname string) (*Host, error) {
	h, ok := l.hosts[host]
	if !ok {
		return nil, fmt.Errorf("lab: no host %q", host)
	}
	switch ifname {
	case LANIf:
		return h, nil
	case HA1If, HA2If:
		idx := 0
		if ifname == HA2If {
			idx = 1
		}
		if idx >= len(h.HA) {
			return nil, fmt.Errorf("lab: host %s has no %s", host, ifname)
		}
		return h, nil
	}
	return nil, fmt.Errorf("lab: unknown interface %q (want %s, %s or %s)", ifname, LANIf, HA1If, HA2If)
}

// CutLink pulls the cable of host's interface ifname at its far end (the
// fabric port goes down): the host sees NO-CARRIER, its own configuration
// stays. Clear plugs it back.
func (l *Lab) CutLink(ctx context.Context, host, ifname string) (*Fault, error) {
	if _, err := l.checkIf(host, ifname); err != nil {
		return nil, err
	}
	f, err := l.newFault(fmt.Sprintf("cable of %s/%s cut", host, ifname))
	if err != nil {
		return nil, err
	}
	port := l.FabricPort(host, ifname)
	return l.install(f, func(f *Fault) error {
		if _, err := run(ctx, "ip", "-n", l.fabric, "link", "set", port, "down"); err != nil {
			return err
		}
		f.undo = append(f.undo, func(ctx context.Context) error {
			_, err := run(ctx, "ip", "-n", l.fabric, "link", "set", port, "up")
			return err
		})
		return nil
	})
}

// CutAll pulls every cable of host at once (one `ip -batch` call sets all
// its fabric ports down). Together with killing its processes it models
// the host losing power.
func (l *Lab) CutAll(ctx context.Context, host string) (*Fault, error) {
	h, ok := l.hosts[host]
	if !ok {
		return nil, fmt.Errorf("lab: no host %q", host)
	}
	ifs := []string{LANIf}
	for i := range h.HA {
		ifs = append(ifs, []string{HA1If, HA2If}[i])
	}
	f, err := l.newFault(fmt.Sprintf("all cables of %s cut", host))
	if err != nil {
		return nil, err
	}
	batch := func(state string) []byte {
		var b strings.Builder
		for _, ifn := range ifs {
			fmt.Fprintf(&b, "link set %s %s\n", l.FabricPort(host, ifn), state)
		}
		return []byte(b.String())
	}
	return l.install(f, func(f *Fault) error {
		if _, err := runInput(ctx, batch("down"), "ip", "-n", l.fabric, "-batch", "-"); err != nil {
			return err
		}
		f.undo = append(f.undo, func(ctx context.Context) error {
			_, err := runInput(ctx, batch("up"), "ip", "-n", l.fabric, "-batch", "-")
			return err
		})
		return nil
	})
}

// Partition silently drops every frame between hosts h1 and h2, in both
// directions, on every segment they share (the LAN, and the HA links when
// both are nodes). Links stay up; other hosts are not affected.
func (l *Lab) Partition(ctx context.Context, h1, h2 string) (*Fault, error) {
	a, ok1 := l.hosts[h1]
	b, ok2 := l.hosts[h2]
	if !ok1 || !ok2 || h1 == h2 {
		return nil, fmt.Errorf("lab: Partition(%q, %q): want two distinct hosts", h1, h2)
	}
	ports := func(h *Host) string {
		ps := []string{quote(l.FabricPort(h.Name, LANIf))}
		for i := range h.HA {
			ps = append(ps, quote(l.FabricPort(h.Name, []string{HA1If, HA2If}[i])))
		}
		return "{ " + strings.Join(ps, ", ") + " }"
	}
	table := l.tableName()
	script := fmt.Sprintf(`table bridge %s {
	chain forward {
		type filter hook forward priority -200; policy accept;
		iifname %s oifname %s drop
		iifname %s oifname %s drop
	}
}
`, table, ports(a), ports(b), ports(b), ports(a))
	f, err := l.newFault(fmt.Sprintf("partition %s | %s", h1, h2))
	if err != nil {
		return nil, err
	}
	return l.install(f, l.nftStep(ctx, l.fabric, "bridge", table, script))
}

// Impairment describes what happens to packets a host sends on one
// interface, in the spirit of netem.
type Impairment struct {
	// Loss is the percentage (0-100) of frames dropped, ARP included.
	Loss float64
	// Duplicate is the percentage of IP/IPv6 packets the host originates
	// that are sent twice.
	Duplicate float64
	// Delay holds IP/IPv6 packets for Delay ± Jitter (uniform).
	Delay, Jitter time.Duration
	// Reorder is the percentage of delayed packets sent at once instead,
	// overtaking those held before them. Needs Delay > 0.
	Reorder float64
}

func (im Impairment) String() string {
	var parts []string
	if im.Loss > 0 {
		parts = append(parts, fmt.Sprintf("loss %g%%", im.Loss))
	}
	if im.Duplicate > 0 {
		parts = append(parts, fmt.Sprintf("duplicate %g%%", im.Duplicate))
	}
	if im.Delay > 0 {
		s := "delay " + im.Delay.String()
		if im.Jitter > 0 {
			s += " ± " + im.Jitter.String()
		}
		parts = append(parts, s)
	}
	if im.Reorder > 0 {
		parts = append(parts, fmt.Sprintf("reorder %g%%", im.Reorder))
	}
	return strings.Join(parts, ", ")
}

func (im Impairment) validate() error {
	pct := func(name string, v float64) error {
		if v < 0 || v > 100 || math.IsNaN(v) {
			return fmt.Errorf("lab: Impairment.%s = %g: want a percentage in [0, 100]", name, v)
		}
		return nil
	}
	if err := errors.Join(pct("Loss", im.Loss), pct("Duplicate", im.Duplicate), pct("Reorder", im.Reorder)); err != nil {
		return err
	}
	if im.Delay < 0 || im.Jitter < 0 || im.Jitter > im.Delay {
		return fmt.Errorf("lab: Impairment delay %v jitter %v: want 0 <= jitter <= delay", im.Delay, im.Jitter)
	}
	if im.Reorder > 0 && im.Delay == 0 {
		return errors.New("lab: Impairment.Reorder needs a Delay (reordered packets overtake delayed ones)")
	}
	if im == (Impairment{}) {
		return errors.New("lab: empty Impairment")
	}
	return nil
}

// Impair applies im to what host sends on ifname. Clear removes it. Several
// impairments may be stacked on one interface.
func (l *Lab) Impair(ctx context.Context, host, ifname string, im Impairment) (*Fault, error) {
	h, err := l.checkIf(host, ifname)
	if err != nil {
		return nil, err
	}
	if err := im.validate(); err != nil {
		return nil, err
	}
	f, err := l.newFault(fmt.Sprintf("impair %s/%s: %s", host, ifname, im))
	if err != nil {
		return nil, err
	}
	var steps []func(*Fault) error
	if im.Loss > 0 {
		// Dropped on the way into the fabric: the host's own stack sees
		// nothing unusual, as with loss on a real wire.
		table := l.tableName()
		port := l.FabricPort(host, ifname)
		script := fmt.Sprintf(`table netdev %s {
	chain loss {
		type filter hook ingress device %s priority -100; policy accept;
		numgen random mod 10000 < %d drop
	}
}
`, table, quote(port), int(math.Round(im.Loss*100)))
		steps = append(steps, l.nftStep(ctx, l.fabric, "netdev", table, script))
	}
	if im.Duplicate > 0 {
		table := l.tableName()
		n := int(math.Round(im.Duplicate * 100))
		script := fmt.Sprintf(`table ip %[1]s {
	chain out {
		type filter hook output priority 0; policy accept;
		oifname %[2]s numgen random mod 10000 < %[3]d dup to ip daddr device %[2]s
	}
}
table ip6 %[1]s {
	chain out {
		type filter hook output priority 0; policy accept;
		oifname %[2]s numgen random mod 10000 < %[3]d dup to ip6 daddr device %[2]s
	}
}
`, table, quote(ifname), n)
		steps = append(steps, func(f *Fault) error {
			if err := nft(ctx, h.NS, script); err != nil {
				return err
			}
			f.undo = append(f.undo, func(ctx context.Context) error {
				return nft(ctx, h.NS, fmt.Sprintf("delete table ip %s\ndelete table ip6 %s\n", table, table))
			})
			return nil
		})
	}
	if im.Delay > 0 {
		steps = append(steps, func(f *Fault) error { return l.startDelay(ctx, f, h, ifname, im) })
	}
	return l.install(f, steps...)
}

// nftStep loads an nftables table into ns and registers its deletion.
func (l *Lab) nftStep(ctx context.Context, ns, family, table, script string) func(*Fault) error {
	return func(f *Fault) error {
		if err := nft(ctx, ns, script); err != nil {
			return err
		}
		f.undo = append(f.undo, func(ctx context.Context) error {
			return nft(ctx, ns, fmt.Sprintf("delete table %s %s\n", family, table))
		})
		return nil
	}
}

func quote(s string) string { return `"` + s + `"` }
