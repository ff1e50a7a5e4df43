package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
)

// startDelay holds the IP packets host h sends on ifname in an NFQUEUE
// consumer and releases them after the impairment's delay. The queue socket
// is opened inside the host's namespace; the consumer goroutine belongs to
// the fault and stops in its Clear, after releasing what it holds.
func (l *Lab) startDelay(ctx context.Context, f *Fault, h *Host, ifname string, im Impairment) error {
	l.mu.Lock()
	l.nextQueue++
	queue := l.nextQueue
	l.mu.Unlock()

	ns, err := netns.GetFromName(h.NS)
	if err != nil {
		return fmt.Errorf("lab: netns %s: %w", h.NS, err)
	}
	defer ns.Close()
	nfq, err := nfqueue.Open(&nfqueue.Config{
		NetNS:       int(ns),
		NfQueue:     queue,
		MaxQueueLen: 16384,
		Copymode:    nfqueue.NfQnlCopyMeta, // verdicts only: the payload stays in the kernel
		// When the queue is full, pass packets rather than drop them: loss
		// is a separate, explicit impairment.
		Flags:        nfqueue.NfQaCfgFlagFailOpen,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return fmt.Errorf("lab: nfqueue %d in %s: %w", queue, h.NS, err)
	}
	nfq.SetOption(netlink.NoENOBUFS, true)

	var (
		mu      sync.Mutex
		pending = map[uint32]*time.Timer{}
		stopped bool
	)
	release := func(id uint32) {
		mu.Lock()
		delete(pending, id)
		mu.Unlock()
		nfq.SetVerdict(id, nfqueue.NfAccept)
	}
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		id := *a.PacketID
		if im.Reorder > 0 && rand.Float64()*100 < im.Reorder {
			nfq.SetVerdict(id, nfqueue.NfAccept)
			return 0
		}
		d := im.Delay
		if im.Jitter > 0 {
			d += time.Duration(rand.Int64N(int64(2*im.Jitter)+1)) - im.Jitter
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			go nfq.SetVerdict(id, nfqueue.NfAccept)
			return 0
		}
		pending[id] = time.AfterFunc(d, func() { release(id) })
		return 0
	}
	rctx, cancel := context.WithCancel(context.Background())
	if err := nfq.RegisterWithErrorFunc(rctx, hook, func(e error) int {
		if rctx.Err() != nil {
			return 1 // shutting down: stop reading
		}
		l.logf("lab: nfqueue %d in %s: %v", queue, h.NS, e)
		return 0
	}); err != nil {
		cancel()
		nfq.Close()
		return fmt.Errorf("lab: nfqueue register: %w", err)
	}
	f.undo = append(f.undo, func(context.Context) error {
		// Undo runs in reverse order, so the queue rules are already
		// gone: nothing new arrives. Release what is held, then stop.
		mu.Lock()
		stopped = true
		held := pending
		pending = map[uint32]*time.Timer{}
		mu.Unlock()
		for id, t := range held {
			if t.Stop() {
				nfq.SetVerdict(id, nfqueue.NfAccept)
			}
		}
		cancel()
		return nfq.Close()
	})

	// The rules go in after the consumer is registered (and are undone
	// before it stops: undo runs in reverse), so no packet is ever queued
	// without a reader. --queue-bypass passes packets if the reader dies.
	q := strconv.Itoa(int(queue))
	rule := []string{"-t", "mangle", "POSTROUTING", "-o", ifname, "-j", "NFQUEUE", "--queue-num", q, "--queue-bypass"}
	for _, tool := range []string{"iptables", "ip6tables"} {
		add := append([]string{"-w", "-t", "mangle", "-A"}, rule[2:]...)
		if _, err := nsRun(ctx, h.NS, tool, add...); err != nil {
			return err
		}
		del := append([]string{"-w", "-t", "mangle", "-D"}, rule[2:]...)
		f.undo = append(f.undo, func(ctx context.Context) error {
			_, err := nsRun(ctx, h.NS, tool, del...)
			return err
		})
	}
	return nil
}
