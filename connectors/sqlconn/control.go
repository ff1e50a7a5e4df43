package sqlconn

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// ControlDDL returns the statements creating the control table named
// table (DefaultControlTable if empty) in dialect d; they are idempotent.
// The primary key on idem_key is what refuses a concurrent duplicate; the
// created_at index serves purging. Times are the database's own clock, so
// purging does not depend on the appliances' clocks agreeing with it.
func ControlDDL(d Dialect, table string) ([]string, error) {
	if table == "" {
		table = DefaultControlTable
	}
	q, err := quoteIdent(d, table)
	if err != nil {
		return nil, err
	}
	idx, err := quoteIdent(d, lastPart(table)+"_created_idx")
	if err != nil {
		return nil, err
	}
	switch d {
	case Postgres:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	idem_key   VARCHAR(255) PRIMARY KEY,
	result     TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`,
			"CREATE INDEX IF NOT EXISTS " + idx + " ON " + q + " (created_at)",
		}, nil
	case MySQL:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	idem_key   VARCHAR(255) NOT NULL PRIMARY KEY,
	result     MEDIUMTEXT NOT NULL,
	created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	INDEX ` + idx + ` (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrDialect, d)
}

func lastPart(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			return name[i+1:]
		}
	}
	return name
}

// InitControl creates c's control table if it does not exist.
func (c *Conn) InitControl(ctx context.Context) error {
	return InitControl(ctx, c.db, c.d, unquote(c.control))
}

// InitControl runs ControlDDL(d, table) on db.
func InitControl(ctx context.Context, db *sql.DB, d Dialect, table string) error {
	stmts, err := ControlDDL(d, table)
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return classify(fmt.Errorf("sqlconn: create control table %q: %w", table, err))
		}
	}
	return nil
}

// unquote reverses quoteIdent for a validated identifier.
func unquote(q string) string {
	out := make([]byte, 0, len(q))
	for i := 0; i < len(q); i++ {
		if q[i] != '"' && q[i] != '`' {
			out = append(out, q[i])
		}
	}
	return string(out)
}

// hashKey is the stored form of a key too long for the column.
func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Purge deletes control keys older than age (by the database's clock) and
// returns how many it removed. A key purged while its job can still retry
// lets that retry run the operation again: age must exceed the longest
// retry horizon.
func (c *Conn) Purge(ctx context.Context, age time.Duration) (int64, error) {
	secs := int64(age / time.Second)
	var q string
	if c.d == Postgres {
		q = "DELETE FROM " + c.control + " WHERE created_at < now() - make_interval(secs => $1)"
	} else {
		q = "DELETE FROM " + c.control + " WHERE created_at < NOW(6) - INTERVAL ? SECOND"
	}
	res, err := c.db.ExecContext(ctx, q, secs)
	if err != nil {
		return 0, classify(fmt.Errorf("sqlconn: purge %s: %w", c.control, err))
	}
	return res.RowsAffected()
}

// purgeLoop purges every period until Close cancels c.ctx.
func (c *Conn) purgeLoop(clk clock.Clock, every time.Duration) {
	defer c.wg.Done()
	t := clk.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C():
		}
		n, err := c.Purge(c.ctx, c.purgeAfter)
		if err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("purge failed", zap.Error(err))
			}
			continue
		}
		if n > 0 {
			c.log.Info("purged control keys", zap.Int64("keys", n), zap.Duration("older_than", c.purgeAfter))
		}
	}
}
