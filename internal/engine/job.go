package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/orch"
)

// errHandover ends a job's goroutine without a further commit: the engine
// is pausing or stopping and the job's last checkpoint is where the next
// active (or this node after restart) resumes it.
var errHandover = errors.New("engine: job handed over")

// runner executes one job. It owns rec while it runs; the engine reads a
// copy under e.mu (snapshot).
type runner struct {
	e   *Engine
	dep *deployment
	o   *orch.Orchestration
	rec *jobRecord
	log *zap.Logger
}

// stepErr is a failure inside the orchestration that try/catch can catch.
type stepErr struct {
	step string
	err  error
}

func (s *stepErr) Error() string { return fmt.Sprintf("step %s: %v", s.step, s.err) }
func (s *stepErr) Unwrap() error { return s.err }

// run drives the job until it finishes, is handed over (ctx ended) or the
// store fails. Pure steps run in memory; each connector call is bracketed
// by a "before" checkpoint (cursor, variables, key, parameters) and an
// "after" checkpoint (result in the variables, cursor past the step).
func (r *runner) run(ctx context.Context) error {
	if len(r.rec.Stack) == 0 && !finished(r.rec.Status) {
		r.rec.Stack = []frame{{}}
	}
	if p := r.rec.Pending; p != nil {
		// Resumed with a call in doubt: repeat it with the same key.
		if err := r.invoke(ctx, r.o.ByID[p.Step]); err != nil {
			return err
		}
	}
	for !finished(r.rec.Status) {
		if err := ctx.Err(); err != nil {
			return errHandover
		}
		if err := r.step(ctx); err != nil {
			var se *stepErr
			if !errors.As(err, &se) {
				return err
			}
			if err := r.raise(ctx, se, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *runner) list(f frame) []*orch.Step {
	if f.Step == "" {
		return r.o.Steps
	}
	s := r.o.ByID[f.Step]
	switch f.Part {
	case "then":
		return s.Then
	case "else":
		return s.Else
	case "do":
		return s.Do
	case "try":
		return s.Try
	case "catch":
		return s.Catch
	}
	return nil
}

// path is the step's position for idempotency keys (I6): the enclosing
// loops with their iteration, then the step id. Deterministic: no time,
// no attempt number.
func (r *runner) path(stepID string) string {
	var b strings.Builder
	for _, f := range r.rec.Stack {
		if f.Part == "do" {
			b.WriteString(f.Step)
			b.WriteByte('#')
			b.WriteString(strconv.Itoa(f.Iter))
			b.WriteByte('/')
		}
	}
	b.WriteString(stepID)
	return b.String()
}

// Key returns the idempotency key of a job's activity at path.
func Key(jobID, path string) string { return jobID + "/" + path }

func (r *runner) top() *frame { return &r.rec.Stack[len(r.rec.Stack)-1] }

func (r *runner) set(name string, v any) error {
	n, err := normalize(v)
	if err != nil {
		return err
	}
	r.rec.Vars[name] = n
	return nil
}

// step executes the next thing the cursor points at.
func (r *runner) step(ctx context.Context) error {
	f := r.top()
	list := r.list(*f)
	if f.Index >= len(list) {
		return r.endOfList(ctx)
	}
	s := list[f.Index]
	fail := func(err error) error { return &stepErr{step: s.ID, err: err} }
	switch s.Kind {
	case orch.KindAssign:
		for _, a := range s.Assign {
			v, err := a.Value.Eval(r.rec.Vars)
			if err != nil {
				return fail(err)
			}
			if err := r.set(a.Name, v); err != nil {
				return fail(err)
			}
		}
		f.Index++
	case orch.KindIf:
		ok, err := r.cond(s.Cond)
		if err != nil {
			return fail(err)
		}
		part := "else"
		if ok {
			part = "then"
		}
		r.rec.Stack = append(r.rec.Stack, frame{Step: s.ID, Part: part})
	case orch.KindForEach:
		v, err := s.Items.Eval(r.rec.Vars)
		if err != nil {
			return fail(err)
		}
		n, err := normalize(v)
		if err != nil {
			return fail(err)
		}
		items, ok := n.([]any)
		if !ok && n != nil {
			return fail(fmt.Errorf("for-each %q gave %T, not a list", s.Items.Src, v))
		}
		if len(items) == 0 {
			f.Index++
			break
		}
		r.rec.Stack = append(r.rec.Stack, frame{Step: s.ID, Part: "do", Items: items})
		r.rec.Vars[s.As], r.rec.Vars[s.Index] = items[0], 0
	case orch.KindWhile:
		ok, err := r.cond(s.Cond)
		if err != nil {
			return fail(err)
		}
		if !ok {
			f.Index++
			break
		}
		r.rec.Stack = append(r.rec.Stack, frame{Step: s.ID, Part: "do"})
	case orch.KindTry:
		r.rec.Stack = append(r.rec.Stack, frame{Step: s.ID, Part: "try"})
	case orch.KindTerminate:
		reason := ""
		if s.Reason != nil {
			v, err := s.Reason.Eval(r.rec.Vars)
			if err != nil {
				return fail(err)
			}
			reason = fmt.Sprint(v)
		}
		if s.TerminateStatus == StatusFailed {
			return r.finish(ctx, StatusFailed, "terminated at "+s.ID+": "+reason)
		}
		return r.finish(ctx, StatusCompleted, reason)
	case orch.KindCall:
		params, err := evalParams(s.Call.Params, r.rec.Vars)
		if err != nil {
			return fail(err)
		}
		pm, err := normalize(params)
		if err != nil {
			return fail(err)
		}
		r.rec.Pending = &pending{Step: s.ID, Key: Key(r.rec.ID, r.path(s.ID)), Params: pm.(map[string]any), Attempt: 1}
		if err := r.checkpoint(ctx); err != nil { // before
			return err
		}
		return r.invoke(ctx, s)
	}
	return nil
}

func (r *runner) cond(e *orch.Expr) (bool, error) {
	v, err := e.Eval(r.rec.Vars)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition %q gave %T, not a boolean", e.Src, v)
	}
	return b, nil
}

// endOfList pops the finished list, looping where the container is a loop.
func (r *runner) endOfList(ctx context.Context) error {
	f := r.top()
	if f.Step == "" {
		return r.finish(ctx, StatusCompleted, "")
	}
	s := r.o.ByID[f.Step]
	if f.Part == "do" {
		switch s.Kind {
		case orch.KindForEach:
			if f.Iter+1 < len(f.Items) {
				f.Iter++
				f.Index = 0
				r.rec.Vars[s.As], r.rec.Vars[s.Index] = f.Items[f.Iter], f.Iter
				return nil
			}
		case orch.KindWhile:
			ok, err := r.cond(s.Cond)
			if err != nil {
				return &stepErr{step: s.ID, err: err}
			}
			if ok {
				if f.Iter+1 >= s.MaxIterations {
					return &stepErr{step: s.ID, err: fmt.Errorf("while loop exceeded max-iterations (%d)", s.MaxIterations)}
				}
				f.Iter++
				f.Index = 0
				return nil
			}
		}
	}
	r.rec.Stack = r.rec.Stack[:len(r.rec.Stack)-1]
	r.top().Index++
	return nil
}

// raise unwinds to the innermost try whose try-list is running, entering
// its catch with the error in variable "error"; with none the job fails.
// The new cursor is committed (the "after" checkpoint of a failed call).
func (r *runner) raise(ctx context.Context, se *stepErr, commit bool) error {
	r.rec.Pending = nil
	for i := len(r.rec.Stack) - 1; i >= 0; i-- {
		f := r.rec.Stack[i]
		if f.Part == "try" {
			r.rec.Stack = append(r.rec.Stack[:i], frame{Step: f.Step, Part: "catch"})
			r.rec.Vars["error"] = map[string]any{"step": se.step, "message": se.err.Error()}
			r.log.Info("step failed, caught", zap.String("step", se.step), zap.Error(se.err))
			if commit {
				return r.checkpoint(ctx)
			}
			return nil
		}
	}
	return r.finish(ctx, StatusFailed, se.Error())
}

// invoke runs the pending call's attempts under its retry policy, then
// commits the outcome.
func (r *runner) invoke(ctx context.Context, s *orch.Step) error {
	p := r.rec.Pending
	if s == nil || s.Call == nil {
		return fmt.Errorf("%w: job %s: pending step %q is not a call in %s@%d", ErrCorrupt, r.rec.ID, p.Step, r.rec.Project, r.rec.Version)
	}
	c := s.Call
	conn := r.dep.conns[c.Connection]
	for {
		res, err := r.attempt(ctx, conn, c, p)
		if ctx.Err() != nil {
			// The outcome is unknown (the call may have taken effect):
			// leave the before-checkpoint as it is, the next run repeats
			// the call with the same key.
			return errHandover
		}
		if err == nil {
			if c.Result != "" {
				if err := r.set(c.Result, res.Values); err != nil {
					return r.raise(ctx, &stepErr{step: s.ID, err: err}, true)
				}
			}
			r.rec.Pending = nil
			r.rec.Status = StatusRunning
			r.top().Index++
			return r.checkpoint(ctx) // after
		}
		r.e.m.callErrors.Add(1)
		if connectors.IsPermanent(err) || p.Attempt >= c.Retry.MaxAttempts {
			if !connectors.IsPermanent(err) {
				err = fmt.Errorf("after %d attempts: %w", p.Attempt, err)
			}
			r.rec.Status = StatusRunning
			return r.raise(ctx, &stepErr{step: s.ID, err: err}, true)
		}
		p.Attempt++
		r.rec.Status = StatusRetryWait
		r.rec.Reason = err.Error()
		delay := c.Retry.Delay(p.Attempt)
		r.log.Info("call failed, retrying", zap.String("key", p.Key), zap.Int("attempt", p.Attempt), zap.Duration("in", delay), zap.Error(err))
		if err := r.checkpoint(ctx); err != nil {
			return err
		}
		if clock.Sleep(ctx, r.e.clk, delay) != nil {
			return errHandover
		}
		r.rec.Status = StatusRunning
		r.rec.Reason = ""
		r.e.publish(r.rec)
	}
}

func (r *runner) attempt(ctx context.Context, conn connectors.Connector, c *orch.Call, p *pending) (connectors.Result, error) {
	if conn == nil {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("connection %q is not open", c.Connection))
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.Timeout > 0 {
		t := r.e.clk.AfterFunc(c.Timeout, cancel)
		defer t.Stop()
	}
	res, err := conn.Invoke(cctx, connectors.Request{Operation: c.Operation, Key: p.Key, Params: p.Params})
	if err != nil && cctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("timed out after %s: %w", c.Timeout, err)
	}
	return res, err
}

func (r *runner) finish(ctx context.Context, status, reason string) error {
	r.rec.Status, r.rec.Reason = status, reason
	r.rec.Stack, r.rec.Pending = nil, nil
	if status == StatusCompleted {
		if r.o.Output != nil {
			v, err := r.o.Output.Eval(r.rec.Vars)
			if err == nil {
				v, err = normalize(v)
			}
			if err != nil {
				r.rec.Status, r.rec.Reason = StatusFailed, "output: "+err.Error()
			} else {
				r.rec.Output = v
			}
		} else {
			r.rec.Output = r.rec.Vars
		}
	}
	return r.checkpoint(ctx)
}

// checkpoint commits the job record. The commit is not cancelled by a
// pause: a checkpoint under way completes, so what the connector did is
// recorded (the store's own fencing stops a demoted node's writes).
func (r *runner) checkpoint(ctx context.Context) error {
	r.rec.Checkpoints++
	r.rec.Updated = r.e.clk.Now().UTC()
	r.rec.Node = r.e.o.Node
	start := r.e.clk.Now()
	err := r.e.o.Store.Commit(context.WithoutCancel(ctx), r.rec.ops())
	if err != nil {
		return fmt.Errorf("%w: checkpoint of job %s: %v", ErrStore, r.rec.ID, err)
	}
	r.e.m.observeCheckpoint(r.e.clk.Since(start))
	r.e.publish(r.rec)
	return nil
}

func evalParams(v any, vars map[string]any) (any, error) {
	switch t := v.(type) {
	case *orch.Expr:
		return t.Eval(vars)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			y, err := evalParams(x, vars)
			if err != nil {
				return nil, err
			}
			out[k] = y
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			y, err := evalParams(x, vars)
			if err != nil {
				return nil, err
			}
			out[i] = y
		}
		return out, nil
	}
	return v, nil
}
