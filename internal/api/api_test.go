package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// fakeBackend records calls; the API layer is what is under test.
type fakeBackend struct {
	role        string
	maintenance bool
	calls       []string
}

func (f *fakeBackend) Status(context.Context) (Status, error) {
	return Status{Node: "a", Peer: "b", Role: f.role, Epoch: 7, Maintenance: f.maintenance,
		Paths: []PathStatus{{Name: "ha1", Up: true}}}, nil
}
func (f *fakeBackend) Events(_ context.Context, after uint64) ([]Event, error) {
	var out []Event
	for i := after + 1; i <= 3; i++ {
		out = append(out, Event{Seq: i, Kind: "role", Text: fmt.Sprint("event ", i)})
	}
	return out, nil
}
func (f *fakeBackend) Switchover(context.Context) (ActionResult, error) {
	f.calls = append(f.calls, "switchover")
	if f.role != "active" {
		return ActionResult{}, fmt.Errorf("%w: this node is %s; run switchover on the active", ErrConflict, f.role)
	}
	return ActionResult{Accepted: true, Text: "handing over to b"}, nil
}
func (f *fakeBackend) Maintenance(_ context.Context, on bool) (ActionResult, error) {
	f.calls = append(f.calls, fmt.Sprint("maintenance ", on))
	f.maintenance = on
	return ActionResult{Accepted: true}, nil
}
func (f *fakeBackend) ForcePromote(_ context.Context, ack bool) (ActionResult, error) {
	f.calls = append(f.calls, fmt.Sprint("force-promote ", ack))
	if !ack {
		return ActionResult{}, fmt.Errorf("%w: acknowledge_data_loss must be true", ErrBadRequest)
	}
	return ActionResult{Accepted: true}, nil
}
func (f *fakeBackend) AckAlarm(_ context.Context, id string) (ActionResult, error) {
	f.calls = append(f.calls, "ack-alarm "+id)
	switch id {
	case "forced":
		return ActionResult{Accepted: true, Text: "alarm forced acknowledged"}, nil
	case "peer-lost":
		return ActionResult{}, fmt.Errorf("%w: peer-lost clears when the peer is heard again", ErrConflict)
	}
	return ActionResult{}, fmt.Errorf("%w: alarm %q is not raised", ErrNotFound, id)
}

func serve(t *testing.T, b Backend) (*Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "tandemd.sock")
	l, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewServer(b, zap.NewNop())}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return NewClient(sock), sock
}

func TestStatusEventsAndActions(t *testing.T) {
	fb := &fakeBackend{role: "passive"}
	c, sock := serve(t, fb)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Node != "a" || st.Epoch != 7 || len(st.Paths) != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	evs, err := c.Events(ctx, 1)
	if err != nil || len(evs) != 2 || evs[0].Seq != 2 {
		t.Fatalf("Events(after=1) = %+v, %v", evs, err)
	}
	_, err = c.Switchover(ctx)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !strings.Contains(ae.Error(), "run switchover on the active") {
		t.Errorf("switchover on a passive: %v", err)
	}
	if r, err := c.Maintenance(ctx, true); err != nil || !r.Accepted || !fb.maintenance {
		t.Errorf("maintenance on: %+v %v", r, err)
	}
	if _, err := c.ForcePromote(ctx, false); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("force-promote without acknowledgement: %v", err)
	}
	if r, err := c.AckAlarm(ctx, "forced"); err != nil || !r.Accepted || fb.calls[len(fb.calls)-1] != "ack-alarm forced" {
		t.Errorf("ack-alarm forced: %+v %v (calls %v)", r, err, fb.calls)
	}
	if _, err := c.AckAlarm(ctx, "peer-lost"); !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Errorf("ack-alarm of a condition alarm: %v, want 409", err)
	}
	if _, err := c.AckAlarm(ctx, "nope"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("ack-alarm of an alarm not raised: %v, want 404", err)
	}
}

func TestMalformedRequestsNameTheField(t *testing.T) {
	fb := &fakeBackend{role: "active"}
	c, _ := serve(t, fb)
	ctx := context.Background()
	cases := []struct {
		path string
		body any
		want string
	}{
		{"/v1/admin/maintenance", map[string]any{}, `field "on" is required`},
		{"/v1/admin/maintenance", map[string]any{"on": "yes"}, "cannot unmarshal string"},
		{"/v1/admin/maintenance", map[string]any{"on": true, "forever": true}, `unknown field "forever"`},
		{"/v1/admin/force-promote", map[string]any{"acknowledge": true}, `unknown field "acknowledge"`},
		{"/v1/admin/ack-alarm", map[string]any{}, `field "alarm" is required`},
		{"/v1/admin/ack-alarm", map[string]any{"id": "forced"}, `unknown field "id"`},
	}
	for _, tc := range cases {
		err := c.Do(ctx, http.MethodPost, tc.path, tc.body, nil)
		var ae *Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Error(), tc.want) {
			t.Errorf("POST %s %v: %v, want 400 mentioning %q", tc.path, tc.body, err, tc.want)
		}
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/events?after=x", nil, nil); err == nil || !strings.Contains(err.Error(), `after="x"`) {
		t.Errorf("bad after: %v", err)
	}
	if len(fb.calls) != 0 {
		t.Errorf("malformed requests reached the backend: %v", fb.calls)
	}
}

func TestListenUnixStaleAndLiveSockets(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	// A stale socket: bound, then its listener closed without unlinking.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := ListenUnix(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l2.Close()
	go func() {
		for {
			c, err := l2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "running daemon") {
		t.Errorf("a live daemon's socket was taken over: %v", err)
	}
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, nil, 0o600)
	if _, err := ListenUnix(regular); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file was replaced: %v", err)
	}
	if _, err := NewClient(filepath.Join(dir, "none.sock")).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot reach tandemd") {
		t.Errorf("client error for a missing daemon: %v", err)
	}
}
