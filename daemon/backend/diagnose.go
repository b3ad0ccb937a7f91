package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/whyrelay"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// whyPingWait is how long `skein why` waits for its round of pings.
const whyPingWait = 2 * time.Second

// Netcheck answers `skein netcheck`: root and the operator get a new run (or the one in
// flight: only one runs at a time), everyone else the last report.
func (b *Backend) Netcheck(ctx context.Context) (ipc.NetcheckReport, error) {
	b.mu.Lock()
	dp, err := b.tunnelLocked("netcheck needs a running tunnel (it uses the tunnel's UDP socket and the tailnet's DERP map)")
	b.mu.Unlock()
	if err != nil {
		return ipc.NetcheckReport{}, err
	}
	fresh := ipc.CallerMayChange(ctx)
	var rep transport.Report
	if fresh {
		rep = dp.Netcheck(ctx)
	} else {
		rep = dp.LastReport()
	}
	out := ipc.NetcheckReport{
		UDP:                   rep.UDP,
		IPv4:                  rep.IPv4,
		IPv6:                  rep.IPv6,
		OSHasIPv6:             rep.OSHasIPv6,
		MappingVariesByDestIP: rep.MappingVaries,
		PreferredDERP:         rep.PreferredDERP,
		RegionLatency:         seconds(rep.RegionLatency),
		RegionV4Latency:       seconds(rep.RegionV4Latency),
		RegionV6Latency:       seconds(rep.RegionV6Latency),
		RegionCodes:           map[int]string{},
		RegionNames:           map[int]string{},
		Time:                  rep.At,
		Cached:                !fresh,
	}
	if rep.GlobalV4.IsValid() {
		out.GlobalV4 = rep.GlobalV4.String()
	}
	if rep.GlobalV6.IsValid() {
		out.GlobalV6 = rep.GlobalV6.String()
	}
	if rep.UPnP != nil {
		out.PortMapping = &ipc.PortMapping{UPnP: *rep.UPnP, NATPMP: *rep.PMP, PCP: *rep.PCP}
		for _, e := range dp.Endpoints() {
			if e.Type == transport.EndpointPortmapped {
				out.PortMapping.Mapped = e.Addr.String()
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nm != nil && b.nm.DERPMap != nil {
		for id, r := range b.nm.DERPMap.Regions {
			out.RegionCodes[id] = b.regionCodeLocked(id)
			if r != nil && r.RegionName != "" {
				out.RegionNames[id] = r.RegionName
			}
		}
	}
	return out, nil
}

func seconds(m map[int]time.Duration) map[int]float64 {
	out := make(map[int]float64, len(m))
	for id, l := range m {
		out[id] = l.Seconds()
	}
	return out
}

// Why answers `skein why PEER`: one round of pings to every address of the peer, the path, and
// the causes when it is not direct.
func (b *Backend) Why(ctx context.Context, peer string) (ipc.WhyReport, error) {
	b.mu.Lock()
	dp, err := b.tunnelLocked("not connected")
	if err != nil || b.stateLocked() != ipc.StateRunning {
		b.mu.Unlock()
		return ipc.WhyReport{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	n, err := b.findPeerLocked(peer)
	if err != nil {
		b.mu.Unlock()
		return ipc.WhyReport{}, err
	}
	out := ipc.WhyReport{Peer: shortName(n), Path: "none"}
	for _, a := range n.Addresses {
		if a.Addr().Is4() {
			out.PeerIP = a.Addr()
			break
		}
	}
	node := *n
	b.mu.Unlock()

	wait := whyPingWait
	if node.Online != nil && !*node.Online {
		wait = 0 // nothing would answer
	}
	rep, ok := dp.PeerPathReport(ctx, node.Key, wait)
	f := rep.Facts
	if !ok {
		f.PeerHasDisco = !node.DiscoKey.IsZero()
	}
	peerFacts(&node, &f)
	switch {
	case rep.Path.Direct.IsValid():
		out.Path, out.Direct = "direct", rep.Path.Direct.String()
		out.LatencyMs = float64(rep.Path.Latency.Microseconds()) / 1000
	case rep.Path.DERPRegion != 0:
		out.Path = "relay"
		b.mu.Lock()
		out.Relay = b.regionCodeLocked(rep.Path.DERPRegion)
		b.mu.Unlock()
	}
	for _, t := range rep.Round {
		wp := ipc.WhyPing{Sent: t.Sent, Answered: t.Answered, LatencyMs: float64(t.Latency.Microseconds()) / 1000}
		if t.To.IsValid() {
			wp.To = t.To.String()
		} else {
			b.mu.Lock()
			wp.To = fmt.Sprintf("DERP(%s)", b.regionCodeLocked(t.Region))
			b.mu.Unlock()
		}
		out.Pings = append(out.Pings, wp)
	}
	out.Causes = whyrelay.Explain(f)
	return out, nil
}

// peerFacts adds control's word about the peer: online, its addresses, its own netcheck.
func peerFacts(n *wire.Node, f *whyrelay.Facts) {
	f.Peer = shortName(n)
	f.PeerOnline = n.Online
	if n.LastSeen != nil {
		f.PeerLastSeen = *n.LastSeen
	}
	f.PeerEndpoints = len(n.Endpoints)
	if n.Hostinfo != nil && n.Hostinfo.NetInfo != nil {
		ni := n.Hostinfo.NetInfo
		f.PeerUDP = ni.WorkingUDP
		f.PeerHardNAT = ni.MappingVariesByDestIP
		f.PeerPortMapped = ni.HavePortMap
	}
}

// addRelayCauses adds to an active peer that is relayed the codes of its causes and the most
// likely one in full, for status.
func addRelayCauses(p *ipc.Peer, dp Dataplane, n *wire.Node) {
	if dp == nil || p.CurAddr != "" || !p.Active {
		return
	}
	causes := dp.RelayCauses(n.Key, func(f *whyrelay.Facts) { peerFacts(n, f) })
	for _, c := range causes {
		p.RelayCauses = append(p.RelayCauses, c.Code)
	}
	if len(causes) > 0 {
		p.RelayCause = &causes[0]
	}
}

var _ ipc.Diagnoser = (*Backend)(nil)
