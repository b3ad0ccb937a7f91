package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func runningStatus() ipc.Status {
	return ipc.Status{
		Version:     "test",
		State:       ipc.StateRunning,
		LoginServer: "https://hs.example",
		MagicDNS:    "tail.example",
		Self: &ipc.Peer{ID: 1, HostName: "box", DNSName: "box.tail.example.", OS: "linux", UserID: 7,
			Addresses: addrs("100.64.0.1", "fd7a:115c:a1e0::1"), Online: true},
		Peers: []ipc.Peer{
			{ID: 4, HostName: "zeta-host", DNSName: "zeta.tail.example.", OS: "windows", UserID: 8,
				Addresses: addrs("100.64.0.4", "fd7a:115c:a1e0::4")},
			{ID: 2, HostName: "Alpha's MacBook", DNSName: "alpha.tail.example.", OS: "macOS", UserID: 7,
				Addresses: addrs("100.64.0.2", "fd7a:115c:a1e0::2"), Online: true},
			{ID: 3, HostName: "ci-runner", DNSName: "ci.tail.example.", OS: "linux", UserID: 9, Tags: []string{"tag:ci"},
				Addresses: addrs("100.64.0.3"), Online: true},
			{ID: 5, HostName: "nodns", OS: "", UserID: 42, Addresses: addrs("fd7a:115c:a1e0::5"), Online: true},
		},
		Users: []ipc.User{{ID: 7, LoginName: "alice@example.com"}, {ID: 8, LoginName: "bob"}},
	}
}

type env struct {
	t    *testing.T
	b    *ipctest.Backend
	sock string
}

func newEnv(t *testing.T, st ipc.Status) *env {
	t.Helper()
	b := ipctest.NewBackend(st, ipc.Prefs{LoginServer: st.LoginServer, WantRunning: true})
	sock, _ := ipctest.Serve(t, b, ipc.ServerOptions{})
	return &env{t: t, b: b, sock: sock}
}

// run runs the CLI against the env's daemon.
func (e *env) run(args ...string) (code int, stdout, stderr string) {
	return runCLI(append([]string{"--socket", e.sock}, args...)...)
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpEveryCommand(t *testing.T) {
	for _, cmd := range commands {
		for _, args := range [][]string{{cmd.name, "--help"}, {cmd.name, "-h"}, {"help", cmd.name}} {
			code, out, errs := runCLI(args...)
			if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: skein "+cmd.name) || !strings.Contains(out, "Exit status") {
				t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errs)
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errs := runCLI(args...)
		if code != 0 || errs != "" || !strings.Contains(out, "Commands:") || !strings.Contains(out, "  status ") {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--nope", "status"},
		{"status", "--nope"},
		{"status", "extra"},
		{"status", "--peers=maybe"},
		{"up", "--timeout", "soon"},
		{"up", "--timeout", "-1s"},
		{"up", "extra"},
		{"up", "--auth-key", "file:" + filepath.Join(t.TempDir(), "missing")},
		{"up", "--auth-key", "file:" + empty},
		{"login", "--force-reauth"},
		{"down", "now"},
		{"logout", "-x"},
		{"ip", "-4", "-6"},
		{"ip", "a", "b"},
		{"set"},
		{"set", "--exit-node"},
		{"set", "--accept-routes=maybe"},
		{"set", "--advertise-routes=0.0.0.0/0"},
		{"set", "--advertise-routes=10.0.0.0/8,::/0"},
		{"set", "--advertise-routes=0.0.0.0/0,::/0", "--advertise-exit-node=false"},
		{"set", "--exit-node=auto:fastest"},
		{"switch"},
		{"switch", "a", "b"},
		{"switch", "--list", "a"},
		{"switch", "--json", "a"},
		{"exit-node", "suggest", "x"},
		{"up", "--exit-node"},
		{"up", "--snat-subnet-routes=perhaps"},
		{"up", "--advertise-routes=0.0.0.0/0"},
		{"exit-node"},
		{"exit-node", "frob"},
		{"exit-node", "--filter=x"},
		{"exit-node", "list", "extra"},
		{"exit-node", "list", "--nope"},
		{"set", "extra"},
		{"version", "--x"},
		{"help", "nope"},
	} {
		// No daemon: a usage error must be found before skeind is asked anything.
		code, out, errs := runCLI(append([]string{"--socket", "/nonexistent/skeind.sock"}, args...)...)
		if code != 2 || out != "" || errs == "" || strings.Contains(errs, "cannot reach skeind") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and a usage message", args, code, out, errs)
		}
	}
}

func TestStatusText(t *testing.T) {
	e := newEnv(t, runningStatus())
	code, out, errs := e.run("status")
	// Columns at least as wide as the official client's (15, 20, 12, 7), wider where a cell
	// needs it: the IPv6-only peer and "tagged-devices" do not push the next columns out.
	want := "" +
		"100.64.0.1        box                  alice@         linux   -\n" +
		"100.64.0.2        alpha                alice@         macOS   -\n" +
		"100.64.0.3        ci                   tagged-devices linux   -\n" +
		"fd7a:115c:a1e0::5 nodns                42             -       -\n" +
		"100.64.0.4        zeta                 bob            windows offline\n" +
		"# Login server: https://hs.example\n"
	if code != 0 || errs != "" || out != want {
		t.Fatalf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}

	// Cells that fit give exactly the official client's layout.
	_, out, _ = e.run("status", "--peers=false")
	if out != "100.64.0.1      box                  alice@       linux   -\n# Login server: https://hs.example\n" {
		t.Errorf("--peers=false:\n%s", out)
	}
	_, out, _ = e.run("status", "--self=false")
	if strings.Contains(out, "box") || strings.Count(out, "\n") != 5 {
		t.Errorf("--self=false:\n%s", out)
	}

	st := runningStatus()
	st.Health = []ipc.Issue{{Code: "dns", Message: "DNS is not configured"}}
	e.b.SetStatus(st)
	_, out, _ = e.run("status", "--peers=false")
	if !strings.HasSuffix(out, "\n# Health check:\n#     - DNS is not configured\n") {
		t.Errorf("health:\n%s", out)
	}
}

func TestStatusNotRunning(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateStopped})
	for _, tc := range []struct {
		state   ipc.State
		authURL string
		want    string
	}{
		{ipc.StateStopped, "", "Skein is stopped.\n"},
		{ipc.StateNeedsLogin, "https://hs.example/register/abc", "Logged out.\nLog in at: https://hs.example/register/abc\n"},
		{ipc.StateNeedsLogin, "", "Logged out.\nRun 'skein up' to log in.\n"},
		{ipc.StateNoState, "", "Skein is starting up.\n"},
	} {
		e.b.SetState(tc.state, tc.authURL)
		code, out, errs := e.run("status")
		if code != 1 || out != tc.want || errs != "" {
			t.Errorf("%s: code %d, stdout %q, stderr %q; want 1, %q", tc.state, code, out, errs, tc.want)
		}
		// --json is for programs: it reports every state and succeeds.
		code, out, _ = e.run("status", "--json")
		var got ipc.Status
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.State != tc.state {
			t.Errorf("%s --json: code %d, %v, %q", tc.state, code, err, out)
		}
	}
	// A plain user's status says a URL waits, without it (ipc leaves it out for them).
	e.b.SetStatus(ipc.Status{State: ipc.StateNeedsLogin, AuthURLHidden: true})
	if _, out, _ := e.run("status"); !strings.Contains(out, "only root and skeind's operator may see its URL") {
		t.Errorf("hidden login URL: %q", out)
	}
}

func TestStatusJSON(t *testing.T) {
	st := runningStatus()
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st.Peers[0].LastSeen = &seen
	e := newEnv(t, st)
	code, out, _ := e.run("status", "--json")
	if code != 0 || !strings.HasPrefix(out, "{\n  \"version\"") {
		t.Fatalf("code %d, out %q", code, out)
	}
	var got ipc.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("JSON round trip:\n got %+v\nwant %+v", got, st)
	}
}

func TestUpInteractive(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	const url = "https://hs.example/register/nodekey:abc"
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		e.b.SetState(ipc.StateNeedsLogin, url)
		// The user logs in once the CLI watches.
		go func() {
			for e.b.Watchers() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			e.b.SetState(ipc.StateStarting, "")
			e.b.SetState(ipc.StateRunning, "")
		}()
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: url}, nil
	})
	code, out, errs := e.run("up", "--login-server", "https://hs.example", "--hostname", "box", "--timeout", "10s")
	if code != 0 || out != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	if want := "\nTo authenticate, visit:\n\n\t" + url + "\n\nSuccess.\n"; errs != want {
		t.Fatalf("stderr %q, want %q", errs, want)
	}
	if got := e.b.UpRequests(); len(got) != 1 || got[0] != (ipc.UpRequest{LoginServer: "https://hs.example", Hostname: "box"}) {
		t.Fatalf("Up requests %+v", got)
	}
}

// A re-login keeps the old session Running; up must wait until the pending AuthURL clears.
func TestUpForceReauthWaitsForLogin(t *testing.T) {
	st := runningStatus()
	e := newEnv(t, st)
	const url = "https://hs.example/register/again"
	e.b.OnUp(func(_ context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
		if !req.ForceReauth {
			t.Error("ForceReauth not sent")
		}
		e.b.SetState(ipc.StateRunning, url)
		go func() {
			for e.b.Watchers() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			e.b.SetState(ipc.StateRunning, "")
		}()
		return ipc.UpResponse{State: ipc.StateRunning, AuthURL: url}, nil
	})
	start := time.Now()
	for _, args := range [][]string{{"up", "--force-reauth"}, {"login"}} {
		code, _, errs := e.run(args...)
		if code != 0 || !strings.HasSuffix(errs, "\n\nSuccess.\n") || strings.Count(errs, url) != 1 {
			t.Fatalf("%q: code %d, stderr %q", args, code, errs)
		}
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("up returned before the login completed")
	}
}

func TestUpAlreadyRunning(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateStopped})
	code, out, errs := e.run("up")
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	if e.b.Status().State != ipc.StateRunning {
		t.Fatal("backend not running")
	}
}

func TestUpStartingThenRunning(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateStopped})
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		go func() {
			for e.b.Watchers() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			e.b.SetState(ipc.StateRunning, "")
		}()
		return ipc.UpResponse{State: ipc.StateStarting}, nil
	})
	if code, out, errs := e.run("up", "--timeout=10s"); code != 0 || out != "" || errs != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestUpAuthKeyFile(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte("  tskey-auth-secret\n"), 0o600)
	if code, _, errs := e.run("up", "--auth-key", "file:"+keyFile); code != 0 {
		t.Fatalf("code %d: %s", code, errs)
	}
	if code, _, errs := e.run("up", "--auth-key=plainkey"); code != 0 {
		t.Fatalf("code %d: %s", code, errs)
	}
	got := e.b.UpRequests()
	if len(got) != 2 || got[0].AuthKey != "tskey-auth-secret" || got[1].AuthKey != "plainkey" {
		t.Fatalf("Up requests %+v", got)
	}
}

func TestUpErrorWithFix(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		return ipc.UpResponse{}, &ipc.Error{
			Code:    ipc.ErrCertUntrusted,
			Message: "the certificate of hs.example is not trusted",
			Fix:     "sudo cp ca.crt /usr/local/share/ca-certificates/ && sudo update-ca-certificates",
		}
	})
	code, out, errs := e.run("up")
	want := "skein: the certificate of hs.example is not trusted\n" +
		"  fix: sudo cp ca.crt /usr/local/share/ca-certificates/ && sudo update-ca-certificates\n"
	if code != 1 || out != "" || errs != want {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}

	// No Fix: one line.
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrLoginFailed, Message: "invalid auth key"}
	})
	if code, _, errs := e.run("up", "--auth-key=bad"); code != 1 || errs != "skein: invalid auth key\n" {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
}

func TestUpLoginFailsWhileWaiting(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		e.b.SetState(ipc.StateNeedsLogin, "https://hs.example/a")
		go func() {
			for e.b.Watchers() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			e.b.Emit(ipc.Event{Kind: ipc.EventState, Error: &ipc.Error{Code: ipc.ErrLoginFailed, Message: "login expired", Fix: "skein up"}})
		}()
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: "https://hs.example/a"}, nil
	})
	code, _, errs := e.run("up", "--timeout=10s")
	if code != 1 || !strings.HasSuffix(errs, "\n\nskein: login expired\n  fix: skein up\n") {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
}

func TestUpTimeout(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		e.b.SetState(ipc.StateNeedsLogin, "https://hs.example/a")
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: "https://hs.example/a"}, nil
	})
	code, _, errs := e.run("up", "--timeout=200ms")
	if code != 1 || !strings.Contains(errs, "skein: timed out after 200ms waiting for the login to complete\n") {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	if strings.Count(errs, "https://hs.example/a") != 1 {
		t.Fatalf("URL printed more than once: %q", errs)
	}
}

func TestLoginForcesReauth(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	if code, _, errs := e.run("login", "--auth-key=k", "--login-server=https://other.example"); code != 0 {
		t.Fatalf("code %d: %s", code, errs)
	}
	want := ipc.UpRequest{AuthKey: "k", LoginServer: "https://other.example", ForceReauth: true, NewProfile: true}
	if got := e.b.UpRequests(); len(got) != 1 || got[0] != want {
		t.Fatalf("Up requests %+v", got)
	}
}

func TestDownLogout(t *testing.T) {
	e := newEnv(t, runningStatus())
	if code, out, errs := e.run("down"); code != 0 || out != "" || errs != "" || e.b.Status().State != ipc.StateStopped {
		t.Fatalf("down: %d %q %q %s", code, out, errs, e.b.Status().State)
	}
	if code, _, _ := e.run("logout"); code != 0 || e.b.Status().State != ipc.StateNeedsLogin {
		t.Fatalf("logout: %d %s", code, e.b.Status().State)
	}
	e.b.OnDown(func(context.Context) error {
		return &ipc.Error{Code: ipc.ErrNeedsOperator, Message: "permission denied: nope", Fix: "sudo skein set --operator=$USER"}
	})
	code, _, errs := e.run("down")
	if code != 1 || errs != "skein: permission denied: nope\n  fix: sudo skein set --operator=$USER\n" {
		t.Fatalf("down denied: %d %q", code, errs)
	}
}

func TestSet(t *testing.T) {
	e := newEnv(t, runningStatus())
	var got []ipc.PrefsPatch
	e.b.OnSetPrefs(func(_ context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
		got = append(got, p)
		return ipc.Prefs{}, nil
	})
	if code, out, errs := e.run("set", "--hostname=newbox"); code != 0 || out != "" || errs != "" {
		t.Fatalf("set: %d %q %q", code, out, errs)
	}
	if code, _, errs := e.run("set", "--operator=root", "--hostname="); code != 0 {
		t.Fatalf("set: %d %q", code, errs)
	}
	if len(got) != 2 || got[0].Operator != nil || got[0].Hostname == nil || *got[0].Hostname != "newbox" ||
		got[1].Operator == nil || *got[1].Operator != "root" || got[1].Hostname == nil || *got[1].Hostname != "" {
		t.Fatalf("patches %+v", got)
	}
}

func TestIP(t *testing.T) {
	e := newEnv(t, runningStatus())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ip"}, "100.64.0.1\nfd7a:115c:a1e0::1\n"},
		{[]string{"ip", "-4"}, "100.64.0.1\n"},
		{[]string{"ip", "-6"}, "fd7a:115c:a1e0::1\n"},
		{[]string{"ip", "alpha"}, "100.64.0.2\nfd7a:115c:a1e0::2\n"},
		{[]string{"ip", "-4", "ALPHA.tail.example."}, "100.64.0.2\n"},
		{[]string{"ip", "-4", "zeta.tail.example"}, "100.64.0.4\n"},
		{[]string{"ip", "-6", "100.64.0.4"}, "fd7a:115c:a1e0::4\n"},
		{[]string{"ip", "Alpha's MacBook"}, "100.64.0.2\nfd7a:115c:a1e0::2\n"},
		{[]string{"ip", "nodns"}, "fd7a:115c:a1e0::5\n"},
		{[]string{"ip", "-4", "box"}, "100.64.0.1\n"},
	} {
		code, out, errs := e.run(tc.args...)
		if code != 0 || out != tc.want || errs != "" {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want %q", tc.args, code, out, errs, tc.want)
		}
	}
	for _, args := range [][]string{{"ip", "ghost"}, {"ip", "100.64.9.9"}, {"ip", "-4", "nodns"}} {
		if code, out, errs := e.run(args...); code != 1 || out != "" || !strings.HasPrefix(errs, "skein: ") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 1", args, code, out, errs)
		}
	}
	if _, _, errs := e.run("ip", "ghost"); errs != "skein: no peer found with name or IP \"ghost\"\n  fix: skein status\n" {
		t.Errorf("unknown peer: %q", errs)
	}

	e.b.SetStatus(ipc.Status{State: ipc.StateStopped})
	if code, _, errs := e.run("ip"); code != 1 || !strings.Contains(errs, "state: Stopped") {
		t.Errorf("ip when stopped: %d %q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "1.2.3"
	code, out, _ := runCLI("version")
	if code != 0 || out != "1.2.3\n  go version: "+runtime.Version()+"\n" {
		t.Fatalf("code %d, out %q", code, out)
	}
}

func TestDaemonUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "skeind.sock")
	for _, cmd := range []string{"status", "up", "down", "logout", "ip"} {
		code, out, errs := runCLI("--socket", sock, cmd)
		want := "skein: cannot reach skeind at " + sock + ": is it running?\n  fix: sudo systemctl start skeind (or: sudo skeind)\n"
		if code != 1 || out != "" || errs != want {
			t.Errorf("%s: code %d, stdout %q, stderr %q", cmd, code, out, errs)
		}
	}
}

func TestSocketFromEnv(t *testing.T) {
	e := newEnv(t, runningStatus())
	t.Setenv(ipc.SocketEnv, e.sock)
	if code, out, errs := runCLI("status", "--self=false", "--peers=false"); code != 0 || errs != "" || out != "# Login server: https://hs.example\n" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
}
