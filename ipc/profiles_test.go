package ipc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// onlyBackend hides the fake's profile methods: a helper without profiles.
type onlyBackend struct{ ipc.Backend }

// The profile endpoints over the socket: a switch and a removal through the client, bad
// requests named, and a helper without profiles saying so.
func TestProfileEndpoints(t *testing.T) {
	st := testStatus()
	st.Profiles = []ipc.Profile{{ID: "a", Name: "home", Current: true}, {ID: "b", Name: "work"}}
	b := ipctest.NewBackend(st, ipc.Prefs{})
	sock, _ := ipctest.Serve(t, b, ipc.ServerOptions{})
	c := ipc.NewClient(sock)
	ctx := context.Background()
	got, err := c.SwitchProfile(ctx, "work")
	if err != nil || got.Profile == nil || got.Profile.ID != "b" {
		t.Fatalf("switch: %+v %v", got.Profile, err)
	}
	code := func(err error) ipc.ErrorCode {
		var e *ipc.Error
		if errors.As(err, &e) {
			return e.Code
		}
		return "untyped"
	}
	for _, q := range []string{"", " ", strings.Repeat("x", 300)} {
		if _, err := c.SwitchProfile(ctx, q); code(err) != ipc.ErrBadRequest {
			t.Errorf("switch %q: %v", q, err)
		}
	}
	if _, err := c.SwitchProfile(ctx, "nobody"); code(err) != ipc.ErrNotFound {
		t.Errorf("switch to nobody: %v", err)
	}
	if _, err := c.RemoveProfile(ctx, "work"); code(err) != ipc.ErrBadRequest {
		t.Errorf("removing the profile in use: %v", err)
	}
	if _, err := c.RemoveProfile(ctx, "home"); err != nil {
		t.Errorf("remove: %v", err)
	}

	plain, _ := ipctest.Serve(t, onlyBackend{b}, ipc.ServerOptions{})
	if _, err := ipc.NewClient(plain).SwitchProfile(ctx, "work"); code(err) != ipc.ErrNotFound {
		t.Errorf("a helper without profiles: %v", err)
	}
	if _, err := ipc.NewClient(plain).SuggestExitNode(ctx); code(err) != ipc.ErrNotFound {
		t.Errorf("a helper without suggestions: %v", err)
	}
}
