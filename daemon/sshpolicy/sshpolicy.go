// Package sshpolicy decides SSH logins by the tailnet's SSH policy (wire.SSHPolicy): who the
// connecting peer is (its tailnet address, node and user, as WireGuard established them) and
// which local user it asked for. It is pure: no I/O, no clock of its own.
package sshpolicy

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

// Peer is the identity of the other end of a connection, taken from the network map by the
// connection's source address, never from anything the SSH client says.
type Peer struct {
	Addr      netip.Addr // the source tailnet address
	StableID  string     // its node's StableID
	UserLogin string     // its node's user's login name ("" when unknown)
}

// Result classifies a decision.
type Result int

const (
	// NoPolicy: control has sent no SSH policy in this map session; nothing is allowed.
	NoPolicy Result = iota
	// Rejected: no rule matched this peer.
	Rejected
	// RejectedUser: a rule matched the peer but not the requested user.
	RejectedUser
	// Matched: a rule matched; its action decides (accept, reject, or what Skein refuses).
	Matched
)

func (r Result) String() string {
	switch r {
	case NoPolicy:
		return "no policy"
	case Rejected:
		return "rejected"
	case RejectedUser:
		return "rejected user"
	case Matched:
		return "matched"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Result Result
	// Rule is the index of the matching rule (Matched only).
	Rule int
	// Action is the matching rule's action (Matched only, never nil).
	Action *wire.SSHAction
	// LocalUser is the account the peer logs in as (Matched with a non-reject action).
	LocalUser string
}

// Accepts reports whether the decision lets the connection in now, as LocalUser.
func (d Decision) Accepts() bool {
	return d.Result == Matched && d.Action.Accept && !d.Action.Reject && d.LocalUser != ""
}

// Evaluate finds the first rule that matches peer asking for sshUser at time now. A rule
// with no action, an expired rule, or one whose principals do not name the peer is skipped;
// a reject rule matches any requested user; any other rule needs a local user for sshUser.
func Evaluate(p *wire.SSHPolicy, peer Peer, sshUser string, now time.Time) Decision {
	if p == nil {
		return Decision{Result: NoPolicy}
	}
	failedOnUser := false
	for i, r := range p.Rules {
		if r == nil || r.Action == nil {
			continue
		}
		if r.RuleExpires != nil && r.RuleExpires.Before(now) {
			continue
		}
		if !anyPrincipal(r.Principals, peer) {
			continue
		}
		if r.Action.Reject {
			return Decision{Result: Matched, Rule: i, Action: r.Action}
		}
		local := LocalUser(r.SSHUsers, sshUser)
		if local == "" {
			failedOnUser = true
			continue
		}
		return Decision{Result: Matched, Rule: i, Action: r.Action, LocalUser: local}
	}
	if failedOnUser {
		return Decision{Result: RejectedUser}
	}
	return Decision{Result: Rejected}
}

// LocalUser maps a requested user through a rule's sshUsers: the entry for the name, else the
// one for "*"; "=" is the requested name itself — but never root: root must be named.
// "" means the rule does not match.
func LocalUser(users map[string]string, sshUser string) string {
	if sshUser == "" {
		return ""
	}
	v, ok := users[sshUser]
	if !ok {
		v = users["*"]
	}
	if v == "=" {
		if sshUser == "root" {
			return ""
		}
		return sshUser
	}
	return v
}

func anyPrincipal(ps []*wire.SSHPrincipal, peer Peer) bool {
	for _, p := range ps {
		if p == nil {
			continue
		}
		switch {
		case p.Any:
			return true
		case p.Node != "" && p.Node == peer.StableID:
			return true
		case p.NodeIP != "":
			if ip, err := netip.ParseAddr(p.NodeIP); err == nil && peer.Addr.IsValid() && ip.Unmap() == peer.Addr.Unmap() {
				return true
			}
		case p.UserLogin != "" && p.UserLogin == peer.UserLogin:
			return true
		}
	}
	return false
}

// StillAllows reports whether a connection accepted as localUser would still be accepted, as
// the same local user, by policy p: what a policy change must not take away from an open
// session.
func StillAllows(p *wire.SSHPolicy, peer Peer, sshUser, localUser string, now time.Time) bool {
	d := Evaluate(p, peer, sshUser, now)
	return d.Accepts() && d.LocalUser == localUser
}

// Unsupported names what an accepting action asks for that Skein cannot do (an approval
// from the control server, session recording); "" when nothing. Such sessions are refused:
// failing open would skip a check the tailnet's admin asked for.
func Unsupported(a *wire.SSHAction) string {
	switch {
	case a == nil:
		return ""
	case a.HoldAndDelegate != "":
		return "approval by the control server (check mode with re-authentication)"
	case len(a.Recorders) > 0:
		return "session recording"
	}
	return ""
}
