package tiebreak

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkUp is the state WatchLink reports: administratively up and carrier.
func linkUp(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_LOWER_UP != 0
}

// WatchLink reports the state of interface ifname (up: IFF_UP and
// IFF_LOWER_UP, i.e. carrier) to out: once at once, then on every change,
// until ctx ends (it then returns ctx.Err()). A deleted interface is
// reported down. It subscribes in the caller's network namespace and
// calls out on the caller's goroutine.
func WatchLink(ctx context.Context, ifname string, out func(up bool)) error {
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	subErr := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("%w: watch %s: subscribe: %v", ErrLink, ifname, err)
	}
	// The library's reader goroutine exits (closing ch) once done closes
	// its socket; drain ch so it never blocks on a send meanwhile.
	defer func() {
		close(done)
		for range ch {
		}
	}()
	// Subscribed first, then read the current state: no change between the
	// two can be missed.
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%w: watch %s: %v", ErrLink, ifname, err)
	}
	index := l.Attrs().Index
	last := linkUp(l.Attrs().RawFlags)
	out(last)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-subErr:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: watch %s: %v", ErrLink, ifname, err)
		case u, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("%w: watch %s: netlink subscription ended", ErrLink, ifname)
			}
			if int(u.Index) != index {
				continue
			}
			up := linkUp(u.Flags)
			if u.Header.Type == unix.RTM_DELLINK {
				up = false
			}
			if up != last {
				last = up
				out(up)
			}
		}
	}
}
