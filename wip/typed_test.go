package wip

import (
	"context"
	"errors"
	"testing"
)

func TestTypedRecords(t *testing.T) {
	s := openT(t, t.TempDir(), Options{Mode: Async})
	defer s.Close()
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	if err := b.PutJob(Job{ID: "bad/id"}); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad id: %v", err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.PutJob(Job{ID: "j1", Deployment: "d", State: "running"}))
	must(b.PutCheckpoint(Checkpoint{JobID: "j1", Step: "0001", IdempotencyKey: "j1/0001"}))
	must(b.PutCheckpoint(Checkpoint{JobID: "j1", Step: "0002", Done: true}))
	must(b.PutDeployment(Deployment{Name: "d", Version: "3"}))
	must(b.PutSetting("mode", []byte("fast")))
	if _, err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	j, ok, err := s.GetJob("j1")
	if err != nil || !ok || j.State != "running" {
		t.Fatalf("job %+v %v %v", j, ok, err)
	}
	var steps []string
	must(s.Checkpoints("j1", func(c Checkpoint) error { steps = append(steps, c.Step); return nil }))
	if len(steps) != 2 || steps[1] != "0002" {
		t.Fatalf("checkpoints %v", steps)
	}
	d, ok, _ := s.GetDeployment("d")
	if !ok || d.Version != "3" {
		t.Fatalf("deployment %+v", d)
	}
	v, ok, _ := s.Setting("mode")
	if !ok || string(v) != "fast" {
		t.Fatalf("setting %q", v)
	}
	b = s.NewBatch()
	b.DeleteJob("j1", steps...)
	if _, err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	n := 0
	must(s.Jobs(func(Job) error { n++; return nil }))
	must(s.Checkpoints("j1", func(Checkpoint) error { n++; return nil }))
	if n != 0 {
		t.Fatalf("%d records left after DeleteJob", n)
	}
}
