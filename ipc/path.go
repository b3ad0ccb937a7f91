package ipc

import "time"

// PathKind is how packets reach a peer, as every front end names it.
type PathKind string

const (
	// PathDirect: the peer is active and packets go straight to a direct address.
	PathDirect PathKind = "direct"
	// PathRelay: the peer is active and packets go through a DERP relay.
	PathRelay PathKind = "relay"
	// PathIdle: no traffic to the peer lately. No path is in use, so none is named: the peer's
	// home relay is where a first packet would go, not where packets go.
	PathIdle PathKind = "idle"
	// PathOffline: idle, and the control server says the peer is offline.
	PathOffline PathKind = "offline"
	// PathExpired: the peer's node key expired; no traffic can flow.
	PathExpired PathKind = "expired"
)

// Path is a peer's connection under the one rule that the CLI, the tray, the window and every
// other front end follow; each words it its own way.
type Path struct {
	Kind PathKind
	// Addr is the direct ip:port (PathDirect).
	Addr string
	// Region is the DERP region code (PathRelay; "" when the helper knows none).
	Region string
	// LatencyMs is the direct path's last measured round trip (PathDirect; 0 = unknown).
	LatencyMs float64
	// Last is, for a peer not active now, the path its latest traffic took; nil when there was
	// none since the helper started.
	Last *LastPath
}

// LastPath is the path of a peer's latest traffic.
type LastPath struct {
	Kind   PathKind // PathDirect or PathRelay
	Addr   string   // PathDirect: ip:port
	Region string   // PathRelay: DERP region code
	// At is when that traffic was sent (zero when unknown).
	At time.Time
}

// Active reports whether packets are flowing: the path is direct or relayed.
func (p Path) Active() bool { return p.Kind == PathDirect || p.Kind == PathRelay }

// Path classifies the peer's connection: an expired key first (nothing flows); then an active
// peer is direct with a current address and relayed without one; an inactive peer is offline
// or idle, with the path of its latest traffic kept aside.
func (p *Peer) Path() Path {
	var out Path
	switch {
	case p.Expired:
		out.Kind = PathExpired
	case p.Active && p.CurAddr != "":
		return Path{Kind: PathDirect, Addr: p.CurAddr, LatencyMs: p.LatencyMs}
	case p.Active:
		return Path{Kind: PathRelay, Region: p.Relay}
	case !p.Online:
		out.Kind = PathOffline
	default:
		out.Kind = PathIdle
	}
	out.Last = p.lastPath()
	return out
}

func (p *Peer) lastPath() *LastPath {
	var lp LastPath
	switch {
	case p.LastAddr != "":
		lp.Kind, lp.Addr = PathDirect, p.LastAddr
	case p.LastRelay != "":
		lp.Kind, lp.Region = PathRelay, p.LastRelay
	default:
		return nil
	}
	if p.LastWrite != nil {
		lp.At = *p.LastWrite
	}
	return &lp
}
