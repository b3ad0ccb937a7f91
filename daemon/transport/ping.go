package transport

import (
	"context"
	"net/netip"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// PingResult is the answer to one disco ping.
type PingResult struct {
	Endpoint   netip.AddrPort // the direct address that answered
	DERPRegion int            // the region that answered, when via DERP
	Latency    time.Duration
	Err        string
}

// Ping sends a disco ping to the peer over every path at once (its verified or candidate
// direct addresses and its home DERP region) and returns the first pong, as the official
// `tailscale ping` does. Pinging also opens direct paths, so repeated pings upgrade.
func (c *Conn) Ping(ctx context.Context, k key.NodePublic) PingResult {
	pe := c.peerByKey(k)
	if pe == nil {
		return PingResult{Err: "unknown peer"}
	}
	now := time.Now()
	results := make(chan PingResult, 32)
	pe.mu.Lock()
	var targets []netip.AddrPort
	for a := range pe.candidates {
		targets = append(targets, a)
	}
	if pe.bestAddr.IsValid() && pe.candidates[pe.bestAddr] == nil {
		targets = append(targets, pe.bestAddr)
	}
	region := pe.homeDERP
	if region == 0 {
		region = pe.heardDERP
	}
	pe.mu.Unlock()
	sent := 0
	for _, a := range targets {
		pe.sendPing(a, 0, now, results)
		sent++
	}
	if region != 0 {
		pe.sendPing(netip.AddrPort{}, region, now, results)
		sent++
	}
	pe.discover(now, false) // also ask the peer to ping us (CallMeMaybe)
	if sent == 0 {
		return PingResult{Err: "no path to peer (no endpoints, no DERP home)"}
	}
	var last PingResult
	for i := 0; i < sent; i++ {
		select {
		case r := <-results:
			if r.Err == "" {
				return r
			}
			last = r
		case <-ctx.Done():
			return PingResult{Err: "timeout"}
		}
	}
	return last
}

// PeerPath returns the path state towards a peer.
func (c *Conn) PeerPath(k key.NodePublic) (PathInfo, bool) {
	pe := c.peerByKey(k)
	if pe == nil {
		return PathInfo{}, false
	}
	return pe.pathInfo(time.Now()), true
}

// HomeDERP returns the current home region (0 when none yet).
func (c *Conn) HomeDERP() int { return c.derp.homeRegion() }

// DERPConnected reports whether the home region connection is up.
func (c *Conn) DERPConnected() bool { return c.derp.connected() }

// deliver hands a result to a waiting pinger without ever blocking the transport.
func deliver(ch chan<- PingResult, r PingResult) {
	select {
	case ch <- r:
	default:
	}
}
