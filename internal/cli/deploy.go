package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/api"
)

// runtimeCmds are the orchestration runtime's commands: deploy, undeploy,
// projects, jobs.
func runtimeCmds(o *options) []*cobra.Command {
	return []*cobra.Command{deployCmd(o), undeployCmd(o), projectsCmd(o), jobsCmd(o)}
}

// ReadProject reads a project file, or a directory's *.yaml and *.yml
// files (not recursive), keyed by the path given, so the daemon's errors
// name the files as the operator wrote them.
func ReadProject(path string) (map[string]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	names := []string{path}
	if st.IsDir() {
		names = nil
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(path, pat))
			if err != nil {
				return nil, err
			}
			names = append(names, m...)
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml files", path)
		}
	}
	files := map[string]string{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		files[n] = string(b)
	}
	return files, nil
}

func deployCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "deploy <dir|file>",
		Short: "Validate and deploy a project (a file, or a directory with project.yaml and orchestration files)",
		Long: "The project is validated by the daemon (errors name file, line and field), stored in the\n" +
			"WIP store (so the passive has it) and its starters started. Redeploying makes a new\n" +
			"version; running jobs finish on the version they started with.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			files, err := ReadProject(args[0])
			if err != nil {
				return usageError{err.Error()}
			}
			c, ctx, cancel := o.client()
			defer cancel()
			p, err := c.Deploy(ctx, files)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(p)
			}
			fmt.Fprintf(o.out, "deployed %s version %d: %d orchestrations\n", p.Name, p.Version, len(p.Orchestrations))
			return nil
		},
	}
}

func undeployCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "undeploy <project>",
		Short: "Remove a project (refused while it has unfinished jobs)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			r, err := c.Undeploy(ctx, args[0])
			if err != nil {
				return err
			}
			return printResult(o, r)
		},
	}
}

func projectsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "projects",
		Short: "List the deployed projects, their orchestrations and connections",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, ctx, cancel := o.client()
			defer cancel()
			ps, err := c.Projects(ctx)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(ps)
			}
			sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
			for _, p := range ps {
				fmt.Fprintf(o.out, "%s  version %d  deployed %s\n", p.Name, p.Version, p.Deployed.Format("2006-01-02 15:04:05"))
				for _, or := range p.Orchestrations {
					fmt.Fprintf(o.out, "  orchestration %-24s %s\n", or.Name, or.Starter)
				}
				for _, cn := range p.Connections {
					fmt.Fprintf(o.out, "  connection    %-24s %s %s\n", cn.Name, cn.Kind, cn.Settings)
				}
			}
			return nil
		},
	}
}

func jobsCmd(o *options) *cobra.Command {
	var status, project string
	var limit int
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List jobs: every unfinished one and the most recently finished",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			switch status {
			case "", "running", "retry-wait", "completed", "failed":
			default:
				return usageError{fmt.Sprintf("--status %q: one of running, retry-wait, completed, failed", status)}
			}
			if limit < 0 {
				return usageError{fmt.Sprintf("--limit %d: want 0 (all) or more", limit)}
			}
			c, ctx, cancel := o.client()
			defer cancel()
			js, err := c.JobsLimit(ctx, status, project, limit)
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(js)
			}
			printJobs(o, js)
			done := 0
			for _, j := range js {
				if j.Status == "completed" || j.Status == "failed" {
					done++
				}
			}
			if limit > 0 && done == limit {
				fmt.Fprintf(o.out, "(the %d most recently finished jobs; --limit 0 lists them all)\n", limit)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only jobs with this status")
	cmd.Flags().StringVar(&project, "project", "", "only jobs of this project")
	cmd.Flags().IntVar(&limit, "limit", 100, "finished jobs to list, the most recent first (0: all; tandemd refuses more than 100,000)")
	return cmd
}

func printJobs(o *options, js []api.JobInfo) {
	w := tabwriter.NewWriter(o.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tORCHESTRATION\tSTATUS\tSTEP\tRESUMED\tUPDATED\tREASON")
	for _, j := range js {
		step := orDash(j.Step)
		if j.Attempt > 1 {
			step += fmt.Sprintf(" (attempt %d)", j.Attempt)
		}
		reason := strings.ReplaceAll(j.Reason, "\n", " ")
		fmt.Fprintf(w, "%s\t%s/%s\t%s\t%s\t%d\t%s\t%s\n", j.ID, j.Project, j.Orchestration, j.Status, step, j.Resumptions, j.Updated.Format("15:04:05.000"), reason)
	}
	w.Flush()
}
