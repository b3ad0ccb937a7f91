package router

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkSocket sets SO_MARK=FwmarkBypass on fd so the socket's packets take
// the host's own routes (rules 5210/5230/5250) instead of table 52. Needs
// CAP_NET_ADMIN.
func MarkSocket(fd uintptr) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, FwmarkBypass); err != nil {
		return fmt.Errorf("setsockopt SO_MARK %#x: %w", FwmarkBypass, err)
	}
	return nil
}

// ControlBypass is a net.Dialer / net.ListenConfig Control func that marks
// the socket with FwmarkBypass before it connects or binds.
func ControlBypass(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = MarkSocket(fd) }); err != nil {
		return err
	}
	return serr
}
