package transport

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Roaming: noticing within a second that the network moved under a conversation, and
// recovering without waiting for the next heartbeat or netcheck.
//
// Three signs, each cheap:
//   - the host's addresses or links change (NetworkChanged, from the netlink watcher);
//   - a direct path in use goes quiet: we keep sending and nothing comes back, or a steady flow
//     from the peer stops. One disco ping (a probe) tells a dead path from a quiet one;
//   - a peer's pong says it now sees us at another address: our NAT moved us (a new public
//     address, a new mapping).
//
// What follows: our public address is asked again at once (the home region's STUN server
// only), our endpoints are sent to control and, in a CallMeMaybe, to every peer we talk to,
// which makes official peers drop the old address and ping the new ones; a path whose probe
// went unanswered stops being trusted, so its traffic goes over DERP while discovery looks for
// a new one.
const (
	// probeQuiet is how long a direct path in use may stay silent before a probe; slower
	// flows (a ping a second) get three of their own gaps, up to probeQuietMax.
	probeQuiet    = 300 * time.Millisecond
	probeQuietMax = 3 * time.Second
	// probeMinGap spaces probes of one peer (a one-way stream gets one every 2 s, like the
	// official heartbeat's 3 s).
	probeMinGap = 2 * time.Second
	// A probe's pong must come within 3 round trips plus 100 ms, bounded to [200 ms, 1 s].
	probeTimeoutMin = 200 * time.Millisecond
	probeTimeoutMax = time.Second
	// roamTick is how often paths in use are looked at; the loop runs only while some are.
	roamTick = 50 * time.Millisecond
	// watchIdle ends the watch of a peer without traffic.
	watchIdle = 5 * time.Second
	// quickSTUNGap spaces the quick STUN runs that address changes trigger.
	quickSTUNGap = 500 * time.Millisecond
	// derpResetGap spaces DERP reconnections for a moved public address (every peer reports
	// the move within milliseconds).
	derpResetGap = 2 * time.Second
)

// roamWatch looks after the direct paths in use and the quick re-STUN.
type roamWatch struct {
	c *Conn

	mu       sync.Mutex
	peers    map[*peerEndpoint]struct{}
	looping  bool
	stopped  bool
	addrs    string // fingerprint of the host's usable addresses, for NetworkChanged
	quickRun bool   // a quick STUN is running
	again    bool   // and another was asked for meanwhile
	lastRun  time.Time

	lastDERPReset time.Time
}

func newRoamWatch(c *Conn) *roamWatch {
	return &roamWatch{c: c, peers: map[*peerEndpoint]struct{}{}}
}

// watch puts a peer with a direct path in use under watch; cheap when it already is.
func (r *roamWatch) watch(pe *peerEndpoint) {
	if pe.watched.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || pe.watched.Swap(true) {
		return
	}
	r.peers[pe] = struct{}{}
	if !r.looping {
		r.looping = true
		go r.loop()
	}
}

func (r *roamWatch) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
}

func (r *roamWatch) loop() {
	t := time.NewTicker(roamTick)
	defer t.Stop()
	var list []*peerEndpoint
	for range t.C {
		r.mu.Lock()
		if r.stopped || len(r.peers) == 0 {
			r.looping = false
			r.mu.Unlock()
			return
		}
		list = list[:0]
		for pe := range r.peers {
			list = append(list, pe)
		}
		r.mu.Unlock()
		now := time.Now()
		for _, pe := range list {
			probe, idle := pe.roamCheck(now)
			if idle {
				r.mu.Lock()
				delete(r.peers, pe)
				pe.watched.Store(false)
				r.mu.Unlock()
				continue
			}
			if probe.IsValid() {
				pe.sendPing(probe, 0, now, pingProbe, nil)
			}
		}
	}
}

// roamCheck decides whether the direct path needs a probe now (the address to probe) and
// whether the peer can leave the watch.
func (pe *peerEndpoint) roamCheck(now time.Time) (probe netipAddrPort, idle bool) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if pe.stopped || now.Sub(pe.lastSend) > watchIdle && now.Sub(pe.lastRecvData) > watchIdle {
		return probe, true
	}
	trusted := pe.bestAddr.IsValid() && now.Before(pe.trustUntil)
	if !trusted || pe.probing || now.Sub(pe.lastProbe) < probeMinGap {
		return probe, false
	}
	quiet := min(max(probeQuiet, 3*pe.dataGap, 2*pe.bestLatency+100*time.Millisecond), probeQuietMax)
	unanswered := !pe.firstUnanswered.IsZero() && now.Sub(pe.firstUnanswered) >= quiet
	stopped := !pe.lastRecvData.IsZero() && pe.lastProbe.Before(pe.lastRecvData) && now.Sub(pe.lastRecvData) >= quiet
	if !unanswered && !stopped {
		return probe, false
	}
	pe.probing = true
	pe.lastProbe = now
	return pe.bestAddr, false
}

// probeTimeout is how long a probe's pong may take on this path.
func (pe *peerEndpoint) probeTimeout() time.Duration {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return min(max(3*pe.bestLatency+100*time.Millisecond, probeTimeoutMin), probeTimeoutMax)
}

// probeFailed: the direct path in use did not answer. Its traffic goes over DERP (and the old
// address, should it come back) while every candidate is pinged and the peer is told our
// endpoints; our own address is asked again, in case it is ours that moved.
func (pe *peerEndpoint) probeFailed(to netipAddrPort) {
	now := time.Now()
	pe.mu.Lock()
	pe.probing = false
	if pe.stopped || pe.bestAddr != to || !now.Before(pe.trustUntil) {
		pe.mu.Unlock()
		return
	}
	// Status says relay at once (pathInfo keeps a path for a heartbeat past its trust).
	pe.trustUntil = now.Add(-heartbeatInterval)
	pe.lastCMM = time.Time{}
	label := pe.label()
	pe.mu.Unlock()
	pe.c.logf("transport: %s: direct path %v stopped answering; relaying while looking for another", label, to)
	pe.discoverRound(now, true, false)
	pe.c.roam.addrMoved(false)
}

// addrMoved asks the home region's STUN server for our address now (and again after the
// current run when asked meanwhile), then a full netcheck soon after. ipMoved says our public
// IP address changed: every TCP connection through the NAT died with the old one, so the DERP
// connections are replaced at once (the CallMeMaybes that cannot leave meanwhile are sent
// as soon as the home region is back).
func (r *roamWatch) addrMoved(ipMoved bool) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	if ipMoved && time.Since(r.lastDERPReset) >= derpResetGap {
		r.lastDERPReset = time.Now()
		go r.c.derp.resetAll()
	}
	if r.quickRun {
		r.again = true
		r.mu.Unlock()
		return
	}
	r.quickRun = true
	r.mu.Unlock()
	go func() {
		c := r.c
		for {
			r.mu.Lock()
			wait := quickSTUNGap - time.Since(r.lastRun)
			r.mu.Unlock()
			if wait > 0 {
				select {
				case <-time.After(wait):
				case <-c.ctx.Done():
				}
			}
			if c.ctx.Err() != nil {
				break
			}
			r.mu.Lock()
			r.lastRun = time.Now()
			r.mu.Unlock()
			c.quickSTUN(c.ctx)
			r.mu.Lock()
			if !r.again || r.stopped {
				r.mu.Unlock()
				break
			}
			r.again = false
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.quickRun, r.again = false, false
		r.mu.Unlock()
		c.stunner.kick() // latencies and the NAT type, at leisure
	}()
}

// NetworkChanged tells the transport that the host's links, addresses or routes changed. When
// the addresses it could be reached at changed, every direct path is verified again (its
// traffic goes over DERP too until a pong comes back), our public address is asked again, and
// the peers we talk to get our endpoints; a DERP connection whose local address went away is
// replaced.
func (c *Conn) NetworkChanged() {
	strs := addrStrings()
	fp := strings.Join(strs, ",")
	r := c.roam
	r.mu.Lock()
	prev := r.addrs
	r.addrs = fp
	r.mu.Unlock()
	if fp == prev {
		return
	}
	c.logf("transport: the host's addresses changed (%s → %s); checking paths", prev, fp)
	now := time.Now()
	peers := c.allPeers()
	var active []*peerEndpoint
	for _, pe := range peers {
		pe.mu.Lock()
		if pe.trustUntil.After(now) {
			pe.trustUntil = now
		}
		if now.Sub(pe.lastSend) < sessionActiveTimeout || now.Sub(pe.lastRecv) < sessionActiveTimeout {
			pe.lastCMM = time.Time{}
			active = append(active, pe)
		}
		pe.mu.Unlock()
	}
	vanished := false
	for _, a := range strings.Split(prev, ",") {
		vanished = vanished || (a != "" && !slices.Contains(strs, a))
	}
	if vanished || !c.derp.connected() {
		c.derp.resetAll()
	}
	r.addrMoved(false)
	for _, pe := range active {
		pe.discoverRound(now, true, false)
	}
}

// initAddrs records the host's addresses at Open, so the first NetworkChanged compares
// against something.
func (r *roamWatch) initAddrs() {
	fp := strings.Join(addrStrings(), ",")
	r.mu.Lock()
	r.addrs = fp
	r.mu.Unlock()
}

// addrStrings are the host's usable addresses, sorted: what NetworkChanged compares.
func addrStrings() []string {
	addrs := localAddrs()
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	slices.Sort(strs)
	return strs
}

// watchedFlag marks a peer under the roam watch (an atomic, so the send path checks it
// without a lock).
type watchedFlag = atomic.Bool
