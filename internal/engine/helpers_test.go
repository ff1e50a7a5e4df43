package engine_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/engine/kvtest"
	"github.com/tandem-ha/tandem/internal/engine/testconn"
)

// rig is an engine on a real pebble store in a temp dir with the test
// connector.
type rig struct {
	t     *testing.T
	dir   string
	store *kvtest.Store
	ep    *testconn.Endpoint
	reg   *connectors.Registry
	clk   clock.Clock
	e     *engine.Engine
}

func newRig(t *testing.T, clk clock.Clock, mod func(*engine.Options)) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir(), ep: testconn.NewEndpoint(), reg: &connectors.Registry{}, clk: clk}
	testconn.Register(r.reg, r.ep)
	st, err := kvtest.Open(r.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.store = st
	t.Cleanup(func() { st.Close() })
	r.e = r.newEngine(st, mod)
	return r
}

func (r *rig) newEngine(st engine.Store, mod func(*engine.Options)) *engine.Engine {
	o := engine.Options{Store: st, Connectors: r.reg, Clock: r.clk, Logger: zaptest.NewLogger(r.t), Node: "a"}
	if mod != nil {
		mod(&o)
	}
	e, err := engine.New(o)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { e.Stop() })
	return e
}

func (r *rig) start(e *engine.Engine) {
	r.t.Helper()
	if err := e.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) deploy(e *engine.Engine, src string) {
	r.t.Helper()
	if _, err := e.Deploy(context.Background(), map[string]string{"p.yaml": src}); err != nil {
		r.t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) wait(e *engine.Engine, id string) api.JobInfo {
	r.t.Helper()
	j, err := e.Wait(ctxT(r.t), id)
	if err != nil {
		r.t.Fatalf("waiting for %s: %v", id, err)
	}
	return j
}
