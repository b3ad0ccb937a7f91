package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/session/sessiontest"
	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// upAs logs in with req while answering the first map poll with peers.
func (e *env) upAs(req ipc.UpRequest, peers ...*wire.Node) {
	e.t.Helper()
	ch := make(chan error, 1)
	go func() {
		r, err := e.b.Up(context.Background(), req)
		if err == nil && r.State != ipc.StateRunning {
			err = fmt.Errorf("state %s", r.State)
		}
		ch <- err
	}()
	e.serve(peers...)
	if err := <-ch; err != nil {
		e.t.Fatalf("Up(%+v): %v", req, err)
	}
}

// switchTo switches profiles while answering the new session's first map poll.
func (e *env) switchTo(name string, peers ...*wire.Node) {
	e.t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- e.b.SwitchProfile(context.Background(), name) }()
	e.serve(peers...)
	if err := <-ch; err != nil {
		e.t.Fatalf("SwitchProfile(%q): %v", name, err)
	}
	e.stateIs(ipc.StateRunning)
}

func peerNames(st ipc.Status) []string {
	var out []string
	for _, p := range st.Peers {
		out = append(out, p.HostName)
	}
	slices.Sort(out)
	return out
}

func (e *env) profiles() state.Profiles {
	e.t.Helper()
	s, err := state.Open(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	ps, err := s.LoadProfiles()
	if err != nil {
		e.t.Fatal(err)
	}
	return ps
}

// Two logins side by side: a new profile's login leaves the first one stored; switching takes
// the old tunnel down before the other profile's comes up; each time the right peers and
// node key; removal and bad input.
func TestProfiles(t *testing.T) {
	e := newEnv(t)
	e.srv.AddAuthKey("kb", 2, "bob@example")
	alpha, bravo := peerNode(10, "alpha", 1), peerNode(11, "bravo", 2)
	e.up(alpha)
	if ps := e.profiles(); len(ps.Profiles) != 1 {
		t.Fatalf("the first login made %d profiles (the empty one must be reused)", len(ps.Profiles))
	}
	aliceKey := e.stored().NodeKey
	e.upAs(ipc.UpRequest{LoginServer: "https://control.example", AuthKey: "kb", NewProfile: true, Nickname: "bob"}, bravo)
	st := e.b.Status()
	if st.Profile == nil || st.Profile.Name != "bob" || st.Profile.LoginName != "bob@example" || len(st.Profiles) != 2 {
		t.Fatalf("profiles after the second login: %+v / %+v", st.Profile, st.Profiles)
	}
	if got := peerNames(st); !slices.Equal(got, []string{"bravo"}) {
		t.Errorf("peers of bob's profile %v", got)
	}
	bobKey := e.stored().NodeKey
	if bobKey == aliceKey {
		t.Fatal("the new profile reuses the old node key")
	}
	ps := e.profiles()
	if len(ps.Profiles) != 2 || ps.DataOf(ps.Profiles[0].ID).NodeKey != aliceKey {
		t.Fatalf("stored profiles %+v", ps)
	}

	for i := range 5 {
		name, peers, want := "alice@example", []*wire.Node{alpha}, aliceKey
		if i%2 == 1 {
			name, peers, want = "bob", []*wire.Node{bravo}, bobKey
		}
		before := len(e.eventLog())
		e.switchTo(name, peers...)
		st := e.b.Status()
		if st.Self == nil || st.Self.NodeKey != want.Public().String() || len(st.Peers) != 1 || st.Peers[0].HostName != peers[0].Hostinfo.Hostname {
			t.Fatalf("switch %d to %s: self %v peers %v", i, name, st.Self, peerNames(st))
		}
		if e.dp().opts.NodeKey != want {
			t.Fatalf("switch %d: the tunnel runs another node key", i)
		}
		// The old tunnel closed before the new one started, and only then.
		ev := e.eventLog()[before:]
		if len(ev) != 2 || !strings.HasPrefix(ev[0], "close ") || ev[1] != "start "+want.Public().String() {
			t.Fatalf("switch %d: data plane events %v", i, ev)
		}
		if cur := e.profiles().CurrentData(); cur.NodeKey != want {
			t.Fatalf("switch %d: stored current profile is not %s", i, name)
		}
	}
	// Now on alice's profile (the fifth switch). Switching to it again does nothing.
	n := len(e.eventLog())
	if err := e.b.SwitchProfile(context.Background(), "ALICE@example"); err != nil || len(e.eventLog()) != n {
		t.Errorf("switch to the current profile: %v, events %v", err, e.eventLog()[n:])
	}

	// Bad input: clear errors, nothing stored changes.
	stored := e.profiles()
	for _, req := range []ipc.UpRequest{
		{LoginServer: "https://control.example", AuthKey: "kb", Nickname: " spaced"},
		{LoginServer: "https://control.example", AuthKey: "kb", Nickname: "bob"}, // taken
		{LoginServer: "https://control.example", AuthKey: "kb", Nickname: "x\x00y"},
	} {
		if _, err := e.b.Up(context.Background(), req); err == nil {
			t.Errorf("Up(%+v) accepted", req)
		}
	}
	var ie *ipc.Error
	if err := e.b.SwitchProfile(context.Background(), "nobody"); !errors.As(err, &ie) || ie.Code != ipc.ErrNotFound {
		t.Errorf("switch to nobody: %v", err)
	}
	if err := e.b.RemoveProfile(context.Background(), "alice@example"); !errors.As(err, &ie) || ie.Code != ipc.ErrBadRequest {
		t.Errorf("removing the current profile: %v", err)
	}
	if got := e.profiles(); fmt.Sprint(got) != fmt.Sprint(stored) {
		t.Errorf("rejected requests changed the stored profiles:\n%+v\n%+v", stored, got)
	}
	// A new profile whose login fails is not kept, and the old session resumes.
	if _, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://control.example", AuthKey: "wrong", NewProfile: true}); err == nil {
		t.Fatal("a login with a wrong key succeeded")
	}
	e.serve(alpha)
	e.stateIs(ipc.StateRunning)
	if got := e.profiles(); len(got.Profiles) != 2 || got.CurrentData().NodeKey != aliceKey {
		t.Errorf("after a failed new login: %d profiles, current key changed %v", len(got.Profiles), got.CurrentData().NodeKey != aliceKey)
	}

	if err := e.b.RemoveProfile(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	if st := e.b.Status(); len(st.Profiles) != 1 || !st.Profiles[0].Current {
		t.Errorf("profiles after removal %+v", st.Profiles)
	}
	if err := e.b.RemoveProfile(context.Background(), "alice@example"); !errors.As(err, &ie) || ie.Fix != "skein logout" {
		t.Errorf("removing the only profile: %v", err)
	}
	// A restart comes back on the current profile.
	e.b.Close()
	e.start()
	e.serve(alpha)
	e.stateIs(ipc.StateRunning)
	if e.dp().opts.NodeKey != aliceKey {
		t.Error("restart did not resume the current profile")
	}
}

// Switching to a profile that is logged out or down leaves the tunnel down and says so.
func TestSwitchToStoppedProfile(t *testing.T) {
	e := newEnv(t)
	e.srv.AddAuthKey("kb", 2, "bob@example")
	e.up(peerNode(10, "alpha", 1))
	e.upAs(ipc.UpRequest{LoginServer: "https://control.example", AuthKey: "kb", NewProfile: true}, peerNode(11, "bravo", 2))
	if err := e.b.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.switchTo("alice@example", peerNode(10, "alpha", 1))
	if err := e.b.SwitchProfile(context.Background(), "bob@example"); err != nil {
		t.Fatal(err)
	}
	if st := e.b.Status(); st.State != ipc.StateStopped || st.Profile.LoginName != "bob@example" {
		t.Errorf("after switching to a stopped profile: %s %+v", st.State, st.Profile)
	}
	if !e.dp().isClosed() {
		t.Error("a tunnel runs for a profile that is down")
	}
	// Its node key expired meanwhile: the switch succeeds, the state asks for a login.
	e.srv.Expire(e.stored().NodeKey.Public())
	e.switchTo("alice@example", peerNode(10, "alpha", 1))
	if _, err := e.b.Up(context.Background(), ipc.UpRequest{}); err != nil {
		t.Fatal(err)
	}
}

// A state file from before profiles is migrated when skeind starts: same node, same login.
func TestStartMigratesOldState(t *testing.T) {
	e := &env{t: t, srv: sessiontest.NewServer("k"), dir: t.TempDir()}
	mk, nk := key.NewMachine(), key.NewNode()
	e.srv.AddNode(nk.Public(), 1, "alice@example")
	mkt, _ := mk.MarshalText()
	nkt, _ := nk.MarshalText()
	old := fmt.Sprintf(`{"MachineKey": %q, "NodeKey": %q, "LoggedIn": true, "LoginName": "alice@example",
		"Prefs": {"loginServer": "https://control.example", "wantRunning": true, "operator": "alice"}}`, mkt, nkt)
	if err := os.WriteFile(filepath.Join(e.dir, "skeind.state"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.serve()
	e.stateIs(ipc.StateRunning)
	st := e.b.Status()
	if st.Self == nil || st.Self.NodeKey != nk.Public().String() || st.Profile == nil || st.Profile.LoginName != "alice@example" {
		t.Fatalf("after migration: %+v %+v", st.Self, st.Profile)
	}
	if e.b.Prefs().Operator != "alice" {
		t.Error("operator lost in the migration")
	}
	if ps := e.profiles(); ps.Version != state.Version || ps.MachineKey != mk {
		t.Errorf("stored after migration: %+v", ps)
	}
}

// Key expiry: a warning in the health list from 7 days before, with the time and the fix,
// and an event when a threshold passes (no polling needed).
func TestKeyExpiryWarning(t *testing.T) {
	oldWarn, oldUrgent := keyWarnBefore, keyUrgentBefore
	t.Cleanup(func() { keyWarnBefore, keyUrgentBefore = oldWarn, oldUrgent }) // after the backend closes
	e := newEnv(t)
	e.up()
	self := e.poll.Node.SelfNode()
	now := time.Now()
	self.KeyExpiry = now.Add(3 * 24 * time.Hour)
	e.poll.Send(&wire.MapResponse{Node: self, ControlTime: &now})
	eventually(t, "warning", func() error {
		for _, h := range e.b.Status().Health {
			if h.Code == ipc.IssueKeyExpiring && h.Fix == "skein up --force-reauth" && strings.Contains(h.Message, "3 days") && h.Data["expiry"] != "" {
				return nil
			}
		}
		return fmt.Errorf("health %+v", e.b.Status().Health)
	})
	if st := e.b.Status(); st.Self.KeyExpiry == nil || st.State != ipc.StateRunning {
		t.Errorf("self key expiry %v, state %s", st.Self.KeyExpiry, st.State)
	}

	// The warning starts by itself when the threshold passes.
	keyWarnBefore, keyUrgentBefore = 2*time.Second, time.Second
	ch, cancel := e.b.Watch()
	defer cancel()
	<-ch
	now = time.Now()
	self.KeyExpiry = now.Add(2500 * time.Millisecond)
	e.poll.Send(&wire.MapResponse{Node: self, ControlTime: &now})
	warned := func(st *ipc.Status) bool {
		for _, h := range st.Health {
			if h.Code == ipc.IssueKeyExpiring {
				return true
			}
		}
		return false
	}
	if warned(ptrTo(e.b.Status())) {
		t.Fatal("warned before the threshold")
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Status != nil && warned(ev.Status) {
				if d := time.Since(now); d < 400*time.Millisecond {
					t.Errorf("warned %v after the map, before the threshold", d)
				}
				return
			}
		case <-deadline:
			t.Fatal("no event with the warning after the threshold passed")
		}
	}
}

// exitPeer is a peer that offers to be an exit node.
func exitPeer(id int, name string) *wire.Node {
	n := peerNode(id, name, 1)
	n.AllowedIPs = append(n.Addresses, mustPrefix("0.0.0.0/0"), mustPrefix("::/0"))
	return n
}

func (e *env) setOnline(n *wire.Node, online bool) {
	e.t.Helper()
	c := *n
	c.Online = ptrTo(online)
	e.poll.Send(&wire.MapResponse{PeersChanged: []*wire.Node{&c}})
}

// auto:any follows the best exit node: it keeps its pick while usable, moves when the pick goes
// offline or stops answering, and drops internet traffic (never clear) while there is none.
func TestAutoExitNode(t *testing.T) {
	oldEvery, oldAll := probeEvery, probeAllEvery
	t.Cleanup(func() { probeEvery, probeAllEvery = oldEvery, oldAll }) // after the backend closes
	probeEvery, probeAllEvery = 20*time.Millisecond, time.Hour
	e := newEnv(t)
	xa, xb := exitPeer(20, "exit-a"), exitPeer(21, "exit-b")
	e.up(peerNode(10, "alpha", 1), xa, xb)
	ctx := context.Background()
	p, err := e.b.SetPrefs(ctx, ipc.PrefsPatch{ExitNode: ptrTo("auto:any")})
	if err != nil || p.AutoExitNode != "any" || p.ExitNodeID != "s20" || p.LastExitNodeID != ipc.AutoExitNodeAny {
		t.Fatalf("auto:any: %+v %v", p, err)
	}
	if a := e.dp().lastApply(); a.prefs.ExitNodeID != "s20" {
		t.Errorf("data plane exit node %q", a.prefs.ExitNodeID)
	}
	st := e.b.Status()
	if st.ExitNode == nil || !st.ExitNode.Auto || !st.ExitNode.Online || st.SuggestedExitNode == nil {
		t.Errorf("status: %+v suggestion %+v", st.ExitNode, st.SuggestedExitNode)
	}
	applied := func(id string) func() error {
		return func() error {
			if got := e.dp().lastApply().prefs.ExitNodeID; got != id {
				return fmt.Errorf("data plane exit node %q, want %q", got, id)
			}
			if got := e.stored().Prefs.ExitNodeID; got != strings.TrimPrefix(id, autoExitPending) {
				return fmt.Errorf("stored pick %q", got)
			}
			return nil
		}
	}
	// The pick goes offline: the other one at once.
	e.setOnline(xa, false)
	eventually(t, "moved to exit-b", applied("s21"))
	// Back online: the pick stays where it is (no hopping).
	e.setOnline(xa, true)
	time.Sleep(100 * time.Millisecond)
	eventually(t, "stays on exit-b", applied("s21"))
	// Both gone: no pick, traffic routed into the tunnel and dropped, a health issue.
	e.setOnline(xa, false)
	e.setOnline(xb, false)
	eventually(t, "no exit node", applied(autoExitPending))
	st = e.b.Status()
	if st.ExitNode == nil || st.ExitNode.Online || len(st.Health) == 0 || st.Health[0].Code != ipc.IssueNoExitNode {
		t.Errorf("status without an exit node: %+v %+v", st.ExitNode, st.Health)
	}
	if _, err := e.b.SuggestExitNode(ctx); err == nil {
		t.Error("a suggestion with no exit node online")
	}
	// One is back: picked.
	e.setOnline(xb, true)
	eventually(t, "exit-b back", applied("s21"))

	// The pick stops answering pings (control still says online): the other one.
	e.setOnline(xa, true)
	dp := e.dp()
	dp.mu.Lock()
	dp.pingFail = map[key.NodePublic]bool{xb.Key: true}
	dp.mu.Unlock()
	eventually(t, "left the silent node", applied("s20"))

	// Off and on again with one click: the automatic choice comes back.
	if p, err := e.b.SetPrefs(ctx, ipc.PrefsPatch{UseExitNode: ptrTo(false)}); err != nil || p.ExitNodeID != "" || p.AutoExitNode != "" {
		t.Fatalf("toggle off: %+v %v", p, err)
	}
	if a := e.dp().lastApply(); a.prefs.ExitNodeID != "" {
		t.Errorf("still an exit node in the data plane: %q", a.prefs.ExitNodeID)
	}
	if p, err := e.b.SetPrefs(ctx, ipc.PrefsPatch{UseExitNode: ptrTo(true)}); err != nil || p.AutoExitNode != "any" || p.ExitNodeID != "s20" {
		t.Fatalf("toggle on: %+v %v", p, err)
	}
}

// The suggestion is the lowest measured latency; with no measurement, by name.
func TestSuggestExitNode(t *testing.T) {
	e := newEnv(t)
	xa, xb := exitPeer(20, "exit-a"), exitPeer(21, "exit-b")
	e.up(xa, xb)
	if s := e.b.Status().SuggestedExitNode; s == nil || s.Name != "exit-a" || s.LatencyMs != 0 {
		t.Errorf("unmeasured suggestion %+v", s)
	}
	dp := e.dp()
	dp.mu.Lock()
	dp.pingRTT = map[key.NodePublic]time.Duration{xa.Key: 40 * time.Millisecond, xb.Key: 7 * time.Millisecond}
	dp.mu.Unlock()
	s, err := e.b.SuggestExitNode(context.Background())
	if err != nil || s.ID != "s21" || s.LatencyMs != 7 || s.IP == "" {
		t.Errorf("suggestion %+v %v", s, err)
	}
}

// Shields up: the data plane gets it, and so does control (Hostinfo).
func TestShieldsUp(t *testing.T) {
	e := newEnv(t)
	e.up(peerNode(10, "alpha", 1))
	if _, err := e.b.SetPrefs(context.Background(), ipc.PrefsPatch{ShieldsUp: ptrTo(true)}); err != nil {
		t.Fatal(err)
	}
	if a := e.dp().lastApply(); !a.prefs.ShieldsUp {
		t.Error("data plane without shields up")
	}
	eventually(t, "reported", func() error {
		for _, u := range e.srv.Updates() {
			if u.Hostinfo != nil && u.Hostinfo.ShieldsUp {
				return nil
			}
		}
		return errors.New("control not told")
	})
}

func TestRoughDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3*24*time.Hour - time.Millisecond: "3 days",
		48 * time.Hour:                    "2 days",
		24 * time.Hour:                    "24 hours",
		3 * time.Hour:                     "3 hours",
		90 * time.Minute:                  "90 minutes",
		61 * time.Second:                  "1 minute",
		59 * time.Second:                  "less than a minute",
	} {
		if got := roughDuration(d); got != want {
			t.Errorf("roughDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
