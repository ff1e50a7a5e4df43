package engine

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleJob() *jobRecord {
	return &jobRecord{V: FormatVersion, ID: "j1", Project: "p", Version: 2, Orch: "o", Trigger: "http/x",
		Status: StatusRunning, Vars: map[string]any{"n": 3, "f": 1.5, "l": []any{1, "a"}, "m": map[string]any{"k": true}},
		Stack:   []frame{{Index: 1}, {Step: "each", Part: "do", Index: 0, Iter: 1, Items: []any{10, 20}}},
		Pending: &pending{Step: "send", Key: "j1/each#1/send", Params: map[string]any{"v": 20}, Attempt: 2},
		Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Updated: time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)}
}

// A record reads back exactly as written: a resumed job computes with
// the same values (integers stay integers).
func TestJobRecordRoundTrip(t *testing.T) {
	j := sampleJob()
	got, err := decodeJob(j.encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Fatalf("round trip:\n%#v\n%#v", got, j)
	}
}

func TestDecodeJobRefuses(t *testing.T) {
	future := sampleJob()
	future.V = FormatVersion + 1
	noID := sampleJob()
	noID.ID = ""
	neg := sampleJob()
	neg.Stack[0].Index = -1
	for name, b := range map[string][]byte{"future format": future.encode(), "no id": noID.encode(), "negative cursor": neg.encode(), "not json": []byte("{")} {
		if _, err := decodeJob(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeJob: no stored bytes panic the decoder; an accepted record
// re-encodes to one that decodes the same.
func FuzzDecodeJob(f *testing.F) {
	f.Add(sampleJob().encode())
	f.Add([]byte(`{"v":1,"id":"j","project":"p","orch":"o","status":"running","vars":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := decodeJob(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again, err := decodeJob(j.encode())
		if err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		a, _ := json.Marshal(j)
		b2, _ := json.Marshal(again)
		if string(a) != string(b2) {
			t.Fatalf("unstable:\n%s\n%s", a, b2)
		}
	})
}
