package backend

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// findPeerLocked resolves a peer by short name, FQDN, host name or address.
func (b *Backend) findPeerLocked(q string) *wire.Node {
	if b.nm == nil {
		return nil
	}
	q = strings.TrimSuffix(strings.ToLower(q), ".")
	ip, ipErr := netip.ParseAddr(q)
	for _, n := range b.nm.SortedPeers() {
		fqdn := strings.ToLower(strings.TrimSuffix(n.Name, "."))
		short, _, _ := strings.Cut(fqdn, ".")
		if q == fqdn || q == short || (n.Hostinfo != nil && strings.ToLower(n.Hostinfo.Hostname) == q) {
			return n
		}
		if ipErr == nil {
			for _, a := range n.Addresses {
				if a.Addr() == ip {
					return n
				}
			}
		}
	}
	return nil
}

// findPeerOrIDLocked is findPeerLocked that also takes a StableID.
func (b *Backend) findPeerOrIDLocked(q string) *wire.Node {
	if n := b.findPeerLocked(q); n != nil || b.nm == nil {
		return n
	}
	for _, p := range b.nm.SortedPeers() {
		if p.StableID == q {
			return p
		}
	}
	return nil
}

func shortName(n *wire.Node) string {
	name := strings.TrimSuffix(n.Name, ".")
	if s, _, ok := strings.Cut(name, "."); ok {
		return s
	}
	if name == "" && n.Hostinfo != nil {
		return n.Hostinfo.Hostname
	}
	return name
}

// resolveExitNodeLocked maps the user's exit-node argument (short name, FQDN, host name, Tailscale
// IP or StableID) to the StableID of a peer that offers to be an exit node.
func (b *Backend) resolveExitNodeLocked(q string) (string, error) {
	n := b.findPeerOrIDLocked(q)
	if n == nil {
		msg := fmt.Sprintf("no peer named %q", q)
		if b.nm == nil || b.nm.Self == nil {
			msg += " (not connected: exit nodes are chosen from the tailnet's peers)"
		}
		return "", &ipc.Error{Code: ipc.ErrNotFound, Message: msg, Fix: "skein exit-node list"}
	}
	if !dataplane.OffersExit(n) {
		return "", &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%s does not offer to be an exit node (it must advertise 0.0.0.0/0 and ::/0 and have them approved by the control server)", shortName(n)), Fix: "skein exit-node list"}
	}
	return n.StableID, nil
}
