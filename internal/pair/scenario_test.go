package pair

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/scenarios/*.txt")

// A scenario script is a list of commands, each followed by "----" and the
// expected output, ending at a blank line:
//
//	run 1s
//	----
//	   0.4002s b: persist epoch=2 role=active maint=false outdated=false
//
// go test -run TestScenarios -rewrite ./internal/pair regenerates the output;
// review every diff. The harness fails a script in which two nodes act as
// active at the same instant unless the script said allow-dual.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 25 {
		t.Errorf("%d scenario scripts, want at least 25", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type cmd struct {
	line     string
	expected string
	comments []string
}

func parseScript(t *testing.T, path string) []cmd {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []cmd
	var com []string
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			com = append(com, l)
			continue
		}
		c := cmd{line: l, comments: com}
		com = nil
		if i+1 < len(lines) && lines[i+1] == "----" {
			i += 2
			var exp []string
			for ; i < len(lines) && lines[i] != ""; i++ {
				exp = append(exp, lines[i])
			}
			c.expected = strings.Join(exp, "\n")
		}
		cmds = append(cmds, c)
	}
	return cmds
}

func runScript(t *testing.T, path string) {
	cmds := parseScript(t, path)
	var s *sim
	base := Config{}
	base.Timing, _ = Profile("default")
	var out strings.Builder
	failed := false
	for _, c := range cmds {
		for _, l := range c.comments {
			if l != "" || out.Len() > 0 {
				out.WriteString(l + "\n")
			}
		}
		if s == nil && !strings.HasPrefix(c.line, "config") {
			s = newSim(base)
		}
		var got string
		if strings.HasPrefix(c.line, "config") {
			got = configCmd(t, &base, c.line)
			s = newSim(base)
		} else {
			got = s.exec(t, c.line)
		}
		if got == "" {
			got = "ok"
		}
		out.WriteString(c.line + "\n----\n" + got + "\n\n")
		if !*rewrite && got != c.expected {
			failed = true
			t.Errorf("%s: %s: output differs\n--- want\n%s\n--- got\n%s", path, c.line, c.expected, got)
		}
	}
	if s != nil && len(s.violations) > 0 {
		t.Errorf("%s: safety violations:\n%s", path, strings.Join(s.violations, "\n"))
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if failed {
		t.Log("run with -rewrite to accept the new output (review the diff)")
	}
}

func configCmd(t *testing.T, base *Config, line string) string {
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "profile":
			tm, err := Profile(v)
			if err != nil {
				t.Fatal(err)
			}
			base.Timing = tm
		case "witness":
			base.Witness = true
		case "watchdog":
			base.Watchdog = true
		case "health":
			base.HealthFailover = true
		default:
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("config %s: %v", f, err)
			}
			if err := base.Timing.Set(k, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := *base
	c.NodeID = 1
	if err := c.Validate(); err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func (s *sim) node(t *testing.T, name string) *simNode {
	switch name {
	case "a":
		return s.nodes[0]
	case "b":
		return s.nodes[1]
	}
	t.Fatalf("unknown node %q", name)
	return nil
}

// exec runs one command and returns what it logged.
func (s *sim) exec(t *testing.T, line string) string {
	f := strings.Fields(line)
	s.log = nil
	arg := func(i int) string {
		if i >= len(f) {
			t.Fatalf("%q: missing argument %d", line, i)
		}
		return f[i]
	}
	switch f[0] {
	case "start":
		for _, name := range f[1:] {
			if strings.Contains(name, "=") || name == "maint" || name == "outdated" {
				continue
			}
			n := s.node(t, name)
			for _, o := range f[1:] {
				k, v, _ := strings.Cut(o, "=")
				switch k {
				case "epoch":
					e, _ := strconv.ParseUint(v, 10, 64)
					n.persisted.Epoch = e
				case "role":
					if v == "active" {
						n.persisted.Role = RoleActive
					}
				case "maint":
					n.persisted.Maintenance = true
				case "outdated":
					n.persisted.Outdated = true
				}
			}
			s.start(n)
		}
	case "restart":
		n := s.node(t, arg(1))
		if n.up {
			s.crash(n)
		}
		s.start(n)
	case "run":
		d, err := time.ParseDuration(arg(1))
		if err != nil {
			t.Fatal(err)
		}
		s.run(s.now.Add(d))
	case "crash":
		s.crash(s.node(t, arg(1)))
	case "kill":
		s.kill(s.node(t, arg(1)))
	case "freeze":
		s.freeze(s.node(t, arg(1)))
	case "thaw":
		s.thaw(s.node(t, arg(1)))
		s.run(s.now)
	case "cut", "heal":
		which := []string{arg(1)}
		if arg(1) == "all" {
			which = paths
		}
		dirs := []string{"a>b", "b>a"}
		if len(f) > 2 {
			dirs = []string{f[2]}
		}
		for _, p := range which {
			for _, d := range dirs {
				s.cut[p+":"+d] = f[0] == "cut"
			}
		}
		s.logf(nil, "%s", line)
	case "lan":
		n := s.node(t, arg(1))
		n.lanOK = arg(2) == "up"
		s.deliver(n, LANLink{Up: n.lanOK})
		s.run(s.now)
	case "gateway":
		s.node(t, arg(1)).gwOK = arg(2) == "up"
	case "witness":
		s.node(t, arg(1)).witnessOK = arg(2) == "up"
	case "lan-split":
		s.lanSplit = arg(1) == "on"
	case "allow-dual":
		s.allowDual = true
	case "old-advert":
		// The node runs a tandemd that predates the switchover request
		// (Advert.WantActive): the bit is lost on its way in.
		s.node(t, arg(1)).oldAdvert = true
	case "admin":
		n := s.node(t, arg(1))
		var ev Admin
		switch arg(2) {
		case "switchover":
			ev.Cmd = AdminSwitchover
		case "maintenance-on":
			ev.Cmd = AdminMaintenanceOn
		case "maintenance-off":
			ev.Cmd = AdminMaintenanceOff
		case "force-promote":
			ev.Cmd = AdminForcePromote
		case "force-promote-ack":
			ev.Cmd, ev.AckDataLoss = AdminForcePromote, true
		case "ack-alarm":
			ev.Cmd = AdminAckAlarm
			if len(f) > 3 {
				ev.Alarm = f[3]
			}
		default:
			t.Fatalf("%q: unknown admin command", line)
		}
		s.deliver(n, ev)
		s.run(s.now)
	case "repl":
		n := s.node(t, arg(1))
		var st ReplState
		switch arg(2) {
		case "outdated":
			st = ReplOutdated
		case "inconsistent":
			st = ReplInconsistent
		case "failed":
			// The store failed (disk full): it reports Failed from now
			// on, and as a secondary it is Inconsistent. Reported at
			// once, as the daemon's poll does before it hands over.
			n.storeFailed = true
			s.reportRepl(n)
			return strings.Join(s.log, "\n")
		case "auto":
			n.forcedRepl, n.storeFailed = nil, false
			return strings.Join(s.log, "\n")
		default:
			t.Fatalf("%q: unknown replication state", line)
		}
		n.forcedRepl = &st
	case "fail":
		n := s.node(t, arg(1))
		for k, name := range actionNames {
			if name == arg(2) {
				n.failNext[k] = true
			}
		}
	case "vip-conflict":
		s.deliver(s.node(t, arg(1)), VIPConflict{MAC: arg(2)})
		s.run(s.now)
	case "jump":
		d, err := time.ParseDuration(arg(2))
		if err != nil {
			t.Fatal(err)
		}
		s.deliver(s.node(t, arg(1)), ClockJump{Delta: d})
		s.run(s.now)
	case "stop":
		s.deliver(s.node(t, arg(1)), Stop{})
		s.run(s.now)
	case "status":
		return s.status()
	default:
		t.Fatalf("unknown command %q", line)
	}
	return strings.Join(s.log, "\n")
}

var _ = fmt.Sprint
