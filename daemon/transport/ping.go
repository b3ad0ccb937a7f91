package transport

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// Ping sends a disco ping to the peer over every path at once (its verified or candidate
// direct addresses and its home DERP region) and returns the first pong, as the official
// `tailscale ping` does. Pinging also opens direct paths, so repeated pings upgrade.
func (c *Conn) Ping(ctx context.Context, k key.NodePublic) PingResult {
	pe := c.peerByKey(k)
	if pe == nil {
		return PingResult{Err: "unknown peer"}
	}
	results := make(chan PingResult, 64)
	// A round whose pings are all lost (DERP still connecting, the peer not yet told our disco
	// key by control) is followed by another after 300 ms, rather than waiting the full
	// timeout; the first pong of any round wins.
	var last PingResult
	for round := 0; ; round++ {
		sent := pe.pingAllPaths(time.Now(), results)
		if sent == 0 {
			return PingResult{Err: "no path to peer (no endpoints, no DERP home)"}
		}
		if round == 0 {
			pe.discover(time.Now(), false) // also ask the peer to ping us (CallMeMaybe)
		}
		retry := time.NewTimer(pingRetryInterval)
		for waiting := true; waiting; {
			select {
			case r := <-results:
				if r.Err == "" {
					retry.Stop()
					return r
				}
				last = r
			case <-retry.C:
				waiting = false
			case <-ctx.Done():
				retry.Stop()
				if last.Err == "" {
					last.Err = "timeout"
				}
				return last
			}
		}
	}
}

// pingRetryInterval is how long Ping waits for a pong before sending another round.
const pingRetryInterval = 300 * time.Millisecond

// pingAllPaths sends one disco ping over every path to the peer and returns how many it sent.
func (pe *peerEndpoint) pingAllPaths(now time.Time, results chan<- PingResult) int {
	targets, region := pe.pathTargets()
	sent := 0
	for _, a := range targets {
		pe.sendPing(a, 0, now, pingCLI, results)
		sent++
	}
	if region != 0 {
		pe.sendPing(netip.AddrPort{}, region, now, pingCLI, results)
		sent++
	}
	return sent
}

// pathTargets are every address of the peer (its candidates and the path in use), sorted, and
// its DERP region (0: none).
func (pe *peerEndpoint) pathTargets() ([]netip.AddrPort, int) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	targets := make([]netip.AddrPort, 0, len(pe.candidates)+1)
	for a := range pe.candidates {
		targets = append(targets, a)
	}
	if pe.bestAddr.IsValid() && pe.candidates[pe.bestAddr] == nil {
		targets = append(targets, pe.bestAddr)
	}
	slices.SortFunc(targets, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return targets, pe.derpRegionLocked()
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
