package portmap

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultGateway returns the IPv4 gateway of the main table's default
// route with the lowest metric. The main table, not a lookup: skeind's
// own table 52 may hold a default route through the tunnel (exit node),
// and the router we want is the one in front of the physical link.
func defaultGateway() (netip.Addr, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Addr{}, err
	}
	var best netip.Addr
	bestPrio := -1
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok || !gw.Unmap().Is4() {
			continue
		}
		if bestPrio < 0 || r.Priority < bestPrio {
			best, bestPrio = gw.Unmap(), r.Priority
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, errors.New("no IPv4 default gateway")
	}
	return best, nil
}
