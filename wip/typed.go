package wip

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Job is the record of one orchestration run.
type Job struct {
	ID         string          `json:"id"`
	Deployment string          `json:"deployment"`
	State      string          `json:"state"` // the runtime's vocabulary (running, done, failed...)
	Input      json.RawMessage `json:"input,omitempty"`
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"`
}

// Checkpoint is a job's state before or after a connector activity.
type Checkpoint struct {
	JobID          string          `json:"job_id"`
	Step           string          `json:"step"` // step path, the key's last part
	Cursor         string          `json:"cursor,omitempty"`
	Vars           json.RawMessage `json:"vars,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Done           bool            `json:"done"`
	Result         json.RawMessage `json:"result,omitempty"`
}

// Deployment is a deployed orchestration version.
type Deployment struct {
	Name    string          `json:"name"`
	Version string          `json:"version"`
	Spec    json.RawMessage `json:"spec,omitempty"`
}

// Typed key prefixes (user key space; see the package doc).
const (
	PrefixJob        = "job/"
	PrefixCheckpoint = "ckpt/"
	PrefixDeployment = "dep/"
	PrefixSetting    = "set/"
)

// ErrBadID is returned for an empty id or one containing '/'.
var ErrBadID = errors.New("wip: bad id")

func checkID(field, id string) error {
	if id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("%w: %s %q (empty or contains '/')", ErrBadID, field, id)
	}
	return nil
}

func (b *Batch) putJSON(key string, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b.Set([]byte(key), j)
	return nil
}

// PutJob records j in the batch.
func (b *Batch) PutJob(j Job) error {
	if err := checkID("job id", j.ID); err != nil {
		return err
	}
	return b.putJSON(PrefixJob+j.ID, j)
}

// DeleteJob removes a job and must be given its checkpoints' steps to purge
// them too (the runtime knows them; Checkpoints lists them).
func (b *Batch) DeleteJob(id string, steps ...string) {
	b.Delete([]byte(PrefixJob + id))
	for _, s := range steps {
		b.Delete([]byte(PrefixCheckpoint + id + "/" + s))
	}
}

// PutCheckpoint records c in the batch.
func (b *Batch) PutCheckpoint(c Checkpoint) error {
	if err := checkID("checkpoint job id", c.JobID); err != nil {
		return err
	}
	if c.Step == "" {
		return fmt.Errorf("%w: checkpoint step is empty", ErrBadID)
	}
	return b.putJSON(PrefixCheckpoint+c.JobID+"/"+c.Step, c)
}

// PutDeployment records d in the batch.
func (b *Batch) PutDeployment(d Deployment) error {
	if err := checkID("deployment name", d.Name); err != nil {
		return err
	}
	return b.putJSON(PrefixDeployment+d.Name, d)
}

// PutSetting records a setting.
func (b *Batch) PutSetting(name string, value []byte) error {
	if err := checkID("setting name", name); err != nil {
		return err
	}
	b.Set([]byte(PrefixSetting+name), value)
	return nil
}

func getJSON[T any](s *Store, key string) (T, bool, error) {
	var v T
	raw, ok, err := s.Get([]byte(key))
	if err != nil || !ok {
		return v, ok, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return v, true, nil
}

func scanJSON[T any](s *Store, prefix string, fn func(T) error) error {
	return s.Scan([]byte(prefix), func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
		}
		return fn(v)
	})
}

// GetJob returns a job.
func (s *Store) GetJob(id string) (Job, bool, error) { return getJSON[Job](s, PrefixJob+id) }

// Jobs calls fn for every job in id order.
func (s *Store) Jobs(fn func(Job) error) error { return scanJSON(s, PrefixJob, fn) }

// Checkpoints calls fn for every checkpoint of a job in step order.
func (s *Store) Checkpoints(jobID string, fn func(Checkpoint) error) error {
	return scanJSON(s, PrefixCheckpoint+jobID+"/", fn)
}

// GetDeployment returns a deployment.
func (s *Store) GetDeployment(name string) (Deployment, bool, error) {
	return getJSON[Deployment](s, PrefixDeployment+name)
}

// Deployments calls fn for every deployment in name order.
func (s *Store) Deployments(fn func(Deployment) error) error {
	return scanJSON(s, PrefixDeployment, fn)
}

// Setting returns a setting's value.
func (s *Store) Setting(name string) ([]byte, bool, error) {
	return s.Get([]byte(PrefixSetting + name))
}
