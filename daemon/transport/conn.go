// Package transport is Skein's "magicsock": a wireguard-go conn.Bind that carries WireGuard and
// disco over one UDP socket per address family and over DERP relays, and picks for every peer
// the best path (a verified direct ip:port, else the peer's home DERP region).
package transport

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

const batchSize = conn.IdealBatchSize

func contextBackground() context.Context { return context.Background() }

// PeerConfig is what the transport needs to know of one peer, from the netmap.
type PeerConfig struct {
	NodeKey   key.NodePublic
	DiscoKey  key.DiscoPublic
	Endpoints []netip.AddrPort
	HomeDERP  int
	Name      string
}

// Options configure a Conn.
type Options struct {
	Port     uint16 // 0 = random
	Mark     uint32 // SO_MARK for our sockets so they bypass the tunnel's routes
	DiscoKey key.DiscoPrivate
	Logf     func(format string, args ...any)
	// OnEndpointsChanged is called (from a transport goroutine) when our own endpoints, home
	// DERP or netcheck report change, so control can be told.
	OnEndpointsChanged func()
	// DERPDialContext overrides how DERP TCP connections are made (tests); nil = default.
	DERPDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is the Bind. Create with New; wireguard-go calls Open/Close.
type Conn struct {
	opts     Options
	logf     func(string, ...any)
	discoPub key.DiscoPublic

	mu      sync.Mutex
	nodeKey key.NodePrivate
	peers   map[key.NodePublic]*peerEndpoint
	byDisco map[key.DiscoPublic]*peerEndpoint
	byAddr  map[netip.AddrPort]*peerEndpoint
	derpMap *wire.DERPMap
	derp    *derpManager
	nc      *netchecker
	myEPs   []Endpoint // our own candidate endpoints, reported to control
	// reportedNI is what control was last told of the netcheck (UDP, IPv6, mapping).
	reportedNI netInfoFacts
	closed     bool
	bindOpen   bool

	pconn4, pconn6 *udpSocket
	send4mu        sync.Mutex
	send6mu        sync.Mutex

	derpRecv chan derpPacket
	done     chan struct{} // closed when the Bind closes

	ctx    context.Context // lives as long as the Conn
	cancel context.CancelFunc

	// addrGen changes whenever byAddr does, invalidating receive-side caches.
	addrGen atomic.Uint64
	// Counters for status and tests.
	derpDropped atomic.Uint64
	// packets counts WireGuard packets both ways, so the data plane can tell busy from idle.
	packets atomic.Uint64
	// testHookDiscoDERP sees every disco message sent over DERP (tests only).
	testHookDiscoDERP func(region int, m disco.Message)
}

// Endpoint is one of our own candidate addresses, with its type as control wants it.
type Endpoint struct {
	Addr netip.AddrPort
	Type int // 1 local, 2 stun
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
		peers:    map[key.NodePublic]*peerEndpoint{},
		byDisco:  map[key.DiscoPublic]*peerEndpoint{},
		byAddr:   map[netip.AddrPort]*peerEndpoint{},
		derpRecv: make(chan derpPacket, 256),
		ctx:      ctx,
		cancel:   cancel,
	}
	c.derp = newDERPManager(c)
	c.nc = newNetchecker(c)
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

// SetDERPMap sets the relay regions.
func (c *Conn) SetDERPMap(m *wire.DERPMap) {
	c.mu.Lock()
	c.derpMap = m
	c.mu.Unlock()
	c.derp.onDERPMap(m)
	c.provisionalHome(m)
	c.nc.kick()
}

// provisionalHome picks a home region the moment a DERP map arrives without one, before any
// measurement: until a node has a home, peers have no way to send it a first packet, and on a
// network without UDP the first netcheck only ends after its STUN timeouts. The next netcheck
// replaces the guess when another region measures better.
func (c *Conn) provisionalHome(m *wire.DERPMap) {
	if m == nil || c.derp.homeRegion() != 0 {
		return
	}
	home := 0
	for id, r := range m.Regions {
		if homeEligible(r) && (home == 0 || id < home) {
			home = id
		}
	}
	if home == 0 {
		return
	}
	c.applyReport(Report{PreferredDERP: home})
}

// SetPeers replaces the peer set, keeping the path state of peers that stay.
func (c *Conn) SetPeers(cfgs []PeerConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[key.NodePublic]bool, len(cfgs))
	for _, pc := range cfgs {
		seen[pc.NodeKey] = true
		pe := c.peers[pc.NodeKey]
		if pe == nil {
			pe = newPeerEndpoint(c, pc)
			c.peers[pc.NodeKey] = pe
		} else {
			if pe.updateConfig(pc) {
				// A new disco key means a restarted peer: its old paths are void.
				for a, p := range c.byAddr {
					if p == pe {
						delete(c.byAddr, a)
					}
				}
			}
		}
		for dk, p := range c.byDisco {
			if p == pe && dk != pc.DiscoKey {
				delete(c.byDisco, dk)
			}
		}
		if !pc.DiscoKey.IsZero() {
			c.byDisco[pc.DiscoKey] = pe
		}
	}
	for k, pe := range c.peers {
		if !seen[k] {
			pe.stop()
			delete(c.peers, k)
			delete(c.byDisco, pe.discoKey())
			for a, p := range c.byAddr {
				if p == pe {
					delete(c.byAddr, a)
				}
			}
		}
	}
	if len(cfgs) > 0 {
		c.nc.kick()
	}
}

// peerByKey returns the endpoint for a node key (nil if unknown).
func (c *Conn) peerByKey(k key.NodePublic) *peerEndpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[k]
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

// Shutdown stops everything, including DERP connections and the netchecker; after it the
// Bind cannot be reopened. (Close, wireguard-go's, only unbinds the sockets.)
func (c *Conn) Shutdown() {
	c.mu.Lock()
	c.closed = true
	peers := c.peers
	c.mu.Unlock()
	c.cancel()
	for _, pe := range peers {
		pe.stop()
	}
	c.derp.closeAll()
	c.Close()
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
	go c.nc.run(c.ctx)
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

// Send sends a batch to one peer over its current best path.
func (c *Conn) Send(bufs [][]byte, ep conn.Endpoint) error {
	pe, ok := ep.(*peerEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	c.packets.Add(uint64(len(bufs)))
	return pe.send(bufs)
}

func (c *Conn) sendUDP(bufs [][]byte, dst netip.AddrPort) error {
	c.mu.Lock()
	p4, p6 := c.pconn4, c.pconn6
	c.mu.Unlock()
	if dst.Addr().Is4() || dst.Addr().Is4In6() {
		if p4 == nil {
			return net.ErrClosed
		}
		c.send4mu.Lock()
		defer c.send4mu.Unlock()
		return p4.writeBatch(bufs, netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()))
	}
	if p6 == nil {
		return errNoIPv6
	}
	c.send6mu.Lock()
	defer c.send6mu.Unlock()
	return p6.writeBatch(bufs, dst)
}

var errNoIPv6 = errors.New("transport: no IPv6 socket")

// sendUDPOne sends one small datagram (disco, STUN).
func (c *Conn) sendUDPOne(b []byte, dst netip.AddrPort) error {
	c.mu.Lock()
	p4, p6 := c.pconn4, c.pconn6
	c.mu.Unlock()
	if dst.Addr().Is4() {
		if p4 == nil {
			return net.ErrClosed
		}
		return p4.writeTo(b, dst)
	}
	if p6 == nil {
		return errNoIPv6
	}
	return p6.writeTo(b, dst)
}
