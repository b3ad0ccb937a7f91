package dataplane

import (
	"net/netip"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
)

// jailedSources are the allowed IPs of the peers control jailed: the packet filter lets them
// open nothing here (issue 14, S20), as the official client's filter for jailed peers does.
func jailedSources(nm *netmap.NetworkMap, np netPlan) []netip.Prefix {
	var jailed map[key.NodePublic]bool
	for n := range nm.Peers() {
		if n.IsJailed {
			if jailed == nil {
				jailed = map[key.NodePublic]bool{}
			}
			jailed[n.Key] = true
		}
	}
	if jailed == nil {
		return nil
	}
	var out []netip.Prefix
	for _, pp := range np.peers {
		if jailed[pp.cfg.NodeKey] {
			out = append(out, pp.allowed...)
		}
	}
	return out
}
