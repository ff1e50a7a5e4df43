package testenv

import (
	"net"
	"testing"
)

// Serve accepts connections on ln until the test ends, and hands each to
// handle, which owns it (closes it). It closes ln at the end of the test.
// Tests use it for a peer that only needs to answer, or hang up: a
// witness, a "primary" that reads a hello and closes.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at the test's end
			}
			handle(c)
		}
	}()
}
