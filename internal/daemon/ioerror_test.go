package daemon

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/pair"
)

// An active whose store's compactions fail on reads (an I/O error, not a
// full file system) hands over to its in-sync peer once they have failed
// for disk.io-error-handover, not before; with the peer not in sync it
// stays active; a full file system (the peer holds the same data) and
// the setting 0 never hand over, nor does an active in maintenance.
func TestIOErrorsHandOver(t *testing.T) {
	const eio = "read /var/lib/tandem/wip/000007.sst: input/output error"
	for _, tc := range []struct {
		name        string
		after       time.Duration // disk.io-error-handover
		noSpace     bool
		inSync      bool
		maintenance bool
		want        pair.Role
	}{
		{"read errors, peer in sync", 10 * time.Second, false, true, false, pair.RolePassive},
		{"read errors, peer not in sync", 10 * time.Second, false, false, false, pair.RoleActive},
		{"full file system", 10 * time.Second, true, true, false, pair.RoleActive},
		{"setting 0", 0, false, true, false, pair.RoleActive},
		{"maintenance", 10 * time.Second, false, true, true, pair.RoleActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDriverRig(t, true, func(d *driver) { d.ioErrorHandover = tc.after })
			r.activate()
			if tc.maintenance {
				req := adminReq{ev: pair.Admin{Cmd: pair.AdminMaintenanceOn}, reply: make(chan adminReply, 1)}
				r.d.admin <- req
				if rep := <-req.reply; rep.err != nil {
					t.Fatal(rep.err)
				}
			}
			var since atomic.Pointer[time.Time]
			r.store.setView(func() (pair.Replication, api.ReplicationStatus) {
				rs := api.ReplicationStatus{Role: "primary"}
				if s := since.Load(); s != nil {
					rs.WriteError, rs.WriteErrorSince, rs.WriteErrors, rs.WriteErrorJobs, rs.WriteErrorNoSpace = eio, *s, 4, "compactions", tc.noSpace
				}
				return pair.Replication{State: pair.ReplInSync, PeerInSync: tc.inSync, PeerAckedAll: tc.inSync, LSN: 10}, rs
			})
			for range 5 {
				r.step()
			}
			start := r.clk.Now()
			since.Store(&start)
			limit := 10 * time.Second
			if tc.after > 0 {
				limit = tc.after
			}
			for r.clk.Now().Sub(start) < limit-2*r.period {
				r.step()
			}
			if st := r.status(); st.Role != pair.RoleActive || st.Substate == "handing-over" {
				t.Fatalf("%v into the errors: %s/%s, want active", r.clk.Now().Sub(start), st.Role, st.Substate)
			}
			for r.clk.Now().Sub(start) < 2*limit {
				r.step()
			}
			st := r.status()
			if st.Role != tc.want {
				t.Fatalf("%v into the errors: %s/%s (%s), want %s", r.clk.Now().Sub(start), st.Role, st.Substate, st.Reason, tc.want)
			}
			if tc.want == pair.RolePassive && !strings.Contains(st.Reason, "pebble's compactions of the WIP store fail for 10s ("+eio+")") {
				t.Fatalf("handed over for %q", st.Reason)
			}
			a, _ := r.d.ev.alarm("wip-write-error")
			hint := "the active hands over to an in-sync passive once they have failed for 10s (disk.io-error-handover; not in maintenance, once an hour)"
			if want := tc.after > 0 && !tc.noSpace; strings.Contains(a.Text, hint) != want || (tc.want == pair.RoleActive && !strings.Contains(a.Text, eio)) {
				t.Fatalf("alarm %q: the handover named %v, want %v", a.Text, !want, want)
			}
		})
	}
}

// An I/O-error handover that did not complete (still active in the same
// epoch) is tried again; a node active again in a later epoch within the
// hour does not hand over for I/O errors again, after it it does.
func TestIOErrorHandoverOnceAnHour(t *testing.T) {
	d := &driver{ioErrorHandover: time.Minute}
	t0 := time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)
	rs := api.ReplicationStatus{Role: "primary", WriteError: "input/output error", WriteErrorSince: t0, WriteErrorJobs: "compactions"}
	for _, c := range []struct {
		at    time.Duration
		epoch uint64
		want  bool
	}{
		{59 * time.Second, 3, false},
		{time.Minute, 3, true},
	} {
		if got := d.ioErrorHandoverDue(rs, t0.Add(c.at), c.epoch); got != c.want {
			t.Fatalf("before any handover, at +%v: %v, want %v", c.at, got, c.want)
		}
	}
	d.ioHandedOverAt, d.ioHandoverEpoch = t0.Add(time.Minute), 3
	for _, c := range []struct {
		at    time.Duration
		epoch uint64
		want  bool
	}{
		{2 * time.Minute, 3, true},   // the same epoch: it did not complete
		{10 * time.Minute, 5, false}, // active again, within the hour
		{61 * time.Minute, 5, true},  // an hour after it
	} {
		if got := d.ioErrorHandoverDue(rs, t0.Add(c.at), c.epoch); got != c.want {
			t.Fatalf("after a handover in epoch 3, at +%v in epoch %d: %v, want %v", c.at, c.epoch, got, c.want)
		}
	}
	rs.WriteErrorNoSpace = true
	if d.ioErrorHandoverDue(rs, t0.Add(2*time.Hour), 7) {
		t.Fatal("a full file system hands over")
	}
}
