package engine

import (
	"context"
	"time"
)

// PurgePass exposes one bounded pass of Purge to the external tests.
func (e *Engine) PurgePass(ctx context.Context, before time.Time, limit int) (int, bool, error) {
	return e.purge(ctx, before, limit)
}
