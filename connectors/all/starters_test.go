package all_test

// End-to-end tests of the connector starters: a project deployed through
// the real runtime (internal/engine on a pebble store, kvtest) whose jobs
// are started by a real connector against the local servers of `make
// test` (test/scripts/services.sh). They live here because this package
// may import both the connectors and the engine without a cycle.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/all"
	"github.com/tandem-ha/tandem/connectors/amqpconn"
	"github.com/tandem-ha/tandem/connectors/fileconn"
	"github.com/tandem-ha/tandem/connectors/httpconn"
	"github.com/tandem-ha/tandem/connectors/natsconn"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/engine/kvtest"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// The connectors that can start jobs. The assertion lives here, not in
// the connector packages, so that connectors do not depend on the runtime.
var (
	_ engine.StarterSource = (*sqlconn.Conn)(nil)
	_ engine.StarterSource = (*natsconn.Conn)(nil)
	_ engine.StarterSource = (*amqpconn.Conn)(nil)
	_ engine.StarterSource = (*fileconn.Conn)(nil)
)

// The registry hands out the connections that start jobs, and only those
// (http cannot: a deployment using it as a starter is refused).
func TestRegisteredKindsAreStarterSources(t *testing.T) {
	var r connectors.Registry
	all.Register(&r)
	for kind, s := range map[string]connectors.Settings{
		"postgres": {"database": "test", "purge-after": "0"},
		"mysql":    {"database": "test", "purge-after": "0"},
		"amqp":     {"queue": "q"},
		"file":     {"dir": t.TempDir()},
		"http":     {"url": "http://192.0.2.100:8080"},
	} {
		c, err := r.Open(kind, "c", s) // none of these reaches a server
		if err != nil {
			t.Fatal(err)
		}
		_, ok := c.(engine.StarterSource)
		if ok != (kind != httpconn.Kind) {
			t.Errorf("%s: StarterSource %v", kind, ok)
		}
		c.Close()
	}
}

func sfx(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, failing after a generous deadline
// (never a latency assertion).
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	ctx := ctxT(t)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if clock.Sleep(ctx, clock.Real(), 50*time.Millisecond) != nil {
			t.Fatalf("waited 60s for %s", what)
		}
	}
}

// rt is a runtime on a real pebble store with every Tandem connector.
type rt struct {
	t     *testing.T
	store *kvtest.Store
	reg   *connectors.Registry
	e     *engine.Engine
}

func newRuntime(t *testing.T) *rt {
	st, err := kvtest.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rt{t: t, store: st, reg: &connectors.Registry{}}
	all.Register(r.reg)
	r.restart()
	return r
}

// restart stops the current engine, if any (its starters end, its
// connections close), and starts a new one on the same store: what a
// restarted daemon, or the peer taking over, does.
func (r *rt) restart() {
	r.t.Helper()
	if r.e != nil {
		if err := r.e.Stop(); err != nil {
			r.t.Fatal(err)
		}
	}
	e, err := engine.New(engine.Options{Store: r.store, Connectors: r.reg, Logger: zaptest.NewLogger(r.t), Node: "a"})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { e.Stop() })
	if err := e.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.e = e
}

func (r *rt) deploy(src string) {
	r.t.Helper()
	if _, err := r.e.Deploy(ctxT(r.t), map[string]string{"p.yaml": src}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rt) jobs(project string) map[string]api.JobInfo {
	r.t.Helper()
	js, err := r.e.Jobs("", project)
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]api.JobInfo{}
	for _, j := range js {
		out[j.ID] = j
	}
	return out
}

// completed waits for the jobs of the given trigger keys and checks each
// completed.
func (r *rt) completed(project, orch string, keys []string) {
	r.t.Helper()
	for _, k := range keys {
		id := engine.JobID(project, orch, "connector/"+k)
		var j api.JobInfo
		waitFor(r.t, "the job of "+k, func() (bool, error) {
			var err error
			j, err = r.e.Job(id)
			if errors.Is(err, engine.ErrNotFound) {
				return false, nil // not started yet
			}
			return err == nil && j.Status != engine.StatusRunning && j.Status != engine.StatusRetryWait, err
		})
		if j.Status != engine.StatusCompleted {
			r.t.Fatalf("job of %s: %+v", k, j)
		}
	}
}

// sameJobs checks that the jobs of before are unchanged in after: no
// trigger delivered again ran its job again.
func sameJobs(t *testing.T, before, after map[string]api.JobInfo) {
	t.Helper()
	for id, b := range before {
		a, ok := after[id]
		if !ok || a.Status != b.Status || a.Checkpoints != b.Checkpoints || !a.Updated.Equal(b.Updated) || a.Version != b.Version || a.Resumptions != 0 {
			t.Errorf("job %s changed:\nbefore %+v\nafter  %+v", id, b, a)
		}
	}
}

// sqlSettings are the local servers' settings (as in sqlconn's tests).
var sqlSettings = map[sqlconn.Dialect]connectors.Settings{
	sqlconn.Postgres: {"host": "127.0.0.1", "port": "5432", "user": "postgres", "database": "test", "connect-timeout": "5s"},
	sqlconn.MySQL:    {"host": "127.0.0.1", "port": "3306", "user": "root", "database": "test", "connect-timeout": "5s"},
}

// The buffer-table starter through the runtime: one job per changed row,
// each row marked done; after a restart, rows delivered again (the poller
// died between the job's commit and the row's) start no second job, and
// new rows start theirs.
func TestBufferStarterEndToEnd(t *testing.T) {
	for _, d := range []sqlconn.Dialect{sqlconn.Postgres, sqlconn.MySQL} {
		t.Run(string(d), func(t *testing.T) { testBufferStarter(t, d) })
	}
}

func testBufferStarter(t *testing.T, d sqlconn.Dialect) {
	testenv.SkipIfShort(t, "needs the local "+string(d)+" server")
	x := sfx(t)
	src, sink, ctl := "tdt_"+x, "tdt_"+x+"_sink", "tdctl_"+x
	settings := maps.Clone(sqlSettings[d])
	settings["control-table"] = ctl
	db, err := sqlconn.Open(d, settings, sqlconn.Options{Name: "setup"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.DB().PingContext(ctxT(t)); err != nil {
		testenv.Missing(t, "%s on 127.0.0.1 unreachable (test/scripts/services.sh starts it): %v", d, err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.DB().ExecContext(ctxT(t), q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	count := func(q string) int {
		t.Helper()
		var n int
		if err := db.DB().QueryRowContext(ctxT(t), q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	if err := db.InitControl(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.DB().Exec("DROP TABLE IF EXISTS " + ctl) })
	exec("CREATE TABLE " + src + " (id INT, name VARCHAR(20))")
	t.Cleanup(func() { db.DB().Exec("DROP TABLE IF EXISTS " + src) })
	// No primary key: a second effect of a job would show as a second row.
	exec("CREATE TABLE " + sink + " (buffer_id BIGINT, op VARCHAR(10), src_id INT, name VARCHAR(20))")
	t.Cleanup(func() { db.DB().Exec("DROP TABLE IF EXISTS " + sink) })
	if err := db.InstallBuffer(ctxT(t), src); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.DropBuffer(context.Background(), src) })
	buf := sqlconn.BufferTable(src)

	var conn strings.Builder
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&conn, "%s: %q, ", k, settings[k])
	}
	r := newRuntime(t)
	r.deploy(`project: e2e
connections:
  db: {kind: ` + string(d) + `, settings: {` + strings.TrimSuffix(conn.String(), ", ") + `}}
orchestrations:
  - name: rows
    starter: {connector: {connection: db, operation: buffer, params: {table: ` + src + `, interval: 50ms}}}
    steps:
      - id: record
        call:
          connection: db
          operation: insert
          params: {table: "'` + sink + `'", values: {buffer_id: buffer_id, op: op, src_id: row.id, name: row.name}}
`)

	const n = 20
	for i := 1; i <= n; i++ {
		exec(fmt.Sprintf("INSERT INTO %s (id, name) VALUES (%d, 'r%d')", src, i, i))
	}
	pending := func() (bool, error) {
		return count("SELECT COUNT(*) FROM "+buf+" WHERE done_at IS NULL") == 0, nil
	}
	keys := func(where string) []string {
		rows, err := db.DB().QueryContext(ctxT(t), "SELECT id FROM "+buf+" "+where+" ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			out = append(out, src+":"+strconv.FormatInt(id, 10))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitFor(t, "the buffer drained", pending)
	first := keys("")
	if len(first) != n {
		t.Fatalf("%d buffer rows, want %d", len(first), n)
	}
	r.completed("e2e", "rows", first)
	checkSink := func(rows int) {
		t.Helper()
		if got := count("SELECT COUNT(*) FROM " + sink); got != rows {
			t.Fatalf("sink holds %d rows, want %d (one per buffer row)", got, rows)
		}
		if got := count("SELECT COUNT(DISTINCT buffer_id) FROM " + sink); got != rows {
			t.Fatalf("sink holds %d distinct buffer rows, want %d", got, rows)
		}
		if got := count("SELECT COUNT(*) FROM " + buf + " b JOIN " + sink + " s ON s.buffer_id = b.id WHERE b.done_at IS NOT NULL"); got != rows {
			t.Fatalf("%d done buffer rows have their job's effect, want %d", got, rows)
		}
		if got := len(r.jobs("e2e")); got != rows {
			t.Fatalf("%d jobs, want %d", got, rows)
		}
	}
	checkSink(n)
	before := r.jobs("e2e")

	// Restart, and put five done rows back to pending: what the buffer
	// holds if the poller died after the runtime committed their jobs but
	// before the rows' transaction committed. Then change more rows.
	r.restart()
	exec("UPDATE " + buf + " SET done_at = NULL WHERE id <= 5")
	exec("UPDATE " + src + " SET name = 'changed' WHERE id = 1")
	exec("DELETE FROM " + src + " WHERE id = 2")
	for i := n + 1; i <= n+3; i++ {
		exec(fmt.Sprintf("INSERT INTO %s (id, name) VALUES (%d, 'r%d')", src, i, i))
	}
	waitFor(t, "the buffer drained after the restart", pending)
	later := keys(fmt.Sprintf("WHERE id > %d", n))
	if len(later) != 5 {
		t.Fatalf("%d new buffer rows, want 5", len(later))
	}
	r.completed("e2e", "rows", later)
	checkSink(n + 5)
	sameJobs(t, before, r.jobs("e2e"))
	if got := count("SELECT COUNT(*) FROM " + sink + " WHERE op = 'update' AND src_id = 1 AND name = 'changed'"); got != 1 {
		t.Errorf("update recorded %d times", got)
	}
	if got := count("SELECT COUNT(*) FROM " + sink + " WHERE op = 'delete' AND src_id = 2 AND name = 'r2'"); got != 1 {
		t.Errorf("delete (with the old row) recorded %d times", got)
	}
}

// The JetStream subscriber through the runtime: one job per message; a
// second consumer over the same stream (redeploy) delivers every message
// again with the same keys and starts no second job.
func TestNATSSubscribeEndToEnd(t *testing.T) {
	testenv.SkipIfShort(t, "needs the local nats-server")
	x := sfx(t)
	stream, subject := "TDT_"+x, "tdt."+x+".in"
	nc, err := natsconn.Open(connectors.Settings{"url": "nats://127.0.0.1:4222", "stream": stream, "timeout": "5s"}, natsconn.Options{Name: "setup"})
	if err != nil {
		testenv.Missing(t, "nats-server with JetStream on 127.0.0.1:4222 unreachable: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	js := nc.JetStream()
	if _, err := js.CreateStream(ctxT(t), jetstream.StreamConfig{Name: stream, Subjects: []string{"tdt." + x + ".>"}, Storage: jetstream.FileStorage}); err != nil {
		testenv.Missing(t, "JetStream not enabled on the local nats-server: %v", err)
	}
	t.Cleanup(func() { js.DeleteStream(context.Background(), stream) })
	const n = 10
	var keys []string
	for i := 1; i <= n; i++ {
		ack, err := js.Publish(ctxT(t), subject, fmt.Appendf(nil, `{"n": %d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, stream+":"+strconv.FormatUint(ack.Sequence, 10))
	}
	project := func(consumer string) string {
		return `project: e2e
connections:
  q: {kind: nats, settings: {url: "nats://127.0.0.1:4222", stream: ` + stream + `, timeout: 5s}}
orchestrations:
  - name: msgs
    starter: {connector: {connection: q, operation: subscribe, params: {consumer: ` + consumer + `, batch: 4}}}
    vars: {n: 0}
    steps:
      - {id: parse, assign: {n: "json.n"}}
    output: "{'n': n, 'subject': subject}"
`
	}
	// acked waits until consumer acknowledged every message: each
	// StartFunc returned nil, so each message's job exists.
	acked := func(consumer string) {
		t.Helper()
		waitFor(t, consumer+" acknowledged all", func() (bool, error) {
			c, err := js.Consumer(ctxT(t), stream, consumer)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			info, err := c.Info(ctxT(t))
			if err != nil {
				return false, err
			}
			return info.AckFloor.Stream >= n && info.NumAckPending == 0, nil
		})
	}

	r := newRuntime(t)
	r.deploy(project("c1" + x))
	acked("c1" + x)
	r.completed("e2e", "msgs", keys)
	before := r.jobs("e2e")
	if len(before) != n {
		t.Fatalf("%d jobs, want %d", len(before), n)
	}
	for i, k := range keys {
		j := before[engine.JobID("e2e", "msgs", "connector/"+k)]
		if out, _ := j.Output.(map[string]any); fmt.Sprint(out["n"]) != strconv.Itoa(i+1) || out["subject"] != subject {
			t.Errorf("job of %s: output %v", k, j.Output)
		}
	}

	r.deploy(project("c2" + x)) // a new consumer: every message again
	acked("c2" + x)
	after := r.jobs("e2e")
	if len(after) != n {
		t.Fatalf("%d jobs after redelivery, want %d", len(after), n)
	}
	sameJobs(t, before, after)
}

// The AMQP consumer through the runtime: one job per message-id; copies
// of the same message-ids (a publish repeated after a failover) start no
// second job.
func TestAMQPConsumeEndToEnd(t *testing.T) {
	testenv.SkipIfShort(t, "needs the local rabbitmq-server")
	q := "tdt_" + sfx(t)
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		testenv.Missing(t, "rabbitmq on 127.0.0.1:5672 unreachable: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.QueueDelete(q, false, false, false) })
	publish := func(id string) {
		t.Helper()
		if err := ch.PublishWithContext(ctxT(t), "", q, false, false, amqp.Publishing{MessageId: id, Body: []byte(`{"id": "` + id + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 10
	var keys []string
	for i := range n {
		id := "m" + strconv.Itoa(i)
		publish(id)
		keys = append(keys, q+":"+id)
	}
	r := newRuntime(t)
	r.deploy(`project: e2e
connections:
  mq: {kind: amqp, settings: {host: 127.0.0.1, user: guest, password: guest, timeout: 5s}}
orchestrations:
  - name: msgs
    starter: {connector: {connection: mq, operation: consume, params: {queue: ` + q + `, prefetch: 1}}}
    steps:
      - {id: parse, assign: {id: "json.id"}}
`)
	r.completed("e2e", "msgs", keys)
	before := r.jobs("e2e")
	if len(before) != n {
		t.Fatalf("%d jobs, want %d", len(before), n)
	}
	// The copies, then a new message: one consumer takes the queue in
	// order, so once the new message's job exists every copy was handled.
	for i := range n {
		publish("m" + strconv.Itoa(i))
	}
	publish("last")
	r.completed("e2e", "msgs", []string{q + ":last"})
	after := r.jobs("e2e")
	if len(after) != n+1 {
		t.Fatalf("%d jobs, want %d", len(after), n+1)
	}
	sameJobs(t, before, after)
}

// The directory poller through the runtime: one job per file, moved to
// done-dir; the same file put back (same name, size and time) starts no
// second job.
func TestFilePollEndToEnd(t *testing.T) {
	dir, done := t.TempDir(), t.TempDir()
	// put writes a file under a hidden name (the poller skips those) and
	// renames it into place, so the poller never sees it half-written
	// (settle is 0 here); it returns the file's trigger key.
	put := func(name, data string) string {
		t.Helper()
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		return name + ":" + strconv.FormatInt(st.Size(), 10) + ":" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
	}
	r := newRuntime(t)
	r.deploy(`project: e2e
connections:
  inbox: {kind: file, settings: {dir: "` + dir + `"}}
orchestrations:
  - name: files
    starter: {connector: {connection: inbox, operation: poll, params: {pattern: "*.json", done-dir: "` + done + `", settle: 0s, interval: 50ms}}}
    steps:
      - {id: parse, assign: {id: "json.id"}}
`)
	var keys []string
	for i := range 5 {
		keys = append(keys, put(fmt.Sprintf("f%d.json", i), fmt.Sprintf(`{"id": %d}`, i)))
	}
	r.completed("e2e", "files", keys)
	waitFor(t, "every file moved to done-dir", func() (bool, error) {
		es, err := os.ReadDir(done)
		return len(es) == len(keys), err
	})
	before := r.jobs("e2e")
	// Put f0 back as it was (a crash before the move), then a new file;
	// the poller lists in name order, so once the new file's job exists
	// f0 was handled.
	if err := os.Rename(filepath.Join(done, "f0.json"), filepath.Join(dir, "f0.json")); err != nil {
		t.Fatal(err)
	}
	r.completed("e2e", "files", []string{put("g.json", `{"id": 99}`)})
	after := r.jobs("e2e")
	if len(after) != len(keys)+1 {
		t.Fatalf("%d jobs, want %d", len(after), len(keys)+1)
	}
	sameJobs(t, before, after)
}
