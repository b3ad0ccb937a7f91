package transport

import (
	"net/netip"
	"time"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
)

// derpMagicIP marks "via DERP region N" in a Pong's Src, as official peers do.
var derpMagicIP = netip.MustParseAddr("127.3.3.40")

func (c *Conn) nodePublic() key.NodePublic {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeKey.Public()
}

// setAddrOwner remembers that WireGuard packets from a verified address belong to pe.
func (c *Conn) setAddrOwner(a netip.AddrPort, pe *peerEndpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAddr[a] != pe {
		c.byAddr[a] = pe
		c.addrGen.Add(1)
	}
}

// handleDisco handles one disco packet that came over UDP from src (region 0), or over DERP
// region from the node derpSrc. Packets from disco keys not in the netmap are dropped unopened.
func (c *Conn) handleDisco(pkt []byte, src netip.AddrPort, region int, derpSrc key.NodePublic, now time.Time) {
	sender, ok := disco.Source(pkt)
	if !ok {
		return
	}
	c.mu.Lock()
	pe := c.byDisco[sender]
	c.mu.Unlock()
	if pe == nil {
		return
	}
	pe.mu.Lock()
	shared := pe.shared
	pe.mu.Unlock()
	if shared == nil {
		return
	}
	msg, err := disco.Open(pkt, shared)
	if err != nil {
		return
	}
	viaDERP := region != 0
	if viaDERP && derpSrc != pe.nodeKey {
		// A DERP sender must be the node that owns this disco key.
		return
	}
	if viaDERP {
		pe.mu.Lock()
		pe.heardDERP = region
		pe.mu.Unlock()
	}
	switch m := msg.(type) {
	case *disco.Ping:
		pong := &disco.Pong{TxID: m.TxID}
		if viaDERP {
			pong.Src = netip.AddrPortFrom(derpMagicIP, uint16(region))
			c.sendDiscoDERP(region, pe, pong)
			return
		}
		pong.Src = src
		pe.addCandidate(src, now, false)
		c.setAddrOwner(src, pe)
		c.sendDiscoUDP(src, pe, pong)
		// Ping back so that our NAT opens towards the peer and we learn the path too.
		pe.mu.Lock()
		cd := pe.candidates[src]
		due := cd != nil && now.Sub(cd.lastPing) >= discoPingInterval && !(pe.bestAddr == src && now.Before(pe.trustUntil))
		if due {
			cd.lastPing = now
		}
		pe.mu.Unlock()
		if due {
			pe.sendPing(src, 0, now, nil)
		}
	case *disco.Pong:
		if viaDERP {
			pe.handlePong(m.TxID, netip.AddrPort{}, region, now)
		} else {
			pe.handlePong(m.TxID, src, 0, now)
		}
	case *disco.CallMeMaybe:
		if !viaDERP {
			return // only valid over DERP
		}
		for _, a := range m.MyNumber {
			pe.addCandidate(a, now, true)
		}
		pe.discover(now, true)
	}
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
	if err := c.sendUDPOne(pkt, dst); err != nil {
		c.logf("transport: disco to %v: %v", dst, err)
	}
}

func (c *Conn) sendDiscoDERP(region int, pe *peerEndpoint, m disco.Message) {
	if region == 0 {
		return
	}
	pkt := c.sealDisco(pe, m)
	if pkt == nil {
		return
	}
	if c.testHookDiscoDERP != nil {
		c.testHookDiscoDERP(region, m)
	}
	if err := c.derp.send(region, pe.nodeKey, [][]byte{pkt}); err != nil {
		c.logf("transport: disco via DERP %d: %v", region, err)
	}
}
