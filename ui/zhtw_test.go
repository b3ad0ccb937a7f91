package ui

import (
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/test"

	"github.com/skeinvpn/skein/ipc"
)

// useLanguage switches Fyne's translations to tag for one test, and back to English after.
func useLanguage(t *testing.T, tag string) {
	t.Helper()
	set := func(v string) {
		os.Setenv("LANGUAGE", v)
		if err := lang.AddTranslationsFS(translations, "translations"); err != nil {
			t.Fatal(err)
		}
	}
	old, had := os.LookupEnv("LANGUAGE")
	oldLang, hadLang := os.LookupEnv("LANG")
	os.Setenv("LANG", "en_US.UTF-8") // not C: LANGUAGE counts only then
	set(strings.ReplaceAll(tag, "-", "_"))
	t.Cleanup(func() {
		set("en")
		if had {
			os.Setenv("LANGUAGE", old)
		} else {
			os.Unsetenv("LANGUAGE")
		}
		if hadLang {
			os.Setenv("LANG", oldLang)
		} else {
			os.Unsetenv("LANG")
		}
	})
}

// drawnTexts are the texts drawn for o and everything visible in it.
func drawnTexts(o fyne.CanvasObject) []string {
	var out []string
	var rec func(o fyne.CanvasObject)
	rec = func(o fyne.CanvasObject) {
		if o == nil || !o.Visible() {
			return
		}
		switch w := o.(type) {
		case *canvas.Text:
			if strings.TrimSpace(w.Text) != "" {
				out = append(out, w.Text)
			}
		case *fyne.Container:
			for _, c := range w.Objects {
				rec(c)
			}
		case fyne.Widget:
			for _, c := range test.WidgetRenderer(w).Objects() {
				rec(c)
			}
		}
	}
	rec(o)
	return out
}

// zhStatus is a tailnet with something on every page: profiles, an exit node in use and a
// recommended one, a key expiring, subnet routes, DNS.
func zhStatus() ipc.Status {
	st := withExitNodes()
	st.Profiles = []ipc.Profile{
		{ID: "a1b2", Name: "alice", LoginServer: "https://control.example.test", LoginName: "alice", Tailnet: "lab.ts.net", LoggedIn: true, Current: true},
		{ID: "c3d4", Name: "work", LoginServer: "https://corp.example.test", LoginName: "alice@corp", Tailnet: "corp.ts.net", LoggedIn: true},
	}
	st.Profile = &st.Profiles[0]
	exp := now.Add(3 * 24 * time.Hour)
	st.Self.KeyExpiry = &exp
	st.Health = []ipc.Issue{{Code: ipc.IssueKeyExpiring, Message: "this device's key expires in 3 days", Fix: "skein up --force-reauth",
		Data: map[string]string{"expiry": exp.UTC().Format(time.RFC3339)}}}
	st.SuggestedExitNode = &ipc.ExitNodeSuggestion{ID: "n-gamma", Name: "gamma", IP: "100.64.0.3", LatencyMs: 2}
	st.DNS = &ipc.DNSStatus{AcceptDNS: true, MagicDNS: true, Hosts: 4, Mode: "systemd-resolved", Applied: true, Upstreams: []string{"9.9.9.9"}, UpstreamsFrom: "tailnet"}
	st.MagicDNS = "lab.ts.net"
	st.Routing = &ipc.RoutingStatus{LANRoutes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	// gamma is relayed, and skeind says why (in English: the app words it from the code).
	st.Peers[1].RelayCause = &ipc.Cause{Code: ipc.CauseFirewall, Fix: "sudo ufw allow 41641/udp",
		Summary: "This machine's firewall drops inbound UDP 41641: peers whose NAT picks a new port per destination cannot reach it.",
		Data:    map[string]string{"peer": "gamma", "port": "41641"}}
	return st
}

// allowedWords are words that stay as they are in any language: names from the status, and
// names of programs, protocols and commands.
var allowedWords = strings.Fields(`Skein skeind tailnet MagicDNS DNS IP IPv4 IPv6 VPN Taildrop Ping Headscale headscale
	nodes approve routes sudo skein set operator up force reauth journalctl systemd resolved systemctl GNOME AppIndicator
	SSH Tailscale ssh serve TCP ufw allow udp DERP NAT UPnP PMP PCP ms KiB MiB GiB root English linux windows macOS lab ts net alice corp work example test control https beta gamma delta epsilon
	Frankfurt Germany skein-a n-beta`)

var (
	asciiWord = regexp.MustCompile(`[A-Za-z]{3,}`)
	filePath  = regexp.MustCompile(`/[^\s（）()]*`)
)

// untranslatedIn reports the English words left in text.
func untranslatedIn(text string) []string {
	allowed := map[string]bool{}
	for _, w := range allowedWords {
		allowed[strings.ToLower(w)] = true
	}
	var bad []string
	text = filePath.ReplaceAllString(text, "")
	for _, w := range asciiWord.FindAllString(text, -1) {
		if !allowed[strings.ToLower(w)] {
			bad = append(bad, w)
		}
	}
	return bad
}

func hasHan(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Han, r) {
			return true
		}
	}
	return false
}

// The window, every page of it, and the tray menu in Traditional Chinese: no English words
// left but names and commands, and Chinese on every page. A string that bypasses lang.L, or
// that zh-TW.json lacks, fails here.
func TestTraditionalChineseWindow(t *testing.T) {
	useLanguage(t, "zh-TW")
	if got := lang.L("Connected"); got != "已連線" {
		t.Fatalf("zh-TW not loaded: Connected = %q", got)
	}
	h := newHarness(t, zhStatus(), ipc.Prefs{LoginServer: "https://control.example.test", WantRunning: true, ExitNodeID: "n-beta", LastExitNodeID: "n-beta"})
	h.eventually("connected", func() string { return h.expect("已連線") })
	h.ui(func() { h.a.watched["n-beta"] = true; h.a.peers.selectByID("n-beta") })

	pages := []struct {
		name string
		open func()
	}{
		{"peers", h.a.tabs.selectPeers},
		{"relayed peer", func() { h.a.tabs.selectPeers(); h.a.peers.selectByID("n-gamma") }},
		{"files", h.a.tabs.selectFiles},
		{"exit node", h.a.tabs.selectExitNode},
		{"account", h.a.tabs.selectAccount},
		{"settings", h.a.tabs.selectSettings},
		{"notifications", h.a.tabs.selectNotify},
		{"language", h.a.tabs.selectLanguage},
	}
	for _, p := range pages {
		h.ui(func() {
			p.open()
			h.a.refresh()
		})
		time.Sleep(50 * time.Millisecond)
		h.ui(func() {
			texts := drawnTexts(h.a.Window().Content())
			han := false
			for _, s := range texts {
				if bad := untranslatedIn(s); len(bad) > 0 {
					t.Errorf("%s page: %q has English words %v", p.name, s, bad)
				}
				han = han || hasHan(s)
			}
			if !han {
				t.Errorf("%s page shows no Chinese: %q", p.name, texts)
			}
		})
	}
	h.ui(func() {
		var lines []string
		var rec func(m *fyne.Menu)
		rec = func(m *fyne.Menu) {
			for _, it := range m.Items {
				if !it.IsSeparator {
					lines = append(lines, it.Label)
				}
				if it.ChildMenu != nil {
					rec(it.ChildMenu)
				}
			}
		}
		rec(h.a.TrayMenu())
		lines = append(lines, h.a.TrayTitle(), h.a.TrayTooltip())
		for _, s := range lines {
			if bad := untranslatedIn(s); len(bad) > 0 {
				t.Errorf("tray: %q has English words %v", s, bad)
			}
		}
	})
}
