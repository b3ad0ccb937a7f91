package netmap

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/tsaddr"
)

const evil = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\u202e\u009b"

// TestPeerTextCleaned (hole 5): every text field a front end shows arrives without control or
// format characters, whichever way it came (full list, delta, self, profiles, DERP map, health).
func TestPeerTextCleaned(t *testing.T) {
	nm := New()
	peer := &wire.Node{
		ID: 2, StableID: "s2" + evil, Name: "peer" + evil + ".ts.test.", Tags: []string{"tag:x" + evil},
		Hostinfo: &wire.Hostinfo{
			Hostname: "host" + evil, OS: "linux" + evil, OSVersion: "6" + evil,
			Location: &wire.Location{City: "Paris" + evil, Country: "France" + evil, CountryCode: "FR" + evil},
			Services: []wire.Service{{Proto: "peerapi4", Port: 1, Description: "d" + evil}},
		},
	}
	nm.Apply(&wire.MapResponse{
		Node:         &wire.Node{ID: 1, Name: "self" + evil + ".ts.test.", Hostinfo: &wire.Hostinfo{Hostname: "me" + evil}},
		Peers:        []*wire.Node{peer},
		UserProfiles: []wire.UserProfile{{ID: 1, LoginName: "alice" + evil, DisplayName: "Alice" + evil}},
		DERPMap:      &wire.DERPMap{Regions: map[int]*wire.DERPRegion{1: {RegionID: 1, RegionCode: "lab" + evil, RegionName: "Lab" + evil}}},
		Health:       []string{"warning" + evil},
		Domain:       "ts" + evil + ".test",
	}, time.Now())
	changed := *peer
	changed.ID, changed.Hostinfo = 3, &wire.Hostinfo{Hostname: "delta" + evil}
	nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{&changed}}, time.Now())

	b, err := json.Marshal(struct {
		Self   *wire.Node
		Peers  []*wire.Node
		Users  map[wire.UserID]wire.UserProfile
		DERP   *wire.DERPMap
		Health []string
		Domain string
	}{nm.Self, nm.SortedPeers(), nm.UserProfiles, nm.DERPMap, nm.Health, nm.Domain})
	if err != nil {
		t.Fatal(err)
	}
	var text []string
	collectStrings(t, b, &text)
	for _, s := range text {
		for _, r := range s {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Errorf("%q keeps %U", s, r)
			}
		}
	}
	if h := nm.Peer(2).Hostinfo.Hostname; !strings.HasPrefix(h, "host]52;c;") {
		t.Errorf("host name %q: the printable part should stay", h)
	}
}

func collectStrings(t *testing.T, b []byte, out *[]string) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			*out = append(*out, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				*out = append(*out, k)
				walk(e)
			}
		}
	}
	walk(v)
}

// TestAddressesMustBeTailnet (hole 7): a node's addresses go on our TUN and into routes, so
// control may only give tailnet addresses; anything else is dropped and reported.
func TestAddressesMustBeTailnet(t *testing.T) {
	nm := New()
	pfx := func(ss ...string) (out []netip.Prefix) {
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	nm.Apply(&wire.MapResponse{
		Node: &wire.Node{ID: 1, Addresses: pfx("100.64.0.1/32", "192.168.1.10/32", "fd7a:115c:a1e0::1/128")},
		Peers: []*wire.Node{
			{ID: 2, Key: key.NewNode().Public(), Addresses: pfx("8.8.8.8/32", "100.64.0.2/32", "100.64.0.0/24", "100.100.100.100/32", "::ffff:100.64.0.9/128")},
		},
	}, time.Now())
	if got := fmt.Sprint(nm.Self.Addresses); got != "[100.64.0.1/32 fd7a:115c:a1e0::1/128]" {
		t.Errorf("self addresses %s", got)
	}
	p := nm.Peer(2)
	if got := fmt.Sprint(p.Addresses); got != "[100.64.0.2/32 100.64.0.9/32]" {
		t.Errorf("peer addresses %s", got)
	}
	if got := fmt.Sprint(p.AllowedIPs); got != "[100.64.0.2/32 100.64.0.9/32]" {
		t.Errorf("peer allowed IPs (defaulted from the addresses) %s", got)
	}
	if nm.PeerByAddr(netip.MustParseAddr("8.8.8.8")) != nil {
		t.Error("8.8.8.8 indexed as a peer address")
	}
	if len(nm.LimitsHit) == 0 {
		t.Error("dropped addresses not reported")
	}
}

// TestBoundsAcrossDeltas (hole 7): deltas cannot grow the map past its limits, however many
// arrive.
func TestBoundsAcrossDeltas(t *testing.T) {
	defer func(n int) { maxPeers = n }(maxPeers)
	maxPeers = 100
	nm := New()
	now := time.Now()
	node := func(id int) *wire.Node {
		return &wire.Node{ID: wire.NodeID(id), Name: fmt.Sprintf("n%d.ts.test.", id), Key: key.NewNode().Public(),
			Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(id >> 8), byte(id)}), 32)}}
	}
	var full []*wire.Node
	for i := 1; i <= 150; i++ {
		full = append(full, node(i))
	}
	nm.Apply(&wire.MapResponse{Peers: full}, now)
	if nm.Len() != 100 {
		t.Fatalf("full list of 150: %d peers kept", nm.Len())
	}
	for i := range 50 {
		nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{node(1000 + i)}}, now)
	}
	if nm.Len() != 100 {
		t.Fatalf("after 50 new peers in deltas: %d", nm.Len())
	}
	// A known peer may still change.
	n5 := node(5)
	n5.Name = "renamed.ts.test."
	nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{n5}}, now)
	if nm.Peer(5).Name != "renamed.ts.test." {
		t.Error("a change to a known peer was refused at the limit")
	}

	// Named filter sets and rules.
	for i := range 200 {
		rules := make([]wire.FilterRule, 1000)
		for j := range rules {
			rules[j] = wire.FilterRule{SrcIPs: []string{"*"}}
		}
		nm.Apply(&wire.MapResponse{PacketFilters: map[string][]wire.FilterRule{fmt.Sprintf("set%d", i): rules}}, now)
	}
	total := 0
	for _, r := range nm.PacketFilters {
		total += len(r)
	}
	if len(nm.PacketFilters) > maxFilterSets || total > maxFilterRules {
		t.Errorf("%d filter sets, %d rules", len(nm.PacketFilters), total)
	}
	huge := wire.FilterRule{SrcIPs: make([]string, 100000)}
	nm.Apply(&wire.MapResponse{PacketFilter: []wire.FilterRule{huge}}, now)
	if got := len(nm.PacketFilters["base"][0].SrcIPs); got != maxRuleEntries {
		t.Errorf("one rule kept %d sources", got)
	}

	// User profiles.
	var profiles []wire.UserProfile
	for i := range maxUserProfiles + 100 {
		profiles = append(profiles, wire.UserProfile{ID: wire.UserID(i + 1), LoginName: "u"})
	}
	nm.Apply(&wire.MapResponse{UserProfiles: profiles[:maxUserProfiles/2]}, now)
	nm.Apply(&wire.MapResponse{UserProfiles: profiles[maxUserProfiles/2:]}, now)
	if len(nm.UserProfiles) != maxUserProfiles {
		t.Errorf("%d user profiles", len(nm.UserProfiles))
	}

	// Health messages and DNS records: replaced, and bounded in each message.
	nm.Apply(&wire.MapResponse{Health: make([]string, 1000)}, now)
	long := make([]string, 100)
	for i := range long {
		long[i] = strings.Repeat("x", 10000)
	}
	nm.Apply(&wire.MapResponse{Health: long}, now)
	if len(nm.Health) != maxHealth || len(nm.Health[0]) != maxHealthText {
		t.Errorf("health: %d messages, the first %d bytes", len(nm.Health), len(nm.Health[0]))
	}
	nm.Apply(&wire.MapResponse{DNSConfig: &wire.DNSConfig{ExtraRecords: make([]wire.DNSRecord, 100000), Domains: make([]string, 10000)}}, now)
	if len(nm.DNSConfig.ExtraRecords) != maxDNSRecords || len(nm.DNSConfig.Domains) != maxDomains {
		t.Errorf("dns: %d records, %d domains", len(nm.DNSConfig.ExtraRecords), len(nm.DNSConfig.Domains))
	}
	if len(nm.LimitsHit) == 0 || len(nm.LimitsHit) > maxLimitNotes {
		t.Errorf("limits reported: %q", nm.LimitsHit)
	}
}

// FuzzApply applies a sequence of map responses from a hostile control server (JSON, one per
// line) and checks what the rest of skeind relies on: no panic, the limits hold, the indexes
// agree with the peers, addresses are tailnet addresses and shown text is clean.
func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"Node":{"ID":1,"Addresses":["100.64.0.1/32"]},"Peers":[{"ID":2,"Name":"a.ts.","Addresses":["100.64.0.2/32","8.8.8.8/32"],"Key":"nodekey:0000000000000000000000000000000000000000000000000000000000000001"}]}
{"PeersChanged":[{"ID":3,"Name":"b\u001b[2J.ts.","Addresses":["100.64.0.2/32"]}],"PeersRemoved":[2]}
{"PeersChangedPatch":[{"NodeID":3,"Endpoints":["1.2.3.4:5"],"Online":true}],"OnlineChange":{"3":false},"PeerSeenChange":{"3":true}}
{"PacketFilters":{"*":null,"x":[{"SrcIPs":["*"]}]},"Health":["a\u202eb"],"DERPMap":{"Regions":{"1":{"RegionCode":"x\u0007","Nodes":[null,{"Name":"n"}]}}}}`))
	f.Add([]byte(`{"Peers":[{"ID":5,"Name":"x.","Addresses":["100.64.0.5/32"]},{"ID":5,"Name":"y.","Addresses":["100.64.0.6/32"]}]}
{"PeersChanged":[{"ID":5,"Name":"x.","Addresses":["100.64.0.6/32"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		defer func(n int) { maxPeers = n }(maxPeers)
		maxPeers = 8
		nm := New()
		now := time.Unix(1700000000, 0)
		for _, line := range strings.Split(string(data), "\n") {
			var r wire.MapResponse
			if json.Unmarshal([]byte(line), &r) != nil {
				continue
			}
			nm.Apply(&r, now)
			snap := nm.Clone()
			checkMap(t, snap)
		}
	})
}

func checkMap(t *testing.T, nm *NetworkMap) {
	t.Helper()
	if nm.Len() > maxPeers {
		t.Fatalf("%d peers", nm.Len())
	}
	seen := 0
	for p := range nm.Peers() {
		seen++
		if nm.Peer(p.ID) != p {
			t.Fatalf("peer %d not found by ID", p.ID)
		}
		for _, a := range p.Addresses {
			if !a.IsSingleIP() || !tsaddr.IsTailnetAddr(a.Addr()) {
				t.Fatalf("peer %d has address %v", p.ID, a)
			}
			if q := nm.PeerByAddr(a.Addr()); q != nil && !containsAddr(q, a.Addr()) {
				t.Fatalf("PeerByAddr(%v) = peer %d without it", a, q.ID)
			}
		}
		if q := nm.PeerByName(p.Name); q != nil && !strings.EqualFold(strings.TrimSuffix(q.Name, "."), strings.TrimSuffix(p.Name, ".")) {
			t.Fatalf("PeerByName(%q) = %q", p.Name, q.Name)
		}
		for _, s := range []string{p.Name, p.StableID} {
			for _, r := range s {
				if r != ' ' && !unicode.IsPrint(r) {
					t.Fatalf("peer %d text %q", p.ID, s)
				}
			}
		}
		if len(p.Endpoints) > maxEndpoints {
			t.Fatalf("peer %d: %d endpoints", p.ID, len(p.Endpoints))
		}
	}
	if seen != nm.Len() {
		t.Fatalf("iterated %d of %d peers", seen, nm.Len())
	}
	if len(nm.Health) > maxHealth || len(nm.PacketFilters) > maxFilterSets {
		t.Fatalf("%d health messages, %d filter sets", len(nm.Health), len(nm.PacketFilters))
	}
}

func containsAddr(n *wire.Node, a netip.Addr) bool {
	for _, p := range n.Addresses {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// TestLowOrderKeyDropped (issue 14, R5): a peer whose node key is a point of small order keeps
// no key at all, so no tunnel to it is ever configured.
func TestLowOrderKeyDropped(t *testing.T) {
	var low key.NodePublic
	if err := low.UnmarshalText([]byte("nodekey:e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")); err != nil {
		t.Fatal(err)
	}
	good := key.NewNode().Public()
	nm := New()
	nm.Apply(&wire.MapResponse{Peers: []*wire.Node{{ID: 2, Key: low}, {ID: 3, Key: good}}}, time.Now())
	nm.Apply(&wire.MapResponse{PeersChangedPatch: []*wire.PeerChange{{NodeID: 3, Key: &low}}}, time.Now())
	if k := nm.Peer(2).Key; !k.IsZero() {
		t.Errorf("peer 2 kept its low-order key %v", k)
	}
	if k := nm.Peer(3).Key; !k.IsZero() && k.LowOrder() {
		t.Errorf("a patch gave peer 3 a low-order key")
	}
	if nm.PeerByKey(low) != nil {
		t.Error("the low-order key is indexed")
	}
}
