package dataplane

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// cgnatLANWarnings names the interfaces other than the tunnel that have an address in the
// tailnet's ranges: the spoofed-source guard drops what their network sends from those
// addresses, which breaks a network that uses CGNAT space itself (some carriers' routers).
func cgnatLANWarnings(tun string) []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	for _, ifc := range ifs {
		if ifc.Name == tun || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !tsaddr.IsTailnetAddr(ip.Unmap()) || tsaddr.ChromeOSVMRange.Contains(ip.Unmap()) {
				continue
			}
			out = append(out, fmt.Sprintf("%s has the address %s, in the range tailnet addresses use: packets from its network with such addresses are dropped as spoofed tailnet sources; if this network uses CGNAT addresses, run: skein set --lan-uses-cgnat", ifc.Name, ip.Unmap()))
			break
		}
	}
	return out
}
