package transport

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netcheck"
	"github.com/skeinvpn/skein/daemon/wire"
)

const batchSize = conn.IdealBatchSize

func contextBackground() context.Context { return context.Background() }

// Conn is the Bind. Create with New; wireguard-go calls Open/Close.
type Conn struct {
	opts     Options
	logf     func(string, ...any)
	discoPub key.DiscoPublic

	mu      sync.Mutex
	nodeKey key.NodePrivate
	peers   peerIndex
	derpMap *wire.DERPMap
	derp    *derpManager
	nc      *netcheck.Checker
	stunner *stunLoop
	myEPs   []Endpoint // our own candidate endpoints, reported to control
	// epGen counts changes of myEPs, so a peer knows whether it was told the current set.
	epGen uint64
	// setGen numbers SetPeers calls: a peer not marked with the current one is gone.
	setGen uint64
	// reportedNI is what control was last told of the netcheck (UDP, IPv6, mapping).
	reportedNI netInfoFacts
	// applied is the last report our endpoints come from (a quick one after a move).
	applied  Report
	closed   bool
	bindOpen bool

	pconn4, pconn6 *udpSocket
	send4mu        sync.Mutex
	send6mu        sync.Mutex

	derpRecv chan derpPacket
	done     chan struct{} // closed when the Bind closes

	ctx    context.Context // lives as long as the Conn
	cancel context.CancelFunc

	roam *roamWatch

	// addrGen changes whenever the address index does, invalidating receive-side caches.
	addrGen atomic.Uint64
	// Counters for status and tests.
	derpDropped atomic.Uint64
	// derpSendDropped counts packets to DERP dropped: the region's queue full, or its write failed.
	derpSendDropped atomic.Uint64
	// packets counts WireGuard packets both ways, so the data plane can tell busy from idle.
	packets atomic.Uint64
	// testHookDiscoDERP sees every disco message sent over DERP (tests only).
	testHookDiscoDERP func(region int, m disco.Message)
	// testHookDrop drops UDP datagrams from the addresses it returns true for, as a network
	// that stopped delivering them (tests only).
	testHookDrop func(src netipAddrPort) bool
	// testHookDiscoUDP sees every disco message sent over UDP and keeps it from leaving when
	// it returns true (tests only).
	testHookDiscoUDP func(dst netipAddrPort, m disco.Message) (swallow bool)
}

// New returns a transport; nothing listens until Open (called by wireguard-go).
func New(opts Options) *Conn {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		opts:     opts,
		logf:     opts.Logf,
		discoPub: opts.DiscoKey.Public(),
		peers:    newPeerIndex(),
		derpRecv: make(chan derpPacket, 256),
		ctx:      ctx,
		cancel:   cancel,
	}
	c.derp = newDERPManager(c)
	nco := netcheck.Options{Send: c.sendUDPOne, Logf: c.logf}
	if pm := opts.PortMapper; pm != nil {
		nco.PortMapProbe = func(ctx context.Context) (bool, bool, bool, bool) {
			p, err := pm.Probe(ctx)
			if errors.Is(err, ErrPortMapOff) {
				return false, false, false, false
			}
			if err != nil {
				c.logf("transport: port mapping probe: %v", err)
			}
			return p.UPnP, p.PMP, p.PCP, true
		}
	}
	c.nc = netcheck.New(nco)
	c.stunner = newSTUNLoop(c)
	c.roam = newRoamWatch(c)
	return c
}

// SetPrivateKey sets the node key used as our DERP identity.
func (c *Conn) SetPrivateKey(k key.NodePrivate) {
	c.mu.Lock()
	changed := c.nodeKey != k
	c.nodeKey = k
	c.mu.Unlock()
	if changed {
		c.derp.resetAll()
	}
}

// SetDERPMap sets the relay regions. The same map again (every netmap carries the one it
// has) changes nothing.
func (c *Conn) SetDERPMap(m *wire.DERPMap) {
	c.mu.Lock()
	same := c.derpMap == m
	c.derpMap = m
	c.mu.Unlock()
	if same {
		return
	}
	c.derp.onDERPMap(m)
	c.provisionalHome(m)
	c.stunner.kick()
}

// provisionalHome picks a home region the moment a DERP map arrives without one, before any
// measurement: until a node has a home, peers have no way to send it a first packet, and on a
// network without UDP the first netcheck only ends after its STUN timeouts. The next netcheck
// replaces the guess when another region measures better.
func (c *Conn) provisionalHome(m *wire.DERPMap) {
	if m == nil || c.derp.homeRegion() != 0 {
		return
	}
	if home := netcheck.FirstEligible(m); home != 0 {
		c.applyReport(Report{PreferredDERP: home})
	}
}

// SetPeers replaces the peer set, keeping the path state of peers that stay. It costs one
// index update per peer, never a scan of the others.
func (c *Conn) SetPeers(cfgs []PeerConfig) {
	c.mu.Lock()
	c.setGen++
	gen := c.setGen
	added, listed := false, 0
	for _, pc := range cfgs {
		pe := c.peers.byKey[pc.NodeKey]
		if pe == nil || pe.setGen != gen {
			listed++
		}
		if c.upsertLocked(pc, gen) {
			added = true
		}
	}
	var gone []*peerEndpoint
	if listed < c.peers.len() {
		for _, pe := range c.peers.byKey {
			if pe.setGen != gen {
				gone = append(gone, pe)
			}
		}
	}
	for _, pe := range gone {
		c.removeLocked(pe)
	}
	c.mu.Unlock()
	c.afterChange(gone, added)
}

// UpsertPeer adds one peer or updates its config, leaving every other peer alone: a netmap
// delta costs the peers it changes, whatever the size of the tailnet.
func (c *Conn) UpsertPeer(pc PeerConfig) {
	c.mu.Lock()
	added := c.upsertLocked(pc, c.setGen)
	c.mu.Unlock()
	c.afterChange(nil, added)
}

// RemovePeer forgets one peer and its paths.
func (c *Conn) RemovePeer(k key.NodePublic) {
	c.mu.Lock()
	pe := c.peers.byKey[k]
	if pe != nil {
		c.removeLocked(pe)
	}
	c.mu.Unlock()
	if pe != nil {
		c.afterChange([]*peerEndpoint{pe}, false)
	}
}

// upsertLocked adds or updates one peer under generation gen; true when it is new.
func (c *Conn) upsertLocked(pc PeerConfig, gen uint64) bool {
	pe := c.peers.byKey[pc.NodeKey]
	if pe == nil {
		pe = newPeerEndpoint(c, pc)
		c.peers.add(pe)
		c.peers.setDisco(pe, key.DiscoPublic{}, pc.DiscoKey)
		pe.setGen = gen
		return true
	}
	pe.setGen = gen
	old := pe.discoKey()
	if pe.updateConfig(pc) {
		// A new disco key means a restarted peer: its old paths are void.
		if c.peers.forgetAddrs(pe) {
			c.addrGen.Add(1)
		}
	}
	c.peers.setDisco(pe, old, pc.DiscoKey)
	return false
}

func (c *Conn) removeLocked(pe *peerEndpoint) {
	if c.peers.remove(pe, pe.discoKey()) {
		c.addrGen.Add(1)
	}
}

// afterChange finishes a change outside Conn.mu: removed peers stop, and a new peer makes a
// node without endpoints measure now (new peers want our endpoints).
func (c *Conn) afterChange(gone []*peerEndpoint, added bool) {
	for _, pe := range gone {
		pe.stop()
	}
	if added && len(c.Endpoints()) == 0 {
		c.stunner.kick()
	}
}

// peerByKey returns the endpoint for a node key (nil if unknown).
func (c *Conn) peerByKey(k key.NodePublic) *peerEndpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers.byKey[k]
}

// allPeers lists every peer (a snapshot: work on them happens without Conn.mu).
func (c *Conn) allPeers() []*peerEndpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers.all()
}

// peerByAddr returns the peer that owns a verified address (nil if none).
func (c *Conn) peerByAddr(a netipAddrPort) *peerEndpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers.byAddr[a]
}

// setAddrOwner remembers that WireGuard packets from a verified address belong to pe.
func (c *Conn) setAddrOwner(a netipAddrPort, pe *peerEndpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers.byKey[pe.nodeKey] != pe {
		return // removed meanwhile
	}
	if c.peers.setAddr(a, pe) {
		c.addrGen.Add(1)
	}
}

// forgetAddrOwner drops a verified address of pe (the peer no longer lists it).
func (c *Conn) forgetAddrOwner(a netipAddrPort, pe *peerEndpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers.forgetAddr(a, pe) {
		c.addrGen.Add(1)
	}
}

// LocalPort returns the UDP port we listen on (0 before Open).
func (c *Conn) LocalPort() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pconn4 != nil {
		return c.pconn4.port
	}
	if c.pconn6 != nil {
		return c.pconn6.port
	}
	return 0
}

// Packets returns how many WireGuard packets went through, both ways, so far.
func (c *Conn) Packets() uint64 { return c.packets.Load() }

// Endpoints returns our current candidate endpoints.
func (c *Conn) Endpoints() []Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Endpoint(nil), c.myEPs...)
}

// Shutdown stops everything, including DERP connections, the netchecker and the port mapper;
// after it the Bind cannot be reopened. (Close, wireguard-go's, only unbinds the sockets.)
func (c *Conn) Shutdown() {
	c.mu.Lock()
	c.closed = true
	peers := c.peers.all()
	c.mu.Unlock()
	c.cancel()
	c.roam.stop()
	for _, pe := range peers {
		pe.stop()
	}
	c.derp.closeAll()
	c.Close()
	if pm := c.opts.PortMapper; pm != nil {
		if err := pm.Close(); err != nil {
			c.logf("transport: releasing the port mapping: %v", err)
		}
	}
}

// ---- conn.Bind ----

// Open binds the UDP sockets; wireguard-go calls it with its listen port.
func (c *Conn) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bindOpen {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	if c.opts.Port != 0 && port == 0 {
		port = c.opts.Port
	}
	p4, err := listenUDP("udp4", port, c.opts.Mark)
	if err != nil && port != 0 {
		c.logf("transport: udp4 port %d: %v; using a random port", port, err)
		p4, err = listenUDP("udp4", 0, c.opts.Mark)
	}
	if err != nil {
		return nil, 0, err
	}
	p6, err6 := listenUDP("udp6", p4.port, c.opts.Mark)
	if err6 != nil {
		c.logf("transport: no IPv6 socket: %v", err6)
		p6 = nil
	}
	c.pconn4, c.pconn6 = p4, p6
	c.done = make(chan struct{})
	c.bindOpen = true
	fns := []conn.ReceiveFunc{c.receiveFunc(p4), c.receiveDERP}
	if p6 != nil {
		fns = append(fns, c.receiveFunc(p6))
	}
	c.logf("transport: listening on udp port %d", p4.port)
	if pm := c.opts.PortMapper; pm != nil {
		pm.SetLocalPort(p4.port)
	}
	c.roam.initAddrs()
	go c.stunner.run(c.ctx)
	return fns, p4.port, nil
}

// Close unbinds the sockets; it may be called before Open and more than once.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.bindOpen {
		return nil
	}
	c.bindOpen = false
	close(c.done)
	if c.pconn4 != nil {
		c.pconn4.Close()
	}
	if c.pconn6 != nil {
		c.pconn6.Close()
	}
	return nil
}

// SetMark is a no-op: our sockets get their mark from Options.Mark at Open.
func (c *Conn) SetMark(uint32) error { return nil }

// BatchSize is what keeps wireguard-go's vector I/O (and TUN GRO) working.
func (c *Conn) BatchSize() int { return batchSize }

// ParseEndpoint resolves the UAPI endpoint= value, which is the peer's node key in hex.
func (c *Conn) ParseEndpoint(s string) (conn.Endpoint, error) {
	var k key.NodePublic
	if err := k.UnmarshalText([]byte("nodekey:" + s)); err != nil {
		return nil, err
	}
	pe := c.peerByKey(k)
	if pe == nil {
		return nil, errors.New("transport: endpoint for unknown peer " + k.ShortString())
	}
	return pe, nil
}

// PeerCount is the number of peers the transport knows.
func (c *Conn) PeerCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers.len()
}
