package backend

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/filter"
	"github.com/skeinvpn/skein/daemon/ingress"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/taildrop"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/whyrelay"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// Dataplane is the tunnel as the backend uses it; *dataplane.Dataplane implements it and tests
// fake it. SetNetmap and Close do host I/O and may be slow; every other method answers at once,
// even while an apply is in progress, because status requests call them.
type Dataplane interface {
	SetNetmap(nm *netmap.NetworkMap, prefs dataplane.Prefs) error
	Close()
	SetPeerAPIPorts(v4, v6 uint16)

	HomeDERP() int
	// NetInfo is what control is told of our network (home, UDP, IPv6, NAT, latencies).
	NetInfo() *wire.NetInfo
	LastReport() transport.Report
	Endpoints() []transport.Endpoint
	PeerPath(k key.NodePublic) (transport.PathInfo, bool)
	Ping(ctx context.Context, k key.NodePublic) transport.PingResult
	Netcheck(ctx context.Context) transport.Report
	// PeerPathReport is the evidence about a peer for `skein why`, after a round of pings
	// when wait > 0; RelayCauses the causes of a relayed peer, from what is known.
	PeerPathReport(ctx context.Context, k key.NodePublic, wait time.Duration) (dataplane.PathReport, bool)
	RelayCauses(k key.NodePublic, peer func(*whyrelay.Facts)) []ipc.Cause

	// WireGuardPeers is how many peers WireGuard has configured now.
	WireGuardPeers() int
	FilterStats() filter.Stats
	Routing() dataplane.RoutingState
	DNS() dataplane.DNSState
	// DNSQuery answers a DNS message as the MagicDNS resolver would over TCP.
	DNSQuery(ctx context.Context, q []byte) []byte
}

func startDataplane(o dataplane.Options) (Dataplane, error) { return dataplane.Start(o) }

// tunnel is the apply loop's state. The loop owns the data plane and the peer API; every
// field is read and written under Backend.mu, and the loop never holds that lock during host
// I/O (starting or closing the tunnel, applying a netmap, opening listeners).
type tunnel struct {
	wake chan struct{}
	quit chan struct{}
	done chan struct{}

	gen     uint64 // bumped by want(): the newest netmap/prefs/login to apply
	applied uint64 // the newest generation fully applied
	dp      Dataplane
	dpKey   key.NodePublic     // the node key dp runs with
	shown   *netmap.NetworkMap // the map dp carries (nil until the first apply)
	prefs   dataplane.Prefs    // and the prefs it carries
	papi    *peerAPI
	// stopPaths ends the watch of per-peer paths while dp runs.
	stopPaths func()
	// wg is wireguard-go's device and its buffers, plugged into by every dp in turn (a new
	// device per dp cost 32 MiB a down/up cycle, issue 21). Set by init, closed by the loop.
	wg    *dataplane.WireGuard
	ssh   sshState
	serve serveState
	// ingress redirects the ports SSH and serve answer (one table for both).
	ingress ingress.Table
}

// peerAPI is the running peer API: one listener per tailnet address of this node.
type peerAPI struct {
	addrs   []netip.Addr
	servers []interface{ Close() error }
	port4   uint16
	port6   uint16
}

func (p *peerAPI) close() {
	for _, s := range p.servers {
		s.Close()
	}
}

func (t *tunnel) init() {
	t.wake = make(chan struct{}, 1)
	t.quit = make(chan struct{})
	t.done = make(chan struct{})
	t.wg = dataplane.NewWireGuard()
}

// want asks the loop to apply the newest state; the caller holds Backend.mu.
func (t *tunnel) want() uint64 {
	t.gen++
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return t.gen
}

// showing: the tunnel runs and carries a map of the current session.
func (t *tunnel) showing() bool { return t.dp != nil && t.shown != nil }

// peerAPIServices are the Hostinfo.Services entries for the running peer API.
func (t *tunnel) peerAPIServices() []wire.Service {
	if t.papi == nil {
		return nil
	}
	var s []wire.Service
	if t.papi.port4 != 0 {
		s = append(s, wire.Service{Proto: "peerapi4", Port: t.papi.port4})
	}
	if t.papi.port6 != 0 {
		s = append(s, wire.Service{Proto: "peerapi6", Port: t.papi.port6})
	}
	return s
}

// shutdown ends the loop, which takes the tunnel down first.
func (t *tunnel) shutdown() {
	close(t.quit)
	<-t.done
}

// tunnelWantedLocked: the tunnel runs while a logged-in node that wants to run has a session
// delivering maps.
func (b *Backend) tunnelWantedLocked() bool {
	return !b.closed && b.data.LoggedIn && b.data.Prefs.WantRunning && b.authURL == "" &&
		b.phase == session.Running && b.nm != nil && b.nm.Self != nil
}

// applyRetry is how soon a tunnel that failed to start is tried again (a var for tests).
var applyRetry = 5 * time.Second

// applyLoop makes the host match the newest (netmap, prefs, login) the backend has: it starts
// and stops the data plane, applies each map, and keeps the peer API on our addresses.
func (b *Backend) applyLoop() {
	defer close(b.tun.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-b.tun.wake:
		case <-retry.C:
		case <-b.tun.quit:
			b.stopTunnel()
			b.tun.wg.Close()
			return
		}
		if err := b.applyOnce(); err != nil {
			retry.Reset(applyRetry)
		}
	}
}

func (b *Backend) applyOnce() error {
	b.mu.Lock()
	gen := b.tun.gen
	want := b.tunnelWantedLocked()
	nm, arrived, prefs, node := b.nm, b.nmArrived, b.routePrefsLocked(), b.data.NodeKey
	dp := b.tun.dp
	stale := dp != nil && (!want || b.tun.dpKey != node.Public())
	same := dp != nil && !stale && nm == b.tun.shown && reflect.DeepEqual(prefs, b.tun.prefs)
	b.mu.Unlock()
	if same {
		// Nothing new for the tunnel (e.g. only the control connection came and went, or a
		// pref that only per-tailnet features follow changed).
		err := errors.Join(b.syncSSH(nm), b.syncServe(nm))
		b.mu.Lock()
		b.tun.applied = max(b.tun.applied, gen)
		b.signalLocked()
		b.mu.Unlock()
		return err
	}

	if stale {
		b.stopTunnel()
		dp = nil
	}
	if want && dp == nil {
		ndp, err := b.opts.NewDataplane(dataplane.Options{
			TunName:            b.opts.TunName,
			Port:               b.opts.Port,
			NodeKey:            node,
			DiscoKey:           b.discoKey,
			Logf:               b.logf,
			Verbose:            b.opts.Verbose,
			StateDir:           b.opts.Store.Dir(),
			OnEndpointsChanged: b.sess.ReportChanged,
			WireGuard:          b.tun.wg,
		})
		if err != nil {
			b.logf("tunnel: %v", err)
			b.mu.Lock()
			b.lastErr = &ipc.Error{Code: ipc.ErrInternal, Message: "cannot start the tunnel: " + oneLine(err.Error())}
			b.refreshLocked(ipc.EventState, b.lastErr)
			b.mu.Unlock()
			return err
		}
		stop := make(chan struct{})
		b.mu.Lock()
		b.tun.dp, b.tun.dpKey = ndp, node.Public()
		b.tun.stopPaths = sync1(func() { close(stop) })
		b.mu.Unlock()
		go b.watchPaths(ndp, stop)
		dp = ndp
	}
	var took time.Duration
	if want {
		start := time.Now()
		if err := dp.SetNetmap(nm, prefs); err != nil {
			b.logf("dataplane: %v", err)
		}
		took = time.Since(start)
		b.syncPeerAPI(dp, nm)
	}
	var featErr error
	if want {
		featErr = errors.Join(b.syncSSH(nm), b.syncServe(nm))
	}
	b.mu.Lock()
	if want {
		b.engine.note(took, time.Since(arrived))
	}
	b.tun.applied = gen
	if want {
		b.tun.shown, b.tun.prefs = nm, prefs
	}
	b.refreshLocked(ipc.EventNetmap, nil)
	b.mu.Unlock()
	return featErr
}

// sync1 returns f wrapped to run at most once.
func sync1(f func()) func() {
	done := false
	return func() {
		if !done {
			done = true
			f()
		}
	}
}

// stopTunnel takes SSH, the peer API and the data plane down (host I/O, outside the lock).
func (b *Backend) stopTunnel() {
	b.syncSSH(nil)
	b.syncServe(nil)
	b.mu.Lock()
	dp, papi, stopPaths := b.tun.dp, b.tun.papi, b.tun.stopPaths
	b.tun.dp, b.tun.papi, b.tun.shown, b.tun.stopPaths = nil, nil, nil, nil
	b.mu.Unlock()
	if stopPaths != nil {
		stopPaths()
	}
	if papi != nil {
		papi.close()
	}
	if dp != nil {
		dp.Close()
	}
}

// waitApplied waits until the apply loop has applied generation gen (or ctx ends).
func (b *Backend) waitApplied(ctx context.Context, gen uint64) {
	for {
		b.mu.Lock()
		done, ch := b.tun.applied >= gen || b.closed, b.changed
		b.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// syncPeerAPI (re)starts the peer API when this node's addresses change.
func (b *Backend) syncPeerAPI(dp Dataplane, nm *netmap.NetworkMap) {
	var want []netip.Addr
	for _, a := range nm.Self.Addresses {
		if a.IsSingleIP() {
			want = append(want, a.Addr())
		}
	}
	b.mu.Lock()
	old := b.tun.papi
	if old != nil && slices.Equal(old.addrs, want) {
		b.mu.Unlock()
		return
	}
	b.tun.papi = nil
	in := b.openInboxLocked()
	b.mu.Unlock()
	if old != nil {
		old.close()
	}
	if len(want) == 0 || in == nil {
		return
	}
	h := &taildrop.Handler{
		Inbox:     in,
		Lookup:    b.taildropPeer,
		SelfAddrs: func() []netip.Addr { return slices.Clone(want) },
		Allow:     b.taildropAllow,
		Logf:      b.logf,
	}
	p := &peerAPI{addrs: want}
	for _, a := range want {
		ln, err := b.opts.ListenPeerAPI(context.Background(), a)
		if err != nil {
			b.logf("taildrop: %v", err)
			continue
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		srv := taildrop.NewServer(h)
		p.servers = append(p.servers, srv)
		go srv.Serve(ln)
		if a.Is4() {
			p.port4 = port
		} else {
			p.port6 = port
		}
	}
	dp.SetPeerAPIPorts(p.port4, p.port6)
	b.mu.Lock()
	b.tun.papi = p
	b.mu.Unlock()
	b.logf("taildrop: peer API on ports %d (IPv4) and %d (IPv6)", p.port4, p.port6)
	b.sess.ReportChanged()
}

// pathCheckInterval is how often the per-peer paths are compared for the watch stream: path
// changes (direct/relay, active/idle) happen inside the transport, not in the netmap.
const pathCheckInterval = 5 * time.Second

// watchPaths tells watchers when a peer's path or activity changes, so the tray and window
// follow direct↔relay without polling.
func (b *Backend) watchPaths(dp Dataplane, stop <-chan struct{}) {
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
		d := b.pathDigestLocked(dp)
		if d != last && last != "" {
			b.notifyLocked(ipc.EventNetmap, nil)
		}
		last = d
		b.mu.Unlock()
	}
}

// mapRequest is what this node tells control in a map request: Hostinfo with NetInfo, our
// endpoints and, with a home region, the disco key. The session calls it with no lock held.
func (b *Backend) mapRequest(node key.NodePublic) *wire.MapRequest {
	b.mu.Lock()
	hi := b.hostinfoLocked()
	dp := b.tun.dp
	b.mu.Unlock()
	req := &wire.MapRequest{NodeKey: node, Hostinfo: hi}
	if dp == nil {
		return req
	}
	ni := dp.NetInfo()
	hi.NetInfo = ni
	for _, e := range dp.Endpoints() {
		req.Endpoints = append(req.Endpoints, e.Addr)
		req.EndpointTypes = append(req.EndpointTypes, int(e.Type))
	}
	// The disco key goes out only with a home region. An official peer sets up a WireGuard
	// peer for any node with a disco key or a home region, and its first handshake to a node
	// with neither path fails and is retried only after WireGuard's 5 s timeout; with both
	// announced in one update, its first handshake goes straight over DERP. A fresh session
	// has no DERP map (so no home) until the first map response; the report that follows it
	// carries both.
	if ni.PreferredDERP != 0 {
		req.DiscoKey = b.discoKey.Public()
	}
	return req
}
