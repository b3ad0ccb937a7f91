package gui_test

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// showcase is a running tailnet with something on every new page: two logins, exit nodes with
// a recommended one in use, a key that expires in a few days.
func showcase(expiring bool) (ipc.Status, ipc.Prefs) {
	st := bigTailnet(6)
	st.Self.UserID = 1
	st.Profiles = []ipc.Profile{
		{ID: "a1b2", Name: "alice@example.com", LoginServer: "https://control.example.test", LoginName: "alice@example.com", Tailnet: "lab.ts.net", LoggedIn: true, Current: true},
		{ID: "c3d4", Name: "work", LoginServer: "https://headscale.corp.example", LoginName: "alice@corp.example", Tailnet: "corp.ts.net", LoggedIn: true},
		{ID: "e5f6", Name: "home-lab", LoginServer: "https://hs.home.example", LoginName: "alice", Tailnet: "home.ts.net"},
	}
	st.Profile = &st.Profiles[0]
	st.Users[0].LoginName = "alice@example.com"
	exp := time.Now().Add(40 * 24 * time.Hour)
	st.Self.KeyExpiry = &exp
	if expiring {
		exp = time.Now().Add(2*24*time.Hour + time.Hour)
		st.Health = []ipc.Issue{{Code: ipc.IssueKeyExpiring, Message: "this device's key expires in 5 days", Fix: "skein up --force-reauth",
			Data: map[string]string{"expiry": exp.UTC().Format(time.RFC3339)}}}
	}
	for _, i := range []int{1, 2, 4} {
		st.Peers[i].ExitNodeOption = true
	}
	st.Peers[1].Location = "Frankfurt, Germany"
	st.Peers[2].Location = "Zurich, Switzerland"
	st.Peers[2].ExitNode = true
	st.SuggestedExitNode = &ipc.ExitNodeSuggestion{ID: st.Peers[2].StableID, Name: st.Peers[2].ShortName(), IP: st.Peers[2].FirstIP(), LatencyMs: 2.1}
	st.ExitNode = &ipc.ExitNodeStatus{ID: st.Peers[2].StableID, Name: st.Peers[2].ShortName(), IP: netip.MustParseAddr(st.Peers[2].FirstIP()), Online: true, Auto: true}
	st.Routing = &ipc.RoutingStatus{LANRoutes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	p := ipc.Prefs{LoginServer: st.LoginServer, WantRunning: true, ExitNodeID: st.Peers[2].StableID, AutoExitNode: "any",
		LastExitNodeID: ipc.AutoExitNodeAny, ExitNodeAllowLANAccess: true}
	return st, p
}

// TestPageScreenshots: the new pages as a person sees them, from the real app against
// ipctest's helper: Account, Exit node, Notifications, Language. They are artifacts, and the
// README's screenshots (docs/) with SKEIN_GUI_SCREENSHOT_DIR.
func TestPageScreenshots(t *testing.T) {
	st, p := showcase(false)
	be := ipctest.NewBackend(st, p)
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	for _, page := range []string{"account", "exit-node", "notifications", "language"} {
		t.Run(page, func(t *testing.T) {
			d := newDesktop(t)
			d.appPrefs(t, map[string]any{"notify.watchedPeers": st.Peers[0].StableID + "," + st.Peers[3].StableID})
			g := d.startGUI(t, guiBin, "--page", page, "--socket", sock)
			it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
			waitMenu(t, it, 10*time.Second, func(m *menuNode) error { return hasItem(m, "Connected", false) })
			d.shotPage(t, page+".png", true)
			g.stop()
		})
	}
}

// TestChineseWindow: with the desktop in Traditional Chinese (LANG=zh_TW.UTF-8), the window and
// the tray speak it: the tray menu read over D-Bus is in Chinese, and the window's screenshot
// (an artifact, and docs/zh-TW.png with SKEIN_GUI_SCREENSHOT_DIR) is drawn with the desktop's
// CJK fonts, which Fyne falls back to for glyphs its own font lacks.
func TestChineseWindow(t *testing.T) {
	out, err := exec.Command("fc-list", ":lang=zh-tw", "family").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("no font for Traditional Chinese on this machine (%v): install fonts-noto-cjk (make deps)", err)
	}
	t.Logf("fonts for zh-TW: %s", strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), "; "))
	st, p := showcase(true)
	be := ipctest.NewBackend(st, p)
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	d := newDesktop(t)
	d.extraEnv = append(d.extraEnv, "LANG=zh_TW.UTF-8")
	d.startGUI(t, guiBin, "--page", "peers", "--socket", sock)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	m := waitMenu(t, it, 20*time.Second, func(m *menuNode) error {
		for _, want := range []string{"已連線", "中斷連線", "裝置", "出口節點", "帳號", "開啟 Skein", "結束"} {
			if m.find(want) == nil {
				return fmt.Errorf("no %q", want)
			}
		}
		return nil
	})
	t.Logf("tray menu in zh-TW:\n%s", m)
	d.shotPage(t, "zh-TW.png", true)
}
