package backend

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// activeWindow: a peer with traffic this recent is "active" in status, as in the official CLI.
const activeWindow = 2 * time.Minute

// startDataplaneLocked brings the tunnel up for the current node key (once per session).
func (b *Backend) startDataplaneLocked() error {
	if b.dp != nil || b.opts.NoDataplane {
		return nil
	}
	dp, err := dataplane.Start(dataplane.Options{
		TunName:            b.opts.TunName,
		Port:               b.opts.Port,
		NodeKey:            b.data.NodeKey,
		DiscoKey:           b.discoKey,
		Logf:               b.logf,
		Verbose:            b.opts.Verbose,
		StateDir:           b.opts.Store.Dir(),
		OnEndpointsChanged: b.onEndpointsChanged,
	})
	if err != nil {
		return err
	}
	b.dp = dp
	stop := make(chan struct{})
	b.stopPathWatch = func() { close(stop) }
	go b.watchPaths(stop)
	return nil
}

// pathCheckInterval is how often the per-peer paths are compared for the watch stream: path
// changes (direct/relay, active/idle) happen inside the transport, not in the netmap.
const pathCheckInterval = 5 * time.Second

// watchPaths tells watchers when a peer's path or activity changes, so the tray and window
// follow direct↔relay without polling.
func (b *Backend) watchPaths(stop <-chan struct{}) {
	t := time.NewTicker(pathCheckInterval)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		d := b.pathDigestLocked()
		if d != last && last != "" {
			b.notifyLocked(ipc.EventNetmap, nil)
		}
		last = d
		b.mu.Unlock()
	}
}

func (b *Backend) pathDigestLocked() string {
	if b.dp == nil {
		return ""
	}
	var sb strings.Builder
	now := time.Now()
	for _, n := range b.nm.SortedPeers() {
		var p ipc.Peer
		b.addPathLocked(&p, n, now)
		fmt.Fprintf(&sb, "%d %s %s %v;", n.ID, p.CurAddr, p.Relay, p.Active)
	}
	return sb.String()
}

func (b *Backend) stopDataplaneLocked() {
	if b.stopPathWatch != nil {
		b.stopPathWatch()
		b.stopPathWatch = nil
	}
	if b.papi != nil {
		b.papi.close()
		b.papi = nil
	}
	if b.dp != nil {
		b.dp.Close()
		b.dp = nil
	}
}

// netInfoLocked describes our network for control (home DERP, latencies, UDP).
func (b *Backend) netInfoLocked() (*wire.NetInfo, []netip.AddrPort, []int) {
	if b.dp == nil {
		return nil, nil, nil
	}
	c := b.dp.Conn()
	rep := c.LastReport()
	ni := &wire.NetInfo{PreferredDERP: c.HomeDERP()}
	if !rep.At.IsZero() {
		udp := rep.UDP
		ni.WorkingUDP = &udp
		ni.MappingVariesByDestIP = rep.MappingVaries
		ni.DERPLatency = map[string]float64{}
		for id, l := range rep.RegionLatency {
			ni.DERPLatency[strconv.Itoa(id)+"-v4"] = l.Seconds()
		}
	}
	var eps []netip.AddrPort
	var types []int
	for _, e := range c.Endpoints() {
		eps = append(eps, e.Addr)
		types = append(types, e.Type)
	}
	return ni, eps, types
}

// onEndpointsChanged is the transport's callback for a change of our endpoints, home DERP or
// NetInfo. It may run under b.mu (a new DERP map picks a home at once), so it only pokes the
// session's reporter.
func (b *Backend) onEndpointsChanged() {
	if r := b.rep.Load(); r != nil {
		r.changed()
	}
}

// sendReport is the reporter's request: a lite map request with our newest facts.
func (b *Backend) sendReport(ctx context.Context, c *control.Client) error {
	b.mu.Lock()
	if !b.data.LoggedIn {
		b.mu.Unlock()
		return nil
	}
	req := b.mapRequestLocked()
	b.mu.Unlock()
	return c.SendUpdate(ctx, req)
}

// mapRequestLocked is the map request for our current state (stream flags set by the caller).
func (b *Backend) mapRequestLocked() *wire.MapRequest {
	hi := b.hostinfoLocked()
	ni, eps, types := b.netInfoLocked()
	hi.NetInfo = ni
	req := &wire.MapRequest{
		NodeKey:       b.data.NodeKey.Public(),
		Hostinfo:      hi,
		Endpoints:     eps,
		EndpointTypes: types,
	}
	// The disco key goes out only with a home region. An official peer sets up a WireGuard
	// peer for any node with a disco key or a home region, and its first handshake to a node
	// with neither path fails and is retried only after WireGuard's 5 s timeout; with both
	// announced in one update, its first handshake goes straight over DERP. A fresh session
	// has no DERP map (so no home) until the first map response; the report that follows it
	// carries both.
	if ni != nil && ni.PreferredDERP != 0 {
		req.DiscoKey = b.discoKey.Public()
	}
	return req
}

func (b *Backend) regionCodeLocked(id int) string {
	if dm := b.nm.DERPMap; dm != nil {
		if r := dm.Regions[id]; r != nil && r.RegionCode != "" {
			return r.RegionCode
		}
	}
	if id == 0 {
		return ""
	}
	return strconv.Itoa(id)
}

// addPathLocked fills the data plane's view of a peer into its status.
func (b *Backend) addPathLocked(p *ipc.Peer, n *wire.Node, now time.Time) {
	if b.dp == nil {
		return
	}
	pi, ok := b.dp.Conn().PeerPath(n.Key)
	if !ok {
		return
	}
	p.TxBytes, p.RxBytes = pi.TxBytes, pi.RxBytes
	last := pi.LastRecv
	if pi.LastSend.After(last) {
		last = pi.LastSend
	}
	p.Active = !last.IsZero() && now.Sub(last) < activeWindow
	if pi.Direct.IsValid() {
		p.CurAddr = pi.Direct.String()
		p.LatencyMs = float64(pi.Latency.Microseconds()) / 1000
	} else if pi.DERPRegion != 0 {
		p.Relay = b.regionCodeLocked(pi.DERPRegion)
	}
}

// findPeerLocked resolves a peer by short name, FQDN, host name or address.
func (b *Backend) findPeerLocked(q string) *wire.Node {
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

// Ping sends one disco ping to a peer.
func (b *Backend) Ping(ctx context.Context, peer string) (ipc.PingResult, error) {
	b.mu.Lock()
	if b.state != ipc.StateRunning || b.dp == nil {
		b.mu.Unlock()
		return ipc.PingResult{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	n := b.findPeerLocked(peer)
	if n == nil {
		b.mu.Unlock()
		return ipc.PingResult{}, &ipc.Error{Code: ipc.ErrNotFound, Message: fmt.Sprintf("no peer named %q", peer)}
	}
	c := b.dp.Conn()
	res := ipc.PingResult{NodeName: shortName(n)}
	for _, a := range n.Addresses {
		if a.Addr().Is4() {
			res.NodeIP = a.Addr()
			break
		}
	}
	online := n.Online == nil || *n.Online
	b.mu.Unlock()
	if !online {
		res.Err = "peer is offline"
		return res, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := c.Ping(pctx, n.Key)
	res.Err = r.Err
	res.LatencySeconds = r.Latency.Seconds()
	if r.Endpoint.IsValid() {
		res.Endpoint = r.Endpoint.String()
	}
	if r.DERPRegion != 0 {
		res.DERPRegionID = r.DERPRegion
		b.mu.Lock()
		res.DERPRegionCode = b.regionCodeLocked(r.DERPRegion)
		b.mu.Unlock()
	}
	return res, nil
}

// Netcheck runs a netcheck from the tunnel's UDP socket.
func (b *Backend) Netcheck(ctx context.Context) (ipc.NetcheckReport, error) {
	b.mu.Lock()
	dp := b.dp
	b.mu.Unlock()
	if dp == nil {
		return ipc.NetcheckReport{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "netcheck needs a running tunnel (it uses the tunnel's UDP socket and the tailnet's DERP map)", Fix: "skein up"}
	}
	rep := dp.Conn().Netcheck(ctx)
	out := ipc.NetcheckReport{
		UDP:                   rep.UDP,
		MappingVariesByDestIP: rep.MappingVaries,
		PreferredDERP:         rep.PreferredDERP,
		RegionLatency:         map[int]float64{},
		RegionCodes:           map[int]string{},
	}
	if rep.GlobalV4.IsValid() {
		out.GlobalV4 = rep.GlobalV4.String()
	}
	if rep.GlobalV6.IsValid() {
		out.GlobalV6 = rep.GlobalV6.String()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if dm := b.nm.DERPMap; dm != nil {
		for id := range dm.Regions {
			out.RegionCodes[id] = b.regionCodeLocked(id)
		}
	}
	for id, l := range rep.RegionLatency {
		out.RegionLatency[id] = l.Seconds()
	}
	return out, nil
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

// routePrefsLocked are the prefs the data plane applies with each netmap.
func (b *Backend) routePrefsLocked() dataplane.Prefs {
	p := b.data.Prefs
	return dataplane.Prefs{
		ExitNodeID:        p.ExitNodeID,
		AllowLANAccess:    p.ExitNodeAllowLANAccess,
		Bypass:            p.ExitNodeBypass,
		BypassVPNRoutes:   p.BypassVPNRoutes,
		AdvertiseExitNode: p.AdvertiseExitNode,
		AdvertiseRoutes:   p.AdvertiseRoutes,
		SNAT:              !p.NoSNAT,
		AcceptRoutes:      p.AcceptRoutes,
		PersistForwarding: p.PersistForwarding,
		AcceptDNS:         !p.NoAcceptDNS,
	}
}

// applyDataplaneLocked gives the data plane the current netmap and prefs.
func (b *Backend) applyDataplaneLocked() {
	if b.dp == nil {
		return
	}
	if err := b.dp.SetNetmap(b.nm, b.routePrefsLocked()); err != nil {
		b.logf("dataplane: %v", err)
	}
}

// resolveExitNodeLocked maps the user's exit-node argument (short name, FQDN, host name, Tailscale
// IP or StableID) to the StableID of a peer that offers to be an exit node.
func (b *Backend) resolveExitNodeLocked(q string) (string, error) {
	n := b.findPeerLocked(q)
	if n == nil {
		for _, p := range b.nm.SortedPeers() {
			if p.StableID == q {
				n = p
				break
			}
		}
	}
	if n == nil {
		msg := fmt.Sprintf("no peer named %q", q)
		if b.nm.Self == nil {
			msg += " (not connected: exit nodes are chosen from the tailnet's peers)"
		}
		return "", &ipc.Error{Code: ipc.ErrNotFound, Message: msg, Fix: "skein exit-node list"}
	}
	if !dataplane.OffersExit(n) {
		return "", &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%s does not offer to be an exit node (it must advertise 0.0.0.0/0 and ::/0 and have them approved by the control server)", shortName(n)), Fix: "skein exit-node list"}
	}
	return n.StableID, nil
}

// addRoutingStatusLocked fills the exit node, packet filter and routing parts of a status.
func (b *Backend) addRoutingStatusLocked(st *ipc.Status) {
	if id := b.data.Prefs.ExitNodeID; id != "" {
		es := &ipc.ExitNodeStatus{ID: id, Name: id}
		for _, p := range st.Peers {
			if p.StableID == id {
				es.Name = p.ShortName()
				if ip, err := netip.ParseAddr(p.FirstIP()); err == nil {
					es.IP = ip
				}
				es.Online = p.Online && p.ExitNodeOption
			}
		}
		st.ExitNode = es
		if !es.Online {
			st.Health = append(st.Health, ipc.Issue{Code: "exit_node_offline", Message: fmt.Sprintf("exit node %s is offline or no longer offers to be one; internet traffic is blocked until it is back or another is chosen", es.Name)})
		}
	}
	if b.dp == nil {
		return
	}
	fs := b.dp.FilterStats()
	st.Filter = &ipc.FilterStatus{Rules: fs.Rules, Accepted: fs.Accepted, Dropped: fs.Dropped, DroppedBy: fs.DroppedBy}
	rs := b.dp.Routing()
	st.Routing = &ipc.RoutingStatus{Bypass: rs.Bypass, LANRoutes: rs.LAN, Forwarding: rs.Forwarding, Masquerade: rs.Masquerade, AcceptedRoutes: rs.Accepted}
	for _, w := range rs.Warnings {
		st.Health = append(st.Health, ipc.Issue{Code: "forwarding_blocked", Message: w})
	}
}
