// Package cli is tandemctl's command tree. It is a package, not just a
// main, because the same tree is served to operators over SSH and the
// serial console: everything an operator can do from a shell is here, and
// nothing here touches the daemon except through the local API (package
// api), so the CLI can never bypass the state machine.
//
// Output is meant for people by default and for scripts with --json (the API
// types, unchanged). Exit status: 0 success, 1 the daemon refused or failed,
// 2 usage error, 3 the daemon cannot be reached.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/latency"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitUnreachable = 3
)

// DefaultSocket is where tandemd serves its API unless configured otherwise.
const DefaultSocket = "/run/tandem/tandemd.sock"

type options struct {
	socket  string
	json    bool
	timeout time.Duration
	out     io.Writer
	ran     bool // the command line parsed: errors after this are not usage errors
}

// usageError marks a command line the command itself rejected.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// New returns the root command writing to out.
func New(out io.Writer) *cobra.Command { return newRoot(&options{out: out}) }

func newRoot(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:              "tandemctl",
		Short:            "Manage a Tandem HA pair",
		SilenceUsage:     true,
		SilenceErrors:    true,
		PersistentPreRun: func(*cobra.Command, []string) { o.ran = true },
	}
	sock := os.Getenv("TANDEM_SOCKET")
	if sock == "" {
		sock = DefaultSocket
	}
	root.PersistentFlags().StringVar(&o.socket, "socket", sock, "tandemd's API socket (env TANDEM_SOCKET)")
	root.PersistentFlags().BoolVar(&o.json, "json", false, "print the API's JSON, for scripts")
	root.PersistentFlags().DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	root.SetOut(o.out)
	root.AddCommand(statusCmd(o), eventsCmd(o), switchoverCmd(o), drillCmd(o), maintenanceCmd(o), forcePromoteCmd(o), ackAlarmCmd(o), backupCmd(o), backupsCmd(o), verifyCmd(o), connectorCmd(o))
	root.AddCommand(runtimeCmds(o)...)
	return root
}

// Execute runs the command line args and returns the exit status.
func Execute(args []string, out, errOut io.Writer) int {
	o := &options{out: out}
	root := newRoot(o)
	root.SetArgs(args)
	root.SetErr(errOut)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(errOut, "tandemctl:", err)
	var ae *api.Error
	var ue usageError
	switch {
	case !o.ran || errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ae):
		return ExitFailed
	case strings.Contains(err.Error(), "cannot reach tandemd"):
		return ExitUnreachable
	}
	return ExitFailed
}

func (o *options) client() (*api.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	return api.NewClient(o.socket), ctx, cancel
}

func (o *options) printJSON(v any) error {
	enc := json.NewEncoder(o.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the pair: roles, epoch, paths, replication, VIP, alarms",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(st)
			}
			PrintStatus(o.out, st)
			return nil
		},
	}
}

func eventsCmd(o *options) *cobra.Command {
	var after uint64
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the daemon's recent events",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			evs, err := c.Events(ctx, after)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(evs)
			}
			for _, e := range evs {
				fmt.Fprintf(o.out, "%6d  %s  %-11s %s\n", e.Seq, e.Time.Format("2006-01-02 15:04:05.000"), e.Kind, e.Text)
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "only events with a sequence number above this")
	return cmd
}

func printResult(o *options, r api.ActionResult) error {
	if o.json {
		return o.printJSON(r)
	}
	fmt.Fprintln(o.out, r.Text)
	return nil
}

func maintenanceCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:       "maintenance on|off",
		Short:     "Turn maintenance mode on (no automatic failover; survives restarts) or off",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"on", "off"},
		RunE: func(_ *cobra.Command, args []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			r, err := c.Maintenance(ctx, args[0] == "on")
			if err != nil {
				return err
			}
			return printResult(o, r)
		},
	}
}

func ackAlarmCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "ack-alarm ID",
		Short: "Acknowledge an alarm that records an event, which clears it",
		Long: "Some alarms record an event (a failed switchover, a forced promotion, a VIP\n" +
			"conflict, a quarantined WIP suffix): they stand until acknowledged, and status marks\n" +
			"them \"until acknowledged\". The others stand while their condition holds and clear\n" +
			"by themselves; acknowledging one is refused with the condition that clears it.\n" +
			"The acknowledgement clears the alarm on this node only and changes nothing else.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			r, err := c.AckAlarm(ctx, args[0])
			if err != nil {
				return err
			}
			return printResult(o, r)
		},
	}
}

func backupCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "backup",
		Short: "Back up the WIP store now, into backup.dir (then prune to backup.keep)",
		Long: "Takes a consistent backup of this node's WIP store (a pebble checkpoint with a manifest\n" +
			"of the lineage it holds) while the pair runs. The active also takes them every\n" +
			"backup.every. Restore one with `tandemd restore` on a stopped node.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			b, err := c.Backup(ctx)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(b)
			}
			fmt.Fprintf(o.out, "backup %s: epoch %d, LSN %d, %s, took %v\n", b.Path, b.Epoch, b.LSN, mib(b.Bytes), b.Took.Round(time.Millisecond))
			return nil
		},
	}
}

func verifyCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Read this node's whole WIP store back now, checking every block",
		Long: "Reads every block of every level of this node's WIP store and checks its checksum,\n" +
			"as the passive does every replication.verify-every. A corrupt store raises the alarm\n" +
			"wip-corrupt: a passive then resyncs from the active by snapshot, and an active hands over\n" +
			"to an in-sync passive. On the active the read competes with the commits.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			v, err := c.Verify(ctx)
			if err != nil {
				return err
			}
			if o.json {
				if err := o.printJSON(v); err != nil {
					return err
				}
			} else if v.Fault == "" {
				fmt.Fprintf(o.out, "store read back: %d keys, no corruption, took %v\n", v.Keys, v.Took)
			}
			if v.Fault != "" {
				return fmt.Errorf("store read-back failed: %s (see the wip-corrupt alarm in `tandemctl status`)", v.Fault)
			}
			return nil
		},
	}
}

func backupsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "backups",
		Short: "List the backups in backup.dir, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			bs, err := c.Backups(ctx)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(bs)
			}
			if len(bs) == 0 {
				fmt.Fprintln(o.out, "no backups")
				return nil
			}
			for _, b := range bs {
				fmt.Fprintf(o.out, "%s  node %-4s epoch %-4d LSN %-10d %10s  %s\n", b.Created.UTC().Format(time.RFC3339), b.Node, b.Epoch, b.LSN, mib(b.Bytes), b.Path)
			}
			return nil
		},
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func forcePromoteCmd(o *options) *cobra.Command {
	var ack bool
	cmd := &cobra.Command{
		Use:   "force-promote --i-accept-data-loss",
		Short: "Promote this node although its data may be stale (operator decision)",
		Long: "Promotes this node even when it is Outdated or Inconsistent, or the tie-breaker\n" +
			"cannot confirm the peer is gone. Commits the peer made that this node never received\n" +
			"are lost to the pair (they are quarantined if the peer returns). Use only when the\n" +
			"peer is known to be down for good.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if !ack {
				return usageError{"force-promote needs --i-accept-data-loss (see --help)"}
			}
			c, ctx, cancel := o.client()
			defer cancel()
			r, err := c.ForcePromote(ctx, true)
			if err != nil {
				return err
			}
			return printResult(o, r)
		},
	}
	cmd.Flags().BoolVar(&ack, "i-accept-data-loss", false, "acknowledge that commits this node lacks are lost")
	return cmd
}

// PrintStatus writes a readable pair summary.
func PrintStatus(w io.Writer, st api.Status) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return roundAgo(st.Now.Sub(t)) + " ago"
	}
	role := strings.ToUpper(st.Role)
	if st.SubState != "" {
		role += " (" + st.SubState + ")"
	}
	fmt.Fprintf(w, "node %s: %s, epoch %d, since %s\n", st.Node, role, st.Epoch, ago(st.RoleSince))
	if st.Maintenance {
		fmt.Fprintln(w, "  MAINTENANCE: automatic failover is off")
	}
	pv := st.PeerView
	peer := "silent"
	if pv.Alive {
		peer = fmt.Sprintf("%s, epoch %d, data %s", pv.Role, pv.Epoch, orDash(pv.DataState))
	}
	fmt.Fprintf(w, "peer %s: %s, last heartbeat %s\n", st.Peer, peer, ago(pv.LastSeen))
	switch {
	case st.SwitchoverRequested:
		fmt.Fprintln(w, "switchover: requested here, waiting for the peer to hand over")
	case st.SwitchoverReady:
		fmt.Fprintln(w, "switchover: ready")
	case st.SwitchoverBlocked != "":
		fmt.Fprintf(w, "switchover: not now (%s)\n", st.SwitchoverBlocked)
	}
	fmt.Fprintln(w, "paths:")
	for _, p := range st.Paths {
		state := "DOWN"
		if p.Up {
			state = "up"
		}
		fmt.Fprintf(w, "  %-5s %-4s rtt %-9s loss %5.1f%%  last seen %s", p.Name, state, p.RTT.Round(time.Microsecond), p.Loss*100, ago(p.LastSeen))
		if p.Dropped > 0 {
			fmt.Fprintf(w, "  (%d invalid datagrams dropped)", p.Dropped)
		}
		fmt.Fprintln(w)
	}
	r := st.Replication
	fmt.Fprintf(w, "replication: %s, %s, data %s, peer %s\n", orDash(r.Role), orDash(r.Mode), orDash(r.DataState), orDash(r.PeerState))
	fmt.Fprintf(w, "  committed LSN %d, peer acked %d, lag %d batches / %d bytes / %s\n",
		r.CommittedLSN, r.PeerAckedLSN, r.LagBatches, r.LagBytes, r.LagTime.Round(time.Millisecond))
	fmt.Fprint(w, latencyLine(r.RecentLatency))
	if r.Session != "" {
		fmt.Fprintf(w, "  session %s\n", r.Session)
	}
	if r.PeerCatchUp != "" {
		window := "empty"
		if r.RetainedFirst != 0 {
			window = fmt.Sprintf("LSN %d..%d, %d bytes", r.RetainedFirst, r.RetainedLast, r.RetainedBytes)
		}
		fmt.Fprintf(w, "  retained log %s; %s\n", window, peerCatchUp(r))
	}
	if !r.NextDialAt.IsZero() {
		why := ""
		if r.DialError != "" {
			why = " (" + r.DialError + ")"
		}
		fmt.Fprintf(w, "  not connected%s: next attempt in %s\n", why, roundAgo(max(r.NextDialAt.Sub(st.Now), 0)))
	}
	switch {
	case r.LastError != "" && r.LastErrorAt.IsZero(): // from a tandemd that does not say when
		fmt.Fprintf(w, "  last error: %s\n", r.LastError)
	case r.LastError != "":
		fmt.Fprintf(w, "  last error %s: %s\n", ago(r.LastErrorAt), r.LastError)
	}
	owner := "not here"
	if st.VIP.Owned {
		owner = "owned here since " + ago(st.VIP.Since)
	}
	fmt.Fprintf(w, "vip: %s: %s", strings.Join(st.VIP.Addresses, " "), owner)
	if st.VIP.VirtualMAC != "" {
		fmt.Fprintf(w, " (virtual MAC %s)", st.VIP.VirtualMAC)
	}
	fmt.Fprintln(w)
	tb := "gateway UNREACHABLE"
	if st.TieBreaker.GatewayReachable {
		tb = "gateway reachable"
	}
	if st.TieBreaker.Witness != "" {
		tb += ", witness " + st.TieBreaker.Witness
	}
	fmt.Fprintf(w, "tie-breaker: %s (checked %s)\n", tb, ago(st.TieBreaker.Checked))
	fmt.Fprintf(w, "runtime: %s, %d jobs running, %d finished jobs purged\n", orDash(st.Runtime.State), st.Runtime.Running, st.Runtime.Purged)
	switch b := st.Backup; {
	case b.Dir == "":
		fmt.Fprintln(w, "backup: off (backup.dir not set)")
	default:
		sched := "on demand only"
		if b.Every > 0 {
			sched = "every " + b.Every.String() + " on the active"
		}
		last := "none taken by this run"
		if b.Last != nil {
			last = fmt.Sprintf("last %s (epoch %d, LSN %d, %s)", ago(b.Last.Created), b.Last.Epoch, b.Last.LSN, mib(b.Last.Bytes))
		}
		fmt.Fprintf(w, "backup: %s, %s, keep %d, in %s\n", last, sched, b.Keep, b.Dir)
		if b.LastError != "" {
			fmt.Fprintf(w, "  LAST ATTEMPT FAILED %s: %s\n", ago(b.LastErrorAt), b.LastError)
		}
	}
	if len(st.Alarms) == 0 {
		fmt.Fprintln(w, "alarms: none")
	} else {
		fmt.Fprintln(w, "alarms:")
		alarms := append([]api.Alarm(nil), st.Alarms...)
		sort.Slice(alarms, func(i, j int) bool { return alarms[i].Since.Before(alarms[j].Since) })
		for _, a := range alarms {
			until := ""
			if a.Latched {
				until = "; until acknowledged: tandemctl ack-alarm " + a.ID
			}
			fmt.Fprintf(w, "  %-8s %s (%s, since %s%s)\n", strings.ToUpper(a.Severity), a.Text, a.ID, ago(a.Since), until)
		}
	}
	if len(st.Events) > 0 {
		fmt.Fprintln(w, "recent events:")
		for _, e := range st.Events {
			fmt.Fprintf(w, "  %s  %-11s %s\n", e.Time.Format("15:04:05.000"), e.Kind, e.Text)
		}
	}
}

// latencyLine summarises the recent latency histograms, or says nothing
// when none has an observation. Quantiles are bucket bounds: "<=".
func latencyLine(l api.LatencyStatus) string {
	q := func(h latency.Histogram, p float64) string {
		if v := h.Quantile(p); v >= 0 {
			return "<=" + v.String()
		}
		return ">" + latency.Bounds[len(latency.Bounds)-1].String()
	}
	var parts []string
	if h := l.Commit; h.Count > 0 {
		parts = append(parts, fmt.Sprintf("commit p50 %s p99 %s over %d groups", q(h, 0.5), q(h, 0.99), h.Count))
	}
	if h := l.LocalSync; h.Count > 0 && l.Commit.Count > 0 {
		parts = append(parts, "local sync p99 "+q(h, 0.99))
	} else if h.Count > 0 {
		parts = append(parts, fmt.Sprintf("local sync p50 %s p99 %s over %d batches", q(h, 0.5), q(h, 0.99), h.Count))
	}
	if h := l.PeerWait; h.Count > 0 {
		parts = append(parts, "peer wait p99 "+q(h, 0.99))
	}
	if len(parts) == 0 {
		return ""
	}
	return "  latency, last 1-2 min: " + strings.Join(parts, "; ") + "\n"
}

// peerCatchUp says how the peer would be caught up if it came back now.
func peerCatchUp(r api.ReplicationStatus) string {
	switch r.PeerCatchUp {
	case "log":
		return fmt.Sprintf("peer holds LSN %d: it would catch up from the log", r.PeerHoldsLSN)
	case "snapshot":
		return fmt.Sprintf("peer holds LSN %d, older than the log: it would need a FULL SNAPSHOT", r.PeerHoldsLSN)
	}
	return "what the peer holds is not known"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func roundAgo(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
