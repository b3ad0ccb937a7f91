// Package whyrelay explains why a peer is reached over a DERP relay rather than directly. From
// facts about this host (netcheck, firewall, port mapping), about the peer (control's word and
// its own netcheck) and from one round of pings, it names the causes, most likely first, each
// with its evidence and one command or setting that removes it.
package whyrelay

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/skeinvpn/skein/daemon/hostfw"
	"github.com/skeinvpn/skein/ipc"
)

// Facts are what the explanation rests on.
type Facts struct {
	Peer   string // the peer's short name, for sentences
	Direct bool   // a direct path is in use

	// Control's word on the peer.
	PeerOnline    *bool // nil: unknown
	PeerLastSeen  time.Time
	PeerHasDisco  bool
	PeerEndpoints int // addresses control lists for it
	// The peer's own netcheck, as its NetInfo tells it (nil: unknown).
	PeerUDP        *bool
	PeerHardNAT    *bool
	PeerPortMapped bool

	// This host's last netcheck.
	NetcheckRan bool
	UDP         bool
	GlobalV4    netip.AddrPort
	HardNAT     *bool
	// The router's port mapping: whether it was asked, what it offers, the mapping held and the
	// external address it claims.
	PortMapChecked bool
	PortMapOffered []string // "UPnP", "NAT-PMP", "PCP"
	PortMapped     netip.AddrPort
	RouterExternal netip.Addr
	// Where this host is: its default gateway and its address towards it, and our UDP port.
	Gateway   netip.Addr
	LocalAddr netip.Addr
	Port      uint16
	// This host's firewall, for new inbound UDP to Port.
	Firewall hostfw.Verdict

	// The round of pings just sent.
	Pings Pings
}

// Pings counts one round of disco pings to the peer.
type Pings struct {
	DirectSent, DirectAnswered int
	Addrs                      int // distinct addresses pinged directly
	DERPSent, DERPAnswered     int
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Explain returns the causes, most likely first; none when the path is direct. Each carries
// the peer's name and the tunnel's port, which its summary may name.
func Explain(f Facts) []ipc.Cause {
	out := explain(f)
	for i := range out {
		out[i].Data = map[string]string{"peer": f.Peer, "port": strconv.Itoa(int(f.port()))}
	}
	return out
}

func explain(f Facts) []ipc.Cause {
	if f.Direct {
		return nil
	}
	peer := f.Peer
	if f.PeerOnline != nil && !*f.PeerOnline {
		c := ipc.Cause{
			Code:     ipc.CausePeerOffline,
			Summary:  fmt.Sprintf("%s is offline: control has no connection from it.", peer),
			Evidence: []string{"control marks " + peer + " offline"},
			Fix:      fmt.Sprintf("start Tailscale on %s (`tailscale up`, or `skein up` on a Skein machine)", peer),
		}
		if !f.PeerLastSeen.IsZero() {
			c.Evidence = append(c.Evidence, "last seen "+f.PeerLastSeen.UTC().Format(time.RFC3339))
		}
		return []ipc.Cause{c}
	}
	if !f.PeerHasDisco {
		return []ipc.Cause{{
			Code:     ipc.CausePeerNoDisco,
			Summary:  fmt.Sprintf("%s has no disco key, so no direct path can be worked out with it; only the relay carries its traffic.", peer),
			Evidence: []string{"the netmap has no disco key for " + peer},
			Fix:      fmt.Sprintf("update the Tailscale client on %s, or let it finish connecting", peer),
		}}
	}
	var out []ipc.Cause
	pings := pingEvidence(f)
	if f.NetcheckRan && !f.UDP {
		out = append(out, ipc.Cause{
			Code:     ipc.CauseUDPBlocked,
			Summary:  "UDP is blocked on this network: only the relay (over TCP) gets through.",
			Evidence: append([]string{"netcheck: no STUN server answered over UDP"}, pings...),
			Fix:      fmt.Sprintf("allow outgoing UDP on this network (to port 3478 for STUN and %d for peers), or use another network", f.port()),
		})
	}
	if f.PeerUDP != nil && !*f.PeerUDP {
		out = append(out, ipc.Cause{
			Code:     ipc.CausePeerUDPBlocked,
			Summary:  fmt.Sprintf("UDP is blocked on %s's network.", peer),
			Evidence: []string{peer + "'s own netcheck found no working UDP"},
			Fix:      fmt.Sprintf("allow outgoing UDP on %s's network", peer),
		})
	}
	localHard := f.HardNAT != nil && *f.HardNAT && !f.PortMapped.IsValid()
	peerHard := f.PeerHardNAT != nil && *f.PeerHardNAT && !f.PeerPortMapped
	if f.Firewall.Blocked {
		ev := []string{"this machine's firewall: " + f.Firewall.String()}
		if peerHard {
			ev = append(ev, peer+" is behind a hard NAT: its packets come from ports we never sent to, which only an open port lets in")
		}
		out = append(out, ipc.Cause{
			Code:     ipc.CauseFirewall,
			Summary:  fmt.Sprintf("This machine's firewall drops inbound UDP %d: peers whose NAT picks a new port per destination cannot reach it.", f.port()),
			Evidence: append(ev, pings...),
			Fix:      f.Firewall.Fix,
		})
	}
	natEvidence := func(who string) []string {
		ev := []string{who + ": the NAT maps each destination to its own port (MappingVariesByDestIP)"}
		if who == "this machine" {
			switch {
			case f.PortMapChecked && len(f.PortMapOffered) == 0:
				ev = append(ev, "the router offers no port mapping (no UPnP, NAT-PMP or PCP)")
			case !f.PortMapChecked:
				ev = append(ev, "no port mapping held")
			}
		}
		return ev
	}
	switch {
	case localHard && peerHard:
		out = append(out, ipc.Cause{
			Code:     ipc.CauseHardNATBoth,
			Summary:  fmt.Sprintf("Both this machine and %s are behind hard NAT, and neither has a port mapping.", peer),
			Evidence: append(natEvidence("this machine"), natEvidence(peer)...),
			Fix:      f.mappingFix(),
		})
	case localHard:
		out = append(out, ipc.Cause{
			Code:     ipc.CauseHardNATLocal,
			Summary:  "This machine is behind a hard NAT without a port mapping: a peer reaches it only if the peer's own NAT is easy.",
			Evidence: natEvidence("this machine"),
			Fix:      f.mappingFix(),
		})
	case peerHard:
		out = append(out, ipc.Cause{
			Code:     ipc.CauseHardNATPeer,
			Summary:  fmt.Sprintf("%s is behind a hard NAT without a port mapping.", peer),
			Evidence: natEvidence(peer),
			Fix:      fmt.Sprintf("enable UPnP or NAT-PMP on %s's router, or forward UDP %d to %s there", peer, f.port(), peer),
		})
	}
	if a := f.RouterExternal; a.IsValid() && (a.IsPrivate() || cgnat.Contains(a)) {
		code, what := ipc.CauseDoubleNAT, "another NAT in front of your router (double NAT)"
		if cgnat.Contains(a) {
			code, what = ipc.CauseCGNAT, "your provider's carrier-grade NAT in front of your router"
		}
		out = append(out, ipc.Cause{
			Code:     code,
			Summary:  fmt.Sprintf("There is %s: a port mapping on your router alone does not open a way in.", what),
			Evidence: []string{fmt.Sprintf("the router says its external address is %v, which is not public", a)},
			Fix:      doubleNATFix(code),
		})
	} else if g := f.GlobalV4.Addr(); g.IsValid() && cgnat.Contains(g) {
		out = append(out, ipc.Cause{
			Code:     ipc.CauseCGNAT,
			Summary:  "Your provider's carrier-grade NAT is in front of you (STUN sees a shared 100.64.0.0/10 address).",
			Evidence: []string{fmt.Sprintf("STUN saw us at %v", f.GlobalV4)},
			Fix:      doubleNATFix(ipc.CauseCGNAT),
		})
	}
	if len(out) == 0 {
		ev := pings
		if f.PeerEndpoints == 0 {
			ev = append(ev, "control lists no address for "+peer)
		}
		if f.HardNAT == nil && f.NetcheckRan {
			ev = append(ev, "this machine's NAT type is unknown (fewer than two STUN servers answered)")
		}
		out = append(out, ipc.Cause{
			Code:     ipc.CauseNoPong,
			Summary:  fmt.Sprintf("Pings to %s's addresses go unanswered: something between us drops UDP to it.", peer),
			Evidence: ev,
			Fix:      fmt.Sprintf("allow inbound UDP %d on %s (on Linux with ufw: `sudo ufw allow %d/udp`), or forward it on its router", f.port(), peer, f.port()),
		})
	}
	return out
}

func (f Facts) port() uint16 {
	if f.Port == 0 {
		return 41641
	}
	return f.Port
}

// mappingFix: turn mapping on in the router, or forward the port by hand.
func (f Facts) mappingFix() string {
	router, host := "your router", "this host"
	if f.Gateway.IsValid() {
		router = fmt.Sprintf("your router (%v)", f.Gateway)
	}
	if f.LocalAddr.IsValid() {
		host = fmt.Sprintf("this host (%v)", f.LocalAddr)
	}
	return fmt.Sprintf("enable UPnP or NAT-PMP on %s, or forward UDP %d to %s", router, f.port(), host)
}

func doubleNATFix(code string) string {
	if code == ipc.CauseCGNAT {
		return "ask your provider for a public IPv4 address, or use IPv6"
	}
	return "put the modem in front of your router in bridge mode, or forward the port on both"
}

// pingEvidence describes the round of pings.
func pingEvidence(f Facts) []string {
	p := f.Pings
	var ev []string
	if p.DirectSent > 0 {
		ev = append(ev, fmt.Sprintf("%d pings to %d of %s's addresses, %d answered", p.DirectSent, p.Addrs, f.Peer, p.DirectAnswered))
	}
	if p.DERPSent > 0 {
		ev = append(ev, fmt.Sprintf("%d pings over the relay, %d answered", p.DERPSent, p.DERPAnswered))
	}
	return ev
}
