package backend

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// The automatic exit node (--exit-node=auto:any) and the suggestion front ends show as
// "Recommended": among the peers that are online and offer to be an exit node, the one with
// the lowest measured latency (disco pings), by name when none was measured. The automatic
// node keeps its pick while it stays usable, so traffic does not hop between nodes of similar
// latency, and moves as soon as control says it went offline or it stops answering pings.
// Meanwhile the data plane routes internet traffic into the tunnel as for any exit node: with
// no usable pick, it is dropped, never sent in clear.

// autoExitPending is the data plane's exit node while the automatic choice has no pick: it
// matches no peer, so internet traffic is routed into the tunnel and dropped there.
const autoExitPending = ipc.AutoExitNodeAny

// Probe timings (vars for tests): the automatic pick is pinged every probeEvery, every node
// that offers to be an exit node every probeAllEvery; probeFailures pings in a row without a
// pong make a node unusable until it answers again.
var (
	probeEvery    = 10 * time.Second
	probeAllEvery = 60 * time.Second
	probeFailures = 3
)

// exitProbes is what the choice is made from (under Backend.mu).
type exitProbes struct {
	latency  map[string]time.Duration // StableID → last measured round trip
	failures map[string]int           // StableID → pings in a row without a pong
	lastAll  time.Time                // when every candidate was last pinged
}

func (e *exitProbes) reset() { *e = exitProbes{} }

func (e *exitProbes) note(id string, rtt time.Duration, ok bool) {
	if e.latency == nil {
		e.latency, e.failures = map[string]time.Duration{}, map[string]int{}
	}
	if ok {
		e.latency[id], e.failures[id] = rtt, 0
	} else {
		e.failures[id]++
	}
}

// exitCandidatesLocked are the peers an exit node may be chosen from, best first: online,
// offering, key valid, answering pings; lowest latency first, unmeasured after, then by name.
func (b *Backend) exitCandidatesLocked() []*wire.Node {
	if b.nm == nil {
		return nil
	}
	now := time.Now()
	var out []*wire.Node
	for n := range b.nm.Peers() {
		if n.StableID == "" || !dataplane.OffersExit(n) || n.Online == nil || !*n.Online || b.nm.Expired(n, now) {
			continue
		}
		if b.exits.failures[n.StableID] >= probeFailures {
			continue
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(x, y *wire.Node) int {
		lx, okx := b.exits.latency[x.StableID]
		ly, oky := b.exits.latency[y.StableID]
		switch {
		case okx && !oky:
			return -1
		case oky && !okx:
			return 1
		case okx && oky && lx != ly:
			return cmp.Compare(lx, ly)
		}
		return cmp.Or(cmp.Compare(shortName(x), shortName(y)), cmp.Compare(x.StableID, y.StableID))
	})
	return out
}

// chooseAutoExitLocked sets the automatic exit node's pick in b.data.Prefs (without saving):
// the current pick while it is usable, else the best candidate, else none. It reports a change.
func (b *Backend) chooseAutoExitLocked() bool {
	p := &b.data.Prefs
	if p.AutoExitNode == "" || b.nm == nil || b.nm.Self == nil {
		return false
	}
	cands := b.exitCandidatesLocked()
	if slices.ContainsFunc(cands, func(n *wire.Node) bool { return n.StableID == p.ExitNodeID }) {
		return false
	}
	best := ""
	if len(cands) > 0 {
		best = cands[0].StableID
	}
	if best == p.ExitNodeID {
		return false
	}
	b.logf("exit node (auto:any): %q -> %q", p.ExitNodeID, best)
	p.ExitNodeID = best
	return true
}

// repickAutoExitLocked re-chooses the automatic exit node and, on a change, saves it, tells
// control and watchers and wakes the apply loop.
func (b *Backend) repickAutoExitLocked() {
	old := b.data
	if !b.chooseAutoExitLocked() {
		return
	}
	if err := b.saveLocked(); err != nil {
		b.data = old
		return
	}
	b.tun.want()
	b.notifyLocked(ipc.EventPrefs, nil)
	go b.sess.ReportChanged()
}

// suggestionLocked is the exit node front ends recommend, nil when none is offered.
func (b *Backend) suggestionLocked() *ipc.ExitNodeSuggestion {
	cands := b.exitCandidatesLocked()
	if len(cands) == 0 {
		return nil
	}
	n := cands[0]
	s := &ipc.ExitNodeSuggestion{ID: n.StableID, Name: shortName(n)}
	for _, a := range n.Addresses {
		if a.IsSingleIP() && a.Addr().Is4() {
			s.IP = a.Addr().String()
		}
	}
	if l, ok := b.exits.latency[n.StableID]; ok {
		s.LatencyMs = float64(l.Microseconds()) / 1000
	}
	if n.Hostinfo != nil && n.Hostinfo.Location != nil {
		l := n.Hostinfo.Location
		s.Location = trimJoin(l.City, l.Country)
	}
	return s
}

func trimJoin(city, country string) string {
	switch {
	case city == "":
		return country
	case country == "":
		return city
	}
	return city + ", " + country
}

// SuggestExitNode pings every candidate now and returns the best.
func (b *Backend) SuggestExitNode(ctx context.Context) (ipc.ExitNodeSuggestion, error) {
	b.probeExits(ctx, true)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nm == nil {
		return ipc.ExitNodeSuggestion{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	s := b.suggestionLocked()
	if s == nil {
		return ipc.ExitNodeSuggestion{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "no peer that is online offers to be an exit node", Fix: "skein exit-node list"}
	}
	return *s, nil
}

// probeLoop measures exit nodes while the tunnel runs: the automatic pick often (so a node
// that stops answering is left quickly), every candidate now and then (for the suggestion).
// The timings come as arguments, read once by Start: the loop may outlive Close by a tick.
func (b *Backend) probeLoop(stop <-chan struct{}, every, allEvery time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		all := time.Since(b.exits.lastAll) >= allEvery
		auto := b.data.Prefs.AutoExitNode != ""
		b.mu.Unlock()
		if !all && !auto {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		b.probeExits(ctx, all)
		cancel()
	}
}

// probeExits pings the automatic pick, or with all every peer that offers to be an exit node
// (offline ones aside), and records the answers; the automatic node moves when its pick
// stopped answering.
func (b *Backend) probeExits(ctx context.Context, all bool) {
	b.mu.Lock()
	dp := b.tun.dp
	if dp == nil || b.nm == nil {
		b.mu.Unlock()
		return
	}
	var targets []*wire.Node
	for n := range b.nm.Peers() {
		online := n.Online != nil && *n.Online
		if n.StableID == "" || !dataplane.OffersExit(n) || !online {
			continue
		}
		if all || n.StableID == b.data.Prefs.ExitNodeID {
			targets = append(targets, n)
		}
	}
	if all {
		b.exits.lastAll = time.Now()
	}
	nm := b.nm
	b.mu.Unlock()

	type result struct {
		id  string
		rtt time.Duration
		ok  bool
	}
	results := make([]result, len(targets))
	var wg sync.WaitGroup
	for i, n := range targets {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			r := dp.Ping(pctx, n.Key)
			results[i] = result{n.StableID, r.Latency, r.Err == ""}
		})
	}
	wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nm != nm && (b.nm == nil || nm == nil) {
		return // the session changed meanwhile (switch, logout): the answers are not about it
	}
	for _, r := range results {
		b.exits.note(r.id, r.rtt, r.ok)
	}
	b.repickAutoExitLocked()
}

// exitNodeStatusLocked fills Status.ExitNode and its health issue.
func (b *Backend) exitNodeStatusLocked(st *ipc.Status) {
	p := b.data.Prefs
	if p.ExitNodeID == "" && p.AutoExitNode == "" {
		return
	}
	es := &ipc.ExitNodeStatus{ID: p.ExitNodeID, Name: p.ExitNodeID, Auto: p.AutoExitNode != ""}
	// From the netmap: the status's peers are added later, outside the lock.
	if p.ExitNodeID != "" && b.nm != nil {
		now := time.Now()
		for n := range b.nm.Peers() {
			if n.StableID == p.ExitNodeID {
				peer := b.peerLocked(n, now)
				es.Name = peer.ShortName()
				es.IP = firstAddr(peer.Addresses)
				es.Online = peer.Online && peer.ExitNodeOption && !peer.Expired
				break
			}
		}
	}
	st.ExitNode = es
	switch {
	case es.Online:
	case p.ExitNodeID == "":
		st.Health = append(st.Health, ipc.Issue{Code: ipc.IssueNoExitNode,
			Message: "the automatic exit node has no peer to use (none online offers to be one); internet traffic is blocked until one is back",
			Fix:     "skein set --exit-node="})
	default:
		st.Health = append(st.Health, ipc.Issue{Code: ipc.IssueExitNodeOffline,
			Message: "exit node " + es.Name + " is offline or no longer offers to be one; internet traffic is blocked until it is back or another is chosen",
			Fix:     "skein set --exit-node=", Data: map[string]string{"name": es.Name}})
	}
}
