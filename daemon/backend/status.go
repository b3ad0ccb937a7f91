package backend

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// Status returns a snapshot for front ends. It reads the immutable network map and the data
// plane's status accessors, which never wait for an apply in progress.
// The peers, most of the work at scale (about 10 ms at 10,000 peers), are built after the
// state lock is released, from the immutable netmap taken under it, so a map update never
// waits behind a status call.
func (b *Backend) Status() ipc.Status {
	b.mu.Lock()
	st, peers := b.statusHeadLocked()
	b.mu.Unlock()
	peers(&st)
	return st
}

func (b *Backend) statusLocked() ipc.Status {
	st, peers := b.statusHeadLocked()
	peers(&st)
	return st
}

// statusHeadLocked builds the status but its peers, and returns what adds them; that needs no
// lock.
func (b *Backend) statusHeadLocked() (ipc.Status, func(*ipc.Status)) {
	st := ipc.Status{
		Version:          b.opts.Version,
		State:            b.stateLocked(),
		AuthURL:          b.authURL,
		LoginServer:      b.data.Prefs.LoginServer,
		Peers:            []ipc.Peer{},
		ControlConnected: b.connected,
	}
	if b.lastErr != nil {
		st.Health = append(st.Health, ipc.Issue{Code: string(b.lastErr.Code), Message: b.lastErr.Message, Fix: b.lastErr.Fix})
	}
	st.Profiles = b.profileListLocked()
	for i := range st.Profiles {
		if st.Profiles[i].Current {
			st.Profile = &st.Profiles[i]
		}
	}
	if plain, _ := control.CheckServerURL(st.LoginServer); plain {
		st.Health = append(st.Health, ipc.Issue{Code: "insecure_login_server", Message: "the login server " + st.LoginServer +
			" is plain http://: accepted only because it is on this machine; use https:// for anything else"})
	}
	nm := b.nm
	if nm == nil || nm.Self == nil || (st.State != ipc.StateRunning && st.State != ipc.StateStarting) {
		return st, func(*ipc.Status) {}
	}
	dp := b.tun.dp
	now := time.Now()
	self := b.peerLocked(nm.Self, now)
	self.Online = b.connected
	if dp != nil {
		self.Relay = b.regionCodeLocked(dp.HomeDERP())
	}
	st.Self = &self
	if is := b.keyExpiryIssueLocked(now); is != nil {
		st.Health = append(st.Health, *is)
	}
	exitID := b.data.Prefs.ExitNodeID
	peers := func(st *ipc.Status) {
		region := func(id int) string { return regionCode(nm, id) }
		st.Peers = make([]ipc.Peer, 0, nm.Len())
		for p := range nm.Peers() {
			ps := peerStatus(nm, p, now, exitID)
			addPath(&ps, dp, p, region)
			st.Peers = append(st.Peers, ps)
		}
	}
	for _, u := range nm.UserProfiles {
		st.Users = append(st.Users, ipc.User{ID: int64(u.ID), LoginName: u.LoginName, DisplayName: u.DisplayName})
	}
	slices.SortFunc(st.Users, func(a, b ipc.User) int { return int(a.ID - b.ID) })
	st.MagicDNS = magicDNSSuffix(nm.Self.Name, nm.Domain)
	st.Health = append(st.Health, b.sshHealthLocked()...)
	for _, m := range nm.Health {
		st.Health = append(st.Health, ipc.Issue{Code: "control", Message: "control server: " + m})
	}
	for _, m := range nm.LimitsHit {
		st.Health = append(st.Health, ipc.Issue{Code: "control_limits", Message: "control server sent more than skeind accepts: " + m})
	}
	b.addRoutingStatusLocked(&st, dp)
	st.SuggestedExitNode = b.suggestionLocked()
	b.addDNSStatusLocked(&st, dp)
	if dp != nil {
		st.Engine = b.engine.status(nm.Len(), dp.WireGuardPeers())
	}
	return st, peers
}

// magicDNSSuffix is the FQDN minus the host label, without the trailing dot.
func magicDNSSuffix(fqdn, domain string) string {
	fqdn = strings.TrimSuffix(fqdn, ".")
	if i := strings.IndexByte(fqdn, '.'); i >= 0 {
		return fqdn[i+1:]
	}
	return domain
}

func (b *Backend) peerLocked(n *wire.Node, now time.Time) ipc.Peer {
	return peerStatus(b.nm, n, now, b.data.Prefs.ExitNodeID)
}

// peerStatus is a peer of nm as front ends see it (exitID: the exit node in use).
func peerStatus(nm *netmap.NetworkMap, n *wire.Node, now time.Time, exitID string) ipc.Peer {
	p := ipc.Peer{
		ID:       int64(n.ID),
		StableID: n.StableID,
		NodeKey:  n.Key.String(),
		DNSName:  n.Name,
		UserID:   int64(n.User),
		Online:   n.Online != nil && *n.Online,
		LastSeen: n.LastSeen,
		Expired:  nm.Expired(n, now),
		Tags:     n.Tags,
	}
	if n.Hostinfo != nil {
		p.HostName = n.Hostinfo.Hostname
		p.OS = n.Hostinfo.OS
		p.SSHHostKeys = n.Hostinfo.SSH_HostKeys
		if l := n.Hostinfo.Location; l != nil {
			p.Location = strings.Trim(l.City+", "+l.Country, ", ")
		}
	}
	p.ExitNodeOption = dataplane.OffersExit(n)
	p.ExitNode = p.ExitNodeOption && n.StableID != "" && n.StableID == exitID
	for _, r := range n.PrimaryRoutes {
		if r.Bits() != 0 {
			p.PrimaryRoutes = append(p.PrimaryRoutes, r)
		}
	}
	if !n.KeyExpiry.IsZero() {
		t := n.KeyExpiry
		p.KeyExpiry = &t
	}
	for _, a := range n.Addresses {
		if a.IsSingleIP() {
			p.Addresses = append(p.Addresses, a.Addr())
		}
	}
	return p
}

func firstAddr(as []netip.Addr) netip.Addr {
	for _, a := range as {
		if a.Is4() {
			return a
		}
	}
	if len(as) > 0 {
		return as[0]
	}
	return netip.Addr{}
}

// regionCodeLocked names a DERP region as the map does ("" for none).
func (b *Backend) regionCodeLocked(id int) string { return regionCode(b.nm, id) }

func regionCode(nm *netmap.NetworkMap, id int) string {
	if nm != nil {
		if dm := nm.DERPMap; dm != nil {
			if r := dm.Regions[id]; r != nil && r.RegionCode != "" {
				return r.RegionCode
			}
		}
	}
	if id == 0 {
		return ""
	}
	return strconv.Itoa(id)
}

// addPath fills the data plane's view of a peer into its status. Whether the peer is active is
// the transport's call: it is the window in which the transport keeps the direct path alive.
func addPath(p *ipc.Peer, dp Dataplane, n *wire.Node, region func(int) string) {
	if dp == nil {
		return
	}
	pi, ok := dp.PeerPath(n.Key)
	if !ok {
		return
	}
	p.TxBytes, p.RxBytes = pi.TxBytes, pi.RxBytes
	p.Active = pi.Active
	if !pi.LastSend.IsZero() {
		last := pi.LastSend
		p.LastWrite = &last
	}
	if pi.Direct.IsValid() {
		p.CurAddr = pi.Direct.String()
		p.LatencyMs = float64(pi.Latency.Microseconds()) / 1000
	} else if pi.DERPRegion != 0 {
		p.Relay = region(pi.DERPRegion)
	}
	if pi.LastDirect.IsValid() {
		p.LastAddr = pi.LastDirect.String()
	} else if pi.LastDERPRegion != 0 {
		p.LastRelay = region(pi.LastDERPRegion)
	}
	addRelayCauses(p, dp, n)
}

// pathDigestLocked condenses every peer's path, to notice a change.
func (b *Backend) pathDigestLocked(dp Dataplane) string {
	if b.nm == nil {
		return ""
	}
	var sb strings.Builder
	for n := range b.nm.Peers() {
		var p ipc.Peer
		addPath(&p, dp, n, b.regionCodeLocked)
		fmt.Fprintf(&sb, "%d %s %s %v;", n.ID, p.CurAddr, p.Relay, p.Active)
	}
	return sb.String()
}

// addRoutingStatusLocked fills the exit node, packet filter and routing parts of a status.
func (b *Backend) addRoutingStatusLocked(st *ipc.Status, dp Dataplane) {
	b.exitNodeStatusLocked(st)
	if dp == nil {
		return
	}
	fs := dp.FilterStats()
	st.Filter = &ipc.FilterStatus{Rules: fs.Rules, Accepted: fs.Accepted, Dropped: fs.Dropped, DroppedBy: fs.DroppedBy}
	rs := dp.Routing()
	st.Routing = &ipc.RoutingStatus{Bypass: rs.Bypass, LANRoutes: rs.LAN, Forwarding: rs.Forwarding, Masquerade: rs.Masquerade, AcceptedRoutes: rs.Accepted}
	for _, w := range rs.Warnings {
		st.Health = append(st.Health, ipc.Issue{Code: "forwarding_blocked", Message: w})
	}
	for _, w := range rs.CGNATWarnings {
		st.Health = append(st.Health, ipc.Issue{Code: "cgnat_lan", Message: w})
	}
}

// addDNSStatusLocked fills Status.DNS.
func (b *Backend) addDNSStatusLocked(st *ipc.Status, dp Dataplane) {
	if dp == nil {
		return
	}
	ds := dp.DNS()
	s := &ipc.DNSStatus{
		AcceptDNS:     !b.data.Prefs.NoAcceptDNS,
		MagicDNS:      ds.MagicDNS,
		Resolver:      []netip.Addr{tsaddr.MagicDNSv4},
		Mode:          ds.Mode,
		ModeReason:    ds.Reason,
		Applied:       ds.Applied,
		SearchDomains: ds.SearchDomains,
		SplitRoutes:   ds.SplitRoutes,
		Upstreams:     ds.Upstreams,
		Hosts:         ds.Hosts,
		ExtraRecords:  ds.ExtraRecords,
		Warnings:      ds.Warnings,
	}
	if ds.TailnetUpstreams {
		s.UpstreamsFrom = "tailnet"
	} else if len(ds.Upstreams) > 0 {
		s.UpstreamsFrom = "system"
	}
	st.DNS = s
	for _, w := range ds.Warnings {
		st.Health = append(st.Health, ipc.Issue{Code: "dns", Message: w})
	}
}

// routePrefsLocked are the prefs the data plane applies with each netmap.
func (b *Backend) routePrefsLocked() dataplane.Prefs {
	p := b.data.Prefs
	dp := dataplane.Prefs{
		ExitNodeID:        p.ExitNodeID,
		AllowLANAccess:    p.ExitNodeAllowLANAccess,
		Bypass:            slices.Clone(p.ExitNodeBypass),
		BypassVPNRoutes:   p.BypassVPNRoutes,
		AdvertiseExitNode: p.AdvertiseExitNode,
		AdvertiseRoutes:   slices.Clone(p.AdvertiseRoutes),
		SNAT:              !p.NoSNAT,
		AcceptRoutes:      p.AcceptRoutes,
		PersistForwarding: p.PersistForwarding,
		AcceptDNS:         !p.NoAcceptDNS,
		PortMapping:       !p.NoPortMapping,
		ShieldsUp:         p.ShieldsUp,
		LANUsesCGNAT:      p.LANUsesCGNAT,
		StatefulFiltering: p.StatefulFiltering,
	}
	if p.AutoExitNode != "" && p.ExitNodeID == "" {
		// No pick yet: internet traffic goes into the tunnel and is dropped there.
		dp.ExitNodeID = autoExitPending
	}
	return dp
}
