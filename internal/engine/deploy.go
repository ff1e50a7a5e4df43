package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/orch"
)

// deployment is one loaded version of a project: its definition and open
// connections. Starters run only for the current version.
type deployment struct {
	name     string
	version  int
	deployed time.Time
	prj      *orch.Project
	conns    map[string]connectors.Connector

	stopStarters context.CancelFunc
	starters     sync.WaitGroup
}

func (d *deployment) close(log *zap.Logger) {
	for name, c := range d.conns {
		if err := c.Close(); err != nil {
			log.Warn("closing connection", zap.String("project", d.name), zap.String("connection", name), zap.Error(err))
		}
	}
}

func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func (e *Engine) kindKnown(k string) bool { return slices.Contains(e.o.Connectors.Kinds(), k) }

// build parses files and opens the project's connections.
func (e *Engine) build(files map[string]string, version int, deployed time.Time) (*deployment, error) {
	raw := map[string][]byte{}
	for k, v := range files {
		raw[k] = []byte(v)
	}
	prj, err := orch.Parse(raw, e.kindKnown)
	if err != nil {
		return nil, err
	}
	d := &deployment{name: prj.Name, version: version, deployed: deployed, prj: prj, conns: map[string]connectors.Connector{}}
	for _, name := range slices.Sorted(maps.Keys(prj.Connections)) {
		c := prj.Connections[name]
		conn, err := e.o.Connectors.Open(c.Kind, name, c.Settings)
		if err != nil {
			d.close(e.log)
			return nil, err
		}
		d.conns[name] = conn
	}
	for _, o := range prj.Orchestrations {
		if o.Starter.Kind == orch.StartConnector {
			if _, ok := d.conns[o.Starter.Connection].(StarterSource); !ok {
				d.close(e.log)
				return nil, fmt.Errorf("%w: %s:%d: orchestration %s: starter.connector.connection: connection %q (%s) cannot start jobs",
					orch.ErrInvalid, o.File, o.Line, o.Name, o.Starter.Connection, prj.Connections[o.Starter.Connection].Kind)
			}
		}
	}
	return d, nil
}

// checkStarters asks each connector starter's connection for its Starter
// once, so that an unknown operation or a bad param refuses the
// deployment instead of failing (and being retried) at run time. Only
// Deploy checks: a stored version loads even if a newer connector would
// refuse its params, or its unfinished jobs could not resume.
func (d *deployment) checkStarters() error {
	for _, name := range slices.Sorted(maps.Keys(d.prj.Orchestrations)) {
		o := d.prj.Orchestrations[name]
		if o.Starter.Kind != orch.StartConnector {
			continue
		}
		if _, err := d.conns[o.Starter.Connection].(StarterSource).NewStarter(o.Starter.Operation, o.Starter.Params); err != nil {
			return fmt.Errorf("%w: %s:%d: orchestration %s: starter.connector: %w", orch.ErrInvalid, o.File, o.Line, o.Name, err)
		}
	}
	return nil
}

func (e *Engine) loadVersion(project string, version int) (*deployment, error) {
	v, ok, err := e.o.Store.Get(depvKey(project, version))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStore, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: project %s version %d", ErrNotFound, project, version)
	}
	var dv depVersion
	if err := decodeStrict(v, &dv); err != nil || dv.V != FormatVersion {
		return nil, fmt.Errorf("%w: project %s@%d: %v", ErrCorrupt, project, version, err)
	}
	d, err := e.build(dv.Files, version, dv.Deployed)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.versions[vkey(project, version)]; ok {
		d.close(e.log)
		return old, nil
	}
	e.versions[vkey(project, version)] = d
	return d, nil
}

func vkey(p string, v int) string { return fmt.Sprintf("%s@%d", p, v) }

// version returns the loaded deployment project@v, loading it for a job
// of an older version.
func (e *Engine) version(project string, v int) (*deployment, error) {
	e.mu.Lock()
	d := e.versions[vkey(project, v)]
	e.mu.Unlock()
	if d != nil {
		return d, nil
	}
	return e.loadVersion(project, v)
}

// Deploy validates and stores a project (files: name -> content) as its
// next version and starts its starters. Jobs already running keep the
// version they started with.
func (e *Engine) Deploy(ctx context.Context, files map[string]string) (api.ProjectInfo, error) {
	e.mu.Lock()
	running := e.state == StateRunning
	e.mu.Unlock()
	if !running {
		return api.ProjectInfo{}, fmt.Errorf("%w: deploy on the active node", ErrPaused)
	}
	d, err := e.build(files, 0, e.clk.Now().UTC())
	if err != nil {
		return api.ProjectInfo{}, err
	}
	if err := d.checkStarters(); err != nil {
		d.close(e.log)
		return api.ProjectInfo{}, err
	}
	head := depHead{V: FormatVersion, Version: 1, Deployed: d.deployed}
	if v, ok, err := e.o.Store.Get(depKey(d.name)); err != nil {
		d.close(e.log)
		return api.ProjectInfo{}, fmt.Errorf("%w: %v", ErrStore, err)
	} else if ok {
		var old depHead
		if err := decodeStrict(v, &old); err == nil {
			head.Version = old.Version + 1
		}
	}
	d.version = head.Version
	hb, _ := json.Marshal(head)
	vb, _ := json.Marshal(depVersion{V: FormatVersion, Project: d.name, Version: d.version, Files: files, Deployed: d.deployed})
	if err := e.o.Store.Commit(ctx, []Op{{Key: depvKey(d.name, d.version), Value: vb}, {Key: depKey(d.name), Value: hb}}); err != nil {
		d.close(e.log)
		return api.ProjectInfo{}, fmt.Errorf("%w: %v", ErrStore, err)
	}
	e.mu.Lock()
	old := e.deps[d.name]
	e.deps[d.name] = d
	e.versions[vkey(d.name, d.version)] = d
	e.mu.Unlock()
	if old != nil {
		e.stopDeploymentStarters(old)
	}
	e.mu.Lock()
	if e.state == StateRunning {
		e.startStarters(d)
	}
	e.mu.Unlock()
	e.event(fmt.Sprintf("project %s deployed as version %d (%d orchestrations)", d.name, d.version, len(d.prj.Orchestrations)))
	return projectInfo(d), nil
}

// Undeploy removes a project. It is refused while the project has
// unfinished jobs: they need its definition to resume.
func (e *Engine) Undeploy(ctx context.Context, project string) error {
	e.mu.Lock()
	d, running := e.deps[project], e.state == StateRunning
	e.mu.Unlock()
	if !running {
		return fmt.Errorf("%w: undeploy on the active node", ErrPaused)
	}
	if d == nil {
		return fmt.Errorf("%w: project %q", ErrNotFound, project)
	}
	var unfinished int
	for _, st := range []string{StatusRunning, StatusRetryWait} { // through rt/run/, not every record
		jobs, err := e.Jobs(st, project)
		if err != nil {
			return err
		}
		unfinished += len(jobs)
	}
	if unfinished > 0 {
		return fmt.Errorf("%w: project %s has %d unfinished jobs", ErrState, project, unfinished)
	}
	ops := []Op{{Key: depKey(project), Delete: true}}
	err := e.o.Store.Scan(fmt.Appendf(nil, "%s%s/", depvPrefix, project), func(k, _ []byte) error {
		ops = append(ops, Op{Key: bytes.Clone(k), Delete: true})
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	if err := e.o.Store.Commit(ctx, ops); err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	e.stopDeploymentStarters(d)
	e.mu.Lock()
	delete(e.deps, project)
	for k, v := range e.versions {
		if v.name == project {
			v.close(e.log)
			delete(e.versions, k)
		}
	}
	e.mu.Unlock()
	e.event("project " + project + " undeployed")
	return nil
}

// Projects lists the deployed projects (from the store, so the passive
// answers too).
func (e *Engine) Projects() ([]api.ProjectInfo, error) {
	var out []api.ProjectInfo
	err := e.o.Store.Scan([]byte(depPrefix), func(k, v []byte) error {
		var h depHead
		if err := decodeStrict(v, &h); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
		}
		name := string(k[len(depPrefix):])
		info := api.ProjectInfo{Name: name, Version: h.Version, Deployed: h.Deployed}
		if vb, ok, err := e.o.Store.Get(depvKey(name, h.Version)); err == nil && ok {
			var dv depVersion
			if decodeStrict(vb, &dv) == nil {
				raw := map[string][]byte{}
				for f, c := range dv.Files {
					raw[f] = []byte(c)
				}
				if prj, err := orch.Parse(raw, nil); err == nil {
					info = projectInfo(&deployment{name: name, version: h.Version, deployed: h.Deployed, prj: prj})
				}
			}
		}
		out = append(out, info)
		return nil
	})
	return out, err
}

func projectInfo(d *deployment) api.ProjectInfo {
	info := api.ProjectInfo{Name: d.name, Version: d.version, Deployed: d.deployed}
	for _, name := range slices.Sorted(maps.Keys(d.prj.Orchestrations)) {
		info.Orchestrations = append(info.Orchestrations, api.OrchestrationInfo{Name: name, Starter: starterText(d.prj.Orchestrations[name].Starter)})
	}
	for _, name := range slices.Sorted(maps.Keys(d.prj.Connections)) {
		c := d.prj.Connections[name]
		info.Connections = append(info.Connections, api.ConnectionInfo{Name: name, Kind: c.Kind, Settings: c.Settings.String()})
	}
	return info
}

func starterText(s orch.Starter) string {
	switch s.Kind {
	case orch.StartSchedule:
		if s.Cron != "" {
			return "cron " + s.Cron
		}
		return "every " + s.Every.String()
	case orch.StartHTTP:
		return "http " + s.HTTPMode
	case orch.StartConnector:
		return "connector " + s.Connection + " " + s.Operation
	}
	return string(s.Kind)
}

// startStarters runs d's schedule and connector starters. Caller holds e.mu.
func (e *Engine) startStarters(d *deployment) {
	if d.stopStarters != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopStarters = cancel
	names := slices.Sorted(maps.Keys(d.prj.Orchestrations))
	for _, name := range names {
		o := d.prj.Orchestrations[name]
		switch o.Starter.Kind {
		case orch.StartSchedule:
			d.starters.Add(1)
			go func() { defer d.starters.Done(); e.runSchedule(ctx, d, o) }()
		case orch.StartConnector:
			d.starters.Add(1)
			go func() { defer d.starters.Done(); e.runConnectorStarter(ctx, d, o) }()
		}
	}
}

func (e *Engine) stopDeploymentStarters(d *deployment) {
	e.mu.Lock()
	stop := d.stopStarters
	d.stopStarters = nil
	e.mu.Unlock()
	if stop != nil {
		stop()
		d.starters.Wait()
	}
}

func (e *Engine) stopStarters() {
	e.mu.Lock()
	deps := slices.Collect(maps.Values(e.deps))
	e.mu.Unlock()
	for _, d := range deps {
		e.stopDeploymentStarters(d)
	}
}

// NextFire is when a schedule fires next after now. Interval schedules
// fire on multiples of the interval since the Unix epoch, so both nodes
// compute the same instants and a fire's trigger key (the instant) is
// the same whichever node fires it.
func NextFire(s orch.Starter, now time.Time) time.Time {
	if s.Schedule != nil {
		return s.Schedule.Next(now)
	}
	n := now.UnixNano()
	every := s.Every.Nanoseconds()
	return time.Unix(0, (n/every+1)*every).UTC()
}

func (e *Engine) runSchedule(ctx context.Context, d *deployment, o *orch.Orchestration) {
	log := e.log.With(zap.String("orch", d.name+"/"+o.Name))
	if o.Starter.Every > 0 {
		// Catch up the latest instant, once: the old active may have died
		// between the instant and its job's commit. If it did commit, the
		// key is the same and no second job starts. Earlier missed
		// instants are not replayed (one catch-up, like Quartz's "fire
		// once now"); cron schedules do not catch up.
		now := e.clk.Now()
		if prev := NextFire(o.Starter, now.Add(-o.Starter.Every)); prev.After(d.deployed) {
			e.fire(ctx, log, d, o, prev)
		}
	}
	for {
		now := e.clk.Now()
		next := NextFire(o.Starter, now)
		if clock.Sleep(ctx, e.clk, next.Sub(now)) != nil {
			return
		}
		if e.fire(ctx, log, d, o, next) {
			return
		}
	}
}

// fire starts the job of schedule instant at; it reports whether the
// engine is no longer running.
func (e *Engine) fire(ctx context.Context, log *zap.Logger, d *deployment, o *orch.Orchestration, at time.Time) bool {
	ts := at.UTC().Format(time.RFC3339Nano)
	if _, _, _, err := e.startJob(ctx, d.name, o.Name, "schedule/"+ts, map[string]any{"fired": ts}); err != nil {
		if errors.Is(err, ErrPaused) {
			return true
		}
		log.Error("scheduled job not started", zap.Error(err))
	}
	return false
}

func (e *Engine) runConnectorStarter(ctx context.Context, d *deployment, o *orch.Orchestration) {
	name := d.name + "/" + o.Name
	log := e.log.With(zap.String("orch", name))
	src := d.conns[o.Starter.Connection].(StarterSource)
	backoff := time.Second
	for ctx.Err() == nil {
		st, err := src.NewStarter(o.Starter.Operation, o.Starter.Params)
		if err != nil && connectors.IsPermanent(err) {
			// Bad params in a stored version (Deploy refuses them now):
			// retrying cannot help. Say so once; redeploying fixes it.
			log.Error("starter cannot run; redeploy the project with a valid starter", zap.Error(err))
			e.event(fmt.Sprintf("starter of %s cannot run: %v", name, err))
			return
		}
		began := e.clk.Now()
		if err == nil {
			err = st.Run(ctx, func(sctx context.Context, t connectors.Trigger) error {
				_, _, _, err := e.startJob(sctx, d.name, o.Name, "connector/"+t.Key, t.Input)
				return err
			})
		}
		if ctx.Err() != nil {
			return
		}
		if e.clk.Since(began) > time.Minute {
			backoff = time.Second // it ran well for a while: a fresh failure
		}
		log.Error("starter failed, restarting", zap.Duration("in", backoff), zap.Error(err))
		if clock.Sleep(ctx, e.clk, backoff) != nil {
			return
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
