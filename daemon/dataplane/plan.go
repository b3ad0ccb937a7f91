package dataplane

import (
	"net/netip"
	"slices"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/wire"
)

// Prefs are the user's routing wishes the data plane applies with each netmap.
type Prefs struct {
	// ExitNodeID is the StableID of the exit node; "" = none. While set, all internet traffic
	// goes into the tunnel, and is dropped (never sent in clear) when that node is unusable.
	ExitNodeID string
	// AllowLANAccess keeps directly connected LANs on the host's routing while an exit node is on.
	AllowLANAccess bool
	// Bypass destinations keep using the main table while an exit node is on.
	Bypass []netip.Prefix
	// BypassVPNRoutes adds the main table's routes via other tunnel interfaces to Bypass.
	BypassVPNRoutes bool
	// AdvertiseExitNode and AdvertiseRoutes make this host forward tailnet traffic.
	AdvertiseExitNode bool
	AdvertiseRoutes   []netip.Prefix
	// SNAT masquerades forwarded subnet traffic (exit traffic is always masqueraded).
	SNAT bool
	// AcceptRoutes installs peers' subnet routes.
	AcceptRoutes bool
	// PersistForwarding writes the forwarding sysctls to /etc/sysctl.d (user consent).
	PersistForwarding bool
	// AcceptDNS points the system resolver at MagicDNS.
	AcceptDNS bool
	// PortMapping asks the router (UPnP, NAT-PMP, PCP) to map our UDP port.
	PortMapping bool
	// ShieldsUp drops every new inbound connection (the control server's rules and the peer
	// API's exception are not used).
	ShieldsUp bool
	// LANUsesCGNAT turns the spoofed-source guard off (the LAN itself uses 100.64.0.0/10).
	LANUsesCGNAT bool
	// StatefulFiltering drops connections opened into the tailnet through this router.
	StatefulFiltering bool
}

func (p Prefs) clone() Prefs {
	p.Bypass = slices.Clone(p.Bypass)
	p.AdvertiseRoutes = slices.Clone(p.AdvertiseRoutes)
	return p
}

var (
	exitV4 = netip.MustParsePrefix("0.0.0.0/0")
	exitV6 = netip.MustParsePrefix("::/0")
)

// peerPlan is what one peer gets: its transport config, its WireGuard AllowedIPs and UAPI
// block, and the routes via the tunnel it brings into table 52.
type peerPlan struct {
	id      wire.NodeID
	cfg     transport.PeerConfig
	allowed []netip.Prefix
	block   string
	// routes are the peer's own addresses (its tailnet ULA collapsed into the ULA /48) and,
	// with AcceptRoutes, its subnet routes; never /0 (the exit routes are the plan's own).
	routes []netip.Prefix
	// accepted are the subnet routes among routes.
	accepted []netip.Prefix
	// wide are the AllowedIPs wider than one address (subnets, /0 of the exit node): the
	// packet path's lookup for peers not yet configured in WireGuard.
	wide []netip.Prefix
	exit bool // the selected exit node
}

// netPlan is the data plane's target for one netmap and prefs, before host facts (LAN routes,
// other VPNs) are added. Pure: computed without touching the system.
type netPlan struct {
	peers []peerPlan
	// routes go into table 52 via the TUN.
	routes []netip.Prefix
	// accepted are peers' subnet routes among routes.
	accepted []netip.Prefix
	// exit is true while an exit node is selected (found or not).
	exit bool
	// exitPeer is the selected exit node when it is in the netmap and usable.
	exitPeer *wire.Node
	// local are the node's own single addresses.
	local []netip.Prefix
	// localNets are the destinations inbound peer traffic may have (for the packet filter).
	localNets []netip.Prefix
	// forwardTo are the destinations this host forwards tailnet traffic to (exit/subnet router).
	forwardTo []netip.Prefix
}

// offersExit reports whether a peer offers itself as exit node (an approved /0 in AllowedIPs).
func offersExit(n *wire.Node) bool {
	for _, p := range n.AllowedIPs {
		if p.Bits() == 0 {
			return true
		}
	}
	return false
}

// OffersExit is offersExit for the backend (status, exit-node resolution).
func OffersExit(n *wire.Node) bool { return offersExit(n) }

func isOwnAddr(n *wire.Node, p netip.Prefix) bool { return slices.Contains(n.Addresses, p) }

// planPeer follows the official client for one peer: its /0 prefixes are used only for the
// chosen exit node, its other non-own prefixes (subnet routes) only with AcceptRoutes; its
// addresses in the Tailscale ULA collapse into the one ULA /48 route. ok is false for a peer
// that cannot be used (expired, or with neither a disco key nor a home region).
func planPeer(nm *netmap.NetworkMap, p *wire.Node, prefs Prefs, now time.Time) (pp peerPlan, ok bool) {
	if !usablePeer(nm, p, now) {
		return pp, false
	}
	name := p.Name
	if p.Hostinfo != nil && p.Hostinfo.Hostname != "" {
		name = p.Hostinfo.Hostname
	}
	pp = peerPlan{id: p.ID, cfg: transport.PeerConfig{NodeKey: p.Key, DiscoKey: p.DiscoKey, Endpoints: p.Endpoints, HomeDERP: p.HomeDERP, Name: name}}
	pp.exit = prefs.ExitNodeID != "" && p.StableID == prefs.ExitNodeID
	hasULA := false
	for _, a := range p.AllowedIPs {
		switch {
		case a.Bits() == 0:
			if !pp.exit {
				continue
			}
		case isOwnAddr(p, a):
			if a.Addr().Is6() && tsULA.Contains(a.Addr()) {
				hasULA = true
			} else {
				pp.routes = append(pp.routes, a)
			}
		default:
			if !prefs.AcceptRoutes {
				continue
			}
			pp.routes = append(pp.routes, a.Masked())
			pp.accepted = append(pp.accepted, a.Masked())
		}
		pp.allowed = append(pp.allowed, a)
		if !a.IsSingleIP() {
			pp.wide = append(pp.wide, a.Masked())
		}
	}
	if hasULA {
		pp.routes = append(pp.routes, tsULA)
	}
	pp.block = wgBlock(p.Key, pp.allowed)
	return pp, true
}

// globalRoutes are the routes of the plan itself: MagicDNS (answered from the TUN path, so its
// addresses always route into the tunnel) and, while an exit node is selected, the default
// routes (even without a usable exit peer: WireGuard then has no peer for them and drops them,
// so nothing leaves in clear).
func globalRoutes(prefs Prefs) []netip.Prefix {
	r := []netip.Prefix{netip.PrefixFrom(MagicDNSv4, 32), netip.PrefixFrom(MagicDNSv6, 128)}
	if prefs.ExitNodeID != "" {
		r = append(r, exitV4, exitV6)
	}
	return r
}

// selfPlan fills what depends on this node and the prefs only.
func selfPlan(nm *netmap.NetworkMap, prefs Prefs, np *netPlan) {
	np.exit = prefs.ExitNodeID != ""
	if nm.Self != nil {
		for _, a := range nm.Self.Addresses {
			if a.IsSingleIP() {
				np.local = append(np.local, a)
			}
		}
	}
	np.localNets = slices.Clone(np.local)
	np.forwardTo = slices.Clone(prefs.AdvertiseRoutes)
	if prefs.AdvertiseExitNode {
		np.forwardTo = append(np.forwardTo, exitV4, exitV6)
	}
	np.localNets = append(np.localNets, np.forwardTo...)
}

// computePlan is the whole plan for a netmap: every usable peer's, and the routes of all of
// them (each once) with the plan's own.
func computePlan(nm *netmap.NetworkMap, prefs Prefs, now time.Time) netPlan {
	var np netPlan
	selfPlan(nm, prefs, &np)
	seen := map[netip.Prefix]bool{}
	for p := range nm.Peers() {
		pp, ok := planPeer(nm, p, prefs, now)
		if !ok {
			continue
		}
		if pp.exit {
			np.exitPeer = p
		}
		for _, r := range pp.routes {
			if !seen[r] {
				seen[r] = true
				np.routes = append(np.routes, r)
			}
		}
		np.accepted = append(np.accepted, pp.accepted...)
		np.peers = append(np.peers, pp)
	}
	np.routes = append(np.routes, globalRoutes(prefs)...)
	return np
}

// wgBlock is the UAPI text for one peer (the endpoint is the peer's key: the transport maps it).
func wgBlock(k key.NodePublic, allowed []netip.Prefix) string {
	r := k.Raw()
	hk := hexKey(r[:])
	s := "public_key=" + hk + "\nendpoint=" + hk + "\nreplace_allowed_ips=true\n"
	for _, a := range allowed {
		s += "allowed_ip=" + a.String() + "\n"
	}
	return s
}
