package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/all"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
)

// connectorCmd groups the endpoint-side setup commands. Unlike the rest of
// tandemctl they talk to the endpoint database directly, not to tandemd:
// they prepare a database before any connection of the daemon uses it.
func connectorCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connector",
		Short: "Prepare endpoint databases for exactly-once connectors",
	}
	cmd.AddCommand(connectorInitCmd(o), connectorBufferCmd(o), connectorTestCmd(o))
	return cmd
}

// sqlFlags are the flags shared by the SQL setup commands.
type sqlFlags struct {
	kind     string
	settings []string
	print    bool
}

func (f *sqlFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.kind, "kind", "", "connector kind: postgres or mysql (required)")
	cmd.Flags().StringArrayVar(&f.settings, "setting", nil, "connection setting name=value (repeatable): host, port, user, password, database, dsn, control-table...")
	cmd.Flags().BoolVar(&f.print, "print", false, "print the SQL instead of running it")
}

func (f *sqlFlags) parse() (sqlconn.Dialect, connectors.Settings, error) {
	if f.kind == "" {
		return "", nil, usageError{"--kind is required (postgres or mysql)"}
	}
	d, err := sqlconn.ParseDialect(f.kind)
	if err != nil {
		return "", nil, usageError{"--kind: " + err.Error()}
	}
	s := connectors.Settings{}
	for _, kv := range f.settings {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return "", nil, usageError{fmt.Sprintf("--setting %q: want name=value", kv)}
		}
		s[k] = v
	}
	// Setup needs no purging loop of its own.
	s["purge-after"] = "0"
	return d, s, nil
}

func (f *sqlFlags) open(d sqlconn.Dialect, s connectors.Settings) (*sqlconn.Conn, error) {
	c, err := sqlconn.Open(d, s, sqlconn.Options{Name: "tandemctl"})
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return c, nil
}

func connectorInitCmd(o *options) *cobra.Command {
	var f sqlFlags
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the control table of an exactly-once SQL connection",
		Long: `Creates the control table (default tandem_control) in the endpoint
database: the exactly-once SQL connector records each operation's key there
in the same transaction as the operation. Idempotent.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, s, err := f.parse()
			if err != nil {
				return err
			}
			table := s["control-table"]
			if f.print {
				stmts, err := sqlconn.ControlDDL(d, table)
				if err != nil {
					return usageError{err.Error()}
				}
				for _, st := range stmts {
					fmt.Fprintf(o.out, "%s;\n", st)
				}
				return nil
			}
			c, err := f.open(d, s)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
			defer cancel()
			if err := c.InitControl(ctx); err != nil {
				return err
			}
			if table == "" {
				table = sqlconn.DefaultControlTable
			}
			fmt.Fprintf(o.out, "control table %s ready (%s)\n", table, d)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func connectorBufferCmd(o *options) *cobra.Command {
	var (
		f     sqlFlags
		table string
		drop  bool
	)
	cmd := &cobra.Command{
		Use:   "buffer",
		Short: "Create the buffer table and triggers of a source table",
		Long: `Creates <table>_tandem_buf and the triggers copying each inserted,
updated and deleted row of <table> into it; the buffer-table starter turns
each buffer row into one job. Idempotent; --drop removes them.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, s, err := f.parse()
			if err != nil {
				return err
			}
			if table == "" {
				return usageError{"--table is required"}
			}
			if f.print && d == sqlconn.Postgres && !drop {
				stmts, err := sqlconn.BufferDDL(d, table, nil)
				if err != nil {
					return usageError{err.Error()}
				}
				for _, st := range stmts {
					fmt.Fprintf(o.out, "%s;\n", st)
				}
				return nil
			}
			if f.print {
				return usageError{"--print is only for postgres buffer creation (mysql needs the table's columns from the server)"}
			}
			c, err := f.open(d, s)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
			defer cancel()
			if drop {
				if err := c.DropBuffer(ctx, table); err != nil {
					return err
				}
				fmt.Fprintf(o.out, "buffer of %s dropped\n", table)
				return nil
			}
			if err := c.InstallBuffer(ctx, table); err != nil {
				return err
			}
			fmt.Fprintf(o.out, "buffer table %s and triggers ready\n", sqlconn.BufferTable(table))
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&table, "table", "", "source table (required)")
	cmd.Flags().BoolVar(&drop, "drop", false, "remove the buffer table and triggers")
	return cmd
}

func connectorTestCmd(o *options) *cobra.Command {
	var (
		kind     string
		settings []string
	)
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Check that an endpoint is reachable with the given settings",
		Long: `Opens a connection of the given kind (postgres, mysql, http, nats, amqp,
file) with the settings and runs its connection test: reachability,
credentials, and what the connector needs there (the control table, the
stream's duplicate window, the queue...). Secrets are never printed.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if kind == "" {
				return usageError{"--kind is required"}
			}
			s := connectors.Settings{}
			for _, kv := range settings {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Sprintf("--setting %q: want name=value", kv)}
				}
				s[k] = v
			}
			if kind == "postgres" || kind == "mysql" {
				s["purge-after"] = "0"
			}
			var r connectors.Registry
			all.Register(&r)
			c, err := r.Open(kind, "tandemctl", s)
			if err != nil {
				return usageError{err.Error()}
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
			defer cancel()
			if err := c.Test(ctx); err != nil {
				return err
			}
			fmt.Fprintf(o.out, "%s endpoint ok (%s)\n", kind, s.Redacted())
			return nil
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "connector kind (required)")
	cmd.Flags().StringArrayVar(&settings, "setting", nil, "connection setting name=value (repeatable)")
	return cmd
}
