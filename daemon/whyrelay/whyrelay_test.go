package whyrelay

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/daemon/hostfw"
	"github.com/skeinvpn/skein/ipc"
)

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

// base is a relayed peer with nothing known against the path.
func base() Facts {
	return Facts{
		Peer: "laptop", PeerOnline: yes(), PeerHasDisco: true, PeerEndpoints: 2,
		NetcheckRan: true, UDP: true, GlobalV4: netip.MustParseAddrPort("203.0.113.5:41641"), HardNAT: no(),
		Gateway: netip.MustParseAddr("192.168.1.1"), LocalAddr: netip.MustParseAddr("192.168.1.10"), Port: 41641,
		Pings: Pings{DirectSent: 4, Addrs: 2, DERPSent: 1, DERPAnswered: 1},
	}
}

func codes(cs []ipc.Cause) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Code)
	}
	return out
}

func TestExplain(t *testing.T) {
	fw := hostfw.Verdict{Blocked: true, Kind: "ufw", Where: "ip filter INPUT", Why: "policy drop", Fix: "sudo ufw allow 41641/udp"}
	for _, tc := range []struct {
		name    string
		change  func(*Facts)
		want    []string
		fix     string // of the first cause
		mention string // in the first cause's evidence
	}{
		{"direct", func(f *Facts) { f.Direct = true }, nil, "", ""},
		{"offline wins", func(f *Facts) { f.PeerOnline = no(); f.Firewall = fw }, []string{ipc.CausePeerOffline}, "start Tailscale on laptop (`tailscale up`, or `skein up` on a Skein machine)", "offline"},
		{"no disco", func(f *Facts) { f.PeerHasDisco = false }, []string{ipc.CausePeerNoDisco}, "", "no disco key"},
		{"UDP blocked", func(f *Facts) { f.UDP = false; f.HardNAT = nil }, []string{ipc.CauseUDPBlocked}, "", "4 pings to 2 of laptop's addresses, 0 answered"},
		{"firewall and a hard-NAT peer", func(f *Facts) { f.Firewall = fw; f.PeerHardNAT = yes() },
			[]string{ipc.CauseFirewall, ipc.CauseHardNATPeer}, "sudo ufw allow 41641/udp", "hard NAT"},
		{"both hard", func(f *Facts) { f.HardNAT = yes(); f.PeerHardNAT = yes(); f.PortMapChecked = true },
			[]string{ipc.CauseHardNATBoth}, "enable UPnP or NAT-PMP on your router (192.168.1.1), or forward UDP 41641 to this host (192.168.1.10)", "offers no port mapping"},
		{"hard here with a mapping is not a cause", func(f *Facts) {
			f.HardNAT = yes()
			f.PortMapped = netip.MustParseAddrPort("203.0.113.5:5000")
		}, []string{ipc.CauseNoPong}, "", ""},
		{"peer maps its port", func(f *Facts) { f.PeerHardNAT = yes(); f.PeerPortMapped = true }, []string{ipc.CauseNoPong}, "", ""},
		{"double NAT", func(f *Facts) { f.RouterExternal = netip.MustParseAddr("192.168.0.2") }, []string{ipc.CauseDoubleNAT}, "", "192.168.0.2"},
		{"CGNAT", func(f *Facts) { f.RouterExternal = netip.MustParseAddr("100.70.1.2") }, []string{ipc.CauseCGNAT}, "", "100.70.1.2"},
		{"peer UDP blocked", func(f *Facts) { f.PeerUDP = no() }, []string{ipc.CausePeerUDPBlocked}, "", ""},
		{"nothing but unanswered pings", func(f *Facts) {}, []string{ipc.CauseNoPong}, "", "4 pings to 2 of laptop's addresses, 0 answered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			tc.change(&f)
			got := Explain(f)
			if !slices.Equal(codes(got), tc.want) {
				t.Fatalf("causes %v, want %v", codes(got), tc.want)
			}
			if len(got) == 0 {
				return
			}
			c := got[0]
			if c.Summary == "" || c.Fix == "" {
				t.Errorf("cause without summary or fix: %+v", c)
			}
			// The app words the cause from these.
			if c.Data["peer"] != "laptop" || c.Data["port"] != "41641" {
				t.Errorf("data %v, want the peer and the port", c.Data)
			}
			if tc.fix != "" && c.Fix != tc.fix {
				t.Errorf("fix %q, want %q", c.Fix, tc.fix)
			}
			if tc.mention != "" && !strings.Contains(strings.Join(append(c.Evidence, c.Summary), "\n"), tc.mention) {
				t.Errorf("evidence %q lacks %q", c.Evidence, tc.mention)
			}
		})
	}
}
