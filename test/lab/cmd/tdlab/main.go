// Command tdlab brings the Tandem lab topology up and down by hand and
// applies faults to it, for debugging and demos. Run as root:
//
//	go run ./test/lab/cmd/tdlab up                      # prints the lab's prefix
//	go run ./test/lab/cmd/tdlab ls
//	go run ./test/lab/cmd/tdlab exec -p tdl1a2b3 client ping 192.0.2.11
//	go run ./test/lab/cmd/tdlab cut -p tdl1a2b3 -for 30s a ha1
//	go run ./test/lab/cmd/tdlab partition -p tdl1a2b3 a b
//	go run ./test/lab/cmd/tdlab impair -p tdl1a2b3 -loss 5 -delay 20ms a ha1
//	go run ./test/lab/cmd/tdlab down -p tdl1a2b3
//	go run ./test/lab/cmd/tdlab sweep [-all]
//
// A lab made by "up" persists until "down" (or "sweep -all"). Faults last
// while the command runs: until -for elapses or it is interrupted, then they
// are cleared, so a forgotten fault never outlives its terminal.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tandem-ha/tandem/test/lab"
)

const usage = `usage: tdlab <command> [flags] [args]

commands:
  up        [-p prefix] [-ha 1|2]      build a persistent pair topology
  down      -p prefix                  remove it
  ls                                   list labs on this machine
  sweep     [-all]                     remove leftovers of dead runs (-all: and persistent labs)
  exec      -p prefix HOST CMD...      run a command in a host's namespace
  cut       -p prefix [-for D] HOST IF pull a cable (IF: lan0, ha1, ha2)
  partition -p prefix [-for D] H1 H2   drop everything between two hosts
  impair    -p prefix [-for D] [-loss P] [-dup P] [-delay D] [-jitter D] [-reorder P] HOST IF

hosts: a, b, client, gw, svc
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "tdlab:", err)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	prefix := fs.String("p", "", "lab prefix (see tdlab ls)")
	switch cmd {
	case "up":
		ha := fs.Int("ha", 2, "number of HA links (1 or 2)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		l, err := lab.New(ctx, lab.Options{Prefix: *prefix, HALinks: *ha, Persistent: true, Logf: logf})
		if err != nil {
			return err
		}
		defer l.Close() // releases the handle; the lab stays
		printHosts(l)
		fmt.Printf("\nlab %s is up; remove it with: tdlab down -p %s\n", l.Prefix, l.Prefix)
		return nil
	case "down":
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *prefix == "" {
			return errors.New("down: -p prefix is required (see tdlab ls)")
		}
		return lab.Down(ctx, *prefix, logf)
	case "ls":
		if err := fs.Parse(args); err != nil {
			return err
		}
		runs, err := lab.Runs()
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "PREFIX\tSTATE\tNAMESPACES")
		for _, r := range runs {
			state := "leftover"
			switch {
			case r.Live:
				state = "live"
			case r.Persistent:
				state = "persistent"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\n", r.Prefix, state, len(r.Namespaces))
		}
		return w.Flush()
	case "sweep":
		all := fs.Bool("all", false, "also remove persistent labs")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *all {
			return lab.SweepAll(ctx, logf)
		}
		return lab.Sweep(ctx, logf)
	case "exec":
		if err := fs.Parse(args); err != nil {
			return err
		}
		l, err := attach(*prefix)
		if err != nil {
			return err
		}
		if fs.NArg() < 2 {
			return errors.New("exec: want HOST CMD...")
		}
		h, err := host(l, fs.Arg(0))
		if err != nil {
			return err
		}
		c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, fs.Args()[1:]...)...)
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
		return c.Run()
	case "cut", "partition", "impair":
		dur := fs.Duration("for", 0, "clear the fault after this long (0: on interrupt)")
		loss := fs.Float64("loss", 0, "impair: loss percentage")
		dup := fs.Float64("dup", 0, "impair: duplication percentage")
		delay := fs.Duration("delay", 0, "impair: delay")
		jitter := fs.Duration("jitter", 0, "impair: jitter (<= delay)")
		reorder := fs.Float64("reorder", 0, "impair: percentage of packets sent without the delay")
		if err := fs.Parse(args); err != nil {
			return err
		}
		l, err := attach(*prefix)
		if err != nil {
			return err
		}
		defer l.Close() // clears the fault
		if fs.NArg() != 2 {
			return fmt.Errorf("%s: want two arguments, got %d", cmd, fs.NArg())
		}
		var f *lab.Fault
		switch cmd {
		case "cut":
			f, err = l.CutLink(ctx, fs.Arg(0), fs.Arg(1))
		case "partition":
			f, err = l.Partition(ctx, fs.Arg(0), fs.Arg(1))
		case "impair":
			f, err = l.Impair(ctx, fs.Arg(0), fs.Arg(1), lab.Impairment{
				Loss: *loss, Duplicate: *dup, Delay: *delay, Jitter: *jitter, Reorder: *reorder})
		}
		if err != nil {
			return err
		}
		fmt.Printf("%s: in force; interrupt to clear\n", f)
		if *dur > 0 {
			t := time.NewTimer(*dur)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		} else {
			<-ctx.Done()
		}
		return f.Clear()
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func attach(prefix string) (*lab.Lab, error) {
	if prefix == "" {
		return nil, errors.New("-p prefix is required (see tdlab ls)")
	}
	return lab.Attach(prefix, logf)
}

func host(l *lab.Lab, name string) (*lab.Host, error) {
	for _, h := range l.Hosts() {
		if h.Name == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("no host %q (hosts: a, b, client, gw, svc)", name)
}

func printHosts(l *lab.Lab) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tNAMESPACE\tMAC\tLAN\tHA")
	for _, h := range l.Hosts() {
		ha := "-"
		if len(h.HA) > 0 {
			ha = fmt.Sprint(h.HA)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s %s\t%s\n", h.Name, h.NS, h.MAC, h.LAN4, h.LAN6, ha)
	}
	w.Flush()
	fmt.Printf("VIPs (unclaimed): %s %s; fabric namespace: %s\n", lab.VIP4, lab.VIP6, l.FabricNS())
}
