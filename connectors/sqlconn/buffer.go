package sqlconn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
)

// Buffer tables (Cast Iron's "get inserted/updated/deleted rows"): triggers
// on a source table copy each changed row, as JSON, into the source's
// buffer table; a BufferPoller turns each buffer row into one job.
//
// Buffer table <source>_tandem_buf:
//
//	id        auto-increment primary key (the trigger's order)
//	op        'I', 'U' or 'D'
//	row_data  the new row (the old one for 'D') as a JSON object
//	created_at
//	done_at   NULL until the row's job is started

// ErrNoColumns is returned when a mysql source table has no columns to
// copy (it does not exist, or is not in the connection's database).
var ErrNoColumns = errors.New("sqlconn: source table has no columns")

// BufferTable is the buffer table's name for source.
func BufferTable(source string) string { return source + "_tandem_buf" }

// bufferSuffixes are appended to the source's name (dots made _) for the
// objects BufferDDL creates.
var bufferSuffixes = []string{"_tandem_buf_todo", "_tandem_del", "_tandem_fn", "_tandem_ins", "_tandem_trg", "_tandem_upd"}

// checkBufferNames refuses a source whose derived object names the server
// would not keep whole (see maxIdent), naming the longest one.
func checkBufferNames(d Dialect, source string) error {
	base := strings.ReplaceAll(source, ".", "_")
	names := []string{BufferTable(source)}
	for _, sfx := range bufferSuffixes {
		names = append(names, base+sfx)
	}
	for _, n := range names {
		if _, err := quoteIdent(d, n); err != nil {
			return fmt.Errorf("%w source table %q: the buffer objects' names would be too long: %w", ErrParam, source, err)
		}
	}
	return nil
}

// BufferDDL returns the statements creating source's buffer table and its
// triggers; they are idempotent (re-running replaces the triggers).
// columns lists source's columns and is needed for mysql only, whose
// triggers cannot serialise a whole row.
func BufferDDL(d Dialect, source string, columns []string) ([]string, error) {
	src, err := quoteIdent(d, source)
	if err != nil {
		return nil, fmt.Errorf("%w source table: %w", ErrParam, err)
	}
	if err := checkBufferNames(d, source); err != nil {
		return nil, err
	}
	base := strings.ReplaceAll(source, ".", "_")
	buf, _ := quoteIdent(d, BufferTable(source))
	name := func(suffix string) string { q, _ := quoteIdent(d, base+suffix); return q }
	switch d {
	case Postgres:
		fn := name("_tandem_fn")
		trg := name("_tandem_trg")
		return []string{
			"CREATE TABLE IF NOT EXISTS " + buf + ` (
	id         BIGSERIAL PRIMARY KEY,
	op         CHAR(1) NOT NULL,
	row_data   JSONB NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	done_at    TIMESTAMPTZ
)`,
			"CREATE INDEX IF NOT EXISTS " + name("_tandem_buf_todo") + " ON " + buf + " (id) WHERE done_at IS NULL",
			"CREATE OR REPLACE FUNCTION " + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		INSERT INTO ` + buf + ` (op, row_data) VALUES ('D', to_jsonb(OLD));
		RETURN OLD;
	END IF;
	INSERT INTO ` + buf + ` (op, row_data) VALUES (left(TG_OP, 1), to_jsonb(NEW));
	RETURN NEW;
END
$$`,
			"DROP TRIGGER IF EXISTS " + trg + " ON " + src,
			"CREATE TRIGGER " + trg + " AFTER INSERT OR UPDATE OR DELETE ON " + src + " FOR EACH ROW EXECUTE FUNCTION " + fn + "()",
		}, nil
	case MySQL:
		if len(columns) == 0 {
			return nil, fmt.Errorf("%w: %q", ErrNoColumns, source)
		}
		obj := func(row string) (string, error) {
			parts := make([]string, len(columns))
			for i, c := range columns {
				q, err := quoteIdent(d, c)
				if err != nil {
					return "", fmt.Errorf("%w column: %w", ErrParam, err)
				}
				parts[i] = "'" + c + "', " + row + "." + q
			}
			return "JSON_OBJECT(" + strings.Join(parts, ", ") + ")", nil
		}
		newObj, err := obj("NEW")
		if err != nil {
			return nil, err
		}
		oldObj, _ := obj("OLD")
		out := []string{"CREATE TABLE IF NOT EXISTS " + buf + ` (
	id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
	op         CHAR(1) NOT NULL,
	row_data   LONGTEXT NOT NULL,
	created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	done_at    TIMESTAMP(6) NULL,
	INDEX (done_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`}
		for _, t := range []struct{ ev, op, obj string }{{"INSERT", "I", newObj}, {"UPDATE", "U", newObj}, {"DELETE", "D", oldObj}} {
			trg := name("_tandem_" + strings.ToLower(t.ev[:3]))
			out = append(out,
				"DROP TRIGGER IF EXISTS "+trg,
				"CREATE TRIGGER "+trg+" AFTER "+t.ev+" ON "+src+" FOR EACH ROW INSERT INTO "+buf+" (op, row_data) VALUES ('"+t.op+"', "+t.obj+")")
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrDialect, d)
}

// BufferDropDDL returns the statements removing what BufferDDL created.
func BufferDropDDL(d Dialect, source string) ([]string, error) {
	src, err := quoteIdent(d, source)
	if err != nil {
		return nil, fmt.Errorf("%w source table: %w", ErrParam, err)
	}
	if err := checkBufferNames(d, source); err != nil {
		return nil, err
	}
	base := strings.ReplaceAll(source, ".", "_")
	buf, _ := quoteIdent(d, BufferTable(source))
	name := func(suffix string) string { q, _ := quoteIdent(d, base+suffix); return q }
	if d == Postgres {
		return []string{
			"DROP TRIGGER IF EXISTS " + name("_tandem_trg") + " ON " + src,
			"DROP FUNCTION IF EXISTS " + name("_tandem_fn") + "()",
			"DROP TABLE IF EXISTS " + buf,
		}, nil
	}
	return []string{
		"DROP TRIGGER IF EXISTS " + name("_tandem_ins"),
		"DROP TRIGGER IF EXISTS " + name("_tandem_upd"),
		"DROP TRIGGER IF EXISTS " + name("_tandem_del"),
		"DROP TABLE IF EXISTS " + buf,
	}, nil
}

// InstallBuffer creates source's buffer table and triggers on c's
// database (reading source's columns for mysql).
func (c *Conn) InstallBuffer(ctx context.Context, source string) error {
	var cols []string
	if c.d == MySQL {
		rows, err := c.db.QueryContext(ctx, `SELECT column_name FROM information_schema.columns
WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? ORDER BY ordinal_position`, schemaOf(source), lastPart(source))
		if err != nil {
			return classify(fmt.Errorf("sqlconn: columns of %q: %w", source, err))
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return fmt.Errorf("sqlconn: columns of %q: %w", source, err)
			}
			cols = append(cols, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return classify(fmt.Errorf("sqlconn: columns of %q: %w", source, err))
		}
	}
	stmts, err := BufferDDL(c.d, source, cols)
	if err != nil {
		return connectors.Permanent(err)
	}
	return c.execAll(ctx, stmts, "install buffer for "+source)
}

// DropBuffer removes source's buffer table and triggers.
func (c *Conn) DropBuffer(ctx context.Context, source string) error {
	stmts, err := BufferDropDDL(c.d, source)
	if err != nil {
		return connectors.Permanent(err)
	}
	return c.execAll(ctx, stmts, "drop buffer for "+source)
}

func (c *Conn) execAll(ctx context.Context, stmts []string, what string) error {
	for _, s := range stmts {
		if _, err := c.db.ExecContext(ctx, s); err != nil {
			return classify(fmt.Errorf("sqlconn: %s: %w", what, err))
		}
	}
	return nil
}

func schemaOf(name string) any {
	if i := strings.IndexByte(name, '.'); i > 0 {
		return name[:i]
	}
	return nil
}

// PollerOptions tune a BufferPoller.
type PollerOptions struct {
	// Interval is the wait after finding the buffer empty or after a
	// refused start (default 1s).
	Interval time.Duration
	Clock    clock.Clock // nil: clock.Real()
	Logger   *zap.Logger // nil: no logging
}

// BufferPoller is the buffer-table starter. It implements
// connectors.Starter: for each pending row, in one endpoint transaction,
// it locks the row (FOR UPDATE SKIP LOCKED, so two pollers never hold the
// same row), calls start with Trigger.Key = "<source>:<id>", marks the row
// done and commits. A crash between start and commit leaves the row
// pending: it is delivered again with the same Key, and the runtime starts
// no second job for a Key it has (StartFunc's contract), so a row starts
// exactly one job.
type BufferPoller struct {
	c        *Conn
	source   string
	selectQ  string
	doneQ    string
	interval time.Duration
	clk      clock.Clock
	log      *zap.Logger
}

var _ connectors.Starter = (*BufferPoller)(nil)

// OpBuffer is the starter operation polling a buffer table (NewStarter).
const OpBuffer = "buffer"

// NewStarter implements the runtime's StarterSource (engine.StarterSource)
// for an orchestration's `starter: connector:` block. Operation "buffer"
// is the BufferPoller of params "table" (required: the source table, whose
// buffer InstallBuffer or `tandemctl connector buffer` created) every
// "interval" (default "1s") when the buffer is empty. It checks the params
// but does no I/O: a missing buffer table fails the poller's Run.
func (c *Conn) NewStarter(operation string, params map[string]any) (connectors.Starter, error) {
	if operation != OpBuffer {
		return nil, connectors.UnknownStarter(string(c.d), operation, OpBuffer)
	}
	p := connectors.NewStarterParams("sqlconn: "+string(c.d), operation, params)
	table := p.RequiredString("table")
	interval := p.Duration("interval", time.Second, time.Millisecond)
	if table != "" {
		if _, err := quoteIdent(c.d, table); err != nil {
			p.Fail("table", "%q is not a table name (letters, digits and _, optionally schema.name)", table)
		} else if err := checkBufferNames(c.d, table); err != nil {
			p.Fail("table", "%q is too long for its buffer objects' names (%d bytes at most per name on %s)", table, maxIdent(c.d), c.d)
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return c.BufferStarter(table, PollerOptions{Interval: interval, Clock: c.clk, Logger: c.log})
}

// BufferStarter returns the poller of source's buffer table.
func (c *Conn) BufferStarter(source string, o PollerOptions) (*BufferPoller, error) {
	buf, err := quoteIdent(c.d, BufferTable(source))
	if err != nil {
		return nil, connectors.Permanent(fmt.Errorf("%w source table: %w", ErrParam, err))
	}
	p := &BufferPoller{c: c, source: source, interval: o.Interval, clk: o.Clock, log: o.Logger}
	if p.interval <= 0 {
		p.interval = time.Second
	}
	if p.clk == nil {
		p.clk = clock.Real()
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.log = p.log.Named("buffer").With(zap.String("source", source))
	rowData := "row_data"
	now := "NOW(6)"
	if c.d == Postgres {
		rowData = "row_data::text"
		now = "now()"
	}
	p.selectQ = "SELECT id, op, " + rowData + " FROM " + buf + " WHERE done_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
	p.doneQ = "UPDATE " + buf + " SET done_at = " + now + " WHERE id = " + c.ph(1)
	return p, nil
}

// Run implements connectors.Starter. It returns nil when ctx ends, and an
// error when the database fails (the runtime restarts it with backoff).
func (p *BufferPoller) Run(ctx context.Context, start connectors.StartFunc) error {
	for {
		found, err := p.one(ctx, start)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var refused startRefused
			if !errors.As(err, &refused) {
				return err
			}
			p.log.Warn("start refused; the row stays pending", zap.Error(err))
			found = false
		}
		if found {
			continue // drain without waiting
		}
		if err := clock.Sleep(ctx, p.clk, p.interval); err != nil {
			return nil
		}
	}
}

type startRefused struct{ err error }

func (s startRefused) Error() string { return "sqlconn: start refused: " + s.err.Error() }
func (s startRefused) Unwrap() error { return s.err }

// one handles the oldest unlocked pending row; found is false when there
// was none.
func (p *BufferPoller) one(ctx context.Context, start connectors.StartFunc) (found bool, err error) {
	tx, err := p.c.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return false, fmt.Errorf("sqlconn: buffer %s: begin: %w", p.source, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var (
		id   int64
		op   string
		data string
	)
	switch err := tx.QueryRowContext(ctx, p.selectQ).Scan(&id, &op, &data); {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, classify(fmt.Errorf("sqlconn: buffer %s: select: %w", p.source, err))
	}
	row, err := decodeValues([]byte(data))
	if err != nil {
		return true, fmt.Errorf("sqlconn: buffer %s row %d: %w", p.source, id, err)
	}
	t := connectors.Trigger{
		Key:   p.source + ":" + strconv.FormatInt(id, 10),
		Input: map[string]any{"op": opName(op), "row": row, "buffer_id": id, "table": p.source},
	}
	if err := start(ctx, t); err != nil {
		return true, startRefused{err}
	}
	if _, err := tx.ExecContext(ctx, p.doneQ, id); err != nil {
		return true, classify(fmt.Errorf("sqlconn: buffer %s: mark row %d done: %w", p.source, id, err))
	}
	if err := tx.Commit(); err != nil {
		return true, classify(fmt.Errorf("sqlconn: buffer %s: commit row %d: %w", p.source, id, err))
	}
	p.log.Debug("row started", zap.String("key", t.Key))
	return true, nil
}

func opName(op string) string {
	switch strings.TrimSpace(op) {
	case "I":
		return "insert"
	case "U":
		return "update"
	case "D":
		return "delete"
	}
	return op
}

// Pending counts source's rows not yet started (for tests and status).
func (p *BufferPoller) Pending(ctx context.Context) (int64, error) {
	buf, _ := quoteIdent(p.c.d, BufferTable(p.source))
	var n int64
	err := p.c.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+buf+" WHERE done_at IS NULL").Scan(&n)
	return n, err
}
