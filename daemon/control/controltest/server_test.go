package controltest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/control/controltest"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

func newClient(t *testing.T, srv *httptest.Server) *control.Client {
	t.Helper()
	c, err := control.New(control.Options{
		ServerURL:  srv.URL,
		MachineKey: key.NewMachine(),
		TLSConfig:  srv.Client().Transport.(*http.Transport).TLSClientConfig,
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// The real control client registers, polls a 1,000-peer map with zstd framing, gets a pushed
// delta, and reports its endpoints, all over ts2021 and HTTP/2.
func TestRealClient(t *testing.T) {
	cs := controltest.New(controltest.Options{AuthKey: "k", Logf: t.Logf})
	cs.SetMap(controltest.Map{Peers: controltest.SyntheticPeers(1000, 1)})
	srv := httptest.NewTLSServer(cs.Handler())
	defer srv.Close()
	c := newClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	node := key.NewNode()
	if resp, err := c.Register(ctx, &wire.RegisterRequest{NodeKey: node.Public(), Auth: &wire.AuthInfo{AuthKey: "wrong"}}); err != nil || resp.Error == "" {
		t.Fatalf("wrong key: %+v %v", resp, err)
	}
	if resp, err := c.Register(ctx, &wire.RegisterRequest{NodeKey: node.Public(), Auth: &wire.AuthInfo{AuthKey: "k"}}); err != nil || !resp.MachineAuthorized {
		t.Fatalf("register: %+v %v", resp, err)
	}

	got := make(chan *wire.MapResponse, 4)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	pollErr := make(chan error, 1)
	go func() {
		pollErr <- c.PollMap(pctx, &wire.MapRequest{NodeKey: node.Public()}, func(mr *wire.MapResponse) error {
			got <- mr
			return nil
		})
	}()
	first := <-got
	if first.Node == nil || first.Node.Key != node.Public() || len(first.Peers) != 1000 {
		t.Fatalf("first map: self %+v, %d peers", first.Node, len(first.Peers))
	}
	// A report the caller gives up on must not break the poll that shares the connection.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	c.SendUpdate(cctx, &wire.MapRequest{NodeKey: node.Public()})
	if err := c.SendUpdate(ctx, &wire.MapRequest{NodeKey: node.Public(), Endpoints: nil}); err != nil {
		t.Fatalf("report: %v", err)
	}
	if n := cs.Push(&wire.MapResponse{PeersRemoved: []wire.NodeID{first.Peers[0].ID}}); n != 1 {
		t.Fatalf("pushed to %d polls", n)
	}
	select {
	case d := <-got:
		if len(d.PeersRemoved) != 1 {
			t.Errorf("delta %+v", d)
		}
	case err := <-pollErr:
		t.Fatalf("the poll broke: %v", err)
	case <-ctx.Done():
		t.Fatal("no delta")
	}
	if u := cs.Updates(); len(u) == 0 || u[len(u)-1].NodeKey != node.Public() {
		t.Errorf("updates %+v", u)
	}
	pcancel()
	if err := <-pollErr; !errors.Is(err, context.Canceled) {
		t.Logf("poll ended: %v", err)
	}
}
