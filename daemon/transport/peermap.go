package transport

import (
	"net/netip"

	"github.com/skeinvpn/skein/daemon/key"
)

// peerIndex finds a peer by node key, by disco key and by a verified UDP address, and keeps
// each peer's addresses as a reverse set so that forgetting a peer or its paths never scans
// the others. It is guarded by Conn.mu.
type peerIndex struct {
	byKey   map[key.NodePublic]*peerEndpoint
	byDisco map[key.DiscoPublic]*peerEndpoint
	byAddr  map[netip.AddrPort]*peerEndpoint
	addrsOf map[*peerEndpoint]map[netip.AddrPort]struct{}
}

func newPeerIndex() peerIndex {
	return peerIndex{
		byKey:   map[key.NodePublic]*peerEndpoint{},
		byDisco: map[key.DiscoPublic]*peerEndpoint{},
		byAddr:  map[netip.AddrPort]*peerEndpoint{},
		addrsOf: map[*peerEndpoint]map[netip.AddrPort]struct{}{},
	}
}

func (ix *peerIndex) len() int { return len(ix.byKey) }

// all lists every peer.
func (ix *peerIndex) all() []*peerEndpoint {
	out := make([]*peerEndpoint, 0, len(ix.byKey))
	for _, pe := range ix.byKey {
		out = append(out, pe)
	}
	return out
}

// add indexes pe by its node key.
func (ix *peerIndex) add(pe *peerEndpoint) { ix.byKey[pe.nodeKey] = pe }

// setDisco moves pe from its old disco key to a new one (zero: none).
func (ix *peerIndex) setDisco(pe *peerEndpoint, old, dk key.DiscoPublic) {
	if old != dk && !old.IsZero() && ix.byDisco[old] == pe {
		delete(ix.byDisco, old)
	}
	if !dk.IsZero() {
		ix.byDisco[dk] = pe
	}
}

// setAddr makes a the verified address of pe (taking it from another peer that had it); it
// reports whether the index changed.
func (ix *peerIndex) setAddr(a netip.AddrPort, pe *peerEndpoint) bool {
	prev := ix.byAddr[a]
	if prev == pe {
		return false
	}
	if prev != nil {
		delete(ix.addrsOf[prev], a)
	}
	ix.byAddr[a] = pe
	set := ix.addrsOf[pe]
	if set == nil {
		set = map[netip.AddrPort]struct{}{}
		ix.addrsOf[pe] = set
	}
	set[a] = struct{}{}
	return true
}

// forgetAddr drops one verified address of pe; it reports whether the index changed.
func (ix *peerIndex) forgetAddr(a netip.AddrPort, pe *peerEndpoint) bool {
	if ix.byAddr[a] != pe {
		return false
	}
	delete(ix.byAddr, a)
	delete(ix.addrsOf[pe], a)
	return true
}

// forgetAddrs drops every verified address of pe; it reports whether there were any.
func (ix *peerIndex) forgetAddrs(pe *peerEndpoint) bool {
	set := ix.addrsOf[pe]
	for a := range set {
		if ix.byAddr[a] == pe {
			delete(ix.byAddr, a)
		}
	}
	delete(ix.addrsOf, pe)
	return len(set) > 0
}

// remove forgets pe entirely; it reports whether addresses were dropped.
func (ix *peerIndex) remove(pe *peerEndpoint, dk key.DiscoPublic) bool {
	if ix.byKey[pe.nodeKey] == pe {
		delete(ix.byKey, pe.nodeKey)
	}
	if !dk.IsZero() && ix.byDisco[dk] == pe {
		delete(ix.byDisco, dk)
	}
	return ix.forgetAddrs(pe)
}
