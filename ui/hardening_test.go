package ui

import (
	"context"
	"strings"
	"testing"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"

	"github.com/skeinvpn/skein/ipc"
)

// The login URL comes from the control server: only https ones are opened (hole 8).
func TestOpenURLHTTPSOnly(t *testing.T) {
	h := newHarness(t, loggedOutStatus(), ipc.Prefs{})
	for _, u := range []string{"javascript:alert(1)", "file:///etc/passwd", "http://hs.example/register/x", "https:///nohost", "smb://evil/share"} {
		h.ui(func() {
			h.a.v.err = nil
			h.a.openURL(u)
			if h.a.v.err == nil || !strings.Contains(h.a.v.err.Message, "only https://") {
				t.Errorf("%q: opened, or no message (%+v)", u, h.a.v.err)
			}
		})
	}
	h.ui(func() {
		h.a.v.err = nil
		h.a.openURL("https://hs.example/register/abc")
		if h.a.v.err != nil {
			t.Errorf("https URL refused: %+v", h.a.v.err)
		}
	})
}

func loggedOutStatus() ipc.Status {
	return ipc.Status{State: ipc.StateNeedsLogin, Peers: []ipc.Peer{}}
}

// The fallback notification (Fyne's, when the D-Bus path fails) carries no markup a server
// could act on: names come from peers (hole 8).
func TestFallbackNotificationHasNoMarkup(t *testing.T) {
	h := newHarness(t, loggedOutStatus(), ipc.Prefs{})
	want := fyne.NewNotification("‹b›x‹/b› from peer", "Saved to ~/Downloads/‹img src=http://evil/›＆amp;")
	h.ui(func() {
		test.AssertNotificationSent(t, want, func() {
			h.a.fallbackNotify("<b>x</b> from peer", "Saved to ~/Downloads/<img src=http://evil/>&amp;")
		})
	})
}

// Logging in to another server asks first, then confirms to skeind (hole 6).
func TestLoginToAnotherServerAsks(t *testing.T) {
	h := newHarness(t, loggedOutStatus(), ipc.Prefs{})
	h.be.OnUp(func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
		if !req.ForceReauth {
			return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrNeedsConfirmation, Message: "this machine is logged in to https://a.example; logging in to https://b.example replaces that login"}
		}
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: "https://b.example/register/x"}, nil
	})
	h.ui(func() { h.a.login("https://b.example", "") })
	h.eventually("confirmation dialog", func() string {
		if len(h.be.UpRequests()) != 1 {
			return "no request yet"
		}
		return h.expectOverlay("Log in to another server?")
	})
	h.tapOverlay("Yes")
	h.eventually("confirmed request", func() string {
		reqs := h.be.UpRequests()
		if len(reqs) != 2 || !reqs[1].ForceReauth || reqs[1].LoginServer != "https://b.example" {
			return "requests so far: " + strings.Repeat("x", len(reqs))
		}
		return ""
	})
}
