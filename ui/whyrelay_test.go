package ui

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2/test"

	"github.com/skeinvpn/skein/ipc"
)

// withRelayCause is running() with gamma (relayed, active) explained by skeind.
func withRelayCause() ipc.Status {
	st := running()
	st.Peers[1].RelayCauses = []string{ipc.CauseFirewall}
	st.Peers[1].RelayCause = &ipc.Cause{
		Code:    ipc.CauseFirewall,
		Summary: "This machine's firewall drops inbound UDP 41641: peers whose NAT picks a new port per destination cannot reach it.",
		Fix:     "sudo ufw allow 41641/udp",
	}
	return st
}

// The peer pane says in one sentence why a relayed peer is relayed, and copies the fix; a
// direct peer has no such row, and the row goes once the peer is direct.
func TestPeerPaneWhyRelay(t *testing.T) {
	h := newHarness(t, withRelayCause(), ipc.Prefs{})
	h.eventually("rows", func() string {
		if len(h.rows()) != 3 {
			return "rows: " + rowsString(h.rows())
		}
		return ""
	})
	sentence := "Why relay? This machine's firewall drops inbound UDP 41641: peers whose NAT picks a new port per destination cannot reach it. Fix: sudo ufw allow 41641/udp"
	h.ui(func() { h.a.peers.list.Select(1) }) // gamma
	h.eventually("why row", func() string { return h.expect(sentence, "["+relayCopyFix+"]") })
	h.tap(relayCopyFix)
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != "sudo ufw allow 41641/udp" {
			t.Errorf("clipboard after %s = %q", relayCopyFix, got)
		}
	})
	h.ui(func() { h.a.peers.list.Select(0) }) // beta: direct
	h.eventually("direct peer", func() string {
		if h.look().has(sentence) || h.look().buttons[relayCopyFix] != nil {
			return "why row shown for a direct peer"
		}
		return h.expect("direct 198.51.100.7:41641")
	})
	// gamma goes direct: its row goes.
	h.ui(func() { h.a.peers.list.Select(1) })
	h.eventually("gamma again", func() string { return h.expect(sentence) })
	st := withRelayCause()
	st.Peers[1].Relay, st.Peers[1].CurAddr, st.Peers[1].RelayCause, st.Peers[1].RelayCauses = "", "198.51.100.9:41641", nil, nil
	h.be.SetStatus(st)
	h.eventually("gamma direct", func() string {
		if h.look().has(sentence) {
			return "why row still shown"
		}
		return h.expect("direct 198.51.100.9:41641")
	})
}

// Settings: the port mapping switch sends the pref; "Check network" shows what `skein
// netcheck` prints, copyable; a plain user is told the report is skeind's last one.
func TestSettingsNetwork(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	vary := true
	fresh := true
	h.be.OnNetcheck(func(ctx context.Context) (ipc.NetcheckReport, error) {
		return ipc.NetcheckReport{
			UDP: true, IPv4: true, GlobalV4: "203.0.113.5:41641", MappingVariesByDestIP: &vary, PreferredDERP: 1,
			RegionLatency: map[int]float64{1: 0.0123}, RegionCodes: map[int]string{1: "lab"},
			PortMapping: &ipc.PortMapping{UPnP: true, NATPMP: true, PCP: true},
			Time:        time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC),
			Cached:      !fresh,
		}, nil
	})
	h.ui(func() { h.a.tabs.selectSettings() })
	n := h.a.settings.net
	h.eventually("switch", func() string {
		if !n.mapping.Checked || n.mapping.Disabled() {
			return fmt.Sprintf("port mapping switch checked %v, disabled %v", n.mapping.Checked, n.mapping.Disabled())
		}
		return h.expect("[" + networkCheck + "]")
	})
	h.ui(func() { test.Tap(n.mapping) })
	h.eventually("port mapping off", func() string {
		if !h.be.Prefs().NoPortMapping {
			return "backend still maps ports"
		}
		return ""
	})

	h.tap(networkCheck)
	h.eventually("report", func() string {
		for _, want := range []string{"* UDP: true", "* MappingVariesByDestIP: true", "* PortMapping: UPnP, NAT-PMP, PCP", "- lab: 12.3ms"} {
			if !strings.Contains(n.report.Text, want) {
				return fmt.Sprintf("report lacks %q:\n%s", want, n.report.Text)
			}
		}
		return h.expect("[" + networkCopy + "]")
	})
	h.tap(networkCopy)
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); !strings.HasPrefix(got, "Report:\n\t* Time: 2026-12-07T12:00:00Z\n") {
			t.Errorf("clipboard after %s = %q", networkCopy, got)
		}
	})

	fresh = false // the helper answers with its last report
	h.tap(networkCheck)
	h.eventually("cached note", func() string {
		if !strings.Contains(n.note.Text, "skeind's last report") {
			return "note: " + n.note.Text
		}
		return ""
	})
}

// A cause skeind names with its data is worded by the app (in the user's language: zh-TW in
// TestTraditionalChineseWindow); without the data, or with a code the app does not know, the
// app shows skeind's own sentence.
func TestRelayCauseWording(t *testing.T) {
	c := &ipc.Cause{Code: ipc.CausePeerUDPBlocked, Summary: "skeind's sentence", Data: map[string]string{"peer": "gamma", "port": "41641"}}
	if got := relayCauseText(c); got != "UDP is blocked on gamma's network." {
		t.Errorf("with data: %q", got)
	}
	c.Code = "new_cause"
	if got := relayCauseText(c); got != "skeind's sentence" {
		t.Errorf("unknown code: %q", got)
	}
	c = &ipc.Cause{Code: ipc.CauseFirewall, Summary: "skeind's sentence"}
	if got := relayCauseText(c); got != "skeind's sentence" {
		t.Errorf("without data: %q", got)
	}
	useLanguage(t, "zh-TW")
	c = &ipc.Cause{Code: ipc.CauseFirewall, Summary: "skeind's sentence", Fix: "sudo ufw allow 41641/udp", Data: map[string]string{"peer": "gamma", "port": "41641"}}
	if got, want := relayWhyText(c), "為何經由中繼？這台電腦的防火牆丟棄傳入的 UDP 41641：NAT 會為每個目的地選用新連接埠的裝置無法連到它。 修正方法：sudo ufw allow 41641/udp"; got != want {
		t.Errorf("zh-TW: %q, want %q", got, want)
	}
}
