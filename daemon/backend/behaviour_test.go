package backend

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// A login with a pre-auth key brings the tunnel up with the tailnet's map, stores the login,
// opens the peer API and tells control about it.
func TestUpWithAuthKey(t *testing.T) {
	e := newEnv(t)
	if st := e.b.Status(); st.State != ipc.StateNeedsLogin {
		t.Fatalf("fresh state %s", st.State)
	}
	alpha := peerNode(10, "alpha", 1)
	e.up(alpha)
	st := e.b.Status()
	if st.Self == nil || len(st.Peers) != 1 || st.Peers[0].HostName != "alpha" || st.Self.Relay != "lab" {
		t.Fatalf("status %+v", st)
	}
	if st.DNS == nil || !st.DNS.MagicDNS || st.Filter == nil || st.Filter.Rules != 2 {
		t.Errorf("data plane status missing: dns %+v filter %+v", st.DNS, st.Filter)
	}
	d := e.stored()
	if !d.LoggedIn || d.Prefs.LoginServer != "https://control.example" || !d.Prefs.WantRunning || d.LoginName != "alice@example" {
		t.Errorf("stored %+v", d)
	}
	dp := e.dp()
	if a := dp.lastApply(); a.nm == nil || a.nm.Len() != 1 || !a.prefs.AcceptDNS {
		t.Errorf("data plane got %+v", a)
	}
	// The peer API listens and control hears of it (Hostinfo.Services) with our network facts.
	eventually(t, "peer API reported", func() error {
		for _, u := range e.srv.Updates() {
			if len(u.Hostinfo.Services) > 0 && u.Hostinfo.NetInfo != nil && u.Hostinfo.NetInfo.PreferredDERP == 1 && !u.DiscoKey.IsZero() {
				return nil
			}
		}
		return errors.New("no report with the peer API, home region and disco key")
	})
}

func TestUpErrorsLeaveStateAlone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		req  ipc.UpRequest
		code ipc.ErrorCode
	}{
		{ipc.UpRequest{}, ipc.ErrBadRequest}, // no server configured
		{ipc.UpRequest{LoginServer: "ftp://x"}, ipc.ErrBadRequest},
		{ipc.UpRequest{LoginServer: "https://c.example", Hostname: "-bad"}, ipc.ErrBadRequest},
		{ipc.UpRequest{LoginServer: "https://c.example", AuthKey: "wrong"}, ipc.ErrLoginFailed},
	}
	for _, c := range cases {
		_, err := e.b.Up(ctx, c.req)
		var ie *ipc.Error
		if !errors.As(err, &ie) || ie.Code != c.code {
			t.Errorf("Up(%+v) = %v, want %s", c.req, err, c.code)
		}
	}
	if d := e.stored(); d.LoggedIn || d.Prefs.LoginServer != "" {
		t.Errorf("a failed login changed the stored state: %+v", d)
	}
	e.srv.SetDown(true)
	_, err := e.b.Up(ctx, ipc.UpRequest{LoginServer: "https://c.example", AuthKey: "k"})
	var ie *ipc.Error
	if !errors.As(err, &ie) || ie.Code != ipc.ErrServerUnreachable {
		t.Errorf("server down: %v", err)
	}
}

// A failed re-login keeps the old login running.
func TestFailedReloginKeepsOldSession(t *testing.T) {
	e := newEnv(t)
	e.up(peerNode(10, "alpha", 1))
	before := e.stored().NodeKey
	_, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://control.example", AuthKey: "wrong", ForceReauth: true})
	if err == nil {
		t.Fatal("forced re-login with a wrong key succeeded")
	}
	e.serve(peerNode(10, "alpha", 1))
	e.stateIs(ipc.StateRunning)
	if e.stored().NodeKey != before {
		t.Error("node key changed by a failed login")
	}
}

func TestInteractiveLogin(t *testing.T) {
	e := newEnv(t)
	r, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://control.example"})
	if err != nil || r.State != ipc.StateNeedsLogin || r.AuthURL == "" {
		t.Fatalf("Up = %+v, %v", r, err)
	}
	st := e.b.Status()
	if st.State != ipc.StateNeedsLogin || st.AuthURL != r.AuthURL {
		t.Fatalf("status while waiting: %s %q", st.State, st.AuthURL)
	}
	if err := e.srv.Approve(r.AuthURL); err != nil {
		t.Fatal(err)
	}
	e.serve()
	e.stateIs(ipc.StateRunning)
	if d := e.stored(); !d.LoggedIn || d.Prefs.LoginServer != "https://control.example" {
		t.Errorf("stored %+v", d)
	}
	if st := e.b.Status(); st.AuthURL != "" {
		t.Errorf("AuthURL still shown: %q", st.AuthURL)
	}
}

// Down takes the tunnel away and is remembered; Up brings the same node back without a login.
func TestDownAndUp(t *testing.T) {
	e := newEnv(t)
	e.up()
	key := e.stored().NodeKey
	regs := len(e.srv.Registers())
	if err := e.b.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.b.Status(); st.State != ipc.StateStopped || len(st.Peers) != 0 {
		t.Errorf("after down: %s, %d peers", st.State, len(st.Peers))
	}
	if !e.dp().isClosed() {
		t.Error("tunnel still up after Down returned")
	}
	if e.stored().Prefs.WantRunning {
		t.Error("WantRunning still stored")
	}
	go e.serve()
	r, err := e.b.Up(context.Background(), ipc.UpRequest{})
	if err != nil || r.State != ipc.StateRunning {
		t.Fatalf("Up again: %+v %v", r, err)
	}
	if e.stored().NodeKey != key {
		t.Error("Up after Down logged in again")
	}
	for _, r := range e.srv.Registers()[regs:] {
		if r.Auth != nil {
			t.Errorf("Up after Down sent a login: %+v", r)
		}
	}
}

func TestLogout(t *testing.T) {
	e := newEnv(t)
	e.up()
	node := e.stored().NodeKey.Public()
	if err := e.b.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.b.Status(); st.State != ipc.StateNeedsLogin || st.Self != nil {
		t.Errorf("after logout: %+v", st)
	}
	if d := e.stored(); d.LoggedIn || !d.NodeKey.IsZero() {
		t.Errorf("stored after logout: %+v", d)
	}
	if e.srv.Node(node) != nil {
		t.Error("control still knows the node")
	}
	if !e.dp().isClosed() {
		t.Error("tunnel still up")
	}
	// Logout while the server is down: done locally, said plainly.
	e2 := newEnv(t)
	e2.up()
	e2.srv.SetDown(true)
	err := e2.b.Logout(context.Background())
	var ie *ipc.Error
	if !errors.As(err, &ie) || ie.Code != ipc.ErrServerUnreachable || !strings.Contains(ie.Message, "logged out locally") {
		t.Errorf("logout with control down: %v", err)
	}
	if e2.stored().LoggedIn {
		t.Error("still logged in locally")
	}
}

// A key that expires (control's map says so) stops the tunnel and asks for a login.
func TestKeyExpiry(t *testing.T) {
	e := newEnv(t)
	e.up()
	self := e.poll.Node.SelfNode()
	now := time.Now()
	self.KeyExpiry = now.Add(-time.Second)
	e.poll.Send(&wire.MapResponse{Node: self, ControlTime: &now})
	e.stateIs(ipc.StateNeedsLogin)
	st := e.b.Status()
	if len(st.Health) == 0 || !strings.Contains(st.Health[0].Message, "expired") {
		t.Errorf("health %+v", st.Health)
	}
	if e.stored().LoggedIn {
		t.Error("expired login still stored")
	}
	eventually(t, "tunnel down", func() error {
		if !e.dp().isClosed() {
			return errors.New("tunnel still up")
		}
		return nil
	})
	// Control refusing the key at the next start also asks for a login.
	e2 := newEnv(t)
	e2.up()
	e2.srv.Expire(e2.stored().NodeKey.Public())
	e2.b.Close()
	e2.start()
	e2.stateIs(ipc.StateNeedsLogin)
}

// After a restart, a stored login resumes without asking control for a new one.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	e.up(peerNode(10, "alpha", 1))
	e.b.Close()
	regs := len(e.srv.Registers())
	e.start()
	e.serve(peerNode(10, "alpha", 1))
	e.stateIs(ipc.StateRunning)
	for _, r := range e.srv.Registers()[regs:] {
		if r.Auth != nil || !r.OldNodeKey.IsZero() {
			t.Errorf("restart sent a login: %+v", r)
		}
	}
}

// A control outage leaves the tunnel as it is and says control is unreachable.
func TestControlOutageKeepsTunnel(t *testing.T) {
	e := newEnv(t)
	e.up(peerNode(10, "alpha", 1))
	dp := e.dp()
	e.srv.SetDown(true)
	eventually(t, "control disconnected", func() error {
		if st := e.b.Status(); st.ControlConnected {
			return errors.New("still connected")
		}
		return nil
	})
	st := e.b.Status()
	if st.State != ipc.StateRunning || len(st.Peers) != 1 || dp.isClosed() {
		t.Errorf("during the outage: %s, %d peers, tunnel closed %v", st.State, len(st.Peers), dp.isClosed())
	}
	e.srv.SetDown(false)
	e.serve(peerNode(10, "alpha", 1))
	eventually(t, "reconnected", func() error {
		if !e.b.Status().ControlConnected {
			return errors.New("not reconnected")
		}
		return nil
	})
	if e.dp() != dp {
		t.Error("the tunnel was restarted by a control outage")
	}
}

// Prefs are validated in one place, stored, and applied before SetPrefs returns.
func TestSetPrefs(t *testing.T) {
	e := newEnv(t)
	exit := peerNode(20, "exit", 1)
	exit.AllowedIPs = append(exit.Addresses, mustPrefix("0.0.0.0/0"), mustPrefix("::/0"))
	e.up(peerNode(10, "alpha", 1), exit)
	ctx := context.Background()

	p, err := e.b.SetPrefs(ctx, ipc.PrefsPatch{ExitNode: ptrTo("exit")})
	if err != nil || p.ExitNodeID != "s20" {
		t.Fatalf("exit node: %+v %v", p, err)
	}
	if a := e.dp().lastApply(); a.prefs.ExitNodeID != "s20" {
		t.Errorf("data plane prefs after SetPrefs returned: %+v", a.prefs)
	}
	if st := e.b.Status(); st.ExitNode == nil || st.ExitNode.Name != "exit" || !st.ExitNode.Online {
		t.Errorf("exit node status %+v", st.ExitNode)
	}
	bad := []ipc.PrefsPatch{
		{ExitNode: ptrTo("alpha")},     // does not offer exit
		{ExitNode: ptrTo("nobody")},    // unknown
		{Operator: ptrTo("mallory")},   // unknown user
		{Hostname: ptrTo("no spaces")}, // invalid
	}
	for _, patch := range bad {
		if _, err := e.b.SetPrefs(ctx, patch); err == nil {
			t.Errorf("SetPrefs(%+v) accepted", patch)
		}
	}
	if d := e.stored(); d.Prefs.ExitNodeID != "s20" || d.Prefs.Operator != "" || d.Prefs.Hostname != "" {
		t.Errorf("a rejected patch changed the stored prefs: %+v", d.Prefs)
	}
	if _, err := e.b.SetPrefs(ctx, ipc.PrefsPatch{Operator: ptrTo("alice")}); err != nil {
		t.Errorf("known operator: %v", err)
	}
	// A new host name reaches control.
	if _, err := e.b.SetPrefs(ctx, ipc.PrefsPatch{Hostname: ptrTo("renamed")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new host name reported", func() error {
		for _, u := range e.srv.Updates() {
			if u.Hostinfo.Hostname == "renamed" {
				return nil
			}
		}
		return errors.New("not reported")
	})
	if e.b.Prefs().Hostname != "renamed" {
		t.Error("Prefs() does not show the new name")
	}
}

// Status answers at once while the data plane is stuck in a slow apply.
func TestStatusWhileApplyIsSlow(t *testing.T) {
	e := newEnv(t)
	e.up(peerNode(10, "alpha", 1))
	dp := e.dp()
	dp.mu.Lock()
	dp.slow = 2 * time.Second
	dp.mu.Unlock()
	e.poll.Send(&wire.MapResponse{PeersChanged: []*wire.Node{peerNode(11, "bravo", 1)}})
	time.Sleep(100 * time.Millisecond) // the apply is under way
	var worst time.Duration
	for range 10 {
		start := time.Now()
		st := e.b.Status()
		if d := time.Since(start); d > worst {
			worst = d
		}
		if st.State != ipc.StateRunning {
			t.Errorf("state %s during the apply", st.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("status during a 2 s apply: worst %v", worst)
	if worst > 100*time.Millisecond {
		t.Errorf("status took %v while the data plane applied", worst)
	}
	// The map is already the new one; the tunnel gets it when the apply ends.
	if n := len(e.b.Status().Peers); n != 2 {
		t.Errorf("%d peers in status, want 2", n)
	}
}

func TestWatchFollowsState(t *testing.T) {
	e := newEnv(t)
	ch, cancel := e.b.Watch()
	defer cancel()
	first := <-ch
	if first.Status == nil || first.Prefs == nil || first.Status.State != ipc.StateNeedsLogin {
		t.Fatalf("first event %+v", first)
	}
	e.up()
	seen := map[ipc.State]bool{}
	timeout := time.After(5 * time.Second)
	for !seen[ipc.StateRunning] {
		select {
		case ev := <-ch:
			if ev.Status != nil {
				seen[ev.Status.State] = true
			}
		case <-timeout:
			t.Fatalf("no Running event; saw %v", seen)
		}
	}
	e.b.Close()
	for range ch {
	}
}

func TestDiagnostics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.b.Ping(ctx, "alpha"); err == nil {
		t.Error("ping while logged out")
	}
	if _, err := e.b.Netcheck(ctx); err == nil {
		t.Error("netcheck without a tunnel")
	}
	if _, err := e.b.DNSQuery(ctx, "alpha", "A"); err == nil {
		t.Error("DNS query without a tunnel")
	}
	e.up(peerNode(10, "alpha", 1))
	r, err := e.b.Ping(ctx, "alpha.tail.example")
	if err != nil || r.Endpoint != "198.51.100.9:41641" || r.NodeName != "alpha" {
		t.Errorf("ping: %+v %v", r, err)
	}
	if _, err := e.b.Ping(ctx, "nobody"); err == nil {
		t.Error("ping of an unknown peer")
	}
	nc, err := e.b.Netcheck(ctx)
	if err != nil || !nc.UDP || nc.RegionCodes[1] != "lab" {
		t.Errorf("netcheck %+v %v", nc, err)
	}
	for _, q := range [][2]string{{"alpha", "BOGUS"}, {"bad name..", "A"}} {
		if _, err := e.b.DNSQuery(ctx, q[0], q[1]); err == nil {
			t.Errorf("DNS query %q accepted", q)
		}
	}
	res, err := e.b.DNSQuery(ctx, "alpha.tail.example", "A")
	if err != nil || res.Rcode != "SERVFAIL" {
		t.Errorf("DNS query with no answer: %+v %v", res, err)
	}
}

func TestFiles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.b.FileTargets(ctx); err == nil {
		t.Error("targets while logged out")
	}
	other := peerNode(11, "bob", 2)
	e.up(peerNode(10, "alpha", 1), other)
	targets, err := e.b.FileTargets(ctx)
	if err != nil || len(targets) != 1 || targets[0].Name != "alpha" {
		t.Errorf("targets %+v %v (another user's node must not be one)", targets, err)
	}
	if _, err := e.b.PutFile(ctx, "bob", "x.txt", 1, strings.NewReader("x")); err == nil {
		t.Error("sent a file to another user's node")
	}
	if _, err := e.b.PutFile(ctx, "nobody", "x.txt", 1, strings.NewReader("x")); err == nil {
		t.Error("sent a file to nobody")
	}
	if _, err := e.b.PutFile(ctx, "alpha", "../x", 1, strings.NewReader("x")); err == nil {
		t.Error("bad file name accepted")
	}
	files, err := e.b.WaitingFiles(ctx, 0)
	if err != nil || len(files) != 0 {
		t.Errorf("inbox %+v %v", files, err)
	}
	if _, _, err := e.b.OpenFile(ctx, "missing"); err == nil {
		t.Error("opened a missing file")
	}
	if err := e.b.DeleteFile(ctx, "missing"); err == nil {
		t.Error("deleted a missing file")
	}
	// Who may send us files: same user, untagged, with the file-sharing capability.
	if _, ok := e.b.taildropPeer(other.Addresses[0].Addr()); !ok {
		t.Error("a peer's address not recognised")
	}
	p, _ := e.b.taildropPeer(other.Addresses[0].Addr())
	if err := e.b.taildropAllow(p); err == nil {
		t.Error("another user's node may send us files")
	}
	if e.dp().ports[0] == 0 {
		t.Error("peer API port not given to the data plane")
	}
}

// A tunnel that fails to start is reported and tried again.
func TestTunnelStartFailure(t *testing.T) {
	defer func(d time.Duration) { applyRetry = d }(applyRetry)
	applyRetry = 50 * time.Millisecond
	e := newEnv(t)
	e.mu.Lock()
	e.dpErr = errors.New("creating TUN device: operation not permitted")
	e.mu.Unlock()
	up := make(chan error, 1)
	go func() {
		_, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://control.example", AuthKey: "k"})
		up <- err
	}()
	e.serve()
	eventually(t, "the error shown", func() error {
		st := e.b.Status()
		for _, h := range st.Health {
			if strings.Contains(h.Message, "cannot start the tunnel: creating TUN device") && st.State == ipc.StateStarting {
				return nil
			}
		}
		return fmt.Errorf("state %s, health %+v", st.State, st.Health)
	})
	e.mu.Lock()
	e.dpErr = nil
	e.mu.Unlock()
	if err := <-up; err != nil {
		t.Fatalf("Up after the tunnel could start: %v", err)
	}
	if st := e.b.Status(); st.State != ipc.StateRunning || len(st.Health) != 0 {
		t.Errorf("after the retry: %s %+v", st.State, st.Health)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// Tailscale SSH cannot be turned on while control does not grant the SSH capability, as the
// official client refuses it; nothing is stored.
func TestSSHNeedsCapability(t *testing.T) {
	e := newEnv(t)
	e.up(peerNode(10, "alpha", 1))
	_, err := e.b.SetPrefs(context.Background(), ipc.PrefsPatch{RunSSH: ptrTo(true)})
	if err == nil || !strings.Contains(err.Error(), "not enabled on Tailnet") {
		t.Fatalf("SetPrefs(RunSSH) without the capability: %v", err)
	}
	if e.stored().Prefs.RunSSH || e.b.Prefs().RunSSH {
		t.Error("the refused pref was kept")
	}
	if _, err := e.b.SetPrefs(context.Background(), ipc.PrefsPatch{RunSSH: ptrTo(false)}); err != nil {
		t.Errorf("turning SSH off: %v", err)
	}
}

// TestServerChangeNeedsConfirmation (hole 6): a logged-in machine asked to log in to another
// server refuses until the request confirms it (--force-reauth), and nothing changes meanwhile.
func TestServerChangeNeedsConfirmation(t *testing.T) {
	e := newEnv(t)
	e.up()
	_, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://other.example", AuthKey: "k"})
	var ie *ipc.Error
	if !errors.As(err, &ie) || ie.Code != ipc.ErrNeedsConfirmation ||
		!strings.Contains(ie.Message, "https://control.example") || !strings.Contains(ie.Fix, "--force-reauth") {
		t.Fatalf("Up to another server: %v", err)
	}
	if d := e.stored(); d.Prefs.LoginServer != "https://control.example" || !d.LoggedIn {
		t.Fatalf("state changed: %+v", d.Prefs)
	}
	if st := e.b.Status(); st.State != ipc.StateRunning || st.LoginServer != "https://control.example" {
		t.Fatalf("status %s %s", st.State, st.LoginServer)
	}
	// The same server needs nothing; with the confirmation the new server is used.
	if _, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://control.example/"}); err != nil {
		t.Fatalf("Up to the same server: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://other.example", AuthKey: "k", ForceReauth: true})
		done <- err
	}()
	e.serve()
	if err := <-done; err != nil {
		t.Fatalf("confirmed change: %v", err)
	}
	if d := e.stored(); d.Prefs.LoginServer != "https://other.example" {
		t.Errorf("stored server %s", d.Prefs.LoginServer)
	}
}

// TestPlainHTTPLoginServerWarns (hole 6): http:// to this machine works, with a warning in
// the status every front end shows.
func TestPlainHTTPLoginServerWarns(t *testing.T) {
	e := newEnv(t)
	done := make(chan error, 1)
	go func() {
		_, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "http://127.0.0.1:8080", AuthKey: "k"})
		done <- err
	}()
	e.serve()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	found := false
	for _, h := range e.b.Status().Health {
		found = found || h.Code == "insecure_login_server"
	}
	if !found {
		t.Errorf("no warning for an http:// login server: %+v", e.b.Status().Health)
	}
	_, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "http://hs.example.com", AuthKey: "k", ForceReauth: true})
	var ie *ipc.Error
	if !errors.As(err, &ie) || ie.Code != ipc.ErrBadRequest || !strings.Contains(ie.Message, "https://") {
		t.Errorf("http:// to another machine: %v", err)
	}
}
