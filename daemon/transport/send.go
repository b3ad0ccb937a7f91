package transport

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
)

// The send path, in the order a packet takes it: wireguard-go hands a batch for one peer to
// Send; the peer's path state picks the trusted direct address, or DERP plus the stale direct
// address while discovery runs; the batch leaves through the UDP socket of its family (GSO
// where the kernel has it) or the DERP region's connection. Disco and STUN leave one datagram
// at a time through the same sockets, so the mappings they learn are the WireGuard ones.

// Send sends a batch to one peer over its current best path.
func (c *Conn) Send(bufs [][]byte, ep conn.Endpoint) error {
	pe, ok := ep.(*peerEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	c.packets.Add(uint64(len(bufs)))
	return pe.send(bufs)
}

// send carries WireGuard packets: over the trusted direct address alone, else over DERP and any
// stale direct address at once, starting discovery.
func (pe *peerEndpoint) send(bufs [][]byte) error {
	now := time.Now()
	pe.mu.Lock()
	addr, trusted := pe.bestAddr, now.Before(pe.trustUntil)
	region := pe.derpRegionLocked()
	wasIdle := now.Sub(pe.lastSend) > sessionActiveTimeout
	pe.lastSend = now
	pe.lastPath = pe.pathLocked(now)
	for _, b := range bufs {
		pe.txBytes += uint64(len(b))
	}
	if wasIdle || pe.heartbeat == nil {
		pe.startHeartbeatLocked()
	}
	watch := false
	if trusted {
		// Nothing has come back over the direct path since this send: roam.go probes it if
		// that lasts.
		if pe.firstUnanswered.IsZero() {
			pe.firstUnanswered = now
		}
		watch = true
	}
	pe.mu.Unlock()
	if watch {
		pe.c.roam.watch(pe)
	}

	var err error
	if addr.IsValid() {
		err = pe.c.sendUDP(bufs, addr)
	}
	if !trusted {
		if region != 0 {
			// The batch went if either path took it: a UDP send that worked is not a
			// failure because DERP is down (wireguard-go would log one per batch).
			derr := pe.c.derp.send(region, pe.nodeKey, bufs)
			if !addr.IsValid() || err != nil && derr == nil {
				err = derr
			}
		}
		pe.discover(now, false)
	}
	return err
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
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
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

func (c *Conn) nodePublic() key.NodePublic {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeKey.Public()
}

func (c *Conn) sealDisco(pe *peerEndpoint, m disco.Message) []byte {
	pe.mu.Lock()
	shared := pe.shared
	pe.mu.Unlock()
	if shared == nil {
		return nil
	}
	return disco.Seal(nil, c.discoPub, shared, m)
}

func (c *Conn) sendDiscoUDP(dst netip.AddrPort, pe *peerEndpoint, m disco.Message) {
	pkt := c.sealDisco(pe, m)
	if pkt == nil {
		return
	}
	if c.testHookDiscoUDP != nil && c.testHookDiscoUDP(dst, m) {
		return
	}
	if err := c.sendUDPOne(pkt, dst); err != nil && !errors.Is(err, errNoIPv6) {
		c.logf("transport: disco to %v: %v", dst, err)
	}
}

// sendDiscoDERP sends a disco message over DERP; it reports whether it left.
func (c *Conn) sendDiscoDERP(region int, pe *peerEndpoint, m disco.Message) bool {
	if region == 0 {
		return false
	}
	pkt := c.sealDisco(pe, m)
	if pkt == nil {
		return false
	}
	if c.testHookDiscoDERP != nil {
		c.testHookDiscoDERP(region, m)
	}
	if err := c.derp.send(region, pe.nodeKey, [][]byte{pkt}); err != nil {
		c.logf("transport: disco via DERP %d: %v", region, err)
		return false
	}
	return true
}
