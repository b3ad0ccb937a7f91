package session_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/session/sessiontest"
	"github.com/skeinvpn/skein/daemon/wire"
)

// harness is a session against a fake control server, with every update recorded.
type harness struct {
	t   *testing.T
	srv *sessiontest.Server
	s   *session.Session

	mu      sync.Mutex
	updates []session.Update
	seen    int // updates before this one were looked at by an earlier waitFor
	changed chan struct{}
}

func newHarness(t *testing.T, authKeys ...string) *harness {
	h := &harness{t: t, srv: sessiontest.NewServer(authKeys...), changed: make(chan struct{}, 1)}
	h.s = session.New(session.Options{
		Dial: h.srv.Dial,
		MapRequest: func(node key.NodePublic) *wire.MapRequest {
			return &wire.MapRequest{NodeKey: node, Hostinfo: &wire.Hostinfo{Hostname: "box"}}
		},
		OnUpdate: func(u session.Update) {
			h.mu.Lock()
			h.updates = append(h.updates, u)
			h.mu.Unlock()
			select {
			case h.changed <- struct{}{}:
			default:
			}
		},
		Logf: t.Logf,
	})
	t.Cleanup(h.s.Close)
	return h
}

// waitFor waits for an update after the last one it returned that satisfies ok.
func (h *harness) waitFor(what string, ok func(session.Update) bool) session.Update {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		for ; h.seen < len(h.updates); h.seen++ {
			if ok(h.updates[h.seen]) {
				u := h.updates[h.seen]
				h.seen++
				h.mu.Unlock()
				return u
			}
		}
		h.mu.Unlock()
		select {
		case <-h.changed:
		case <-deadline:
			h.t.Fatalf("no update with %s; got %+v", what, h.all())
		}
	}
}

func (h *harness) all() []session.Update {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]session.Update(nil), h.updates...)
}

func (h *harness) poll() *sessiontest.Poll {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := h.srv.NextPoll(ctx)
	if err != nil {
		h.t.Fatalf("no map poll: %v", err)
	}
	return p
}

// login registers a new key with the pre-auth key "k" and returns it.
func (h *harness) login() key.NodePrivate {
	h.t.Helper()
	node := key.NewNode()
	res, err := h.s.Login(context.Background(), session.LoginRequest{Server: "https://c", NodeKey: node, AuthKey: "k"})
	if err != nil || res.AuthURL != "" || res.NodeKey != node || res.LoginName != "alice@example" {
		h.t.Fatalf("Login = %+v, %v", res, err)
	}
	return node
}

func peer(id int, ip string) *wire.Node {
	return &wire.Node{ID: wire.NodeID(id), Name: "p.tail.example.", Key: key.NewNode().Public(), DiscoKey: key.NewDisco().Public(),
		Addresses: []netip.Prefix{netip.MustParsePrefix(ip + "/32")}, HomeDERP: 1}
}

func TestRunDeliversImmutableMaps(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.s.Run("https://c", node)
	p := h.poll()
	if p.Req.NodeKey != node.Public() || p.Req.Hostinfo.Hostname != "box" {
		t.Errorf("map request %+v", p.Req)
	}
	p.Send(&wire.MapResponse{Node: p.Node.SelfNode(), Peers: []*wire.Node{peer(10, "100.64.0.10")}})
	u := h.waitFor("a first map", func(u session.Update) bool { return u.Phase == session.Running && u.NetmapChanged })
	if !u.Connected || u.Err != nil || u.Netmap.Len() != 1 {
		t.Fatalf("first map update: %+v", u)
	}
	first := u.Netmap
	p.Send(&wire.MapResponse{PeersChanged: []*wire.Node{peer(11, "100.64.0.11")}})
	u = h.waitFor("a delta", func(u session.Update) bool { return u.NetmapChanged && u.Netmap.Len() == 2 })
	if first.Len() != 1 {
		t.Errorf("the map handed out first changed afterwards: %d peers", first.Len())
	}
	// A keep-alive changes nothing and is not an update.
	n := len(h.all())
	p.Send(&wire.MapResponse{KeepAlive: true})
	p.Send(&wire.MapResponse{KeepAlive: true})
	if got := len(h.all()); got != n {
		t.Errorf("keep-alives gave %d updates", got-n)
	}
}

func TestPollBreaksAndReconnects(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.s.Run("https://c", node)
	p := h.poll()
	p.Send(&wire.MapResponse{Node: p.Node.SelfNode()})
	h.waitFor("running", func(u session.Update) bool { return u.Phase == session.Running && u.Connected })
	p.Break(errors.New("stream reset"))
	u := h.waitFor("disconnected", func(u session.Update) bool { return !u.Connected })
	if u.Phase != session.Running || u.Netmap == nil {
		t.Errorf("after a break: %+v (the tunnel keeps its map)", u)
	}
	p2 := h.poll()
	p2.Send(&wire.MapResponse{Node: p2.Node.SelfNode()})
	h.waitFor("reconnected", func(u session.Update) bool { return u.Connected })
}

func TestOutageReportsError(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.srv.SetDown(true)
	h.s.Run("https://c", node)
	u := h.waitFor("an error", func(u session.Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, sessiontest.ErrUnreachable) || u.Phase != session.Connecting {
		t.Errorf("during an outage: %+v", u)
	}
	h.srv.SetDown(false)
	p := h.poll()
	p.Send(&wire.MapResponse{Node: p.Node.SelfNode()})
	u = h.waitFor("running", func(u session.Update) bool { return u.Phase == session.Running })
	if u.Err != nil {
		t.Errorf("error not cleared once a map arrived: %v", u.Err)
	}
}

func TestExpiredOnRefresh(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.srv.Expire(node.Public())
	h.s.Run("https://c", node)
	u := h.waitFor("expiry", func(u session.Update) bool { return u.Expired })
	var ee *session.ExpiredError
	if u.Phase != session.Idle || !errors.As(u.Err, &ee) {
		t.Errorf("expired: %+v", u)
	}
}

func TestExpiredInMap(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.s.Run("https://c", node)
	p := h.poll()
	self := p.Node.SelfNode()
	now := time.Now()
	self.KeyExpiry = now.Add(-time.Minute)
	p.Send(&wire.MapResponse{Node: self, ControlTime: &now})
	u := h.waitFor("expiry", func(u session.Update) bool { return u.Expired })
	if u.Phase != session.Idle {
		t.Errorf("expired: %+v", u)
	}
}

func TestRemovedNodeNeedsLogin(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.s.Run("https://c", node)
	p := h.poll()
	p.Send(&wire.MapResponse{Node: p.Node.SelfNode()})
	h.waitFor("running", func(u session.Update) bool { return u.Phase == session.Running })
	h.srv.Remove(node.Public())
	p.Break(&sessiontest.HTTPError{Status: 401})
	h.waitFor("expiry after the node was removed", func(u session.Update) bool { return u.Expired })
}

func TestLoginErrors(t *testing.T) {
	h := newHarness(t, "k")
	_, err := h.s.Login(context.Background(), session.LoginRequest{Server: "https://c", NodeKey: key.NewNode(), AuthKey: "wrong"})
	var le *session.LoginError
	if !errors.As(err, &le) {
		t.Errorf("wrong auth key: %v", err)
	}
	h.srv.SetDown(true)
	_, err = h.s.Login(context.Background(), session.LoginRequest{Server: "https://c", NodeKey: key.NewNode(), AuthKey: "k"})
	if !errors.Is(err, sessiontest.ErrUnreachable) {
		t.Errorf("server down: %v", err)
	}
	if cur := h.s.Current(); cur.Phase != session.Idle || cur.Err == nil {
		t.Errorf("after a failed login: %+v", cur)
	}
}

func TestInteractiveLogin(t *testing.T) {
	h := newHarness(t)
	node := key.NewNode()
	res, err := h.s.Login(context.Background(), session.LoginRequest{Server: "https://c", NodeKey: node})
	if err != nil || res.AuthURL == "" {
		t.Fatalf("interactive login: %+v, %v", res, err)
	}
	if cur := h.s.Current(); cur.Phase != session.LoginWait || cur.AuthURL != res.AuthURL {
		t.Errorf("while waiting: %+v", cur)
	}
	if err := h.srv.Approve(res.AuthURL); err != nil {
		t.Fatal(err)
	}
	u := h.waitFor("the approved login", func(u session.Update) bool { return u.Login != nil })
	if u.Login.NodeKey != node || u.Login.LoginName != "alice@example" || u.Phase != session.Idle {
		t.Errorf("login done: %+v", u)
	}
	if h.srv.Node(node.Public()) == nil {
		t.Error("node not registered")
	}
}

// Updates of an activity that was stopped never reach the owner.
func TestStopDropsStaleUpdates(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	gen := h.s.Run("https://c", node)
	p := h.poll()
	stopGen, done := h.s.Stop()
	if stopGen <= gen {
		t.Errorf("Stop gen %d not after Run gen %d", stopGen, gen)
	}
	<-done
	n := len(h.all())
	p.Send(&wire.MapResponse{Node: p.Node.SelfNode()}) // fails: the poll was left
	time.Sleep(50 * time.Millisecond)
	for _, u := range h.all()[n:] {
		t.Errorf("update after Stop: %+v", u)
	}
	for _, u := range h.all() {
		if u.Gen < gen {
			t.Errorf("update of generation %d before the run (%d)", u.Gen, gen)
		}
	}
}

func TestReportGoesToControl(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.s.Run("https://c", node)
	p := h.poll()
	p.Send(&wire.MapResponse{Node: p.Node.SelfNode()})
	h.waitFor("running", func(u session.Update) bool { return u.Phase == session.Running })
	h.s.ReportChanged()
	deadline := time.Now().Add(5 * time.Second)
	for len(h.srv.Updates()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the report never reached control")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if u := h.srv.Updates()[0]; u.NodeKey != node.Public() || u.Hostinfo.Hostname != "box" {
		t.Errorf("report %+v", u)
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t, "k")
	node := h.login()
	h.s.Run("https://c", node)
	h.poll()
	if _, err := h.s.Logout(context.Background(), "https://c", node, nil); err != nil {
		t.Fatal(err)
	}
	if h.srv.Node(node.Public()) != nil {
		t.Error("node still registered after logout")
	}
	regs := h.srv.Registers()
	if last := regs[len(regs)-1]; last.Expiry.IsZero() || last.Expiry.After(time.Now()) {
		t.Errorf("logout request %+v", last)
	}
}
