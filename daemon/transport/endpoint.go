package transport

import (
	"net/netip"
	"sync"
	"time"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/stun"
)

// Path-discovery timing, as official peers use it (protocol.md 6.6), so both ends agree.
const (
	heartbeatInterval    = 3 * time.Second
	trustUDPAddrDuration = 6500 * time.Millisecond
	discoPingInterval    = 5 * time.Second
	pingTimeout          = 5 * time.Second
	sessionActiveTimeout = 45 * time.Second
	upgradeInterval      = time.Minute
	goodEnoughLatency    = 5 * time.Millisecond
	learnedEndpointTTL   = sessionActiveTimeout
)

// candidate is one address we may reach a peer at.
type candidate struct {
	lastPing   time.Time
	fromNetmap bool
	fromCMM    bool
	learnedAt  time.Time // from a ping the peer sent us; zero if not learned that way
}

// sentPing is an outstanding disco ping.
type sentPing struct {
	to     netip.AddrPort // invalid = sent via DERP
	region int
	at     time.Time
	result chan<- PingResult // for CLI pings; nil for discovery
}

// peerEndpoint is one peer: wireguard-go's Endpoint for it and our path state towards it.
type peerEndpoint struct {
	c       *Conn
	nodeKey key.NodePublic
	name    string

	mu           sync.Mutex
	disco        key.DiscoPublic
	shared       *disco.SharedKey
	homeDERP     int
	heardDERP    int // region the peer last reached us over
	candidates   map[netip.AddrPort]*candidate
	bestAddr     netip.AddrPort
	bestLatency  time.Duration
	trustUntil   time.Time
	lastFullPing time.Time
	lastSend     time.Time
	lastRecv     time.Time
	lastPath     pathUsed // the path of the latest traffic, kept after the session ends
	lastCMM      time.Time
	pings        map[stun.TxID]sentPing
	heartbeat    *time.Timer
	stopped      bool
	txBytes      uint64
	rxBytes      uint64
}

func newPeerEndpoint(c *Conn, pc PeerConfig) *peerEndpoint {
	pe := &peerEndpoint{
		c:          c,
		nodeKey:    pc.NodeKey,
		candidates: map[netip.AddrPort]*candidate{},
		pings:      map[stun.TxID]sentPing{},
	}
	pe.updateConfig(pc)
	return pe
}

// updateConfig applies netmap data; it reports whether the peer's disco key changed.
func (pe *peerEndpoint) updateConfig(pc PeerConfig) (discoChanged bool) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	pe.name = pc.Name
	pe.homeDERP = pc.HomeDERP
	if pc.DiscoKey != pe.disco {
		discoChanged = !pe.disco.IsZero()
		pe.disco = pc.DiscoKey
		pe.shared = nil
		if !pc.DiscoKey.IsZero() {
			pe.shared = disco.Precompute(pc.DiscoKey, pe.c.opts.DiscoKey)
		}
		if discoChanged {
			pe.bestAddr = netip.AddrPort{}
			pe.trustUntil = time.Time{}
			clear(pe.pings)
		}
	}
	keep := make(map[netip.AddrPort]bool, len(pc.Endpoints))
	for _, a := range pc.Endpoints {
		if !a.IsValid() || a.Addr().IsLinkLocalUnicast() {
			continue
		}
		keep[a] = true
		cd := pe.candidates[a]
		if cd == nil {
			cd = &candidate{}
			pe.candidates[a] = cd
		}
		cd.fromNetmap = true
	}
	for a, cd := range pe.candidates {
		if cd.fromNetmap && !keep[a] {
			cd.fromNetmap = false
			if !cd.fromCMM && cd.learnedAt.IsZero() {
				delete(pe.candidates, a)
			}
		}
	}
	return discoChanged
}

func (pe *peerEndpoint) discoKey() key.DiscoPublic {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return pe.disco
}

func (pe *peerEndpoint) stop() {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	pe.stopped = true
	if pe.heartbeat != nil {
		pe.heartbeat.Stop()
	}
	for tx, p := range pe.pings {
		if p.result != nil {
			deliver(p.result, PingResult{Err: "peer removed"})
		}
		delete(pe.pings, tx)
	}
}

func (pe *peerEndpoint) noteRecv(now time.Time, n int) {
	pe.mu.Lock()
	pe.lastRecv = now
	pe.rxBytes += uint64(n)
	pe.mu.Unlock()
}

// send carries WireGuard packets: over the trusted direct address alone, else over DERP and any
// stale direct address at once, starting discovery.
func (pe *peerEndpoint) send(bufs [][]byte) error {
	now := time.Now()
	pe.mu.Lock()
	addr, trusted := pe.bestAddr, now.Before(pe.trustUntil)
	region := pe.homeDERP
	if region == 0 {
		region = pe.heardDERP
	}
	wasIdle := now.Sub(pe.lastSend) > sessionActiveTimeout
	pe.lastSend = now
	pe.lastPath = pe.pathLocked(now)
	for _, b := range bufs {
		pe.txBytes += uint64(len(b))
	}
	if wasIdle || pe.heartbeat == nil {
		pe.startHeartbeatLocked()
	}
	var discover bool
	if !trusted {
		discover = true
	}
	pe.mu.Unlock()

	var err error
	if addr.IsValid() {
		err = pe.c.sendUDP(bufs, addr)
	}
	if !trusted {
		if region != 0 {
			derr := pe.c.derp.send(region, pe.nodeKey, bufs)
			if err == nil || !addr.IsValid() {
				err = derr
			} else if derr == nil {
				err = nil
			}
		}
		if discover {
			pe.discover(now, false)
		}
	}
	return err
}

func (pe *peerEndpoint) startHeartbeatLocked() {
	if pe.stopped {
		return
	}
	if pe.heartbeat == nil {
		pe.heartbeat = time.AfterFunc(heartbeatInterval, pe.onHeartbeat)
	} else {
		pe.heartbeat.Reset(heartbeatInterval)
	}
}

// onHeartbeat keeps a direct path alive and looks for a better one while traffic flows.
func (pe *peerEndpoint) onHeartbeat() {
	now := time.Now()
	pe.mu.Lock()
	if pe.stopped || now.Sub(pe.lastSend) > sessionActiveTimeout {
		pe.mu.Unlock()
		return // idle: heartbeats stop until the next send
	}
	pe.heartbeat.Reset(heartbeatInterval)
	pe.lastPath = pe.pathLocked(now)
	best := pe.bestAddr
	wantFull := !best.IsValid() || now.After(pe.trustUntil) || pe.lastFullPing.IsZero() ||
		(pe.bestLatency > goodEnoughLatency && now.Sub(pe.lastFullPing) >= upgradeInterval)
	pe.mu.Unlock()
	if best.IsValid() {
		pe.sendPing(best, 0, now, nil)
	}
	if wantFull {
		pe.discover(now, false)
	}
}

// discover pings every candidate not pinged in the last 5 s and, if it sent any, asks the peer
// over DERP to ping us back (CallMeMaybe), which opens both NATs. In answer to the peer's own
// CallMeMaybe (fromCMM) it pings every candidate at once and does not send one back: that
// would bounce CallMeMaybes between two peers forever.
func (pe *peerEndpoint) discover(now time.Time, fromCMM bool) {
	force := fromCMM
	pe.mu.Lock()
	if pe.shared == nil || pe.stopped {
		pe.mu.Unlock()
		return
	}
	var targets []netip.AddrPort
	for a, cd := range pe.candidates {
		if !cd.learnedAt.IsZero() && now.Sub(cd.learnedAt) > learnedEndpointTTL && !cd.fromNetmap && !cd.fromCMM {
			delete(pe.candidates, a)
			continue
		}
		if force || now.Sub(cd.lastPing) >= discoPingInterval {
			cd.lastPing = now
			targets = append(targets, a)
		}
	}
	if len(targets) > 0 {
		pe.lastFullPing = now
	}
	region := pe.homeDERP
	sendCMM := len(targets) > 0 && region != 0 && !fromCMM && now.Sub(pe.lastCMM) >= discoPingInterval
	if sendCMM {
		pe.lastCMM = now
	}
	pe.mu.Unlock()
	for _, a := range targets {
		pe.sendPing(a, 0, now, nil)
	}
	if sendCMM {
		eps := pe.c.Endpoints()
		if len(eps) > 0 {
			cmm := &disco.CallMeMaybe{}
			for _, e := range eps {
				cmm.MyNumber = append(cmm.MyNumber, e.Addr)
			}
			pe.c.sendDiscoDERP(region, pe, cmm)
		}
	}
}

// ownEndpointsChanged re-runs discovery at once for a peer we exchanged traffic with recently,
// bypassing the ping and CallMeMaybe rate limits, so that it learns our new address.
func (pe *peerEndpoint) ownEndpointsChanged(now time.Time) {
	pe.mu.Lock()
	recent := now.Sub(pe.lastSend) < sessionActiveTimeout || now.Sub(pe.lastRecv) < sessionActiveTimeout
	if recent {
		pe.lastCMM = time.Time{}
		for _, cd := range pe.candidates {
			cd.lastPing = time.Time{}
		}
	}
	pe.mu.Unlock()
	if recent {
		pe.discover(now, false)
	}
}

// sendPing sends one disco ping to addr (or via DERP region when addr is invalid).
func (pe *peerEndpoint) sendPing(addr netip.AddrPort, region int, now time.Time, result chan<- PingResult) {
	tx := stun.NewTxID()
	pe.mu.Lock()
	if pe.shared == nil {
		pe.mu.Unlock()
		if result != nil {
			deliver(result, PingResult{Err: "peer has no disco key"})
		}
		return
	}
	pe.pings[tx] = sentPing{to: addr, region: region, at: now, result: result}
	pe.mu.Unlock()
	time.AfterFunc(pingTimeout, func() { pe.expirePing(tx) })
	ping := &disco.Ping{TxID: tx, NodeKey: pe.c.nodePublic()}
	if addr.IsValid() {
		pe.c.sendDiscoUDP(addr, pe, ping)
	} else {
		pe.c.sendDiscoDERP(region, pe, ping)
	}
}

func (pe *peerEndpoint) expirePing(tx stun.TxID) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if p, ok := pe.pings[tx]; ok {
		delete(pe.pings, tx)
		if p.result != nil {
			deliver(p.result, PingResult{Err: "timeout"})
		}
	}
}

// handlePong records a verified path. Called with the pong's source (invalid for DERP).
func (pe *peerEndpoint) handlePong(tx stun.TxID, src netip.AddrPort, region int, now time.Time) {
	pe.mu.Lock()
	p, ok := pe.pings[tx]
	if !ok {
		pe.mu.Unlock()
		return
	}
	delete(pe.pings, tx)
	latency := now.Sub(p.at)
	res := PingResult{Latency: latency}
	if src.IsValid() {
		if p.to != src {
			// A pong from elsewhere than we pinged: not a proof of that path.
			pe.mu.Unlock()
			if p.result != nil {
				deliver(p.result, PingResult{Err: "pong from unexpected address"})
			}
			return
		}
		res.Endpoint = src
		if pe.betterAddrLocked(src, latency) {
			if pe.bestAddr != src {
				pe.c.logf("transport: %s: direct path %v (%v)", pe.label(), src, latency.Round(time.Microsecond))
			}
			pe.bestAddr = src
			pe.bestLatency = latency
		}
		if pe.bestAddr == src {
			pe.bestLatency = latency
			pe.trustUntil = now.Add(trustUDPAddrDuration)
		}
	} else {
		res.DERPRegion = region
	}
	pe.mu.Unlock()
	if src.IsValid() {
		pe.c.setAddrOwner(src, pe)
	}
	if p.result != nil {
		deliver(p.result, res)
	}
}

// betterAddrLocked decides whether a freshly verified address should replace the best one:
// any beats none; otherwise the faster wins by a margin, with a bonus for private networks.
func (pe *peerEndpoint) betterAddrLocked(a netip.AddrPort, latency time.Duration) bool {
	if !pe.bestAddr.IsValid() || a == pe.bestAddr || time.Now().After(pe.trustUntil) {
		return true
	}
	score := func(addr netip.AddrPort, lat, other time.Duration) int {
		s := 0
		if lat < other && other > 0 {
			s = int(100 - 100*lat/other)
		}
		ip := addr.Addr()
		switch {
		case ip.IsLoopback():
			s += 50
		case ip.IsLinkLocalUnicast():
			s += 30
		case ip.IsPrivate():
			s += 20
		}
		if ip.Is6() {
			s += 10
		}
		return s
	}
	sa := score(a, latency, pe.bestLatency)
	sb := score(pe.bestAddr, pe.bestLatency, latency)
	if sa <= 1 && sb == 0 {
		return false
	}
	return sa > sb
}

// addCandidate records an address learned from the peer (ping source or CallMeMaybe).
func (pe *peerEndpoint) addCandidate(a netip.AddrPort, now time.Time, viaCMM bool) {
	if !a.IsValid() || a.Addr().IsLinkLocalUnicast() {
		return
	}
	pe.mu.Lock()
	defer pe.mu.Unlock()
	cd := pe.candidates[a]
	if cd == nil {
		cd = &candidate{}
		pe.candidates[a] = cd
	}
	if viaCMM {
		cd.fromCMM = true
		cd.lastPing = time.Time{} // CallMeMaybe resets the rate limit
	} else {
		cd.learnedAt = now
	}
}

func (pe *peerEndpoint) label() string {
	if pe.name != "" {
		return pe.name
	}
	return pe.nodeKey.ShortString()
}

// PathInfo is the current path to a peer, for status.
type PathInfo struct {
	Direct     netip.AddrPort // valid when a direct path is trusted
	DERPRegion int            // region used when not direct
	Latency    time.Duration
	LastSend   time.Time
	LastRecv   time.Time
	TxBytes    uint64
	RxBytes    uint64
	// Active: tunnel traffic was sent to the peer in the last 45 s, the official client's rule.
	// It is the window in which heartbeats keep the direct path alive, so an active peer is never
	// shown relayed merely because its direct path was left to lapse.
	Active bool
	// LastDirect / LastDERPRegion: the path of the latest traffic (one of them set), kept after
	// the session ends; both zero when nothing was sent since the peer was added.
	LastDirect     netip.AddrPort
	LastDERPRegion int
}

// pathUsed is the path packets take at one moment: a direct address or else a DERP region.
type pathUsed struct {
	direct netip.AddrPort
	region int
}

// pathLocked is the path status reports: the best address while trusted (and one heartbeat
// beyond, so a pong in flight does not flap it), else the peer's DERP region.
func (pe *peerEndpoint) pathLocked(now time.Time) pathUsed {
	if pe.bestAddr.IsValid() && now.Before(pe.trustUntil.Add(heartbeatInterval)) {
		return pathUsed{direct: pe.bestAddr}
	}
	region := pe.homeDERP
	if region == 0 {
		region = pe.heardDERP
	}
	return pathUsed{region: region}
}

func (pe *peerEndpoint) pathInfo(now time.Time) PathInfo {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	pi := PathInfo{LastSend: pe.lastSend, LastRecv: pe.lastRecv, TxBytes: pe.txBytes, RxBytes: pe.rxBytes}
	pi.Active = !pe.lastSend.IsZero() && now.Sub(pe.lastSend) < sessionActiveTimeout
	cur := pe.pathLocked(now)
	pi.Direct, pi.DERPRegion = cur.direct, cur.region
	if cur.direct.IsValid() {
		pi.Latency = pe.bestLatency
	}
	pi.LastDirect, pi.LastDERPRegion = pe.lastPath.direct, pe.lastPath.region
	return pi
}

// ---- conn.Endpoint: the peer is the endpoint, so changing paths is invisible to wireguard-go.

func (pe *peerEndpoint) ClearSrc()           {}
func (pe *peerEndpoint) SrcToString() string { return "" }
func (pe *peerEndpoint) DstToString() string {
	t, _ := pe.nodeKey.MarshalText()
	return string(t[len("nodekey:"):])
}
func (pe *peerEndpoint) DstToBytes() []byte {
	r := pe.nodeKey.Raw()
	return r[:]
}
func (pe *peerEndpoint) DstIP() netip.Addr { return netip.Addr{} }
func (pe *peerEndpoint) SrcIP() netip.Addr { return netip.Addr{} }
