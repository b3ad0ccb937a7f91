package ui

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"fyne.io/fyne/v2/test"

	"github.com/skeinvpn/skein/ipc"
)

// withDNS is running() with the DNS state of a helper that points systemd-resolved at itself:
// MagicDNS on, one split route to corporate resolvers and the tailnet's own suffix answered
// locally, the tailnet's global resolver for everything else.
func withDNS() ipc.Status {
	st := running()
	st.MagicDNS = "lab.ts.net"
	st.DNS = &ipc.DNSStatus{
		AcceptDNS: true, MagicDNS: true,
		Resolver:      []netip.Addr{addr("fd7a:115c:a1e0::53"), addr("100.100.100.100")},
		Mode:          "systemd-resolved",
		ModeReason:    "systemd-resolved is on the system bus",
		Applied:       true,
		SearchDomains: []string{"lab.ts.net"},
		SplitRoutes: map[string][]string{
			"lab.ts.net.":  nil,
			"corp.example": {"10.0.0.53", "10.0.0.54"},
		},
		Upstreams: []string{"1.1.1.1"}, UpstreamsFrom: "tailnet",
		Hosts: 4, ExtraRecords: 1,
	}
	return st
}

const (
	dnsOnNote    = "This computer asks Skein's resolver at 100.100.100.100 for names: names of peers, the tailnet's split DNS and its resolvers."
	dnsOffNote   = "Off: the system resolver is left alone; names of peers still resolve at 100.100.100.100."
	dnsOnSummary = "MagicDNS: on · 4 names under lab.ts.net · 1 extra record\n" +
		"System resolver: systemd-resolved, pointed at Skein (systemd-resolved is on the system bus)\n" +
		"Search domains: lab.ts.net\n" +
		"Split DNS:\n" +
		"    corp.example → 10.0.0.53, 10.0.0.54\n" +
		"    lab.ts.net → answered by Skein\n" +
		"Other names: 1.1.1.1 (the tailnet's resolvers)"
	nmWarning = "NetworkManager rewrote /etc/resolv.conf at 12:00:00; re-applied"
)

func TestSettingsDNS(t *testing.T) {
	h := newHarness(t, withDNS(), ipc.Prefs{})
	h.ui(func() { h.a.tabs.selectSettings() })
	d := h.a.settings.dns
	h.eventually("summary", func() string {
		if !d.check.Checked || d.check.Disabled() {
			return fmt.Sprintf("switch checked %v, disabled %v", d.check.Checked, d.check.Disabled())
		}
		if d.warnBox.Visible() {
			return "warnings shown: " + d.warnings.Text
		}
		return h.expect(dnsOnNote, dnsOnSummary)
	})

	// Off: the patch goes out, the switch and its note follow the helper's prefs.
	h.ui(func() { test.Tap(d.check) })
	h.eventually("off", func() string {
		if !h.be.Prefs().NoAcceptDNS {
			return "backend still accepts DNS"
		}
		if d.check.Checked {
			return "switch still on"
		}
		return h.expect(dnsOffNote)
	})

	// The helper restores the system resolver: the summary follows the watch stream.
	st := withDNS()
	st.DNS.AcceptDNS, st.DNS.Mode, st.DNS.Applied, st.DNS.SearchDomains = false, "", false, nil
	st.DNS.ModeReason = "accept-dns is off"
	st.DNS.Upstreams, st.DNS.UpstreamsFrom = []string{"192.168.1.1"}, "system"
	h.be.SetStatus(st)
	h.eventually("left alone", func() string {
		s := h.look()
		if s.hasPrefix("Search domains") || s.hasPrefix("System resolver: systemd-resolved") {
			return "old summary still shown: " + s.String()
		}
		return h.expect("MagicDNS: on · 4 names under lab.ts.net · 1 extra record\n" +
			"System resolver: left alone (accept-dns is off)\n" +
			"Split DNS:\n" +
			"    corp.example → 10.0.0.53, 10.0.0.54\n" +
			"    lab.ts.net → answered by Skein\n" +
			"Other names: 192.168.1.1 (this computer's resolvers)")
	})

	// Back on.
	h.ui(func() { test.Tap(d.check) })
	h.eventually("on again", func() string {
		if h.be.Prefs().NoAcceptDNS {
			return "backend still leaves DNS alone"
		}
		if !d.check.Checked {
			return "switch still off"
		}
		return h.expect(dnsOnNote)
	})

	// Changed elsewhere (the CLI): the switch moves.
	off := false
	if _, err := h.be.SetPrefs(context.Background(), ipc.PrefsPatch{AcceptDNS: &off}); err != nil {
		t.Fatal(err)
	}
	h.eventually("off elsewhere", func() string {
		if d.check.Checked {
			return "switch still on"
		}
		return h.expect(dnsOffNote)
	})
}

func TestSettingsDNSWarnings(t *testing.T) {
	h := newHarness(t, withDNS(), ipc.Prefs{})
	h.ui(func() { h.a.tabs.selectSettings() })
	h.eventually("summary", func() string { return h.expect(dnsOnSummary) })

	st := withDNS()
	st.DNS.Warnings = []string{nmWarning, "the saved original of /etc/resolv.conf was lost"}
	h.be.SetStatus(st)
	h.eventually("warnings", func() string {
		if s := h.expect(nmWarning + "\nthe saved original of /etc/resolv.conf was lost"); s != "" {
			return s
		}
		// Above the summary, so that it is seen first.
		s := h.look()
		w, sum := -1, -1
		for i, t := range s.texts {
			switch {
			case strings.HasPrefix(t, nmWarning):
				w = i
			case t == dnsOnSummary:
				sum = i
			}
		}
		if w < 0 || sum < 0 || w > sum {
			return "warning not above the summary: " + s.String()
		}
		return ""
	})

	// Gone from the status: gone from the window.
	h.be.SetStatus(withDNS())
	h.eventually("no warnings", func() string {
		if h.look().hasPrefix(nmWarning) {
			return "warning still shown"
		}
		return ""
	})
}

func TestSettingsDNSErrorShown(t *testing.T) {
	h := newHarness(t, withDNS(), ipc.Prefs{})
	h.be.OnSetPrefs(func(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
		return ipc.Prefs{}, &ipc.Error{Code: ipc.ErrNeedsOperator, Message: "permission denied: uid 1000 is neither root nor skeind's operator", Fix: "sudo skein set --operator=$USER"}
	})
	h.ui(func() { h.a.tabs.selectSettings() })
	d := h.a.settings.dns
	h.eventually("editable", func() string {
		if d.check.Disabled() {
			return "switch disabled"
		}
		return ""
	})
	h.ui(func() { test.Tap(d.check) })
	h.eventually("banner", func() string {
		if !d.check.Checked {
			return "switch stays off after the failure"
		}
		return h.expect("Permission denied: your user may not change Skein's settings", "sudo skein set --operator="+currentUser(), dnsOnNote)
	})
	if h.be.Prefs().NoAcceptDNS {
		t.Error("backend pref changed")
	}
}

func TestDNSSummaryText(t *testing.T) {
	st := withDNS()
	for i := range 10 {
		st.DNS.SplitRoutes[fmt.Sprintf("s%d.example", i)] = []string{"10.9.0.1"}
	}
	st.DNS.MagicDNS, st.DNS.Applied = false, false
	st.DNS.Upstreams, st.DNS.UpstreamsFrom = nil, ""
	v := &view{reachable: true, st: st}
	want := "MagicDNS: off in this tailnet\n" +
		"System resolver: systemd-resolved, not applied (systemd-resolved is on the system bus)\n" +
		"Search domains: lab.ts.net\n" +
		"Split DNS:\n" +
		"    corp.example → 10.0.0.53, 10.0.0.54\n" +
		"    lab.ts.net → answered by Skein\n" +
		"    s0.example → 10.9.0.1\n" +
		"    s1.example → 10.9.0.1\n" +
		"    s2.example → 10.9.0.1\n" +
		"    s3.example → 10.9.0.1\n" +
		"    s4.example → 10.9.0.1\n" +
		"    s5.example → 10.9.0.1\n" +
		"    +4 more\n" +
		"Other names: no resolver configured"
	if got := dnsSummary(v); got != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}

	for _, c := range []struct {
		v    view
		want string
	}{
		{view{}, ""},
		{view{reachable: true, st: ipc.Status{State: ipc.StateStopped}}, "DNS details are shown while Skein is connected."},
		{view{reachable: true, st: ipc.Status{State: ipc.StateRunning}}, "skeind reports no DNS state."},
	} {
		if got := dnsSummary(&c.v); got != c.want {
			t.Errorf("summary for %+v = %q, want %q", c.v, got, c.want)
		}
	}

	// Before the prefs arrive, the switch shows what the status says.
	v = &view{reachable: true, st: withDNS()}
	v.st.DNS.AcceptDNS = false
	v.st.DNS.Resolver = []netip.Addr{addr("fd7a:115c:a1e0::53")}
	if v.acceptDNS() || acceptDNSNote(v) != "Off: the system resolver is left alone; names of peers still resolve at fd7a:115c:a1e0::53." {
		t.Errorf("accept %v, note %q", v.acceptDNS(), acceptDNSNote(v))
	}
}
