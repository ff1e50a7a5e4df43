// Package sqlconn is the SQL connector for PostgreSQL (kind "postgres",
// driver jackc/pgx/v5) and MariaDB/MySQL (kind "mysql", driver
// go-sql-driver/mysql), with exactly-once effects through a control table
// in the endpoint database (IBM Cast Iron's design, seed 002).
//
// # Operations
//
// Params are the runtime's evaluated inputs:
//
//	execute  statement (string, native placeholders: $1 for postgres, ? for mysql), args ([]any)
//	insert   table (string), values (map[string]any)
//	update   table, set (map[string]any), where (map[string]any, equality, required)
//	delete   table, where (map[string]any, required)
//	call     procedure (string), args ([]any)
//	query    statement, args  -> Values{"rows": []map[string]any, "count": int64}
//
// Effect operations return Values{"rows_affected": int64} (and
// "last_insert_id" where the driver reports one). Identifiers (table,
// column, procedure) must match [A-Za-z_][A-Za-z0-9_]* with an optional
// "schema." prefix; they are quoted, values are always bound parameters.
//
// # Exactly-once
//
// With exactly-once on (the default), every effect operation runs in ONE
// read-committed transaction:
//
//  1. insert the key into the control table with an empty result, doing
//     nothing on a conflict (postgres: ON CONFLICT DO NOTHING; mysql:
//     ON DUPLICATE KEY UPDATE with no change). If another transaction holds
//     the same uncommitted key, the database makes this statement wait
//     until that transaction ends;
//  2. if the insert affected no row, the key is committed already: read
//     its stored result, commit, and return it with Result.Replayed;
//  3. otherwise run the operation, store its result under the key, commit.
//
// Taking the key first means a concurrent duplicate (two actives in a
// split brain, or a retry racing a slow first attempt) blocks on the
// control table's primary key before doing any work, and then replays the
// winner's result; if the winner rolls back, the waiter proceeds. A crash
// anywhere before COMMIT leaves nothing: no effect, no key. Keys longer
// than 255 bytes are stored as "sha256:" + hex digest. Results are stored
// as JSON, and the first attempt returns the same JSON-normalised values a
// replay returns (integers as int64, other numbers as float64, times as
// RFC 3339 strings), so a job's variables do not depend on which attempt
// succeeded. "query" has no effect and is not recorded (AtLeastOnce).
//
// The control table (ControlDDL, InitControl; `tandemctl connector init`)
// must exist before the first exactly-once operation. Keys are purged
// after "purge-after" (default 168h): keep it longer than any job can
// stay in retry, or a very late retry would run again.
//
// # Starter
//
// NewStarter (the runtime's engine.StarterSource) has one operation, for
// an orchestration's `starter: connector:` block:
//
//	buffer  table (string, required: the source table),
//	        interval (duration string, default "1s": the wait after
//	        finding the buffer empty or a start refused)
//
//	starter: {connector: {connection: erp, operation: buffer, params: {table: orders}}}
//
// It is the BufferPoller (Conn.BufferStarter; buffer.go), Cast Iron's "get
// inserted/updated/deleted rows": triggers on the source table copy each
// changed row into <table>_tandem_buf (InstallBuffer, `tandemctl
// connector buffer`), and each buffer row starts one job with
// Trigger.Key "<table>:<id>" and the variables op ("insert", "update",
// "delete"), row (the row as an object; the old row for a delete),
// buffer_id and table. The row is locked, the job committed, then the row
// marked done and the endpoint transaction committed: a crash in between
// leaves the row pending, and its redelivery has the same key, so it
// starts no second job.
//
// # Settings
//
//	dsn              full driver DSN (overrides the parts below)
//	host, port       default 127.0.0.1 and 5432 / 3306
//	user, password   default postgres / root, no password
//	database         required unless dsn is given
//	sslmode          postgres only, default disable
//	connect-timeout  default 10s
//	lock-timeout     default 30s: a statement waiting longer for a lock
//	                 (the control key held by a dead active) fails, retryably
//	idle-tx-timeout  default 60s: the server ends a session idle inside a
//	                 transaction this long, releasing its locks (postgres:
//	                 idle_in_transaction_session_timeout; mysql: wait_timeout)
//	control-table    default tandem_control
//	exactly-once     default true; false makes every operation AtLeastOnce
//	purge-after      default 168h; 0 disables purging
//	purge-every      default 1h
//
// # Errors
//
// Errors the endpoint will give again (bad credentials, missing table or
// column, syntax, constraint violations, bad parameters) are Permanent;
// connection loss, deadlocks, lock timeouts and deadlines are not. Either
// way the transaction is rolled back: nothing is half-applied.
//
// Options.Dial replaces the drivers' dialer (lab tests open their sockets
// in a network namespace); the session timeouts lock-timeout and
// idle-tx-timeout bound how long a dead active's uncommitted key blocks
// the survivor (docs/connectors.md).
//
// # Goroutines
//
// A Conn with purging enabled owns one goroutine (purgeLoop), started by
// Open and stopped by Close. A BufferPoller runs on the goroutine that
// calls Run and stops when its context ends.
package sqlconn

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
)

// Dialect is the SQL flavour of an endpoint.
type Dialect string

// The dialects, named as the connector kinds.
const (
	Postgres Dialect = "postgres"
	MySQL    Dialect = "mysql"
)

// ParseDialect accepts "postgres"/"postgresql"/"pg" and "mysql"/"mariadb".
func ParseDialect(s string) (Dialect, error) {
	switch strings.ToLower(s) {
	case "postgres", "postgresql", "pg":
		return Postgres, nil
	case "mysql", "mariadb":
		return MySQL, nil
	}
	return "", fmt.Errorf("%w: %q (want postgres or mysql)", ErrDialect, s)
}

// Errors.
var (
	ErrDialect   = errors.New("sqlconn: unknown dialect")
	ErrSetting   = errors.New("sqlconn: bad setting")
	ErrParam     = errors.New("sqlconn: bad parameter")
	ErrNoRow     = errors.New("sqlconn: control row vanished")
	ErrIdent     = errors.New("sqlconn: bad identifier")
	ErrNotDone   = errors.New("sqlconn: control key found without a result")
	ErrBadResult = errors.New("sqlconn: stored result is not valid JSON")
)

// Operation names.
const (
	OpExecute = "execute"
	OpInsert  = "insert"
	OpUpdate  = "update"
	OpDelete  = "delete"
	OpCall    = "call"
	OpQuery   = "query"
)

// DefaultControlTable is the control table's name unless set.
const DefaultControlTable = "tandem_control"

// maxKeyLen is the control table's key column width.
const maxKeyLen = 255

// Register adds the kinds "postgres" and "mysql" to r.
func Register(r *connectors.Registry) {
	for _, d := range []Dialect{Postgres, MySQL} {
		r.Register(string(d), func(name string, s connectors.Settings) (connectors.Connector, error) {
			return Open(d, s, Options{Name: name})
		})
	}
}

// Options are the parts of a Conn that are not settings.
type Options struct {
	Name   string      // the connection's name, for logs
	Logger *zap.Logger // nil: no logging
	Clock  clock.Clock // nil: clock.Real(); paces purging and buffer polls
	// Dial, if set, opens the connections to the server (lab tests pass a
	// dialer whose sockets live in a network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is an open SQL connector. It implements connectors.Connector.
type Conn struct {
	d          Dialect
	db         *sql.DB
	control    string // quoted control table name
	exactly    bool
	purgeAfter time.Duration
	clk        clock.Clock
	log        *zap.Logger

	ctx    context.Context // ends at Close: stops purgeLoop and its query
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ connectors.Connector = (*Conn)(nil)

// DSN builds the driver DSN for d from settings.
func DSN(d Dialect, s connectors.Settings) (string, error) {
	if dsn := s["dsn"]; dsn != "" {
		return dsn, nil
	}
	db, err := s.Require("database")
	if err != nil {
		return "", err
	}
	timeout, err := durationSetting(s, "connect-timeout", 10*time.Second)
	if err != nil {
		return "", err
	}
	host := cmpOr(s["host"], "127.0.0.1")
	switch d {
	case Postgres:
		port := cmpOr(s["port"], "5432")
		u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, port), Path: "/" + db}
		user := cmpOr(s["user"], "postgres")
		if pw, ok := s["password"]; ok {
			u.User = url.UserPassword(user, pw)
		} else {
			u.User = url.User(user)
		}
		q := url.Values{}
		q.Set("sslmode", cmpOr(s["sslmode"], "disable"))
		q.Set("connect_timeout", strconv.Itoa(max(1, int(timeout.Seconds()))))
		u.RawQuery = q.Encode()
		return u.String(), nil
	case MySQL:
		port := cmpOr(s["port"], "3306")
		c := mysql.NewConfig()
		c.User = cmpOr(s["user"], "root")
		c.Passwd = s["password"]
		c.Net = "tcp"
		c.Addr = net.JoinHostPort(host, port)
		c.DBName = db
		c.Timeout = timeout
		c.ParseTime = true
		return c.FormatDSN(), nil
	}
	return "", fmt.Errorf("%w: %q", ErrDialect, d)
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func durationSetting(s connectors.Settings, name string, def time.Duration) (time.Duration, error) {
	v, ok := s[name]
	if !ok || v == "" {
		return def, nil
	}
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w %q: %q is not a duration like 30s or 168h", ErrSetting, name, v)
	}
	return d, nil
}

// Open connects lazily (database/sql) to the endpoint described by s; it
// validates the settings but does not reach the server (Test does).
func Open(d Dialect, s connectors.Settings, o Options) (*Conn, error) {
	if d != Postgres && d != MySQL {
		return nil, fmt.Errorf("%w: %q", ErrDialect, d)
	}
	dsn, err := DSN(d, s)
	if err != nil {
		return nil, err
	}
	ctl, err := quoteIdent(d, cmpOr(s["control-table"], DefaultControlTable))
	if err != nil {
		return nil, fmt.Errorf("%w \"control-table\": %w", ErrSetting, err)
	}
	exactly := true
	if v := s["exactly-once"]; v != "" {
		if exactly, err = strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("%w \"exactly-once\": %q is not true or false", ErrSetting, v)
		}
	}
	purgeAfter, err := durationSetting(s, "purge-after", 168*time.Hour)
	if err != nil {
		return nil, err
	}
	purgeEvery, err := durationSetting(s, "purge-every", time.Hour)
	if err != nil {
		return nil, err
	}
	lockTimeout, err := durationSetting(s, "lock-timeout", 30*time.Second)
	if err != nil {
		return nil, err
	}
	idleTx, err := durationSetting(s, "idle-tx-timeout", time.Minute)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	db, err := openDB(d, dsn, o.Dial, lockTimeout, idleTx, log)
	if err != nil {
		return nil, err
	}
	clk := o.Clock
	if clk == nil {
		clk = clock.Real()
	}
	c := &Conn{
		d: d, db: db, control: ctl, exactly: exactly, purgeAfter: purgeAfter, clk: clk,
		log: log.Named("sqlconn").With(zap.String("connection", o.Name), zap.String("kind", string(d))),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if exactly && purgeAfter > 0 && purgeEvery > 0 {
		c.wg.Add(1)
		go c.purgeLoop(clk, purgeEvery)
	}
	return c, nil
}

// openDB opens the pool. The session timeouts bound how long the control
// key of an active that died inside its transaction blocks the survivor:
// the server ends the dead session after idleTx, and a claim waiting on
// its key gives up (retryably) after lockTimeout.
func openDB(d Dialect, dsn string, dial func(ctx context.Context, network, addr string) (net.Conn, error), lockTimeout, idleTx time.Duration, log *zap.Logger) (*sql.DB, error) {
	ms := func(x time.Duration) string { return strconv.FormatInt(x.Milliseconds(), 10) }
	secs := func(x time.Duration) string { return strconv.FormatInt(max(1, int64(x/time.Second)), 10) }
	if d == Postgres {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("%w \"dsn\": %w", ErrSetting, err)
		}
		if dial != nil {
			cfg.DialFunc = dial
		}
		if lockTimeout > 0 {
			cfg.RuntimeParams["lock_timeout"] = ms(lockTimeout)
		}
		if idleTx > 0 {
			cfg.RuntimeParams["idle_in_transaction_session_timeout"] = ms(idleTx)
		}
		return stdlib.OpenDB(*cfg), nil
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w \"dsn\": %w", ErrSetting, err)
	}
	if dial != nil {
		cfg.DialFunc = dial
	}
	// The driver's own logger is the standard library's; route its
	// messages (dropped connections it retries) to ours.
	cfg.Logger = driverLog{log.Named("mysql-driver")}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	if lockTimeout > 0 {
		cfg.Params["innodb_lock_wait_timeout"] = secs(lockTimeout)
	}
	if idleTx > 0 {
		// MariaDB's idle_transaction_timeout does not exist in MySQL (an
		// unknown variable would fail every connection); wait_timeout, in
		// both, ends any idle session, so the pool drops idle connections
		// well before the server does.
		cfg.Params["wait_timeout"] = secs(idleTx)
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSetting, err)
	}
	db := sql.OpenDB(conn)
	if idleTx > 0 {
		db.SetConnMaxIdleTime(idleTx / 2)
	}
	return db, nil
}

// driverLog adapts zap to go-sql-driver/mysql's Logger.
type driverLog struct{ l *zap.Logger }

func (d driverLog) Print(v ...any) { d.l.Debug(strings.TrimSpace(fmt.Sprint(v...))) }

// DB is the underlying pool (for buffer tables and tests).
func (c *Conn) DB() *sql.DB { return c.db }

// Dialect is the endpoint's dialect.
func (c *Conn) Dialect() Dialect { return c.d }

// Kind implements connectors.Connector.
func (c *Conn) Kind() string { return string(c.d) }

// Guarantee implements connectors.Connector.
func (c *Conn) Guarantee(op string) connectors.Guarantee {
	switch op {
	case OpExecute, OpInsert, OpUpdate, OpDelete, OpCall:
		if c.exactly {
			return connectors.ExactlyOnce
		}
	}
	return connectors.AtLeastOnce
}

// Test implements connectors.Connector: it reaches the server and, in
// exactly-once mode, checks that the control table exists.
func (c *Conn) Test(ctx context.Context) error {
	if err := c.db.PingContext(ctx); err != nil {
		return classify(fmt.Errorf("sqlconn: reach %s: %w", c.d, err))
	}
	if c.exactly {
		var n int64
		if err := c.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+c.control+" WHERE 1=0").Scan(&n); err != nil {
			return classify(fmt.Errorf("sqlconn: control table %s (run `tandemctl connector init`): %w", c.control, err))
		}
	}
	return nil
}

// Close stops purging and closes the pool.
func (c *Conn) Close() error {
	c.cancel()
	c.wg.Wait()
	return c.db.Close()
}

// Invoke implements connectors.Connector.
func (c *Conn) Invoke(ctx context.Context, req connectors.Request) (connectors.Result, error) {
	st, err := c.build(req)
	if err != nil {
		return connectors.Result{}, connectors.Permanent(err)
	}
	if st.query {
		v, err := c.runQuery(ctx, c.db, st)
		return connectors.Result{Values: v}, err
	}
	if !c.exactly {
		v, err := c.runExec(ctx, c.db, st)
		return connectors.Result{Values: v}, err
	}
	if req.Key == "" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: %s needs an idempotency key in exactly-once mode", ErrParam, req.Operation))
	}
	return c.once1(ctx, req, st)
}

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// once1 is the exactly-once transaction (see the package doc).
func (c *Conn) once1(ctx context.Context, req connectors.Request, st stmt) (connectors.Result, error) {
	key := controlKey(req.Key)
	tx, err := c.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return connectors.Result{}, classify(fmt.Errorf("sqlconn: begin: %w", err))
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	res, err := tx.ExecContext(ctx, c.claimSQL(), key)
	if err != nil {
		return connectors.Result{}, classify(fmt.Errorf("sqlconn: claim key in %s: %w", c.control, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return connectors.Result{}, fmt.Errorf("sqlconn: claim key: %w", err)
	}
	if n == 0 {
		v, err := c.stored(ctx, tx, key)
		if err != nil {
			return connectors.Result{}, err
		}
		if err := tx.Commit(); err != nil {
			return connectors.Result{}, classify(fmt.Errorf("sqlconn: commit replay: %w", err))
		}
		c.log.Debug("replayed", zap.String("key", req.Key), zap.String("op", req.Operation))
		return connectors.Result{Values: v, Replayed: true}, nil
	}
	v, err := c.runExec(ctx, tx, st)
	if err != nil {
		return connectors.Result{}, err
	}
	blob, err := json.Marshal(v)
	if err != nil {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("sqlconn: encode result: %w", err))
	}
	if _, err := tx.ExecContext(ctx, "UPDATE "+c.control+" SET result = "+c.ph(1)+" WHERE idem_key = "+c.ph(2), string(blob), key); err != nil {
		return connectors.Result{}, classify(fmt.Errorf("sqlconn: store result: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return connectors.Result{}, classify(fmt.Errorf("sqlconn: commit: %w", err))
	}
	return connectors.Result{Values: v}, nil
}

func (c *Conn) claimSQL() string {
	if c.d == Postgres {
		return "INSERT INTO " + c.control + " (idem_key, result) VALUES ($1, '') ON CONFLICT (idem_key) DO NOTHING"
	}
	return "INSERT INTO " + c.control + " (idem_key, result) VALUES (?, '') ON DUPLICATE KEY UPDATE idem_key = idem_key"
}

func (c *Conn) stored(ctx context.Context, q querier, key string) (map[string]any, error) {
	rows, err := q.QueryContext(ctx, "SELECT result FROM "+c.control+" WHERE idem_key = "+c.ph(1), key)
	if err != nil {
		return nil, classify(fmt.Errorf("sqlconn: read stored result: %w", err))
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, classify(fmt.Errorf("sqlconn: read stored result: %w", err))
		}
		// Purged between the claim and the read: retrying claims afresh.
		return nil, fmt.Errorf("%w: key %q", ErrNoRow, key)
	}
	var blob string
	if err := rows.Scan(&blob); err != nil {
		return nil, fmt.Errorf("sqlconn: read stored result: %w", err)
	}
	if blob == "" {
		// Only an uncommitted claim has an empty result, and read committed
		// never shows one: this is a table written by something else.
		return nil, connectors.Permanent(fmt.Errorf("%w: key %q", ErrNotDone, key))
	}
	return decodeValues([]byte(blob))
}

// controlKey fits key in the control table's column.
func controlKey(key string) string {
	if len(key) <= maxKeyLen {
		return key
	}
	return hashKey(key)
}

// ph is the n-th (1-based) placeholder in c's dialect.
func (c *Conn) ph(n int) string { return placeholder(c.d, n) }

func placeholder(d Dialect, n int) string {
	if d == Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// stmt is one operation compiled to SQL.
type stmt struct {
	sql   string
	args  []any
	query bool
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// maxIdent is the longest identifier (each part of schema.name) the
// server keeps whole: PostgreSQL truncates beyond NAMEDATALEN-1 = 63 bytes,
// which would make two long names collide silently; MySQL refuses > 64.
func maxIdent(d Dialect) int {
	if d == MySQL {
		return 64
	}
	return 63
}

// quoteIdent validates and quotes a possibly schema-qualified identifier.
func quoteIdent(d Dialect, name string) (string, error) {
	if !identRe.MatchString(name) {
		return "", fmt.Errorf("%w: %q (letters, digits and _, optionally schema.name)", ErrIdent, name)
	}
	for _, part := range strings.Split(name, ".") {
		if len(part) > maxIdent(d) {
			return "", fmt.Errorf("%w: %q: %q is longer than %s's %d-byte limit", ErrIdent, name, part, d, maxIdent(d))
		}
	}
	q := `"`
	if d == MySQL {
		q = "`"
	}
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = q + p + q
	}
	return strings.Join(parts, "."), nil
}

func (c *Conn) build(req connectors.Request) (stmt, error) {
	p := req.Params
	str := func(name string) (string, error) {
		v, ok := p[name].(string)
		if !ok || v == "" {
			return "", fmt.Errorf("%w %q of %s: a non-empty string is required", ErrParam, name, req.Operation)
		}
		return v, nil
	}
	list := func(name string) ([]any, error) {
		switch v := p[name].(type) {
		case nil:
			return nil, nil
		case []any:
			return v, nil
		case []string:
			out := make([]any, len(v))
			for i, s := range v {
				out[i] = s
			}
			return out, nil
		}
		return nil, fmt.Errorf("%w %q of %s: a list is required, got %T", ErrParam, name, req.Operation, p[name])
	}
	object := func(name string, required bool) (map[string]any, error) {
		v, ok := p[name].(map[string]any)
		if (!ok && p[name] != nil) || (required && len(v) == 0) {
			return nil, fmt.Errorf("%w %q of %s: a non-empty object of column: value is required", ErrParam, name, req.Operation)
		}
		return v, nil
	}
	table := func() (string, error) {
		t, err := str("table")
		if err != nil {
			return "", err
		}
		q, err := quoteIdent(c.d, t)
		if err != nil {
			return "", fmt.Errorf("%w %q of %s: %w", ErrParam, "table", req.Operation, err)
		}
		return q, nil
	}
	// cols renders m's columns in sorted order (deterministic SQL) as
	// "col = $n" joined by sep, appending the values to args.
	cols := func(m map[string]any, sep string, args *[]any) (string, error) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			q, err := quoteIdent(c.d, k)
			if err != nil {
				return "", fmt.Errorf("%w: column of %s: %w", ErrParam, req.Operation, err)
			}
			*args = append(*args, sqlValue(m[k]))
			parts[i] = q + " = " + c.ph(len(*args))
		}
		return strings.Join(parts, sep), nil
	}

	switch req.Operation {
	case OpExecute, OpQuery:
		s, err := str("statement")
		if err != nil {
			return stmt{}, err
		}
		args, err := list("args")
		if err != nil {
			return stmt{}, err
		}
		return stmt{sql: s, args: mapValues(args), query: req.Operation == OpQuery}, nil
	case OpInsert:
		t, err := table()
		if err != nil {
			return stmt{}, err
		}
		vals, err := object("values", true)
		if err != nil {
			return stmt{}, err
		}
		keys := make([]string, 0, len(vals))
		for k := range vals {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		names := make([]string, len(keys))
		phs := make([]string, len(keys))
		args := make([]any, len(keys))
		for i, k := range keys {
			q, err := quoteIdent(c.d, k)
			if err != nil {
				return stmt{}, fmt.Errorf("%w: column of insert: %w", ErrParam, err)
			}
			names[i], phs[i], args[i] = q, c.ph(i+1), sqlValue(vals[k])
		}
		return stmt{sql: "INSERT INTO " + t + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(phs, ", ") + ")", args: args}, nil
	case OpUpdate:
		t, err := table()
		if err != nil {
			return stmt{}, err
		}
		set, err := object("set", true)
		if err != nil {
			return stmt{}, err
		}
		where, err := object("where", true)
		if err != nil {
			return stmt{}, err
		}
		var args []any
		s, err := cols(set, ", ", &args)
		if err != nil {
			return stmt{}, err
		}
		w, err := cols(where, " AND ", &args)
		if err != nil {
			return stmt{}, err
		}
		return stmt{sql: "UPDATE " + t + " SET " + s + " WHERE " + w, args: args}, nil
	case OpDelete:
		t, err := table()
		if err != nil {
			return stmt{}, err
		}
		where, err := object("where", true)
		if err != nil {
			return stmt{}, err
		}
		var args []any
		w, err := cols(where, " AND ", &args)
		if err != nil {
			return stmt{}, err
		}
		return stmt{sql: "DELETE FROM " + t + " WHERE " + w, args: args}, nil
	case OpCall:
		pr, err := str("procedure")
		if err != nil {
			return stmt{}, err
		}
		q, err := quoteIdent(c.d, pr)
		if err != nil {
			return stmt{}, fmt.Errorf("%w %q of call: %w", ErrParam, "procedure", err)
		}
		args, err := list("args")
		if err != nil {
			return stmt{}, err
		}
		phs := make([]string, len(args))
		for i := range args {
			phs[i] = c.ph(i + 1)
		}
		return stmt{sql: "CALL " + q + "(" + strings.Join(phs, ", ") + ")", args: mapValues(args)}, nil
	}
	return stmt{}, fmt.Errorf("%w: %q (sql has execute, insert, update, delete, call, query)", connectors.ErrUnknownOperation, req.Operation)
}

// sqlValue adapts a runtime value to a driver argument: objects and lists
// (JSON in the job's variables) are sent as JSON text.
func sqlValue(v any) any {
	switch v.(type) {
	case map[string]any, []any:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
	return v
}

func mapValues(in []any) []any {
	out := make([]any, len(in))
	for i, v := range in {
		out[i] = sqlValue(v)
	}
	return out
}

func (c *Conn) runExec(ctx context.Context, q querier, st stmt) (map[string]any, error) {
	res, err := q.ExecContext(ctx, st.sql, st.args...)
	if err != nil {
		return nil, classify(fmt.Errorf("sqlconn: %s: %w", firstWord(st.sql), err))
	}
	v := map[string]any{}
	if n, err := res.RowsAffected(); err == nil {
		v["rows_affected"] = n
	}
	if c.d == MySQL {
		if id, err := res.LastInsertId(); err == nil && id != 0 {
			v["last_insert_id"] = id
		}
	}
	return normalize(v)
}

func (c *Conn) runQuery(ctx context.Context, q querier, st stmt) (map[string]any, error) {
	rows, err := q.QueryContext(ctx, st.sql, st.args...)
	if err != nil {
		return nil, classify(fmt.Errorf("sqlconn: query: %w", err))
	}
	defer rows.Close()
	names, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("sqlconn: query: %w", err)
	}
	out := []any{}
	for rows.Next() {
		vals := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("sqlconn: query: %w", err)
		}
		row := make(map[string]any, len(names))
		for i, n := range names {
			if b, ok := vals[i].([]byte); ok {
				vals[i] = string(b) // mysql returns text as bytes
			}
			row[n] = vals[i]
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(fmt.Errorf("sqlconn: query: %w", err))
	}
	return normalize(map[string]any{"rows": out, "count": int64(len(out))})
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t\n"); i > 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}

// normalize round-trips v through JSON, so a first attempt returns what a
// replay of the stored result returns.
func normalize(v map[string]any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("sqlconn: result is not JSON-encodable: %w", err))
	}
	return decodeValues(b)
}

func decodeValues(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, connectors.Permanent(fmt.Errorf("%w: %w", ErrBadResult, err))
	}
	return fixNumbers(v).(map[string]any), nil
}

func fixNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = fixNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = fixNumbers(e)
		}
		return x
	}
	return v
}

// classify marks errors the endpoint will repeat as Permanent.
func classify(err error) error {
	if err == nil || connectors.IsPermanent(err) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "22", "23", "28", "42", "3D", "3F", "2B", "0A", "P0":
			return connectors.Permanent(err)
		}
		return err
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1044, 1045, 1049, 1046, 1048, 1054, 1062, 1064, 1146, 1136, 1166, 1216, 1217, 1264, 1292, 1305, 1318, 1364, 1366, 1406, 1451, 1452, 1698, 4025:
			return connectors.Permanent(err)
		}
	}
	return err
}
