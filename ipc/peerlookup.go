package ipc

import (
	"fmt"
	"net/netip"
	"strings"
)

// PeerNames are the names a peer can be looked up by.
type PeerNames struct {
	Addrs    []netip.Addr
	StableID string
	DNSName  string // MagicDNS FQDN, with or without the trailing dot
	HostName string // the OS host name
}

// Names returns p's names for LookupPeer.
func (p *Peer) Names() PeerNames {
	return PeerNames{Addrs: p.Addresses, StableID: p.StableID, DNSName: p.DNSName, HostName: p.HostName}
}

// LookupPeer finds the peer q names among n candidates, in the one order the helper and every
// front end share:
//
//  1. a tailnet IP address,
//  2. the StableID,
//  3. the MagicDNS name (FQDN, trailing dot optional),
//  4. the short name (the FQDN's first label),
//  5. the OS host name — last, because host names need not be unique.
//
// Names compare without regard to case. The first rule that matches decides; two candidates
// matching the same rule make the query ambiguous, which is an error rather than a guess.
// It returns the candidate's index, or an *Error (ErrNotFound, or ErrBadRequest when ambiguous).
func LookupPeer(q string, n int, names func(i int) PeerNames) (int, error) {
	if ip, err := netip.ParseAddr(q); err == nil {
		ip = ip.Unmap()
		return pick(q, "address", n, func(i int) bool {
			for _, a := range names(i).Addrs {
				if a.Unmap() == ip {
					return true
				}
			}
			return false
		})
	}
	fq := strings.TrimSuffix(q, ".")
	rules := []struct {
		what  string
		match func(PeerNames) bool
	}{
		{"ID", func(p PeerNames) bool { return p.StableID != "" && p.StableID == q }},
		{"DNS name", func(p PeerNames) bool { return fq != "" && strings.EqualFold(fq, strings.TrimSuffix(p.DNSName, ".")) }},
		{"name", func(p PeerNames) bool {
			short, _, _ := strings.Cut(strings.TrimSuffix(p.DNSName, "."), ".")
			return short != "" && strings.EqualFold(fq, short)
		}},
		{"host name", func(p PeerNames) bool { return p.HostName != "" && strings.EqualFold(fq, p.HostName) }},
	}
	for _, r := range rules {
		i, err := pick(q, r.what, n, func(i int) bool { return r.match(names(i)) })
		if i >= 0 || err != errNoMatch {
			return i, err
		}
	}
	return -1, &Error{Code: ErrNotFound, Message: fmt.Sprintf("no peer named %q", q)}
}

var errNoMatch = &Error{Code: ErrNotFound}

// pick returns the one candidate that matches, errNoMatch when none does, or an ambiguity error.
func pick(q, what string, n int, match func(int) bool) (int, error) {
	found := -1
	for i := range n {
		if !match(i) {
			continue
		}
		if found >= 0 {
			return -1, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("%q is the %s of more than one peer; use its tailnet IP", q, what)}
		}
		found = i
	}
	if found < 0 {
		if what == "address" {
			return -1, &Error{Code: ErrNotFound, Message: fmt.Sprintf("no peer has the address %s", q)}
		}
		return -1, errNoMatch
	}
	return found, nil
}
