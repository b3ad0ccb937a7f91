package portmap

import (
	"fmt"
	"net/netip"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// Documentation and benchmarking ranges (198.18/15 is the lab's internet)
// count as public: nothing routes them anyway, and tests use them.
var (
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")
	reserved4 = netip.MustParsePrefix("240.0.0.0/4") // and broadcast
)

// checkPublic reports why a router's external address cannot be a public
// endpoint (a *notPublicError), or nil. Only IPv4 is mapped (NAT-PMP and UPnP IGD are IPv4).
func checkPublic(a netip.Addr) error {
	a = a.Unmap()
	why := ""
	switch {
	case !a.IsValid():
		why = "missing"
	case !a.Is4():
		why = "not IPv4"
	case a.IsUnspecified():
		why = "unspecified"
	case a.IsLoopback():
		why = "loopback"
	case a.IsMulticast():
		why = "multicast"
	case a.IsLinkLocalUnicast():
		why = "link-local"
	case a.IsPrivate():
		why = "private (double NAT?)"
	case tsaddr.CGNATRange.Contains(a):
		why = "CGNAT (the ISP's NAT is in front)"
	case thisNet.Contains(a), reserved4.Contains(a):
		why = "reserved"
	}
	if why == "" {
		return nil
	}
	return &notPublicError{a, why}
}

// notPublicError is a router's external address that no peer can reach.
type notPublicError struct {
	addr netip.Addr
	why  string
}

func (e *notPublicError) Error() string {
	return fmt.Sprintf("external address %v is not public: %s", e.addr, e.why)
}
