package ipc

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
)

// PathWhy explains how a peer is reached and, when it is relayed, why: GET ?peer=NAME|IP →
// WhyReport. It sends one round of disco pings, like ping; reading, so anyone may.
const PathWhy = "/" + APIVersion + "/why"

// WhyReport is the answer to "why is this peer relayed?": the path, one round of pings, and
// the causes found, most likely first, each with its evidence and one fix.
type WhyReport struct {
	Peer   string     `json:"peer"` // short host name
	PeerIP netip.Addr `json:"peerIP,omitzero"`
	// Path is "direct", "relay" or "none" (no way to reach the peer at all).
	Path      string  `json:"path"`
	Direct    string  `json:"direct,omitempty"` // ip:port in use when direct
	Relay     string  `json:"relay,omitempty"`  // DERP region code when relayed
	LatencyMs float64 `json:"latencyMs,omitempty"`
	// Pings is the round this report sent: one line per address (and one for DERP).
	Pings []WhyPing `json:"pings,omitempty"`
	// Causes, most likely first; empty when the path is direct.
	Causes []Cause `json:"causes,omitempty"`
}

// WhyPing is what one address (or DERP) answered in the report's round of pings.
type WhyPing struct {
	To        string  `json:"to"` // ip:port, or "DERP(code)"
	Sent      int     `json:"sent"`
	Answered  int     `json:"answered"`
	LatencyMs float64 `json:"latencyMs,omitempty"`
}

// Cause is one reason a peer is not reached directly.
type Cause struct {
	// Code names the cause for scripts and `status --json`: udp_blocked, firewall_inbound,
	// hard_nat_local, hard_nat_peer, hard_nat_both, double_nat, cgnat, peer_udp_blocked,
	// peer_offline, peer_no_disco, no_pong.
	Code string `json:"code"`
	// Summary is one sentence for people.
	Summary string `json:"summary"`
	// Evidence are the facts that point at the cause.
	Evidence []string `json:"evidence,omitempty"`
	// Fix is one command or setting that removes the cause.
	Fix string `json:"fix,omitempty"`
	// Data are the values Summary names ("peer", "port"), so that a front end can word the
	// cause in its user's language from Code.
	Data map[string]string `json:"data,omitempty"`
}

// Cause codes.
const (
	CauseUDPBlocked     = "udp_blocked"
	CauseFirewall       = "firewall_inbound"
	CauseHardNATLocal   = "hard_nat_local"
	CauseHardNATPeer    = "hard_nat_peer"
	CauseHardNATBoth    = "hard_nat_both"
	CauseDoubleNAT      = "double_nat"
	CauseCGNAT          = "cgnat"
	CausePeerUDPBlocked = "peer_udp_blocked"
	CausePeerOffline    = "peer_offline"
	CausePeerNoDisco    = "peer_no_disco"
	CauseNoPong         = "no_pong"
)

// Diagnoser is what a Backend implements to answer PathWhy. It is apart from Backend so that a
// backend without it still serves everything else (the server answers not_found).
type Diagnoser interface {
	Why(ctx context.Context, peer string) (WhyReport, error)
}

// Why asks the helper why a peer (name, DNS name or address) is relayed.
func (c *Client) Why(ctx context.Context, peer string) (WhyReport, error) {
	var rep WhyReport
	err := c.do(ctx, http.MethodGet, PathWhy+"?peer="+url.QueryEscape(peer), nil, &rep)
	return rep, err
}

// callerKey carries, on requests whose answer depends on it, whether the caller may change
// state.
type callerKey struct{}

// CallerMayChange reports whether the IPC caller may change state (root, skeind's own user,
// the operator). The server sets it on the requests whose answer depends on it (a fresh
// netcheck); elsewhere it is false.
func CallerMayChange(ctx context.Context) bool {
	v, _ := ctx.Value(callerKey{}).(bool)
	return v
}

// withCaller records whether the request's caller may change state.
func (s *Server) withCaller(r *http.Request) context.Context {
	uid, ok := peerUID(r.Context())
	may := ok && s.authorizeWrite(uid, false) == nil
	return context.WithValue(r.Context(), callerKey{}, may)
}

// serveWhy answers PathWhy.
func (s *Server) serveWhy(w http.ResponseWriter, r *http.Request, _ string) {
	peer := r.URL.Query().Get("peer")
	if peer == "" || len(peer) > 255 {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "why: want a peer (at most 255 bytes)"})
		return
	}
	d, ok := s.b.(Diagnoser)
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Code: ErrNotFound, Message: "this helper cannot explain paths"})
		return
	}
	rep, err := d.Why(r.Context(), peer)
	s.reply(w, rep, err)
}
