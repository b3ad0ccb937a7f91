package ipc

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// TestPathEveryCombination: the rule for each combination of active, current address, online
// and expired. The peer always has a home relay: the old front ends showed it as the path of
// an idle peer.
func TestPathEveryCombination(t *testing.T) {
	const addr = "198.51.100.7:41641"
	direct := Path{Kind: PathDirect, Addr: addr, LatencyMs: 1.5}
	relay := Path{Kind: PathRelay, Region: "lab"}
	for _, c := range []struct {
		active, hasAddr, online, expired bool
		want                             Path
	}{
		{active: true, hasAddr: true, online: true, want: direct},
		{active: true, hasAddr: true, online: false, want: direct}, // traffic flows: the control server's word is stale
		{active: true, hasAddr: false, online: true, want: relay},
		{active: true, hasAddr: false, online: false, want: relay},
		{active: false, hasAddr: true, online: true, want: Path{Kind: PathIdle}}, // a direct path not yet lapsed is not in use
		{active: false, hasAddr: true, online: false, want: Path{Kind: PathOffline}},
		{active: false, hasAddr: false, online: true, want: Path{Kind: PathIdle}}, // the case: not "relay"
		{active: false, hasAddr: false, online: false, want: Path{Kind: PathOffline}},
		{active: true, hasAddr: true, online: true, expired: true, want: Path{Kind: PathExpired}},
		{active: true, hasAddr: true, online: false, expired: true, want: Path{Kind: PathExpired}},
		{active: true, hasAddr: false, online: true, expired: true, want: Path{Kind: PathExpired}},
		{active: true, hasAddr: false, online: false, expired: true, want: Path{Kind: PathExpired}},
		{active: false, hasAddr: true, online: true, expired: true, want: Path{Kind: PathExpired}},
		{active: false, hasAddr: true, online: false, expired: true, want: Path{Kind: PathExpired}},
		{active: false, hasAddr: false, online: true, expired: true, want: Path{Kind: PathExpired}},
		{active: false, hasAddr: false, online: false, expired: true, want: Path{Kind: PathExpired}},
	} {
		name := fmt.Sprintf("active=%v addr=%v online=%v expired=%v", c.active, c.hasAddr, c.online, c.expired)
		p := Peer{Active: c.active, Online: c.online, Expired: c.expired, Relay: "lab", LatencyMs: 1.5}
		if c.hasAddr {
			p.CurAddr, p.Relay = addr, ""
		}
		got := p.Path()
		if got.Kind != c.want.Kind || got.Addr != c.want.Addr || got.Region != c.want.Region || got.LatencyMs != c.want.LatencyMs {
			t.Errorf("%s: got %+v, want %+v", name, got, c.want)
		}
		if got.Last != nil {
			t.Errorf("%s: last path %+v without any traffic", name, *got.Last)
		}
		if got.Active() != (c.want.Kind == PathDirect || c.want.Kind == PathRelay) {
			t.Errorf("%s: Active() = %v", name, got.Active())
		}
	}
}

// TestPathRelayWithoutRegion: an active peer with no address is relayed even when the helper
// knows no region code for it.
func TestPathRelayWithoutRegion(t *testing.T) {
	p := Peer{Active: true, Online: true}
	if got := p.Path(); got.Kind != PathRelay || got.Region != "" {
		t.Fatalf("got %+v, want relay with no region", got)
	}
}

// TestPathLast: an inactive peer keeps the path of its latest traffic for the detail pane; an
// active one has no "last" path (its path is the current one).
func TestPathLast(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name string
		p    Peer
		want *LastPath
	}{
		{"idle after direct", Peer{Online: true, LastWrite: &at, LastAddr: "198.51.100.7:41641", Relay: "lab"},
			&LastPath{Kind: PathDirect, Addr: "198.51.100.7:41641", At: at}},
		{"idle after relay", Peer{Online: true, LastWrite: &at, LastRelay: "lab", Relay: "lab"},
			&LastPath{Kind: PathRelay, Region: "lab", At: at}},
		{"offline after direct", Peer{LastWrite: &at, LastAddr: "198.51.100.7:41641"},
			&LastPath{Kind: PathDirect, Addr: "198.51.100.7:41641", At: at}},
		{"expired after relay", Peer{Online: true, Expired: true, LastWrite: &at, LastRelay: "lab"},
			&LastPath{Kind: PathRelay, Region: "lab", At: at}},
		{"no time known", Peer{Online: true, LastAddr: "198.51.100.7:41641"},
			&LastPath{Kind: PathDirect, Addr: "198.51.100.7:41641"}},
		{"never any traffic", Peer{Online: true, Relay: "lab"}, nil},
		{"active", Peer{Online: true, Active: true, CurAddr: "198.51.100.8:41641", LastWrite: &at, LastAddr: "198.51.100.7:41641"}, nil},
	} {
		got := c.p.Path().Last
		switch {
		case c.want == nil && got != nil:
			t.Errorf("%s: last path %+v, want none", c.name, *got)
		case c.want != nil && got == nil:
			t.Errorf("%s: no last path, want %+v", c.name, *c.want)
		case c.want != nil && *got != *c.want:
			t.Errorf("%s: last path %+v, want %+v", c.name, *got, *c.want)
		}
	}
}

// TestPathFieldsOnTheWire: the new fields travel over the IPC and are left out when empty, so
// an older front end's view of a peer is unchanged.
func TestPathFieldsOnTheWire(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := json.Marshal(Peer{LastWrite: &at, LastAddr: "198.51.100.7:41641", LastRelay: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	var back Peer
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.LastWrite == nil || !back.LastWrite.Equal(at) || back.LastAddr != "198.51.100.7:41641" || back.LastRelay != "lab" {
		t.Errorf("round trip: %s -> %+v", b, back)
	}
	empty, _ := json.Marshal(Peer{})
	var m map[string]any
	if err := json.Unmarshal(empty, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"lastWrite", "lastAddr", "lastRelay"} {
		if _, ok := m[k]; ok {
			t.Errorf("empty peer carries %q: %s", k, empty)
		}
	}
}
