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
