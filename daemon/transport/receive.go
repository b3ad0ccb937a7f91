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

// receiveFunc reads batches from one UDP socket. Disco and STUN packets are handled here and
// hidden from wireguard-go (size 0); WireGuard packets are attributed to the peer that owns the
// source address, and dropped when no peer does (a path is only trusted after disco).
func (c *Conn) receiveFunc(s *udpSocket) conn.ReceiveFunc {
	srcs := make([]netip.AddrPort, batchSize)
	// One-entry cache: bulk traffic comes from one address at a time.
	var lastAddr netip.AddrPort
	var lastPeer *peerEndpoint
	var lastGen uint64
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
			wg := 0
			now := time.Now()
			for i := 0; i < n; i++ {
				b := bufs[i][:sizes[i]]
				src := srcs[i]
				switch {
				case sizes[i] == 0:
				case stun.Is(b):
					c.nc.handleSTUN(b, src, now)
					sizes[i] = 0
				case disco.LooksLikeDisco(b):
					c.handleDisco(b, src, 0, key.NodePublic{}, now)
					sizes[i] = 0
				default:
					gen := c.addrGen.Load()
					var pe *peerEndpoint
					if src == lastAddr && lastPeer != nil && gen == lastGen {
						pe = lastPeer
					} else {
						c.mu.Lock()
						pe = c.byAddr[src]
						c.mu.Unlock()
						lastAddr, lastPeer, lastGen = src, pe, gen
					}
					if pe == nil {
						sizes[i] = 0
						continue
					}
					pe.noteRecv(now, sizes[i])
					eps[i] = pe
					wg++
				}
			}
			if wg > 0 {
				c.packets.Add(uint64(wg))
				return n, nil
			}
		}
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
