package services

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/natsconn"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
)

// TestLabServices starts PostgreSQL, MariaDB and NATS in the lab's svc
// host (one lab for every case: building it is the slow part), then:
// reachable-from-a uses each from host a over the lab LAN (the real
// clients psql and mariadb run in a's namespace, the connectors open their
// sockets there); dead-active is the split-brain proof of splitbrain_test.go;
// finally each server is stopped by PID.
func TestLabServices(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft", "iptables", "ip6tables", "setpriv", "psql", "mariadb", "mariadb-install-db", "nats-server")
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	}()
	// Not t.TempDir: its 0700 parent would keep the postgres and mysql
	// users out.
	dir, err := os.MkdirTemp("", "tandem-services-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	svc, a := l.Host(lab.Svc), l.Host(lab.NodeA)

	pg, err := StartPostgres(ctx, svc, dir)
	if err != nil {
		t.Fatal(err)
	}
	maria, err := StartMariaDB(ctx, svc, dir)
	if err != nil {
		t.Fatal(err)
	}
	nts, err := StartNATS(ctx, svc, dir)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reachable-from-a", func(t *testing.T) { reachable(ctx, t, a, pg, maria, nts) })
	for _, srv := range []*Server{pg, maria} {
		d := sqlconn.Postgres
		if srv == maria {
			d = sqlconn.MySQL
		}
		t.Run("dead-active/"+string(d), func(t *testing.T) { deadActive(ctx, t, l, d, srv) })
	}

	// Stopped by PID.
	for _, s := range []*Server{nts, maria, pg} {
		if err := s.Stop(10 * time.Second); err != nil {
			t.Errorf("stop %s: %v", s.Name, err)
		}
		if !s.Proc.Exited() {
			t.Errorf("%s (pid %d) still running", s.Name, s.Proc.PID)
		}
	}
}

func reachable(ctx context.Context, t *testing.T, a *lab.Host, pg, maria, nts *Server) {
	// The servers are not reachable from the root namespace...
	if out, err := exec1(ctx, "psql", "-h", "192.0.2.20", "-U", "postgres", "-d", "test", "-Atc", "SELECT 1"); err == nil {
		t.Fatalf("postgres in svc reachable from the root namespace: %s", out)
	}
	// ...and are from host a, with the real clients.
	if out, err := a.Run(ctx, "psql", "-h", "192.0.2.20", "-U", "postgres", "-d", "test", "-Atc", "SELECT 40+2"); err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("psql from a: %q %v", out, err)
	}
	if out, err := a.Run(ctx, "mariadb", "--no-defaults", "-h", "192.0.2.20", "-uroot", "test", "-N", "-e", "SELECT 40+2"); err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("mariadb from a: %q %v", out, err)
	}

	// The connectors, dialling from a: an exactly-once insert and its replay.
	for _, srv := range []struct {
		d Dialect
		s *Server
	}{{sqlconn.Postgres, pg}, {sqlconn.MySQL, maria}} {
		c, err := sqlconn.Open(srv.d, srv.s.Settings, sqlconn.Options{Dial: Dialer(a)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.InitControl(ctx); err != nil {
			t.Fatalf("%s: %v", srv.d, err)
		}
		if _, err := c.DB().ExecContext(ctx, "CREATE TABLE orders_reach (id INT)"); err != nil {
			t.Fatal(err)
		}
		req := connectors.Request{Operation: sqlconn.OpInsert, Key: "job1/s1", Params: map[string]any{"table": "orders_reach", "values": map[string]any{"id": 1}}}
		r1, err1 := c.Invoke(ctx, req)
		r2, err2 := c.Invoke(ctx, req)
		var n int
		if err := c.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM orders_reach").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err1 != nil || err2 != nil || r1.Replayed || !r2.Replayed || n != 1 {
			t.Fatalf("%s from a: %v %v %+v %+v rows=%d", srv.d, err1, err2, r1, r2, n)
		}
		c.Close()
	}

	nc, err := natsconn.Open(connectors.Settings{"url": nts.Settings["url"], "stream": "ORDERS", "subject": "orders.new"}, natsconn.Options{Dial: Dialer(a)})
	if err != nil {
		t.Fatalf("nats from a: %v", err)
	}
	defer nc.Close()
	if _, err := nc.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Duplicates: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Test(ctx); err != nil {
		t.Fatal(err)
	}
	r1, err1 := nc.Invoke(ctx, connectors.Request{Operation: "publish", Key: "job1/s2", Params: map[string]any{"data": "x"}})
	r2, err2 := nc.Invoke(ctx, connectors.Request{Operation: "publish", Key: "job1/s2", Params: map[string]any{"data": "x"}})
	if err1 != nil || err2 != nil || r1.Replayed || !r2.Replayed {
		t.Fatalf("nats publish from a: %v %v %+v %+v", err1, err2, r1, r2)
	}

}

// Dialect is sqlconn's, named here for the table above.
type Dialect = sqlconn.Dialect

// exec1 runs a command in the test's own (root) namespace.
func exec1(ctx context.Context, name string, args ...string) ([]byte, error) {
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return exec.CommandContext(short, name, args...).CombinedOutput()
}
