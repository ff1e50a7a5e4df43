package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Key space (every key the engine writes starts with Prefix):
//
//	rt/dep/<project>                  depHead: the deployed version
//	rt/depv/<project>/<version:%010d> depVersion: the project's source files
//	rt/job/<job id>                   jobRecord: status, variables, cursor, pending call
//	rt/run/<job id>                   empty: present while the job is unfinished
//	rt/done/<updated ns %020d>/<job id> empty: a finished job, by when it finished (purge order)
//	rt/meta/run-index                 runIndexMark: the epoch whose Start last checked rt/run/
//
// Values are JSON objects carrying "v": FormatVersion; a reader refuses a
// higher version (a node running an older tandemd after a rolling upgrade
// must not misread a job) rather than guessing.
const (
	Prefix        = "rt/"
	depPrefix     = Prefix + "dep/"
	depvPrefix    = Prefix + "depv/"
	jobPrefix     = Prefix + "job/"
	runPrefix     = Prefix + "run/"
	donePrefix    = Prefix + "done/"
	runIndexKey   = Prefix + "meta/run-index"
	FormatVersion = 1
)

func depKey(project string) []byte { return []byte(depPrefix + project) }
func depvKey(project string, v int) []byte {
	return fmt.Appendf(nil, "%s%s/%010d", depvPrefix, project, v)
}
func jobKey(id string) []byte { return []byte(jobPrefix + id) }
func runKey(id string) []byte { return []byte(runPrefix + id) }

// doneKey is j's entry in the index of finished jobs, ordered by the time
// it finished.
func doneKey(j *jobRecord) []byte {
	return fmt.Appendf(nil, "%s%020d/%s", donePrefix, max(j.Updated.UnixNano(), 0), j.ID)
}

// doneID returns the job id of an rt/done/ key.
func doneID(k []byte) string { return string(k[bytes.LastIndexByte(k, '/')+1:]) }

// createOps is the commit that creates j: its record and its rt/run/
// entry.
func (j *jobRecord) createOps() []Op {
	return []Op{{Key: jobKey(j.ID), Value: j.encode()}, {Key: runKey(j.ID), Value: []byte{}}}
}

// ops is the commit of a change to an existing job's record. While the
// job is unfinished that is the record alone (its rt/run/ entry stands
// from createOps, or from Start's rebuild; checkpoints add nothing); the
// commit that finishes it also moves it from rt/run/ to rt/done/. Every
// write of a job record goes through one of the two, so the indexes
// change atomically with the records.
func (j *jobRecord) ops() []Op {
	if finished(j.Status) {
		return []Op{{Key: jobKey(j.ID), Value: j.encode()}, {Key: runKey(j.ID), Delete: true}, {Key: doneKey(j), Value: []byte{}}}
	}
	return []Op{{Key: jobKey(j.ID), Value: j.encode()}}
}

// runIndexMark records that the index of unfinished jobs was complete when
// the runtime started in Epoch: every term since then that wrote jobs ran
// an engine that keeps the index, unless the store's history shows another
// writer (see Engine.unfinishedJobs).
type runIndexMark struct {
	V     int    `json:"v"`
	Epoch uint64 `json:"epoch"`
}

// Job statuses.
const (
	StatusRunning   = "running"
	StatusRetryWait = "retry-wait"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

func finished(status string) bool { return status == StatusCompleted || status == StatusFailed }

type depHead struct {
	V        int       `json:"v"`
	Version  int       `json:"version"`
	Deployed time.Time `json:"deployed"`
}

type depVersion struct {
	V        int               `json:"v"`
	Project  string            `json:"project"`
	Version  int               `json:"version"`
	Files    map[string]string `json:"files"`
	Deployed time.Time         `json:"deployed"`
}

// frame is one level of a job's cursor: the step list being run (the
// container step's id and which of its lists), the next index in it, and
// for loops the iteration and the items being iterated.
type frame struct {
	Step  string `json:"step,omitempty"` // "" for the orchestration's top-level steps
	Part  string `json:"part,omitempty"` // then, else, do, try, catch
	Index int    `json:"i"`
	Iter  int    `json:"iter,omitempty"`
	Items []any  `json:"items,omitempty"`
}

// pending is a connector activity whose "before" checkpoint is committed
// and whose outcome is not: on resume it is invoked again with the same
// key and parameters.
type pending struct {
	Step    string         `json:"step"`
	Key     string         `json:"key"`
	Params  map[string]any `json:"params"`
	Attempt int            `json:"attempt"` // the attempt about to run (1-based)
}

// jobRecord is a job as stored at rt/job/<id>. It is the checkpoint: the
// whole state needed to resume is here.
type jobRecord struct {
	V           int            `json:"v"`
	ID          string         `json:"id"`
	Project     string         `json:"project"`
	Version     int            `json:"version"`
	Orch        string         `json:"orch"`
	Trigger     string         `json:"trigger,omitempty"`
	Status      string         `json:"status"`
	Reason      string         `json:"reason,omitempty"`
	Vars        map[string]any `json:"vars"`
	Stack       []frame        `json:"stack,omitempty"`
	Pending     *pending       `json:"pending,omitempty"`
	Resumptions int            `json:"resumptions"`
	Checkpoints int            `json:"checkpoints"`
	Node        string         `json:"node,omitempty"`
	Created     time.Time      `json:"created"`
	Updated     time.Time      `json:"updated"`
	Output      any            `json:"output,omitempty"`
}

func (j *jobRecord) encode() []byte {
	b, err := json.Marshal(j)
	if err != nil {
		// Vars are normalised through JSON on every change, so this is a
		// programming error.
		panic("engine: encoding job: " + err.Error())
	}
	return b
}

// decodeJob parses a stored job record, refusing unknown format versions
// and records that could not be resumed.
func decodeJob(b []byte) (*jobRecord, error) {
	var j jobRecord
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: job record: %v", ErrCorrupt, err)
	}
	if j.V != FormatVersion {
		return nil, fmt.Errorf("%w: job record format %d (this build reads %d)", ErrCorrupt, j.V, FormatVersion)
	}
	if j.ID == "" || j.Project == "" || j.Orch == "" {
		return nil, fmt.Errorf("%w: job record without id, project or orchestration", ErrCorrupt)
	}
	for _, f := range j.Stack {
		if f.Index < 0 || f.Iter < 0 {
			return nil, fmt.Errorf("%w: job %s: negative cursor", ErrCorrupt, j.ID)
		}
	}
	j.Vars, _ = fixNumbers(j.Vars).(map[string]any)
	if j.Vars == nil {
		j.Vars = map[string]any{}
	}
	for i := range j.Stack {
		for k, it := range j.Stack[i].Items {
			j.Stack[i].Items[k] = fixNumbers(it)
		}
	}
	if j.Pending != nil {
		j.Pending.Params, _ = fixNumbers(j.Pending.Params).(map[string]any)
	}
	j.Output = fixNumbers(j.Output)
	return &j, nil
}

// normalize returns v as it will read back from a checkpoint: JSON types,
// whole numbers as int. Every value entering a job's variables goes
// through it, so a job computes the same after a resume as before.
func normalize(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("engine: value is not JSON-representable: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out any
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	return fixNumbers(out), nil
}

func fixNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return int(i)
		}
		f, err := t.Float64()
		if err != nil {
			return t // out of float range: keep the digits rather than +Inf
		}
		return f
	case map[string]any:
		for k, x := range t {
			t[k] = fixNumbers(x)
		}
	case []any:
		for i, x := range t {
			t[i] = fixNumbers(x)
		}
	}
	return v
}
