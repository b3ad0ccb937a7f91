package ipc

import (
	"errors"
	"net/netip"
	"testing"
)

func TestLookupPeerOrder(t *testing.T) {
	peers := []PeerNames{
		{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, StableID: "nA", DNSName: "alpha.tail.example.", HostName: "bravo"},
		{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a:115c:a1e0::2")}, StableID: "nB", DNSName: "bravo.tail.example.", HostName: "shared"},
		{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}, StableID: "alpha", DNSName: "charlie.tail.example.", HostName: "shared"},
	}
	at := func(i int) PeerNames { return peers[i] }
	cases := []struct {
		q    string
		want int
		code ErrorCode
	}{
		{"100.64.0.2", 1, ""},
		{"::ffff:100.64.0.3", 2, ""},
		{"fd7a:115c:a1e0::2", 1, ""},
		{"100.64.0.9", -1, ErrNotFound},
		{"nB", 1, ""},
		{"alpha", 2, ""},               // a StableID beats a short name
		{"ALPHA.tail.example.", 0, ""}, // FQDN, any case, with the dot
		{"alpha.tail.example", 0, ""},  // and without
		{"bravo", 1, ""},               // a short name beats another peer's host name
		{"Charlie", 2, ""},             // short name, any case
		{"shared", -1, ErrBadRequest},  // two host names: ambiguous
		{"nobody", -1, ErrNotFound},
		{"", -1, ErrNotFound},
	}
	for _, c := range cases {
		got, err := LookupPeer(c.q, len(peers), at)
		var ie *Error
		code := ErrorCode("")
		if errors.As(err, &ie) {
			code = ie.Code
			if ie.Message == "" {
				t.Errorf("%q: error without a message", c.q)
			}
		}
		if got != c.want || code != c.code {
			t.Errorf("LookupPeer(%q) = %d, %v; want %d, %s", c.q, got, err, c.want, c.code)
		}
	}
}
