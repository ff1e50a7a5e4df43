// Command vipprobe is the lab's client: it probes a pair's VIP with
// `GET /v1/ping` over a fresh TCP connection every -interval and prints one
// JSON line per probe to stdout:
//
//	{"seq":12,"sent":1700000000000000000,"done":1700000000000400000,"ok":true,"node":"b","epoch":3}
//	{"seq":13,"sent":...,"done":...,"ok":false,"err":"dial tcp 192.0.2.10:8080: i/o timeout"}
//
// Times are Unix nanoseconds from the machine's clock, which the lab's
// processes share, so the harness can compare them with the daemons'
// event times. Probes overlap: a new one starts every interval whatever the
// previous ones do, so an outage is measured at the interval's resolution
// and not stretched by connect timeouts. It runs inside the client's
// namespace (lab.Host.Start) until -duration elapses or it is signalled.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

type result struct {
	Seq   uint64 `json:"seq"`
	Sent  int64  `json:"sent"`
	Done  int64  `json:"done"`
	OK    bool   `json:"ok"`
	Node  string `json:"node,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
	Err   string `json:"err,omitempty"`
}

func main() {
	target := flag.String("target", "", "VIP address:port (required)")
	interval := flag.Duration("interval", 5*time.Millisecond, "time between probe starts")
	timeout := flag.Duration("timeout", time.Second, "per-probe timeout")
	duration := flag.Duration("duration", time.Hour, "stop after this long (bounded by design)")
	flag.Parse()
	if *target == "" || *interval <= 0 || *timeout <= 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "vipprobe: -target is required; -interval, -timeout and -duration must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	emit := func(r result) {
		b, _ := json.Marshal(r)
		mu.Lock()
		out.Write(append(b, '\n'))
		mu.Unlock()
	}
	// Flush often enough for a harness reading the stream live.
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				mu.Lock()
				out.Flush()
				mu.Unlock()
			}
		}
	}()

	url := "http://" + *target + "/v1/ping"
	var wg sync.WaitGroup
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for seq := uint64(1); ; seq++ {
		wg.Add(1)
		go func(seq uint64) {
			defer wg.Done()
			emit(probe(url, seq, *timeout))
		}(seq)
		select {
		case <-ctx.Done():
			wg.Wait()
			<-flushDone
			out.Flush()
			return
		case <-tick.C:
		}
	}
}

// probe makes one request on a new connection.
func probe(url string, seq uint64, timeout time.Duration) result {
	r := result{Seq: seq, Sent: time.Now().UnixNano()}
	tr := &http.Transport{
		DialContext:       (&net.Dialer{Timeout: timeout}).DialContext,
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := c.Get(url)
	if err == nil {
		var body struct {
			Node  string `json:"node"`
			Epoch uint64 `json:"epoch"`
		}
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch {
		case rerr != nil:
			err = rerr
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("status %s", resp.Status)
		case json.Unmarshal(b, &body) != nil || body.Node == "":
			err = fmt.Errorf("unexpected body %q", b)
		default:
			r.OK, r.Node, r.Epoch = true, body.Node, body.Epoch
		}
	}
	if err != nil {
		r.Err = err.Error()
	}
	r.Done = time.Now().UnixNano()
	return r
}
