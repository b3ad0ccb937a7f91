package transport

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// PingTally is what one address (or DERP, To invalid) answered in a round of pings.
type PingTally struct {
	To       netip.AddrPort
	Region   int // the DERP region, when To is invalid
	Sent     int
	Answered int
	Latency  time.Duration
}

// PeerDiag is the transport's evidence about a peer, for "why relay?".
type PeerDiag struct {
	Path     PathInfo
	HasDisco bool
	// Candidates are the addresses discovery tries.
	Candidates []netip.AddrPort
	// Round is the round of pings PingRound sent (empty without one).
	Round []PingTally
	// Totals since the peer was added: pings sent, pongs received (direct only, and all).
	PingsSent, PongsGot             uint64
	DirectPingsSent, DirectPongsGot uint64
}

// Diagnose returns the evidence about a peer; ok false when the peer is unknown.
func (c *Conn) Diagnose(k key.NodePublic) (PeerDiag, bool) {
	pe := c.peerByKey(k)
	if pe == nil {
		return PeerDiag{}, false
	}
	d := PeerDiag{Path: pe.pathInfo(time.Now())}
	pe.mu.Lock()
	d.HasDisco = pe.shared != nil
	for a := range pe.candidates {
		d.Candidates = append(d.Candidates, a)
	}
	d.PingsSent, d.PongsGot = pe.pingsSent, pe.pongsGot
	d.DirectPingsSent, d.DirectPongsGot = pe.directPingsSent, pe.directPongsGot
	pe.mu.Unlock()
	slices.SortFunc(d.Candidates, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return d, true
}

// PingRound sends one disco ping to every address of the peer and one over its DERP region,
// asks the peer to ping back (CallMeMaybe), and waits up to wait for all the answers. It
// returns the evidence with the round's tallies; ok false when the peer is unknown.
func (c *Conn) PingRound(ctx context.Context, k key.NodePublic, wait time.Duration) (PeerDiag, bool) {
	pe := c.peerByKey(k)
	if pe == nil {
		return PeerDiag{}, false
	}
	now := time.Now()
	targets, region := pe.pathTargets()
	tallies := make([]PingTally, 0, len(targets)+1)
	chans := make([]chan PingResult, 0, len(targets)+1)
	for _, a := range targets {
		ch := make(chan PingResult, 1)
		tallies = append(tallies, PingTally{To: a, Sent: 1})
		chans = append(chans, ch)
		pe.sendPing(a, 0, now, pingCLI, ch)
	}
	if region != 0 {
		ch := make(chan PingResult, 1)
		tallies = append(tallies, PingTally{Region: region, Sent: 1})
		chans = append(chans, ch)
		pe.sendPing(netip.AddrPort{}, region, now, pingCLI, ch)
	}
	pe.discover(now, false) // and ask the peer to ping us: its pings test our side

	t := time.NewTimer(wait)
	defer t.Stop()
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, ch := range chans {
		wg.Go(func() {
			select {
			case r := <-ch:
				if r.Err == "" {
					mu.Lock()
					tallies[i].Answered = 1
					tallies[i].Latency = r.Latency
					mu.Unlock()
				}
			case <-stop:
			}
		})
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-t.C:
	case <-ctx.Done():
	}
	close(stop)
	<-all
	d, _ := c.Diagnose(k)
	d.Round = tallies
	return d, true
}

// InboundChanged says that what may reach us from outside changed although our addresses did
// not (a firewall rule was added or removed): peers we talk to over a relay are asked at once
// to ping us again (CallMeMaybe), so that a port just opened turns into a direct path without
// waiting for the next discovery round.
func (c *Conn) InboundChanged() {
	now := time.Now()
	peers := c.allPeers()
	for _, pe := range peers {
		pe.mu.Lock()
		relayed := !(pe.bestAddr.IsValid() && now.Before(pe.trustUntil))
		active := now.Sub(pe.lastSend) < sessionActiveTimeout || now.Sub(pe.lastRecv) < sessionActiveTimeout
		due := relayed && active && now.Sub(pe.lastInbound) >= time.Second
		if due {
			pe.lastInbound = now
			pe.lastCMM = time.Time{}
		}
		pe.mu.Unlock()
		if due {
			pe.discoverRound(now, true, false)
		}
	}
}
