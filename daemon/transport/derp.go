package transport

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skeinvpn/skein/daemon/derp"
	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// derpIdleTimeout closes connections to non-home regions nobody has written to for a while.
const derpIdleTimeout = 60 * time.Second

// derpManager keeps the home region connected and opens others on demand.
type derpManager struct {
	c *Conn

	mu      sync.Mutex
	regions map[int]*derpRegion
	home    int
	dm      *wire.DERPMap
	janitor *time.Timer
}

type derpRegion struct {
	id        int
	rc        *derp.RegionClient
	lastWrite time.Time // under derpManager.mu

	// Packets wait here for the region's writer goroutine, so wireguard-go's send goroutine
	// never waits for a TLS write (up to 5 s on a stalled connection). Bounded: past
	// derpOutQueue packets, new ones are dropped and WireGuard retransmits.
	qmu  sync.Mutex
	q    []derpOut
	wake chan struct{}
	done chan struct{}
}

// derpOutQueue bounds the packets waiting for one region's writer.
const derpOutQueue = 256

type derpOut struct {
	dst key.NodePublic
	buf *[]byte
}

func newDERPRegion(id int, rc *derp.RegionClient, dropped *atomic.Uint64) *derpRegion {
	r := &derpRegion{id: id, rc: rc, lastWrite: time.Now(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go r.writer(dropped)
	return r
}

// enqueue copies bufs into the queue (wireguard-go reuses them once send returns).
func (r *derpRegion) enqueue(dst key.NodePublic, bufs [][]byte, dropped *atomic.Uint64) {
	r.qmu.Lock()
	for _, b := range bufs {
		if len(r.q) >= derpOutQueue {
			dropped.Add(1)
			continue
		}
		bp := derpBufPool.Get().(*[]byte)
		*bp = append((*bp)[:0], b...)
		r.q = append(r.q, derpOut{dst, bp})
	}
	r.qmu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// writer sends what is queued, consecutive packets to one peer in one TLS write.
func (r *derpRegion) writer(dropped *atomic.Uint64) {
	var batch []derpOut
	var pkts [][]byte
	for {
		select {
		case <-r.done:
			r.qmu.Lock()
			for _, o := range r.q {
				putDERPBuf(o.buf)
			}
			r.q = nil
			r.qmu.Unlock()
			return
		case <-r.wake:
		}
		r.qmu.Lock()
		batch, r.q = r.q, batch[:0]
		r.qmu.Unlock()
		for i := 0; i < len(batch); {
			j := i
			pkts = pkts[:0]
			for ; j < len(batch) && batch[j].dst == batch[i].dst; j++ {
				pkts = append(pkts, *batch[j].buf)
			}
			if err := r.rc.SendBatch(batch[i].dst, pkts); err != nil {
				dropped.Add(uint64(j - i))
			}
			i = j
		}
		for i, o := range batch {
			putDERPBuf(o.buf)
			batch[i] = derpOut{}
		}
		clear(pkts)
	}
}

// close ends the region's connection and its writer.
func (r *derpRegion) close() {
	r.rc.Close()
	close(r.done)
}

func newDERPManager(c *Conn) *derpManager {
	return &derpManager{c: c, regions: map[int]*derpRegion{}}
}

// derpBufPool holds copies of DERP packets in flight, both ways. WireGuard packets through a
// tunnel of MTU 1280 are at most 1360 bytes: 2 KiB buffers, not DERP's 64 KiB maximum (a
// rare bigger packet grows its buffer, which is then not kept).
var derpBufPool = sync.Pool{New: func() any { b := make([]byte, 0, derpBufSize); return &b }}

const derpBufSize = 2 << 10

func putDERPBuf(b *[]byte) {
	if b != nil && cap(*b) <= derpBufSize {
		*b = (*b)[:0]
		derpBufPool.Put(b)
	}
}

func (m *derpManager) onDERPMap(dm *wire.DERPMap) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dm = dm
	for id, r := range m.regions {
		if dm == nil || dm.Regions[id] == nil {
			r.close()
			delete(m.regions, id)
			if m.home == id {
				m.home = 0
			}
		}
	}
	if m.janitor == nil {
		m.janitor = time.AfterFunc(15*time.Second, m.cleanIdle)
	}
}

// homeRegion returns the current home region (0 when none).
func (m *derpManager) homeRegion() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.home
}

// setHome makes region the home: connected, and told it is preferred.
func (m *derpManager) setHome(region int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if region == m.home {
		return false
	}
	old := m.home
	m.home = region
	if r := m.regions[old]; r != nil {
		r.rc.SetPreferred(false)
	}
	if r := m.regionLocked(region); r != nil {
		r.rc.SetPreferred(true)
	}
	m.c.logf("transport: home DERP region %d (was %d)", region, old)
	return true
}

func (m *derpManager) regionLocked(id int) *derpRegion {
	if r := m.regions[id]; r != nil {
		return r
	}
	if m.dm == nil || m.dm.Regions[id] == nil {
		return nil
	}
	m.c.mu.Lock()
	priv := m.c.nodeKey
	closed := m.c.closed
	m.c.mu.Unlock()
	if closed || priv.IsZero() {
		return nil
	}
	rc := derp.NewRegionClient(derp.RegionOptions{
		Region:      m.dm.Regions[id],
		PrivateKey:  priv,
		Preferred:   id == m.home,
		DialContext: m.c.opts.DERPDialContext,
		Mark:        m.c.opts.Mark,
		Logf:        m.c.logf,
		OnMessage:   func(msg derp.Message) { m.c.onDERPMessage(id, msg) },
	})
	r := newDERPRegion(id, rc, &m.c.derpSendDropped)
	m.regions[id] = r
	return r
}

// send writes packets to dst through region, opening the region when needed. It never blocks
// on a dead connection: the packets are dropped and WireGuard retries.
func (m *derpManager) send(region int, dst key.NodePublic, bufs [][]byte) error {
	m.mu.Lock()
	r := m.regionLocked(region)
	if r != nil {
		r.lastWrite = time.Now()
	}
	m.mu.Unlock()
	if r == nil {
		return errNoDERPRegion
	}
	if !r.rc.Connected() {
		return derp.ErrNotConnected // at once, as before the queue: the caller may count on it
	}
	r.enqueue(dst, bufs, &m.c.derpSendDropped)
	return nil
}

func (m *derpManager) cleanIdle() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for id, r := range m.regions {
		if id != m.home && now.Sub(r.lastWrite) > derpIdleTimeout {
			r.close()
			delete(m.regions, id)
		}
	}
	m.janitor.Reset(15 * time.Second)
}

// resetAll drops every connection (new node key: a new DERP identity).
func (m *derpManager) resetAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, r := range m.regions {
		r.close()
		delete(m.regions, id)
	}
	if m.home != 0 {
		if r := m.regionLocked(m.home); r != nil {
			r.rc.SetPreferred(true)
		}
	}
}

func (m *derpManager) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, r := range m.regions {
		r.close()
		delete(m.regions, id)
	}
	if m.janitor != nil {
		m.janitor.Stop()
	}
}

// connected reports whether the home region's connection is up.
func (m *derpManager) connected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.regions[m.home]
	return r != nil && r.rc.Connected()
}

// onDERPMessage runs on a DERP reader goroutine: disco is handled at once, WireGuard is queued
// for receiveDERP without blocking (dropped when the queue is full).
func (c *Conn) onDERPMessage(region int, msg derp.Message) {
	switch m := msg.(type) {
	case *derp.ReceivedPacket:
		now := time.Now()
		if disco.LooksLikeDisco(m.Data) {
			c.handleDisco(m.Data, netip.AddrPort{}, region, m.Source, now)
			return
		}
		if pe := c.peerByKey(m.Source); pe != nil {
			pe.mu.Lock()
			pe.heardDERP = region
			pe.mu.Unlock()
		} else {
			return
		}
		bp := derpBufPool.Get().(*[]byte)
		*bp = append((*bp)[:0], m.Data...)
		select {
		case c.derpRecv <- derpPacket{src: m.Source, data: *bp, buf: bp}:
		default:
			putDERPBuf(bp)
			c.derpDropped.Add(1)
		}
	case derp.ServerInfoMessage:
		// A new connection to the region: CallMeMaybes that could not leave go now.
		go c.sendOwedCallMeMaybes(region)
	case derp.PeerGone:
		// The peer is no longer reachable through this region: fall back to its home.
		if pe := c.peerByKey(m.Peer); pe != nil {
			pe.mu.Lock()
			if pe.heardDERP == region {
				pe.heardDERP = 0
			}
			pe.mu.Unlock()
		}
	}
}

var errNoDERPRegion = errorString("transport: no such DERP region")

type errorString string

func (e errorString) Error() string { return string(e) }

// sendOwedCallMeMaybes sends the CallMeMaybes that failed while region was disconnected.
func (c *Conn) sendOwedCallMeMaybes(region int) {
	peers := c.allPeers()
	for _, pe := range peers {
		pe.sendOwedCallMeMaybe(region)
	}
}
