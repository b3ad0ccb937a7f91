package transport

import (
	"net/netip"
	"slices"
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

// Limits on what a peer can make us do (reliability-security.md R26, S22): the addresses a
// CallMeMaybe can add, the addresses learnt from ping sources, and how often a peer's
// CallMeMaybe may force a round of pings to all of them.
const (
	maxCMMEndpoints     = 64
	maxLearnedEndpoints = 16
	cmmForceInterval    = time.Second
)

// Our own CallMeMaybes: the first ones of a discovery a second apart, then every 5 s.
const (
	cmmQuickRetries  = 2
	cmmQuickInterval = time.Second
)

// candidate is one address we may reach a peer at.
type candidate struct {
	lastPing   time.Time
	lastPong   time.Time
	fromNetmap bool
	fromCMM    bool
	learnedAt  time.Time // from a ping the peer sent us; zero if not learned that way
}

// keep reports whether anything still vouches for the address.
func (cd *candidate) keep(now time.Time) bool {
	return cd.fromNetmap || cd.fromCMM || (!cd.learnedAt.IsZero() && now.Sub(cd.learnedAt) <= learnedEndpointTTL)
}

// pingPurpose says why a disco ping went out; it decides what its pong or its silence means.
type pingPurpose int

const (
	pingDiscovery pingPurpose = iota
	pingHeartbeat
	pingProbe // the direct path went quiet while in use: is it still there?
	pingCLI
)

// sentPing is an outstanding disco ping.
type sentPing struct {
	to      netip.AddrPort // invalid = sent via DERP
	region  int
	at      time.Time
	purpose pingPurpose
	result  chan<- PingResult // for CLI pings; nil otherwise
}

// peerEndpoint is one peer: wireguard-go's Endpoint for it and our path state towards it.
type peerEndpoint struct {
	c       *Conn
	nodeKey key.NodePublic
	setGen  uint64 // the last SetPeers that listed the peer (guarded by Conn.mu)

	mu           sync.Mutex
	name         string
	disco        key.DiscoPublic
	shared       *disco.SharedKey
	homeDERP     int
	heardDERP    int // region the peer last reached us over
	candidates   map[netip.AddrPort]*candidate
	netmapEPs    []netip.AddrPort // the endpoints the last netmap gave
	bestAddr     netip.AddrPort
	bestLatency  time.Duration
	trustUntil   time.Time
	lastFullPing time.Time
	lastSend     time.Time
	lastRecv     time.Time
	lastPath     pathUsed  // the path of the latest traffic, kept after the session ends
	lastCMM      time.Time // our last CallMeMaybe to the peer
	cmmEPGen     uint64    // Conn.epGen our last CallMeMaybe carried (0: none yet)
	cmmOwed      bool      // a CallMeMaybe could not leave: send it when DERP is back
	cmmQuick     int       // CallMeMaybes sent a second apart in this discovery
	lastCMMForce time.Time // the peer's last CallMeMaybe that forced a round of pings
	lastInbound  time.Time // our last InboundChanged round towards the peer
	cmmDeferred  *time.Timer
	pings        map[stun.TxID]sentPing
	heartbeat    *time.Timer
	stopped      bool
	txBytes      uint64
	rxBytes      uint64

	// Roaming (roam.go): the direct path's last sign of life, the first send after it, the
	// last probe, and the address the peer last saw us at.
	lastRecvDirect  time.Time     // WireGuard or a pong over bestAddr
	lastRecvData    time.Time     // WireGuard over bestAddr
	dataGap         time.Duration // gap before the last of those: the flow's rhythm
	firstUnanswered time.Time
	lastProbe       time.Time
	probing         bool
	watched         watchedFlag
	seenAs          netip.AddrPort // pong Src over bestAddr
	seenVia         netip.AddrPort // the bestAddr that pong came over

	// Diagnosis (Diagnose): counts since the peer was added.
	pingsSent, pongsGot    uint64
	directPingsSent        uint64
	directPongsGot         uint64
	lastPingSent, lastPong time.Time
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
			pe.clearBestLocked()
			clear(pe.pings)
			pe.probing = false
		}
	}
	// Most peers of a netmap did not change: nothing to allocate or scan for them.
	if slices.Equal(pc.Endpoints, pe.netmapEPs) {
		return discoChanged
	}
	pe.netmapEPs = slices.Clone(pc.Endpoints)
	keep := make(map[netip.AddrPort]bool, len(pc.Endpoints))
	for _, a := range pc.Endpoints {
		if !a.IsValid() || a.Addr().IsLinkLocalUnicast() || a.Port() == 0 {
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
	now := time.Now()
	for a, cd := range pe.candidates {
		if cd.fromNetmap && !keep[a] {
			cd.fromNetmap = false
			if !cd.keep(now) {
				pe.dropCandidateLocked(a)
			}
		}
	}
	return discoChanged
}

// dropCandidateLocked forgets an address; when it was the direct path, the path goes too.
func (pe *peerEndpoint) dropCandidateLocked(a netip.AddrPort) {
	delete(pe.candidates, a)
	if pe.bestAddr == a {
		pe.clearBestLocked()
	}
}

func (pe *peerEndpoint) clearBestLocked() {
	pe.bestAddr = netip.AddrPort{}
	pe.bestLatency = 0
	pe.trustUntil = time.Time{}
	pe.seenAs, pe.seenVia = netip.AddrPort{}, netip.AddrPort{}
	pe.firstUnanswered = time.Time{}
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
	if pe.cmmDeferred != nil {
		pe.cmmDeferred.Stop()
	}
	for tx, p := range pe.pings {
		if p.result != nil {
			deliver(p.result, PingResult{Err: "peer removed"})
		}
		delete(pe.pings, tx)
	}
}

// noteRecv counts n bytes that came from the peer over DERP.
func (pe *peerEndpoint) noteRecv(now time.Time, n int) {
	pe.mu.Lock()
	pe.lastRecv = now
	pe.rxBytes += uint64(n)
	pe.mu.Unlock()
}

// noteDirectLifeLocked records a sign of life over the direct path.
func (pe *peerEndpoint) noteDirectLifeLocked(now time.Time) {
	pe.lastRecvDirect = now
	pe.firstUnanswered = time.Time{}
}

// noteDataLocked records WireGuard traffic over the direct path, and its rhythm.
func (pe *peerEndpoint) noteDataLocked(now time.Time) {
	if !pe.lastRecvData.IsZero() {
		pe.dataGap = now.Sub(pe.lastRecvData)
	}
	pe.lastRecvData = now
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
		pe.sendPing(best, 0, now, pingHeartbeat, nil)
	}
	if wantFull {
		pe.discover(now, false)
	}
}

// discover pings every candidate not pinged in the last 5 s (every candidate when force is
// set) and, if it sent any, asks the peer over DERP to ping us back (CallMeMaybe), which
// opens both NATs. In answer to the peer's own CallMeMaybe (fromCMM) it sends none back:
// two peers would bounce CallMeMaybes forever.
func (pe *peerEndpoint) discover(now time.Time, fromCMM bool) {
	pe.discoverRound(now, fromCMM, fromCMM)
}

func (pe *peerEndpoint) discoverRound(now time.Time, force, fromCMM bool) {
	pe.mu.Lock()
	if pe.shared == nil || pe.stopped {
		pe.mu.Unlock()
		return
	}
	var targets []netip.AddrPort
	for a, cd := range pe.candidates {
		if !cd.keep(now) {
			pe.dropCandidateLocked(a)
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
	// While no direct path is trusted, the first CallMeMaybes of a discovery go a second apart:
	// one may reach a peer that does not have us in its netmap yet, or whose pings meet a port
	// mapping the router is still installing, and the peer only tries again when told.
	interval := discoPingInterval
	trusted := pe.bestAddr.IsValid() && now.Before(pe.trustUntil)
	quick := !trusted && !pe.lastCMM.IsZero() && now.Sub(pe.lastCMM) < sessionActiveTimeout && pe.cmmQuick < cmmQuickRetries
	if quick {
		interval = cmmQuickInterval
	}
	sendCMM := (len(targets) > 0 || quick) && region != 0 && !fromCMM && now.Sub(pe.lastCMM) >= interval
	if sendCMM {
		if now.Sub(pe.lastCMM) >= sessionActiveTimeout {
			pe.cmmQuick = 0 // a new discovery
		} else {
			pe.cmmQuick++
		}
		pe.lastCMM = now
	}
	pe.mu.Unlock()
	for _, a := range targets {
		pe.sendPing(a, 0, now, pingDiscovery, nil)
	}
	if sendCMM {
		pe.sendCallMeMaybe(region)
	}
}

// sendCallMeMaybe tells the peer over DERP where it can reach us: our endpoints, all of them,
// for the peer replaces its set with each message. One that cannot leave (the DERP connection
// is being replaced, as when our NAT moved) is owed, and sent when the region is back.
func (pe *peerEndpoint) sendCallMeMaybe(region int) {
	c := pe.c
	c.mu.Lock()
	eps, gen := append([]Endpoint(nil), c.myEPs...), c.epGen
	c.mu.Unlock()
	if len(eps) == 0 || region == 0 {
		return
	}
	cmm := &disco.CallMeMaybe{}
	for _, e := range eps {
		cmm.MyNumber = append(cmm.MyNumber, e.Addr)
	}
	sent := c.sendDiscoDERP(region, pe, cmm)
	pe.mu.Lock()
	if sent {
		pe.cmmEPGen = gen
		pe.cmmOwed = false
	} else {
		pe.cmmOwed = true
	}
	pe.mu.Unlock()
}

// sendOwedCallMeMaybe sends the CallMeMaybe that could not leave earlier, if the peer is still
// reached over region.
func (pe *peerEndpoint) sendOwedCallMeMaybe(region int) {
	pe.mu.Lock()
	owed := pe.cmmOwed && !pe.stopped && pe.derpRegionLocked() == region
	pe.mu.Unlock()
	if owed {
		pe.sendCallMeMaybe(region)
	}
}

// ownEndpointsChanged re-runs discovery at once for a peer we exchanged traffic with recently,
// or told our endpoints recently (a CallMeMaybe of a discovery still going on, as when a fresh
// node pings before its port mapping is made), bypassing the ping and CallMeMaybe rate limits,
// so that it learns our new address.
func (pe *peerEndpoint) ownEndpointsChanged(now time.Time) {
	pe.mu.Lock()
	recent := now.Sub(pe.lastSend) < sessionActiveTimeout || now.Sub(pe.lastRecv) < sessionActiveTimeout ||
		(!pe.lastCMM.IsZero() && now.Sub(pe.lastCMM) < sessionActiveTimeout)
	region := pe.homeDERP
	if region == 0 {
		region = pe.heardDERP
	}
	if recent {
		pe.lastCMM = now
	}
	pe.mu.Unlock()
	if !recent {
		return
	}
	// The CallMeMaybe first: it is what makes an official peer drop our old address.
	pe.sendCallMeMaybe(region)
	pe.discoverRound(now, true, true)
}

// handleCallMeMaybe takes the peer's endpoint list: it replaces the addresses the previous
// CallMeMaybe gave (at most maxCMMEndpoints, no loopback, multicast or unspecified address),
// and pings them all at once, no more than once per cmmForceInterval. A CallMeMaybe inside
// that interval only updates the set; the pings follow when the interval ends.
func (pe *peerEndpoint) handleCallMeMaybe(eps []netip.AddrPort, now time.Time) {
	pe.mu.Lock()
	if pe.stopped {
		pe.mu.Unlock()
		return
	}
	wasCMM := map[netip.AddrPort]bool{}
	for a, cd := range pe.candidates {
		if cd.fromCMM {
			wasCMM[a] = true
		}
		cd.fromCMM = false
	}
	n := 0
	for _, a := range eps {
		if n >= maxCMMEndpoints {
			break
		}
		if !usableRemote(a) {
			continue
		}
		cd := pe.candidates[a]
		if cd == nil {
			cd = &candidate{}
			pe.candidates[a] = cd
		}
		if !cd.fromCMM {
			cd.fromCMM = true
			n++
		}
	}
	var dropped []netip.AddrPort
	for a, cd := range pe.candidates {
		switch {
		case !cd.keep(now):
			pe.dropCandidateLocked(a)
			dropped = append(dropped, a)
		case a == pe.bestAddr && wasCMM[a] && !cd.fromCMM:
			// The peer no longer offers the address we use, though the netmap (which
			// lags) still lists it: it moved, so stop trusting the old path.
			pe.clearBestLocked()
		}
	}
	force := now.Sub(pe.lastCMMForce) >= cmmForceInterval
	if force {
		pe.lastCMMForce = now
	} else {
		pe.deferCMMRoundLocked(now)
	}
	pe.mu.Unlock()
	for _, a := range dropped {
		pe.c.forgetAddrOwner(a, pe)
	}
	if force {
		pe.forcedRound(now)
	}
}

// forcedRound pings every candidate at once, and starts the rate limit's interval when the
// last ping has gone, so that no second of time ever sees two rounds.
func (pe *peerEndpoint) forcedRound(now time.Time) {
	pe.discoverRound(now, true, true)
	pe.mu.Lock()
	pe.lastCMMForce = time.Now()
	pe.mu.Unlock()
}

// deferCMMRoundLocked schedules the round a rate-limited CallMeMaybe is owed.
func (pe *peerEndpoint) deferCMMRoundLocked(now time.Time) {
	if pe.cmmDeferred != nil || pe.stopped {
		return
	}
	wait := cmmForceInterval - now.Sub(pe.lastCMMForce)
	pe.cmmDeferred = time.AfterFunc(wait, pe.deferredCMMRound)
}

// deferredCMMRound pings what a rate-limited CallMeMaybe listed.
func (pe *peerEndpoint) deferredCMMRound() {
	now := time.Now()
	pe.mu.Lock()
	pe.cmmDeferred = nil
	if now.Sub(pe.lastCMMForce) < cmmForceInterval {
		pe.deferCMMRoundLocked(now) // a round ended meanwhile
		pe.mu.Unlock()
		return
	}
	pe.lastCMMForce = now
	pe.mu.Unlock()
	pe.forcedRound(now)
}

// usableRemote reports whether a peer-supplied address can be a path at all: no loopback
// (that would be us), multicast, unspecified, link-local or zero port.
func usableRemote(a netip.AddrPort) bool {
	ip := a.Addr().Unmap()
	return a.IsValid() && a.Port() != 0 && !ip.IsUnspecified() && !ip.IsLoopback() &&
		!ip.IsMulticast() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() &&
		ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// sendPing sends one disco ping to addr (or via DERP region when addr is invalid).
func (pe *peerEndpoint) sendPing(addr netip.AddrPort, region int, now time.Time, purpose pingPurpose, result chan<- PingResult) stun.TxID {
	tx := stun.NewTxID()
	pe.mu.Lock()
	if pe.shared == nil || pe.stopped {
		pe.mu.Unlock()
		if result != nil {
			deliver(result, PingResult{Err: "peer has no disco key"})
		}
		return tx
	}
	pe.pings[tx] = sentPing{to: addr, region: region, at: now, purpose: purpose, result: result}
	pe.pingsSent++
	pe.lastPingSent = now
	if addr.IsValid() {
		pe.directPingsSent++
		if cd := pe.candidates[addr]; cd != nil && (purpose == pingHeartbeat || purpose == pingProbe) {
			cd.lastPing = now
		}
	}
	pe.mu.Unlock()
	timeout := pingTimeout
	if purpose == pingProbe {
		timeout = pe.probeTimeout()
	}
	time.AfterFunc(timeout, func() { pe.expirePing(tx) })
	ping := &disco.Ping{TxID: tx, NodeKey: pe.c.nodePublic()}
	if addr.IsValid() {
		pe.c.sendDiscoUDP(addr, pe, ping)
	} else {
		pe.c.sendDiscoDERP(region, pe, ping)
	}
	return tx
}

func (pe *peerEndpoint) expirePing(tx stun.TxID) {
	pe.mu.Lock()
	p, ok := pe.pings[tx]
	if ok {
		delete(pe.pings, tx)
		if p.result != nil {
			deliver(p.result, PingResult{Err: "timeout"})
		}
	}
	pe.mu.Unlock()
	if ok && p.purpose == pingProbe {
		pe.probeFailed(p.to)
	}
}

// handlePong records a verified path. Called with the pong's source (invalid for DERP) and
// the address the peer saw our ping come from (seenAs).
func (pe *peerEndpoint) handlePong(tx stun.TxID, src netip.AddrPort, seenAs netip.AddrPort, region int, now time.Time) {
	pe.mu.Lock()
	p, ok := pe.pings[tx]
	if !ok {
		pe.mu.Unlock()
		return
	}
	delete(pe.pings, tx)
	latency := now.Sub(p.at)
	res := PingResult{Latency: latency}
	var ourAddrMoved, ourIPMoved bool
	if src.IsValid() {
		if p.to != src {
			// A pong from elsewhere than we pinged: not a proof of that path.
			pe.mu.Unlock()
			if p.result != nil {
				deliver(p.result, PingResult{Err: "pong from unexpected address"})
			}
			return
		}
		pe.pongsGot++
		pe.directPongsGot++
		pe.lastPong = now
		res.Endpoint = src
		if cd := pe.candidates[src]; cd != nil {
			cd.lastPong = now
		}
		if pe.betterAddrLocked(src, latency, now) {
			if pe.bestAddr != src {
				pe.c.logf("transport: %s: direct path %v (%v)", pe.label(), src, latency.Round(time.Microsecond))
				pe.seenAs, pe.seenVia = netip.AddrPort{}, netip.AddrPort{}
			}
			pe.bestAddr = src
			pe.bestLatency = latency
		}
		if pe.bestAddr == src {
			pe.bestLatency = latency
			pe.trustUntil = now.Add(trustUDPAddrDuration)
			pe.noteDirectLifeLocked(now)
			if p.purpose == pingProbe {
				pe.probing = false
			}
			// The peer sees us at a new address over the same path: our NAT moved us.
			if seenAs.IsValid() && pe.seenVia == src && pe.seenAs.IsValid() && pe.seenAs != seenAs {
				ourAddrMoved = true
				ourIPMoved = pe.seenAs.Addr() != seenAs.Addr()
			}
			pe.seenAs, pe.seenVia = seenAs, src
		}
	} else {
		pe.pongsGot++
		pe.lastPong = now
		res.DERPRegion = region
	}
	pe.mu.Unlock()
	if src.IsValid() {
		pe.c.setAddrOwner(src, pe)
	}
	if p.result != nil {
		deliver(p.result, res)
	}
	if ourAddrMoved {
		pe.c.logf("transport: %s now sees us at %v: our public address changed", pe.label(), seenAs)
		pe.c.roam.addrMoved(ourIPMoved)
	}
}

// betterAddrLocked decides whether a freshly verified address should replace the best one:
// any beats none, or a best that stopped answering; otherwise the faster wins by a margin,
// with a bonus for private networks.
func (pe *peerEndpoint) betterAddrLocked(a netip.AddrPort, latency time.Duration, now time.Time) bool {
	if !pe.bestAddr.IsValid() || a == pe.bestAddr || now.After(pe.trustUntil) {
		return true
	}
	if cd := pe.candidates[pe.bestAddr]; cd != nil && cd.lastPing.After(cd.lastPong) &&
		now.Sub(cd.lastPing) > max(4*pe.bestLatency, 250*time.Millisecond) {
		return true // the best one left its last ping unanswered
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

// addLearned records an address the peer pinged us from, within maxLearnedEndpoints (the
// oldest learnt one goes).
func (pe *peerEndpoint) addLearned(a netip.AddrPort, now time.Time) {
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
	cd.learnedAt = now
	learned := 0
	var oldest netip.AddrPort
	for b, cd := range pe.candidates {
		if cd.learnedAt.IsZero() {
			continue
		}
		learned++
		if !oldest.IsValid() || cd.learnedAt.Before(pe.candidates[oldest].learnedAt) {
			oldest = b
		}
	}
	if learned > maxLearnedEndpoints {
		old := pe.candidates[oldest]
		old.learnedAt = time.Time{}
		if !old.keep(now) {
			pe.dropCandidateLocked(oldest)
		}
	}
}

func (pe *peerEndpoint) label() string {
	if pe.name != "" {
		return pe.name
	}
	return pe.nodeKey.ShortString()
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
	return pathUsed{region: pe.derpRegionLocked()}
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

// derpRegionLocked is where DERP traffic to the peer goes: its home, else where it last
// reached us from.
func (pe *peerEndpoint) derpRegionLocked() int {
	if pe.homeDERP != 0 {
		return pe.homeDERP
	}
	return pe.heardDERP
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
