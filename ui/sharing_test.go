package ui

import (
	"fmt"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// Sharing lists what skeind serves with Stop for background entries, and "Share a folder…"
// asks for a background share of the folder.
func TestSharingSection(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{LoginServer: "https://control.example.test"})
	h.ui(func() { h.a.tabs.selectSettings() })
	h.eventually("nothing shared", func() string { return h.expect(sharingNone, "["+sharingShareFolder+"]") })
	h.be.SetServeConfig(ipc.ServeConfig{
		TCP: map[uint16]*ipc.TCPPortHandler{3003: {HTTP: true}},
		Web: map[string]*ipc.WebServerConfig{"self.test:3003": {Handlers: map[string]*ipc.HTTPHandler{"/": {Proxy: "http://127.0.0.1:3002"}}}},
	})
	h.eventually("entry", func() string {
		msg := h.expect("http://self.test:3003/ → http://127.0.0.1:3002", "["+sharingStop+"]")
		if sh := h.a.settings.sharing; msg != "" && !sh.loading {
			sh.fetched = time.Time{} // read the config again (the section re-reads on updates)
			h.a.refresh()
		}
		return msg
	})
	h.tap(sharingStop)
	h.eventually("stopped", func() string {
		rs := h.be.ServeRequests()
		if len(rs) != 1 || !rs[0].Off || rs[0].Port != 3003 || rs[0].Mode != "http" {
			return "requests: " + stringOf(rs)
		}
		return h.expect(sharingNone)
	})
	h.ui(func() { h.a.settings.sharing.shareFolder("/home/me/Public") })
	h.eventually("shared", func() string {
		rs := h.be.ServeRequests()
		if len(rs) != 2 || rs[1] != (ipc.ServeRequest{Mode: "http", Port: 8080, Target: "/home/me/Public/", Background: true}) {
			return "requests: " + stringOf(rs)
		}
		return h.expect("http://self.test:8080/ → /home/me/Public/")
	})
}

func stringOf(v any) string { return fmt.Sprint(v) }

// The section's background re-read is not an action of the user's: it leaves an action's error
// banner alone (it cleared it as any successful call does, so a tray failure's banner went as
// soon as the refresh it caused re-read the config: TestExitNodeTrayErrorNotifies under load).
func TestSharingRefreshKeepsActionError(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{LoginServer: "https://control.example.test"})
	// On any page: the section re-reads whenever the window is redrawn.
	h.eventually("first read", func() string {
		if sh := h.a.settings.sharing; sh.loading || sh.fetched.IsZero() {
			return "config not read yet"
		}
		return ""
	})
	var before time.Time
	h.ui(func() {
		before = h.a.settings.sharing.fetched
		h.a.v.err, h.a.errAction = &ipc.Error{Code: ipc.ErrNeedsOperator, Message: "permission denied"}, true
		h.a.settings.sharing.fetched = time.Time{} // due for a re-read
		h.a.refresh()
	})
	h.eventually("re-read", func() string {
		if sh := h.a.settings.sharing; sh.loading || !sh.fetched.After(before) {
			return "config not read again"
		}
		return ""
	})
	h.ui(func() {
		if h.a.v.err == nil || !h.a.errAction {
			t.Errorf("the action's error went with the background re-read: %+v", h.a.v.err)
		}
	})
}
