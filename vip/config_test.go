package vip

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		Interface: "lan0",
		VIPs:      []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("2001:db8:0:1::10/64")},
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"Interface", func(c *Config) { c.Interface = "" }},
		{"Interface", func(c *Config) { c.Interface = "a-name-far-too-long" }},
		{"Interface", func(c *Config) { c.Interface = "lan0:1" }},
		{"VIPs", func(c *Config) { c.VIPs = nil }},
		{"VIPs[1]", func(c *Config) { c.VIPs[1] = netip.Prefix{} }},
		{"VIPs[0]", func(c *Config) { c.VIPs[0] = netip.MustParsePrefix("127.0.0.1/8") }},
		{"VIPs[0]", func(c *Config) { c.VIPs[0] = netip.MustParsePrefix("224.0.0.18/32") }},
		{"VIPs[0]", func(c *Config) { c.VIPs[0] = netip.MustParsePrefix("0.0.0.0/24") }},
		{"VIPs[0]", func(c *Config) { c.VIPs[0] = netip.MustParsePrefix("255.255.255.255/32") }},
		{"VIPs[1]", func(c *Config) { c.VIPs[1] = netip.MustParsePrefix("fe80::10/64") }},
		{"VIPs[1]", func(c *Config) { c.VIPs[1] = netip.MustParsePrefix("::ffff:192.0.2.11/120") }},
		{"VIPs[0]", func(c *Config) { c.VIPs[0] = netip.MustParsePrefix("192.0.2.10/0") }},
		{"VIPs[2]", func(c *Config) { c.VIPs = append(c.VIPs, netip.MustParsePrefix("192.0.2.10/32")) }},
		{"VirtualMAC.Name", func(c *Config) { c.VirtualMAC = &VirtualMAC{Name: "", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}} }},
		{"VirtualMAC.Name", func(c *Config) { c.VirtualMAC = &VirtualMAC{Name: "lan0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}} }},
		{"VirtualMAC.MAC", func(c *Config) { c.VirtualMAC = &VirtualMAC{Name: "vmac0", MAC: net.HardwareAddr{2, 0, 0, 0, 1}} }},
		{"VirtualMAC.MAC", func(c *Config) { c.VirtualMAC = &VirtualMAC{Name: "vmac0", MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}} }},
		{"VirtualMAC.MAC", func(c *Config) { c.VirtualMAC = &VirtualMAC{Name: "vmac0", MAC: net.HardwareAddr{0, 0, 0, 0, 0, 0}} }},
		{"Announce.Repeats", func(c *Config) { c.Announce.Repeats = -2 }},
		{"Announce.Repeats", func(c *Config) { c.Announce.Repeats = 1000 }},
		{"Announce.Interval", func(c *Config) { c.Announce.Interval = time.Millisecond }},
		{"Announce.Interval", func(c *Config) { c.Announce.Interval = -time.Second }},
		{"Announce.Refresh", func(c *Config) { c.Announce.Refresh = 100 * time.Millisecond }},
		{"ProbeInterval", func(c *Config) { c.ProbeInterval = time.Millisecond }},
		{"AddrLifetime", func(c *Config) { c.AddrLifetime = time.Second }},
		{"AddrLifetime", func(c *Config) { c.AddrLifetime = 4500 * time.Millisecond }},
		{"AddrLifetime", func(c *Config) { c.AddrLifetime = -time.Second }},
	} {
		c := validConfig()
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate = %v, want ErrConfig", tc.field, err)
			continue
		}
		if !strings.Contains(err.Error(), ": "+tc.field+": ") {
			t.Errorf("Validate = %q, want it to name %s", err, tc.field)
		}
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New accepted an invalid config (%v)", tc.field, err)
		}
	}
}

func TestValidateAcceptsAndDefaults(t *testing.T) {
	c := validConfig()
	c.VirtualMAC = &VirtualMAC{Name: "vmac0", MAC: net.HardwareAddr{2, 0x74, 0x64, 0, 0, 0x10}}
	c.AddrLifetime = 30 * time.Second
	c.ProbeInterval = -1
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	d := c.withDefaults()
	if d.Announce.Repeats != DefaultRepeats || d.Announce.Interval != DefaultInterval || d.Announce.Refresh != 0 {
		t.Errorf("default schedule = %+v", d.Announce)
	}
	if d.ProbeInterval != 0 {
		t.Errorf("negative ProbeInterval became %v, want 0 (off)", d.ProbeInterval)
	}
	if d.Clock == nil || d.Logger == nil || d.Do == nil {
		t.Error("Clock, Logger or Do left nil")
	}
	// The Manager keeps its own copies: the caller may reuse its slices.
	c.VIPs[0] = netip.MustParsePrefix("198.51.100.99/32")
	c.VirtualMAC.MAC[5] = 0x99
	if d.VIPs[0].Addr() != netip.MustParseAddr("192.0.2.10") || d.VirtualMAC.MAC[5] != 0x10 {
		t.Error("withDefaults shares the caller's slices")
	}
	if d := validConfig().withDefaults(); d.ProbeInterval != DefaultProbeInterval {
		t.Errorf("ProbeInterval default = %v", d.ProbeInterval)
	}
}
