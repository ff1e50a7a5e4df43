package daemon

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/wip"
)

// Exit statuses of tandemd.
const (
	exitOK      = 0
	exitFailure = 1 // the daemon stopped on an error
	exitConfig  = 2 // bad command line or configuration
)

var errConfig = errors.New("configuration")

// Main runs tandemd's command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "tandemd",
		Short:         "Tandem HA pair daemon",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var cfgPath string
	run := &cobra.Command{
		Use:   "run",
		Short: "run the daemon (SIGTERM/SIGINT: orderly stop)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return fmt.Errorf("%w: %w", errConfig, err)
			}
			// The first SIGTERM/SIGINT starts the orderly stop; a second
			// one abandons it (the process exits as a crash would).
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sigs)
			go func() {
				n := 0
				for range sigs {
					n++
					switch n {
					case 1:
						cancel()
					case 2:
						close(forceStop)
						return
					}
				}
			}()
			return Run(ctx, cfg)
		},
	}
	check := &cobra.Command{
		Use:   "check-config",
		Short: "validate a configuration file and print the effective timing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return fmt.Errorf("%w: %w", errConfig, err)
			}
			desc, err := checkConfig(cfg)
			if err != nil {
				return fmt.Errorf("%w: %w", errConfig, err)
			}
			fmt.Fprintf(stdout, "%s: ok\n%s", cfgPath, desc)
			return nil
		},
	}
	cleanup := &cobra.Command{
		Use:   "cleanup",
		Short: "remove the VIPs (and virtual-MAC macvlan) a crashed tandemd left configured",
		Long: "cleanup is for the service manager after tandemd died (systemd ExecStopPost=): it removes\n" +
			"exactly the VIP group of the configuration, so the crashed node stops answering for it at once.\n" +
			"It refuses to run while a tandemd holds the data directory.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return fmt.Errorf("%w: %w", errConfig, err)
			}
			left, err := Cleanup(cmd.Context(), cfg)
			for _, l := range left {
				fmt.Fprintf(stdout, "removed %s\n", l)
			}
			return err
		},
	}
	restore := &cobra.Command{
		Use:   "restore BACKUP",
		Short: "restore the WIP store from a backup (tandemd stopped, the store's directory empty)",
		Long: "restore copies a backup (a directory from backup.dir, or `tandemctl backups`) into this\n" +
			"node's WIP store directory (data-dir/wip), which must be empty or absent: move the old\n" +
			"one away first. It checks the copy against the backup's manifest and reads every block\n" +
			"before putting it in place. It refuses to run while a tandemd holds the data directory.\n" +
			"Started next, tandemd continues the backup's lineage: in a running pair the restored node\n" +
			"catches up from the active; on a disaster-recovery pair it is the node with the data.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return fmt.Errorf("%w: %w", errConfig, err)
			}
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				return cfg.Wrap("data-dir", err)
			}
			unlock, err := lockDataDir(cfg.DataDir)
			if err != nil {
				return err
			}
			defer unlock()
			dst := filepath.Join(cfg.DataDir, "wip")
			b, err := wip.Restore(args[0], dst)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "restored %s into %s: epoch %d, LSN %d (backup of node %s taken %s)\n",
				b.Path, dst, b.Epoch, b.LSN, b.Node, b.Created.UTC().Format(time.RFC3339))
			return nil
		},
	}
	for _, c := range []*cobra.Command{run, check, cleanup, restore} {
		c.Flags().StringVarP(&cfgPath, "config", "c", "/etc/tandem/tandemd.yaml", "configuration file")
	}
	var out string
	keygen := &cobra.Command{
		Use:   "keygen",
		Short: "write a new random pair key (copy it to both nodes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, 48)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%w: keygen: %w (an existing key is never overwritten)", errConfig, err)
			}
			if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(b)); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		},
	}
	keygen.Flags().StringVarP(&out, "out", "o", "/etc/tandem/pair.key", "key file to create (mode 0600)")
	root.AddCommand(run, check, cleanup, restore, keygen)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "tandemd:", err)
		if errors.Is(err, errConfig) || errors.Is(err, config.ErrInvalid) {
			return exitConfig
		}
		return exitFailure
	}
	return exitOK
}
