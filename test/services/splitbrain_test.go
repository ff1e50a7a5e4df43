package services

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
)

// TestDeadActiveMidTransactionOneEffect: the active (host a) claims a
// control key and is cut off the LAN inside its transaction; the survivor
// (host b) repeats the operation with the same key. The survivor's claim
// waits on the dead session's key until PostgreSQL ends that session
// (idle-tx-timeout), then runs the operation itself: one effect, not two,
// and not zero. PostgreSQL and MariaDB, in one lab.
func TestDeadActiveMidTransactionOneEffect(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft", "iptables", "ip6tables", "setpriv", "psql", "mariadb", "mariadb-install-db")
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	defer l.Close()
	dir, err := os.MkdirTemp("", "tandem-services-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	pg, err := StartPostgres(ctx, l.Host(lab.Svc), dir)
	if err != nil {
		t.Fatal(err)
	}
	maria, err := StartMariaDB(ctx, l.Host(lab.Svc), dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d       sqlconn.Dialect
		srv     *Server
		stmt    string // inserts, then holds the transaction open
		running string // counts a's statement while it runs
	}{
		{sqlconn.Postgres, pg, "WITH ins AS (INSERT INTO orders (id) VALUES (1)) SELECT pg_sleep(1)",
			"SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'WITH ins AS%' AND state = 'active'"},
		{sqlconn.MySQL, maria, "INSERT INTO orders (id) SELECT 1 FROM DUAL WHERE SLEEP(1) = 0",
			"SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'INSERT INTO orders%'"},
	} {
		t.Run(string(tc.d), func(t *testing.T) { deadActive(ctx, t, l, tc.d, tc.srv, tc.stmt, tc.running) })
	}
}

func deadActive(ctx context.Context, t *testing.T, l *lab.Lab, d sqlconn.Dialect, srv *Server, stmt, running string) {
	settings := connectors.Settings{"idle-tx-timeout": "2s", "lock-timeout": "20s", "purge-after": "0"}
	for k, v := range srv.Settings {
		settings[k] = v
	}
	open := func(h string) *sqlconn.Conn {
		c, err := sqlconn.Open(d, settings, sqlconn.Options{Name: h, Dial: Dialer(l.Host(h))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	observer := open(lab.Svc)
	if err := observer.InitControl(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := observer.DB().ExecContext(ctx, "CREATE TABLE orders (id INT)"); err != nil {
		t.Fatal(err)
	}
	a, b := open(lab.NodeA), open(lab.NodeB)
	req := connectors.Request{Operation: sqlconn.OpExecute, Key: "job42/step3", Params: map[string]any{"statement": stmt}}

	aCtx, aCancel := context.WithTimeout(ctx, 6*time.Second)
	defer aCancel()
	aDone := make(chan error, 1)
	go func() { _, err := a.Invoke(aCtx, req); aDone <- err }()
	// Wait until a's transaction runs its statement (so it holds the key).
	for {
		var n int
		if err := observer.DB().QueryRowContext(ctx, running).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if err := clock.Sleep(ctx, clock.Real(), 20*time.Millisecond); err != nil {
			t.Fatal("a's transaction never started")
		}
	}
	cut, err := l.CutLink(ctx, lab.NodeA, lab.LANIf)
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Clear()

	r, err := b.Invoke(ctx, req)
	if err != nil {
		t.Fatalf("survivor: %v", err)
	}
	if r.Replayed {
		t.Fatal("survivor replayed a result the dead active never committed")
	}
	if err := <-aDone; err == nil {
		t.Fatal("the cut-off active reports success")
	}
	var rows, keys int
	observer.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM orders").Scan(&rows)
	observer.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM tandem_control").Scan(&keys)
	if rows != 1 || keys != 1 {
		t.Fatalf("orders rows = %d, control keys = %d; want 1 and 1", rows, keys)
	}
	// And a third attempt (the old active, back) replays.
	if err := cut.Clear(); err != nil {
		t.Fatal(err)
	}
	// Its link needs a moment (carrier, ARP): retry as the runtime would
	// retry a retryable error.
	a2 := open(lab.NodeA)
	for {
		r, err = a2.Invoke(ctx, req)
		if err == nil || connectors.IsPermanent(err) {
			break
		}
		if serr := clock.Sleep(ctx, clock.Real(), 200*time.Millisecond); serr != nil {
			break
		}
	}
	if err != nil || !r.Replayed {
		t.Fatalf("returning active: %+v %v", r, err)
	}
}
