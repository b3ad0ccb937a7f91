package backend

import (
	"errors"
	"fmt"
	"strings"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// findPeerLocked resolves a peer the way every front end does (ipc.LookupPeer: address,
// StableID, MagicDNS name, short name, host name); nil and the reason when there is none.
func (b *Backend) findPeerLocked(q string) (*wire.Node, error) {
	if b.nm == nil {
		return nil, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	peers := b.nm.SortedPeers()
	i, err := ipc.LookupPeer(q, len(peers), func(i int) ipc.PeerNames { return nodeNames(peers[i]) })
	if err != nil {
		return nil, err
	}
	return peers[i], nil
}

func nodeNames(n *wire.Node) ipc.PeerNames {
	pn := ipc.PeerNames{StableID: n.StableID, DNSName: n.Name}
	if n.Hostinfo != nil {
		pn.HostName = n.Hostinfo.Hostname
	}
	for _, a := range n.Addresses {
		if a.IsSingleIP() {
			pn.Addrs = append(pn.Addrs, a.Addr())
		}
	}
	return pn
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

// resolveExitNodeLocked maps the user's exit-node argument (any name LookupPeer takes) to the
// StableID of a peer that offers to be an exit node.
func (b *Backend) resolveExitNodeLocked(q string) (string, error) {
	n, err := b.findPeerLocked(q)
	if err != nil {
		var ie *ipc.Error
		if errors.As(err, &ie) {
			e := *ie
			if b.nm == nil || b.nm.Self == nil {
				e.Code, e.Message = ipc.ErrNotFound, fmt.Sprintf("no peer named %q (not connected: exit nodes are chosen from the tailnet's peers)", q)
			}
			e.Fix = "skein exit-node list"
			return "", &e
		}
		return "", err
	}
	if !dataplane.OffersExit(n) {
		return "", &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%s does not offer to be an exit node (it must advertise 0.0.0.0/0 and ::/0 and have them approved by the control server)", shortName(n)), Fix: "skein exit-node list"}
	}
	return n.StableID, nil
}
