package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
)

func switchoverCmd(o *options) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "switchover [--wait]",
		Short: "Hand the active role to the other node (run on either node)",
		Long: "On the active: it pauses its runtime, waits until the passive has acknowledged every\n" +
			"commit, releases the VIP and hands over; the passive promotes at once. On the passive:\n" +
			"it asks the active to do the same (the request rides on its heartbeats and stands for\n" +
			"switchover-timeout). Refused unless the passive is in sync.\n\n" +
			"With --wait it returns once the other node is active in a new epoch and the old active\n" +
			"is passive and in sync with it, and says how long each took (this node's status,\n" +
			"polled every 20 ms). --timeout bounds the wait (with --wait its default is 2m: the\n" +
			"pause waits for in-flight jobs up to runtime.force-stop-after, and the daemon gives\n" +
			"up after switchover-timeout). `tandemctl drill` runs it there and back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if wait {
				legTimeout(cmd, o, 1)
			}
			c, ctx, cancel := o.client()
			defer cancel()
			if !wait {
				r, err := c.Switchover(ctx)
				if err != nil {
					return err
				}
				return printResult(o, r)
			}
			t, err := switchoverLeg(ctx, o, c)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(t)
			}
			fmt.Fprintln(o.out, t)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the other node to be active and the old active in sync, and print the times")
	return cmd
}

func drillCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "drill",
		Short: "Failover drill: switch over to the other node and back, and report the times",
		Long: "Runs `switchover --wait` twice from this node: the role goes to the other node and\n" +
			"comes back, each leg waiting until the new active is seen and the old one is passive\n" +
			"and in sync. Both nodes must be healthy and in sync. Every in-flight job pauses\n" +
			"twice and resumes where it was; run it in a quiet hour. --timeout bounds the whole\n" +
			"drill (default here 4m, 2m a leg). A leg that does not finish stops the drill with\n" +
			"what it saw; the pair is left as that leg left it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			legTimeout(cmd, o, 2)
			c, ctx, cancel := o.client()
			defer cancel()
			var d DrillReport
			for leg := 1; leg <= 2; leg++ {
				t, err := switchoverLeg(ctx, o, c)
				if err != nil {
					return fmt.Errorf("drill, leg %d of 2: %w", leg, err)
				}
				d.Legs = append(d.Legs, t)
				if !o.json {
					fmt.Fprintf(o.out, "leg %d: %s\n", leg, t)
				}
			}
			if o.json {
				return o.printJSON(d)
			}
			fmt.Fprintf(o.out, "drill passed: %s active again in epoch %d\n", d.Legs[1].To, d.Legs[1].Epoch)
			return nil
		},
	}
}

// legTimeout: unless --timeout was given, a command that waits for legs
// of a switchover gets 2 minutes a leg, not the 30 s of a plain request.
// A leg's pause waits for in-flight jobs (up to force-stop-after, or the
// daemon's switchover-timeout, 60 s by default).
func legTimeout(cmd *cobra.Command, o *options, legs int) {
	if !cmd.Flags().Changed("timeout") {
		o.timeout = time.Duration(legs) * 2 * time.Minute
	}
}

// SwitchoverTimes is one switchover as `switchover --wait` reports it
// (--json), and a leg of a drill. The times run from the command.
type SwitchoverTimes struct {
	From        string        `json:"from"`   // the node that was active
	To          string        `json:"to"`     // the node that took over
	Epoch       uint64        `json:"epoch"`  // the new active's epoch
	ActiveAfter time.Duration `json:"active"` // to the new active seen
	SyncAfter   time.Duration `json:"in_sync"`
}

func (t SwitchoverTimes) String() string {
	return fmt.Sprintf("%s active in epoch %d after %v; %s passive and in sync after %v",
		t.To, t.Epoch, t.ActiveAfter.Round(time.Millisecond), t.From, t.SyncAfter.Round(time.Millisecond))
}

// DrillReport is what `drill --json` prints.
type DrillReport struct {
	Legs []SwitchoverTimes `json:"legs"`
}

// passiveRole: a passive node shows as "maintenance" while the pair is in
// maintenance mode.
func passiveRole(role string) bool { return role == "passive" || role == "maintenance" }

// switchoverLeg starts a switchover on this node, active or passive, and
// waits until the other node is active in a newer epoch and the old
// active passive and in sync, all read from this node's status.
func switchoverLeg(ctx context.Context, o *options, c *api.Client) (SwitchoverTimes, error) {
	clk := clock.Real()
	before, err := c.Status(ctx)
	if err != nil {
		return SwitchoverTimes{}, err
	}
	here := before.Role == "active"
	t := SwitchoverTimes{From: before.Node, To: before.Peer}
	if !here {
		t.From, t.To = before.Peer, before.Node
	}
	start := clk.Now()
	r, err := c.Switchover(ctx)
	if err != nil {
		return t, err
	}
	if !o.json {
		fmt.Fprintln(o.out, r.Text)
	}
	asked := false // this node's status showed its request standing
	for {
		st, err := c.Status(ctx)
		el := clk.Since(start)
		if err == nil {
			// A tandemd older than switchover_ready sets neither field:
			// its own view of "in sync" is all there is.
			if !st.SwitchoverReady && st.SwitchoverBlocked == "" {
				st.SwitchoverReady = true
			}
			if here {
				if t.ActiveAfter == 0 && st.PeerView.Role == "active" && st.PeerView.Epoch > before.Epoch {
					t.ActiveAfter, t.Epoch = el, st.PeerView.Epoch
				}
				// In sync as the pair machine sees it: the next leg,
				// asked here, would be accepted.
				if t.ActiveAfter != 0 && passiveRole(st.Role) && st.SubState == "in-sync" && st.SwitchoverReady {
					t.SyncAfter = el
					return t, nil
				}
			} else {
				asked = asked || st.SwitchoverRequested
				if t.ActiveAfter == 0 && st.Role == "active" && st.Epoch > before.Epoch {
					t.ActiveAfter, t.Epoch = el, st.Epoch
				}
				// The peer in sync as the pair machine sees it (its store's
				// view comes first): a switchover back would be accepted.
				if t.ActiveAfter != 0 && st.SwitchoverReady {
					t.SyncAfter = el
					return t, nil
				}
				// The request ended without this node taking over: the
				// machine withdrew it (the alarm says why).
				if t.ActiveAfter == 0 && !st.SwitchoverRequested && (asked || el > time.Second) {
					why := "the request was withdrawn"
					for _, a := range st.Alarms {
						if a.ID == "switchover-failed" {
							why = a.Text
						}
					}
					return t, fmt.Errorf("switchover requested, but %s is still %s after %v: %s",
						before.Node, st.Role, el.Round(time.Millisecond), why)
				}
			}
		}
		if err := clock.Sleep(ctx, clk, 20*time.Millisecond); err != nil {
			state := "not active yet"
			if t.ActiveAfter != 0 {
				state = "active"
			}
			return t, fmt.Errorf("switchover accepted, but after %v %s is %s and %s not yet passive in sync: %w",
				clk.Since(start).Round(time.Millisecond), t.To, state, t.From, err)
		}
	}
}
