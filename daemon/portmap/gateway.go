package portmap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// selfToward returns our source address toward gw: a UDP socket with the
// same Control hook as the probes is connected (which sends nothing), so
// the kernel picks the address the probes will carry, mark included.
func selfToward(gw netip.Addr, control func(string, string, syscall.RawConn) error) (netip.Addr, error) {
	d := net.Dialer{Control: control}
	c, err := d.DialContext(context.Background(), "udp4", netip.AddrPortFrom(gw, 9).String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to gateway %v: %w", gw, err)
	}
	defer c.Close()
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return ap.Addr().Unmap(), nil
}
