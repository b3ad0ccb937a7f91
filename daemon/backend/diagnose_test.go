package backend

import (
	"context"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

// Why reports the path, the round of pings and the causes; an offline peer is named so
// without pinging; a logged-out helper or an unknown peer is an error.
func TestWhy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.b.Why(ctx, "alpha"); err == nil {
		t.Error("why while logged out")
	}
	e.up(peerNode(10, "alpha", 1))
	r, err := e.b.Why(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if r.Peer != "alpha" || r.Path != "relay" || r.Relay != "lab" || len(r.Pings) != 2 || r.Pings[1].To != "DERP(lab)" {
		t.Errorf("why: %+v", r)
	}
	if len(r.Causes) == 0 || r.Causes[0].Code != ipc.CauseNoPong || r.Causes[0].Fix == "" {
		t.Errorf("causes: %+v", r.Causes)
	}
	if _, err := e.b.Why(ctx, "nobody"); err == nil {
		t.Error("why for an unknown peer")
	}
}
