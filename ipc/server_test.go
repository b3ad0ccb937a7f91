package ipc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

func testStatus() ipc.Status {
	return ipc.Status{
		Version: "test",
		State:   ipc.StateRunning,
		Self: &ipc.Peer{
			ID: 1, HostName: "box", DNSName: "box.tail.example.", OS: "linux", UserID: 7,
			Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")},
		},
		Peers: []ipc.Peer{{ID: 2, HostName: "peer", DNSName: "peer.tail.example.", Online: true}},
		Users: []ipc.User{{ID: 7, LoginName: "alice@example.com"}},
	}
}

func newTestServer(t *testing.T) (*ipctest.Backend, *ipc.Client, string) {
	t.Helper()
	b := ipctest.NewBackend(testStatus(), ipc.Prefs{LoginServer: "https://hs.example", WantRunning: true})
	path, _ := ipctest.Serve(t, b, ipc.ServerOptions{})
	return b, ipc.NewClient(path), path
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode asserts that err is an *ipc.Error with the given code.
func wantCode(t *testing.T, err error, code ipc.ErrorCode) *ipc.Error {
	t.Helper()
	var e *ipc.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *ipc.Error with code %s", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("error code = %s (%q), want %s", e.Code, e.Message, code)
	}
	return e
}

// rawClient sends hand-made requests to the socket, to test what the typed client never sends.
func rawClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

type rawResult struct {
	status int
	err    ipc.Error
	body   string
}

func doRaw(t *testing.T, path, method, urlPath, host string, hdr map[string]string, body io.Reader) rawResult {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+host+urlPath, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := rawClient(path).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := rawResult{status: resp.StatusCode, body: string(b)}
	if resp.StatusCode/100 != 2 {
		if err := json.Unmarshal(b, &r.err); err != nil {
			t.Fatalf("%s %s: error body %q is not a typed error: %v", method, urlPath, b, err)
		}
	}
	return r
}

func TestStatusAndPrefs(t *testing.T) {
	_, c, _ := newTestServer(t)
	st, err := c.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != ipc.StateRunning || st.Self == nil || st.Self.HostName != "box" || len(st.Peers) != 1 {
		t.Fatalf("status = %+v", st)
	}
	p, err := c.Prefs(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if p.LoginServer != "https://hs.example" || !p.WantRunning {
		t.Fatalf("prefs = %+v", p)
	}
}

func TestPostAsRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the test's own uid would be allowed as the daemon's uid anyway")
	}
	b, c, _ := newTestServer(t)
	ctx := ctxT(t)
	b.OnUp(func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
		cred, ok := ipc.PeerCredFromContext(ctx)
		if !ok || cred.UID != 0 || int(cred.PID) != os.Getpid() {
			return ipc.UpResponse{}, fmt.Errorf("peer cred = %+v, %v", cred, ok)
		}
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: "https://hs.example/register/x"}, nil
	})
	resp, err := c.Up(ctx, ipc.UpRequest{AuthKey: "k", Hostname: "h", ForceReauth: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.AuthURL != "https://hs.example/register/x" {
		t.Fatalf("up = %+v", resp)
	}
	if got := b.UpRequests(); len(got) != 1 || got[0] != (ipc.UpRequest{AuthKey: "k", Hostname: "h", ForceReauth: true}) {
		t.Fatalf("backend got %+v", got)
	}

	host := "newname"
	p, err := c.SetPrefs(ctx, ipc.PrefsPatch{Hostname: &host})
	if err != nil || p.Hostname != "newname" {
		t.Fatalf("SetPrefs = %+v, %v", p, err)
	}
	op := "root" // exists everywhere
	if p, err = c.SetPrefs(ctx, ipc.PrefsPatch{Operator: &op}); err != nil || p.Operator != "root" {
		t.Fatalf("SetPrefs operator = %+v, %v", p, err)
	}
	ghost := "no-such-user-skein-test"
	_, err = c.SetPrefs(ctx, ipc.PrefsPatch{Operator: &ghost})
	wantCode(t, err, ipc.ErrBadRequest)

	st, err := c.Down(ctx)
	if err != nil || st.State != ipc.StateStopped {
		t.Fatalf("Down = %+v, %v", st.State, err)
	}
	st, err = c.Logout(ctx)
	if err != nil || st.State != ipc.StateNeedsLogin {
		t.Fatalf("Logout = %+v, %v", st.State, err)
	}
}

func TestAuthorizeWrite(t *testing.T) {
	users := map[string]uint32{"alice": 1000, "bob": 1001}
	b := ipctest.NewBackend(testStatus(), ipc.Prefs{Operator: "alice"})
	s := ipc.NewServer(b, ipc.ServerOptions{
		OwnUID: 999,
		LookupUID: func(name string) (uint32, error) {
			if uid, ok := users[name]; ok {
				return uid, nil
			}
			return 0, fmt.Errorf("user: unknown user %s", name)
		},
	})
	setOperator := func(name string) {
		if _, err := b.SetPrefs(context.Background(), ipc.PrefsPatch{Operator: &name}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(uid uint32, setsOperator bool, want ipc.ErrorCode) {
		t.Helper()
		e := s.AuthorizeWrite(uid, setsOperator)
		switch {
		case want == "" && e != nil:
			t.Errorf("uid %d (setsOperator=%v): denied %+v, want allowed", uid, setsOperator, e)
		case want != "" && e == nil:
			t.Errorf("uid %d (setsOperator=%v): allowed, want %s", uid, setsOperator, want)
		case want != "" && e.Code != want:
			t.Errorf("uid %d (setsOperator=%v): code %s, want %s", uid, setsOperator, e.Code, want)
		case e != nil && (!strings.HasPrefix(e.Message, "permission denied: ") || e.Fix != "sudo skein set --operator=$USER"):
			t.Errorf("uid %d: error %+v lacks the standard message/fix", uid, e)
		}
	}
	check(0, false, "")
	check(0, true, "")
	check(999, false, "") // the daemon's own uid
	check(999, true, "")
	check(1000, false, "") // alice is the operator
	check(1000, true, ipc.ErrNeedsRoot)
	check(1001, false, ipc.ErrNeedsOperator)
	check(65534, false, ipc.ErrNeedsOperator)

	setOperator("bob") // takes effect on the next request, nothing is cached
	check(1000, false, ipc.ErrNeedsOperator)
	check(1001, false, "")

	setOperator("ghost") // a name that does not resolve matches nobody
	check(1000, false, ipc.ErrNeedsOperator)
	check(0, false, "")

	setOperator("")
	check(1000, false, ipc.ErrNeedsOperator)
	check(1001, false, ipc.ErrNeedsOperator)
}

func TestOriginAndHostRejected(t *testing.T) {
	_, _, path := newTestServer(t)
	for _, tc := range []struct {
		name string
		host string
		hdr  map[string]string
		want int
	}{
		{"plain", "local", nil, 200},
		{"skeind host", "skeind", nil, 200},
		{"origin", "local", map[string]string{"Origin": "https://evil.example"}, 403},
		{"null origin", "local", map[string]string{"Origin": "null"}, 403},
		{"referer", "local", map[string]string{"Referer": "https://evil.example/x"}, 403},
		{"rebinding host", "evil.example", nil, 403},
		{"localhost", "localhost:8080", nil, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := doRaw(t, path, "GET", ipc.PathStatus, tc.host, tc.hdr, nil)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d (%s)", r.status, tc.want, r.body)
			}
			if tc.want == 403 && !strings.HasPrefix(r.err.Message, "permission denied") {
				t.Fatalf("error %+v", r.err)
			}
		})
	}
	// A forged POST is rejected before it reaches the backend.
	r := doRaw(t, path, "POST", ipc.PathDown, "local",
		map[string]string{"Origin": "https://evil.example", "Content-Type": "application/json"}, strings.NewReader("{}"))
	if r.status != 403 {
		t.Fatalf("forged POST: status %d", r.status)
	}
}

func TestBadRequests(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to get past authorization")
	}
	b, _, path := newTestServer(t)
	b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		t.Error("backend called for a bad request")
		return ipc.UpResponse{}, nil
	})
	jsonCT := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		body string
	}{
		{"no content type", nil, `{}`},
		{"form content type", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, `{}`},
		{"text/plain", map[string]string{"Content-Type": "text/plain"}, `{}`},
		{"empty body", jsonCT, ``},
		{"malformed", jsonCT, `{"authKey":`},
		{"wrong type", jsonCT, `{"forceReauth":"yes"}`},
		{"unknown field", jsonCT, `{"authKey":"k","exitNode":"x"}`},
		{"trailing data", jsonCT, `{} {}`},
		{"oversized", jsonCT, `{"authKey":"` + strings.Repeat("a", ipc.MaxRequestBody) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := doRaw(t, path, "POST", ipc.PathUp, "local", tc.hdr, strings.NewReader(tc.body))
			if r.status != 400 || r.err.Code != ipc.ErrBadRequest {
				t.Fatalf("got %d %+v, want 400 bad_request", r.status, r.err)
			}
		})
	}
	// Content-Type parameters are fine.
	r := doRaw(t, path, "POST", ipc.PathDown, "local",
		map[string]string{"Content-Type": "application/json; charset=utf-8"}, strings.NewReader(`{}`))
	if r.status != 200 {
		t.Fatalf("down with charset: %d %s", r.status, r.body)
	}
	r = doRaw(t, path, "POST", ipc.PathDown, "local", jsonCT, strings.NewReader(`{"x":1}`))
	if r.status != 400 {
		t.Fatalf("down with unknown field: %d %s", r.status, r.body)
	}
}

func TestNotFoundAndMethod(t *testing.T) {
	_, _, path := newTestServer(t)
	r := doRaw(t, path, "GET", "/v1/nope", "local", nil, nil)
	if r.status != 404 || r.err.Code != ipc.ErrNotFound {
		t.Fatalf("unknown path: %d %+v", r.status, r.err)
	}
	r = doRaw(t, path, "GET", "/v2/status", "local", nil, nil)
	if r.status != 404 {
		t.Fatalf("other version: %d", r.status)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", ipc.PathUp},
		{"GET", ipc.PathDown},
		{"POST", ipc.PathStatus},
		{"DELETE", ipc.PathPrefs},
		{"POST", ipc.PathWatch},
	} {
		r := doRaw(t, path, tc.method, tc.path, "local", nil, nil)
		if r.status != 405 || r.err.Code != ipc.ErrBadRequest || r.err.Message == "" {
			t.Errorf("%s %s: %d %+v, want 405 typed", tc.method, tc.path, r.status, r.err)
		}
	}
}

func TestBackendErrors(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to get past authorization")
	}
	b, c, path := newTestServer(t)
	var next error
	b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) { return ipc.UpResponse{}, next })
	for _, tc := range []struct {
		err    error
		code   ipc.ErrorCode
		status int
	}{
		{&ipc.Error{Code: ipc.ErrNeedsLogin, Message: "log in first"}, ipc.ErrNeedsLogin, 409},
		{&ipc.Error{Code: ipc.ErrLoginFailed, Message: "bad key"}, ipc.ErrLoginFailed, 401},
		{&ipc.Error{Code: ipc.ErrServerUnreachable, Message: "no route", Fix: "check the URL"}, ipc.ErrServerUnreachable, 502},
		{&ipc.Error{Code: ipc.ErrCertUntrusted, Message: "x509"}, ipc.ErrCertUntrusted, 502},
		{&ipc.Error{Code: ipc.ErrBadRequest, Message: "bad url"}, ipc.ErrBadRequest, 400},
		{&ipc.Error{Code: ipc.ErrNotFound, Message: "gone"}, ipc.ErrNotFound, 404},
		{&ipc.Error{Code: "something_new", Message: "?"}, "something_new", 500},
		{fmt.Errorf("wrapped: %w", &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "inner"}), ipc.ErrNeedsLogin, 409},
		{errors.New("disk on fire"), ipc.ErrInternal, 500},
	} {
		next = tc.err
		_, err := c.Up(ctxT(t), ipc.UpRequest{})
		e := wantCode(t, err, tc.code)
		var want *ipc.Error
		if errors.As(tc.err, &want) && *e != *want {
			t.Errorf("got %+v, want %+v", e, want)
		}
		if tc.code == ipc.ErrInternal && e.Message != "disk on fire" {
			t.Errorf("internal message %q", e.Message)
		}
		r := doRaw(t, path, "POST", ipc.PathUp, "local", map[string]string{"Content-Type": "application/json"}, strings.NewReader("{}"))
		if r.status != tc.status {
			t.Errorf("%v: HTTP %d, want %d", tc.err, r.status, tc.status)
		}
	}
}

func TestWatch(t *testing.T) {
	b, c, _ := newTestServer(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	events := make(chan ipc.Event, 10)
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, func(ev ipc.Event) error {
			events <- ev
			return nil
		})
	}()
	first := recv(t, events)
	if first.Status == nil || first.Status.State != ipc.StateRunning {
		t.Fatalf("first event %+v, want full status", first)
	}
	b.SetState(ipc.StateNeedsLogin, "https://hs.example/a")
	ev := recv(t, events)
	if ev.Kind != ipc.EventState || ev.Status.AuthURL != "https://hs.example/a" {
		t.Fatalf("event %+v", ev)
	}
	b.Emit(ipc.Event{Kind: ipc.EventState, Error: &ipc.Error{Code: ipc.ErrLoginFailed, Message: "nope"}})
	if ev := recv(t, events); ev.Error == nil || ev.Error.Code != ipc.ErrLoginFailed {
		t.Fatalf("event %+v", ev)
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
	waitFor(t, "server to drop the watch", func() bool { return b.Watchers() == 0 })
}

func TestWatchCallbackStops(t *testing.T) {
	b, c, _ := newTestServer(t)
	stop := errors.New("stop")
	n := 0
	err := c.Watch(ctxT(t), func(ev ipc.Event) error {
		n++
		if n == 1 {
			b.SetState(ipc.StateStopped, "")
			return nil
		}
		return stop
	})
	if err != stop || n != 2 {
		t.Fatalf("Watch = %v after %d events", err, n)
	}
	waitFor(t, "server to drop the watch", func() bool { return b.Watchers() == 0 })
}

func TestWatchEndsOnServerClose(t *testing.T) {
	b := ipctest.NewBackend(testStatus(), ipc.Prefs{})
	path, srv := ipctest.Serve(t, b, ipc.ServerOptions{})
	c := ipc.NewClient(path)
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		done <- c.Watch(ctxT(t), func(ipc.Event) error {
			close(started)
			return nil
		})
	}()
	<-started
	srv.Close()
	select {
	case err := <-done:
		wantCode(t, err, ipc.ErrHelperUnreachable)
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not end when the server closed")
	}
	waitFor(t, "server to drop the watch", func() bool { return b.Watchers() == 0 })
}

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "skein")
	path := filepath.Join(dir, "skeind.sock")
	l, err := ipc.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("dir mode %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}

	// A live daemon keeps its socket.
	_, err = ipc.Listen(path)
	if err == nil || err.Error() != "another skeind is already running on "+path {
		t.Fatalf("second Listen = %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("live socket removed: %v", err)
	}

	// A dead daemon's socket is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	l2, err := ipc.Listen(path)
	if err != nil {
		t.Fatalf("Listen over stale socket: %v", err)
	}
	defer l2.Close()

	// Something that is not a socket is never removed.
	file := filepath.Join(t.TempDir(), "not-a-socket")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := ipc.Listen(file); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

func TestClientUnreachable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	_, err := ipc.NewClient(missing).Status(ctxT(t))
	e := wantCode(t, err, ipc.ErrHelperUnreachable)
	if e.Message != "cannot reach skeind at "+missing+": is it running?" || e.Fix != "sudo systemctl start skeind (or: sudo skeind)" {
		t.Fatalf("error %+v", e)
	}

	// A socket nobody listens on: ECONNREFUSED.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, err = ipc.NewClient(stale).Up(ctxT(t), ipc.UpRequest{})
	wantCode(t, err, ipc.ErrHelperUnreachable)
	err = ipc.NewClient(stale).Watch(ctxT(t), func(ipc.Event) error { return nil })
	wantCode(t, err, ipc.ErrHelperUnreachable)
}

func TestClientCancelledContext(t *testing.T) {
	_, c, _ := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Status(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Status with cancelled ctx = %v", err)
	}
}

func TestNewClientSocketPath(t *testing.T) {
	t.Setenv(ipc.SocketEnv, "")
	if got := ipc.NewClient("").SocketPath(); got != ipc.DefaultSocket {
		t.Errorf("default = %q", got)
	}
	t.Setenv(ipc.SocketEnv, "/tmp/x.sock")
	if got := ipc.NewClient("").SocketPath(); got != "/tmp/x.sock" {
		t.Errorf("env = %q", got)
	}
	if got := ipc.NewClient("/a.sock").SocketPath(); got != "/a.sock" {
		t.Errorf("explicit = %q", got)
	}
}

func TestHTTPStatus(t *testing.T) {
	for code, want := range map[ipc.ErrorCode]int{
		ipc.ErrBadRequest: 400, ipc.ErrNeedsLogin: 409, ipc.ErrLoginFailed: 401,
		ipc.ErrServerUnreachable: 502, ipc.ErrCertUntrusted: 502, ipc.ErrNotFound: 404,
		ipc.ErrNeedsOperator: 403, ipc.ErrNeedsRoot: 403, ipc.ErrInternal: 500, "": 500,
	} {
		if got := ipc.HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%q) = %d, want %d", code, got, want)
		}
	}
}

func recv(t *testing.T, ch <-chan ipc.Event) ipc.Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return ipc.Event{}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The default operator look-up finds users that only NSS knows (SSSD, LDAP, homed, extrausers):
// skeind has no cgo, so it asks getent when /etc/passwd does not have the name. Here a fake
// getent on PATH plays the NSS source.
func TestOperatorKnownOnlyToNSS(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\n[ \"$1\" = passwd ] && [ \"$2\" = nssalice ] || exit 2\necho 'nssalice:x:4242:4242::/home/nssalice:/bin/sh'\n"
	if err := os.WriteFile(filepath.Join(dir, "getent"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	b := ipctest.NewBackend(testStatus(), ipc.Prefs{Operator: "nssalice"})
	s := ipc.NewServer(b, ipc.ServerOptions{OwnUID: 999})
	if e := s.AuthorizeWrite(4242, false); e != nil {
		t.Errorf("the NSS operator (uid 4242) was refused: %+v", e)
	}
	if e := s.AuthorizeWrite(4243, false); e == nil || e.Code != ipc.ErrNeedsOperator {
		t.Errorf("uid 4243 (not the operator): %+v, want %s", e, ipc.ErrNeedsOperator)
	}
}
