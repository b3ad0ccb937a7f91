package transport

import (
	"net/netip"
	"time"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
)

// derpMagicIP marks "via DERP region N" in a Pong's Src, as official peers do.
var derpMagicIP = netip.MustParseAddr("127.3.3.40")

// handleDisco handles one disco packet that came over UDP from src (region 0), or over DERP
// region from the node derpSrc. Packets from disco keys not in the netmap are dropped unopened.
func (c *Conn) handleDisco(pkt []byte, src netip.AddrPort, region int, derpSrc key.NodePublic, now time.Time) {
	sender, ok := disco.Source(pkt)
	if !ok {
		return
	}
	c.mu.Lock()
	pe := c.peers.byDisco[sender]
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
	if !viaDERP && !src.IsValid() {
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
		pe.addLearned(src, now)
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
			pe.sendPing(src, 0, now, pingDiscovery, nil)
		}
	case *disco.Pong:
		if viaDERP {
			pe.handlePong(m.TxID, netip.AddrPort{}, netip.AddrPort{}, region, now)
		} else {
			pe.handlePong(m.TxID, src, m.Src, 0, now)
		}
	case *disco.CallMeMaybe:
		if !viaDERP {
			return // only valid over DERP
		}
		pe.handleCallMeMaybe(m.MyNumber, now)
	}
}
