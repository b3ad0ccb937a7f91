// Package portmap asks the default gateway to forward a public UDP port to
// our WireGuard port, the three ways home routers offer it: UPnP IGD (SSDP
// discovery and SOAP, via github.com/huin/goupnp), NAT-PMP (RFC 6886) and
// PCP (RFC 6887). A mapped endpoint lets peers behind hard NAT reach us
// directly.
//
// One Client serves one local port. It probes the gateway from a single UDP
// socket (and speaks HTTP to it only through its own dialer, never to any
// other address), maps the port for Options.Lifetime (2 h), renews at half
// of what the router granted, notices a router restart (NAT-PMP/PCP epoch
// going backwards, a UPnP mapping gone) and maps again, and deletes its
// mapping on Close. While a mapping exists it is recorded in a small journal
// in the state directory, so that Cleanup can delete it after a crash.
//
// A router that answers with an external address that is not public
// (unspecified, loopback, private, CGNAT, link-local, multicast) is never
// reported as a mapping: Status says why instead.
//
// Use from the transport:
//
//	pm, _ := portmap.New(portmap.Options{LocalPort: port, Control: router.ControlBypass,
//		StateDir: stateDir, Disabled: !pref, Logf: logf})
//	// on <-pm.Changes(): m, ok := pm.Mapping(); advertise m.External first
//	// netcheck: offers, err := pm.Probe(ctx) // "PortMapping: " + offers.String()
//	// link/route change: pm.NetworkChanged(); rebind: pm.SetLocalPort(p); pref: pm.SetDisabled(off)
//	// down and exit: pm.Close(ctx); crash repair: portmap.Cleanup(stateDir, router.ControlBypass, logf)
package portmap

import (
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Protocol is the way a mapping was made.
type Protocol string

const (
	UPnP   Protocol = "UPnP"
	NATPMP Protocol = "NAT-PMP"
	PCP    Protocol = "PCP"
)

// DefaultLifetime is the mapping lifetime we ask for (RFC 6886's
// recommendation); a mapping is renewed at half of what the router grants.
const DefaultLifetime = 2 * time.Hour

// DefaultCheckInterval is how often an established mapping is checked for a
// router restart between renewals (one small packet, or one SOAP request).
const DefaultCheckInterval = time.Minute

// JournalFile is the journal's name in Options.StateDir.
const JournalFile = "portmap.json"

// Options configure a Client.
type Options struct {
	// LocalPort is the UDP port to map (our WireGuard port). Required.
	LocalPort uint16
	// Gateway is the router to ask; zero finds the default gateway of the
	// main routing table (netlink) on every attempt.
	Gateway netip.Addr
	// Control is applied to every socket (UDP probes, HTTP to the router),
	// e.g. to set skeind's bypass mark (router.ControlBypass) so the
	// packets take the host's routes and not the tunnel.
	Control func(network, address string, c syscall.RawConn) error
	// Disabled turns port mapping off (the user's pref; SetDisabled changes
	// it later, deleting a live mapping): nothing is sent to the router
	// except the deletion of a mapping that a crash left in the journal.
	Disabled bool
	// DisableUPnP, DisableNATPMP and DisablePCP skip one protocol (for
	// diagnosis and tests; miniupnpd answers NAT-PMP and PCP together).
	DisableUPnP, DisableNATPMP, DisablePCP bool
	// Lifetime is the lifetime to ask for; 0 means DefaultLifetime.
	Lifetime time.Duration
	// CheckInterval is how often a live mapping is checked for a router
	// restart; 0 means DefaultCheckInterval.
	CheckInterval time.Duration
	// StateDir holds the journal (JournalFile); "" keeps no journal.
	StateDir string
	// Description names our UPnP mappings on the router; "" means "skein".
	Description string
	// Logf logs what happens (nil: nothing).
	Logf func(format string, args ...any)

	// Test hooks: the router's ports (0: 5351 and 1900) and whether to
	// send SSDP to the multicast group.
	pxpPort, ssdpPort uint16
	noMulticast       bool
}

// Mapping is a public endpoint the router forwards to our local port.
type Mapping struct {
	External netip.AddrPort // the public ip:port to advertise
	Protocol Protocol
	Internal netip.AddrPort // our address toward the gateway and LocalPort
	Gateway  netip.Addr
	Lifetime time.Duration // granted; 0 for a permanent UPnP lease
	RenewAt  time.Time
}

// Offers says which protocols the gateway answered at the last probe.
type Offers struct {
	UPnP, NATPMP, PCP bool
}

// String lists the offered protocols the way `tailscale netcheck` prints
// its PortMapping line: "UPnP, NAT-PMP, PCP" (empty: none).
func (o Offers) String() string {
	var s []string
	if o.UPnP {
		s = append(s, string(UPnP))
	}
	if o.NATPMP {
		s = append(s, string(NATPMP))
	}
	if o.PCP {
		s = append(s, string(PCP))
	}
	return strings.Join(s, ", ")
}

// Any reports whether the gateway offers any protocol.
func (o Offers) Any() bool { return o.UPnP || o.NATPMP || o.PCP }

// Status is a snapshot for diagnostics (`skein netcheck`, "why relay?").
type Status struct {
	Disabled bool
	Gateway  netip.Addr // zero: no default gateway found
	Self     netip.Addr // our address toward the gateway
	Offers   Offers
	ProbedAt time.Time // zero: never probed
	// Mapping is the current mapping, if any (nil otherwise).
	Mapping *Mapping
	// Rejected explains why a mapping the router granted is not used,
	// e.g. "external address 100.64.3.4 is not public (CGNAT)": a double
	// NAT or a lying router.
	Rejected string
	// RejectedExternal is the external address of that rejected mapping (zero if none): what
	// the router thinks its WAN address is, private or shared behind a double NAT.
	RejectedExternal netip.Addr
	// LastError is the last failure to map or renew ("" after a success).
	LastError string
	// Remaps counts mappings made again after the router lost ours
	// (restart, epoch going backwards).
	Remaps int
}
