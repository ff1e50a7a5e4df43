package cli

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/engine/kvtest"
	"github.com/tandem-ha/tandem/internal/engine/testconn"
)

// startRuntime serves the local API with a real engine on pebble behind it.
func startRuntime(t *testing.T) (string, *engine.Engine) {
	t.Helper()
	st, err := kvtest.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := &connectors.Registry{}
	testconn.Register(reg, testconn.NewEndpoint())
	e, err := engine.New(engine.Options{Store: st, Connectors: reg, Clock: clock.Real(), Logger: zap.NewNop(), Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := api.NewServer(&backend{}, zap.NewNop())
	e.RegisterAPI(s)
	sock := filepath.Join(t.TempDir(), "t.sock")
	l, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done; e.Stop(); st.Close() })
	return sock, e
}

func TestDeployProjectsJobs(t *testing.T) {
	sock, e := startRuntime(t)
	dir := filepath.Join(t.TempDir(), "billing")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "project.yaml"), []byte("project: billing\nconnections:\n  t: {kind: test, settings: {password: hunter2}}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sync.yaml"), []byte("name: sync\nsteps:\n  - id: a\n    call: {connection: t, operation: do}\n"), 0o644)

	code, out, errOut := run("--socket", sock, "deploy", dir)
	if code != ExitOK || !strings.Contains(out, "deployed billing version 1: 1 orchestrations") {
		t.Fatalf("deploy: %d %q %q", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("project: x\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        assign: {y: '1 +'}\n"), 0o644)
	code, _, errOut = run("--socket", sock, "deploy", bad)
	if code != ExitFailed || !strings.Contains(errOut, bad+":6: orchestrations[0].steps[0].assign.y: expression") {
		t.Fatalf("bad deploy: %d %q", code, errOut)
	}
	code, out, _ = run("--socket", sock, "projects")
	if code != ExitOK || !strings.Contains(out, "orchestration sync") || strings.Contains(out, "hunter2") || !strings.Contains(out, "password=***") {
		t.Fatalf("projects: %d %q", code, out)
	}
	id, err := e.StartJob(context.Background(), "billing", "sync", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Wait(context.Background(), id)
	code, out, _ = run("--socket", sock, "jobs", "--status", "completed")
	if code != ExitOK || !strings.Contains(out, id) || !strings.Contains(out, "billing/sync") {
		t.Fatalf("jobs: %d %q", code, out)
	}
	if code, out, _ = run("--socket", sock, "jobs", "--status", "failed"); code != ExitOK || strings.Contains(out, id) {
		t.Fatalf("jobs --status failed: %d %q", code, out)
	}
	if code, _, _ = run("--socket", sock, "jobs", "--status", "weird"); code != ExitUsage {
		t.Fatalf("bad --status: exit %d", code)
	}
	id2, err := e.StartJob(context.Background(), "billing", "sync", "k2", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Wait(context.Background(), id2)
	code, out, _ = run("--socket", sock, "jobs", "--limit", "1")
	if code != ExitOK || strings.Contains(out, id+" ") || !strings.Contains(out, id2) || !strings.Contains(out, "the 1 most recently finished jobs; --limit 0 lists them all") {
		t.Fatalf("jobs --limit 1: %d %q; want only %s, and the note", code, out, id2)
	}
	if code, out, _ = run("--socket", sock, "jobs", "--limit", "0"); code != ExitOK || !strings.Contains(out, id) || !strings.Contains(out, id2) || strings.Contains(out, "most recently") {
		t.Fatalf("jobs --limit 0: %d %q", code, out)
	}
	if code, _, _ = run("--socket", sock, "jobs", "--limit", "-1"); code != ExitUsage {
		t.Fatalf("--limit -1: exit %d", code)
	}
	if code, out, _ = run("--socket", sock, "undeploy", "billing"); code != ExitOK || !strings.Contains(out, "undeployed billing") {
		t.Fatalf("undeploy: %d %q", code, out)
	}
	if code, _, _ = run("--socket", sock, "undeploy", "billing"); code != ExitFailed {
		t.Fatalf("undeploy twice: exit %d", code)
	}
}
