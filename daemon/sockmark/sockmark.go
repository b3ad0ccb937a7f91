// Package sockmark puts a firewall mark (SO_MARK) on skeind's own sockets — control, DERP,
// the WireGuard/disco UDP sockets — so their packets take the host's routes instead of the
// tunnel's (the official rule layout sends marked packets around table 52). One place, so
// every socket is marked the same way.
package sockmark

import (
	"fmt"
	"syscall"
)

// Control returns a net.Dialer / net.ListenConfig Control func that marks the socket before
// it binds or connects (so the first route lookup already sees the mark). Mark 0 marks nothing.
func Control(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = Set(fd, mark) }); err != nil {
			return err
		}
		return serr
	}
}

// Set marks one socket; it needs CAP_NET_ADMIN.
func Set(fd uintptr, mark uint32) error {
	if err := set(fd, mark); err != nil {
		return fmt.Errorf("setsockopt SO_MARK %#x: %w", mark, err)
	}
	return nil
}
