package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// dataPlane is the HTTP listener bound to the VIP addresses while this node
// is active. It answers GET /v1/ping with the node's name and epoch and
// passes everything else to the runtime's handler (HTTP starters). It is
// started after the VIP is claimed and stopped before the VIP is released
// (I3), each time from the driver.
type dataPlane struct {
	node    string
	port    int
	log     *zap.Logger
	epoch   *atomic.Uint64
	handler http.Handler // the runtime's; nil answers 404

	mu      sync.Mutex
	servers []*http.Server
	wg      sync.WaitGroup
}

type pingReply struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

func (d *dataPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/ping" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(pingReply{Node: d.node, Epoch: d.epoch.Load()})
		return
	}
	if d.handler == nil {
		http.NotFound(w, r)
		return
	}
	d.handler.ServeHTTP(w, r)
}

// start listens on port on every address. The addresses exist (claimed)
// before start is called.
func (d *dataPlane) start(addrs []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.servers) > 0 {
		return nil // already serving: idempotent
	}
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(d.port)).String())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("data plane: listen %s port %d: %w", a, d.port, err)
		}
		lns = append(lns, ln)
	}
	for _, ln := range lns {
		srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(d.log)}
		d.servers = append(d.servers, srv)
		d.wg.Add(1)
		go func(ln net.Listener) {
			defer d.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("data plane stopped", zap.Stringer("addr", ln.Addr()), zap.Error(err))
			}
		}(ln)
		d.log.Info("data plane listening", zap.Stringer("addr", ln.Addr()))
	}
	return nil
}

// stop closes the listeners at once and gives in-flight requests until ctx
// ends before cutting them. It returns when the serving goroutines are gone.
func (d *dataPlane) stop(ctx context.Context) {
	d.mu.Lock()
	servers := d.servers
	d.servers = nil
	d.mu.Unlock()
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			s.Close()
		}
	}
	d.wg.Wait()
	if len(servers) > 0 {
		d.log.Info("data plane stopped")
	}
}
