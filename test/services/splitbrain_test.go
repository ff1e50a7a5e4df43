package services

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// deadActive: the active (host a) claims a control key and is cut off
// the LAN inside its transaction; the survivor (host b) repeats the
// operation with the same key. The survivor's claim waits on the dead
// session's key until the server ends that session (idle-tx-timeout), then
// runs the operation itself: one effect, not two, and not zero.
func deadActive(ctx context.Context, t *testing.T, l *lab.Lab, d sqlconn.Dialect, srv *Server) {
	// stmt inserts, then holds the transaction open; running counts it
	// while it runs.
	stmt, running := "WITH ins AS (INSERT INTO orders (id) VALUES (1)) SELECT pg_sleep(1)",
		"SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'WITH ins AS%' AND state = 'active'"
	if d == sqlconn.MySQL {
		stmt, running = "INSERT INTO orders (id) SELECT 1 FROM DUAL WHERE SLEEP(1) = 0",
			"SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'INSERT INTO orders%'"
	}
	settings := connectors.Settings{"idle-tx-timeout": "2s", "lock-timeout": "20s", "purge-after": "0", "control-table": "ctl_dead"}
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
	observer.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM ctl_dead").Scan(&keys)
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
