package dataplane

import (
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/skeinvpn/skein/daemon/netmap"
)

// peerNames answers MagicDNS for the tailnet's peers from the network map's own indexes, so a
// peer joining, leaving or changing costs DNS one pointer swap (dns.Config.Names). As the
// official client: while this node has an IPv4 address, peers' IPv6 addresses are left out.
type peerNames struct {
	nm atomic.Pointer[netmap.NetworkMap]
}

func (n *peerNames) set(nm *netmap.NetworkMap) { n.nm.Store(nm) }

func selfHas4(nm *netmap.NetworkMap) bool {
	return nm.Self != nil && slices.ContainsFunc(nm.Self.Addresses, func(a netip.Prefix) bool { return a.Addr().Is4() })
}

// Lookup returns a peer's addresses by its MagicDNS name.
func (n *peerNames) Lookup(name string) ([]netip.Addr, bool) {
	nm := n.nm.Load()
	if nm == nil {
		return nil, false
	}
	p := nm.PeerByName(name)
	if p == nil || p.Name == "" {
		return nil, false
	}
	no6 := selfHas4(nm)
	var out []netip.Addr
	for _, a := range p.Addresses {
		if a.IsSingleIP() && !(no6 && a.Addr().Is6()) {
			out = append(out, a.Addr())
		}
	}
	return out, len(out) > 0
}

// Reverse returns the MagicDNS name of the peer that has a.
func (n *peerNames) Reverse(a netip.Addr) (string, bool) {
	nm := n.nm.Load()
	if nm == nil || (a.Is6() && selfHas4(nm)) {
		return "", false
	}
	p := nm.PeerByAddr(a)
	if p == nil || p.Name == "" {
		return "", false
	}
	return fqdn(p.Name), true
}
