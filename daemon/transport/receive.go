package transport

import (
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/stun"
)

// The receive path, the send path's mirror: a batch comes off one UDP socket; STUN answers go
// to the netchecker and disco to its handler, both hidden from wireguard-go (size 0); a
// WireGuard packet is handed up as its peer's, when disco verified its source address, and
// dropped otherwise. DERP delivers one relayed packet at a time through a second receive
// function.

// receiveFunc reads batches from one UDP socket.
func (c *Conn) receiveFunc(s *udpSocket) conn.ReceiveFunc {
	srcs := make([]netip.AddrPort, batchSize)
	var cache addrCache
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			n, err := s.readBatch(bufs, sizes, srcs)
			if err != nil {
				select {
				case <-c.done:
					return 0, net.ErrClosed
				default:
				}
				return 0, err
			}
			if wg := c.demux(bufs, sizes, srcs[:n], eps, &cache, time.Now()); wg > 0 {
				return n, nil
			}
		}
	}
}

// addrCache is the receive loop's one-entry cache of the address index: bulk traffic comes
// from one address at a time.
type addrCache struct {
	addr netip.AddrPort
	pe   *peerEndpoint
	gen  uint64
}

// demux sorts one received batch: STUN and disco are handled and their sizes set to 0;
// WireGuard packets get their peer in eps, or size 0 when no peer owns the source. It returns
// how many WireGuard packets are left for wireguard-go.
func (c *Conn) demux(bufs [][]byte, sizes []int, srcs []netip.AddrPort, eps []conn.Endpoint, cache *addrCache, now time.Time) int {
	wg := 0
	// Per-peer bookkeeping is done once per run of packets from one peer.
	var runPeer *peerEndpoint
	var runSrc netip.AddrPort
	runBytes := 0
	flush := func() {
		if runPeer != nil {
			runPeer.noteRecvFrom(now, runBytes, runSrc)
		}
		runPeer, runBytes = nil, 0
	}
	for i := range srcs {
		b := bufs[i][:sizes[i]]
		src := srcs[i]
		if c.testHookDrop != nil && c.testHookDrop(src) {
			sizes[i] = 0
			continue
		}
		switch {
		case sizes[i] == 0:
		case stun.Is(b):
			c.nc.Receive(b, src, now)
			sizes[i] = 0
		case disco.LooksLikeDisco(b):
			c.handleDisco(b, src, 0, key.NodePublic{}, now)
			sizes[i] = 0
		default:
			gen := c.addrGen.Load()
			var pe *peerEndpoint
			if src == cache.addr && cache.pe != nil && gen == cache.gen {
				pe = cache.pe
			} else {
				pe = c.peerByAddr(src)
				*cache = addrCache{addr: src, pe: pe, gen: gen}
			}
			if pe == nil {
				sizes[i] = 0
				continue
			}
			if c.opts.OnHandshake != nil && isInitiation(b) {
				c.opts.OnHandshake(pe.nodeKey)
			}
			if pe != runPeer || src != runSrc {
				flush()
				runPeer, runSrc = pe, src
			}
			runBytes += sizes[i]
			eps[i] = pe
			wg++
		}
	}
	flush()
	if wg > 0 {
		c.packets.Add(uint64(wg))
	}
	return wg
}

// noteRecvFrom counts WireGuard bytes that came over UDP from src.
func (pe *peerEndpoint) noteRecvFrom(now time.Time, n int, src netip.AddrPort) {
	pe.mu.Lock()
	pe.lastRecv = now
	pe.rxBytes += uint64(n)
	direct := src == pe.bestAddr
	if direct {
		pe.noteDirectLifeLocked(now)
		pe.noteDataLocked(now)
	}
	pe.mu.Unlock()
	if direct {
		pe.c.roam.watch(pe)
	}
}

// derpPacket is a WireGuard packet that arrived over DERP, copied out of the DERP reader.
type derpPacket struct {
	src  key.NodePublic
	data []byte
	buf  *[]byte
}

// receiveDERP hands DERP-relayed WireGuard packets to wireguard-go, one per call (DERP is a
// TCP stream and never the bulk path when a direct path exists).
func (c *Conn) receiveDERP(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	for {
		select {
		case <-c.done:
			return 0, net.ErrClosed
		case p := <-c.derpRecv:
			pe := c.peerByKey(p.src)
			if pe == nil {
				putDERPBuf(p.buf)
				continue
			}
			if c.opts.OnHandshake != nil && isInitiation(p.data) {
				c.opts.OnHandshake(p.src)
			}
			n := copy(bufs[0], p.data)
			putDERPBuf(p.buf)
			pe.noteRecv(time.Now(), n)
			c.packets.Add(1)
			sizes[0] = n
			eps[0] = pe
			return 1, nil
		}
	}
}

// isInitiation reports whether b is a WireGuard handshake initiation (type 1, 148 bytes).
func isInitiation(b []byte) bool {
	return len(b) == 148 && b[0] == 1 && b[1] == 0 && b[2] == 0 && b[3] == 0
}
