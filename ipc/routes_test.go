package ipc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// The route child sends raw requests (childRoutesEnv: a JSON list) and prints what came back;
// the flood child (childFloodEnv: a number of connections) holds connections and streams open.
const (
	childRoutesEnv = "SKEIN_IPC_TEST_CHILD_ROUTES"
	childFloodEnv  = "SKEIN_IPC_TEST_CHILD_FLOOD"
)

type routeReq struct {
	Method, Path, Body string
}

type routeResp struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	Err    string `json:"err,omitempty"`
}

func runRouteChild(sock, reqsJSON string) int {
	var reqs []routeReq
	if err := json.Unmarshal([]byte(reqsJSON), &reqs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var out []routeResp
	// One client, its connections closed after each request: the routes outnumber the
	// per-user connection cap, and each must be judged on its own.
	client := rawClient(sock)
	for _, q := range reqs {
		var body io.Reader
		if q.Body != "" {
			body = strings.NewReader(q.Body)
		}
		// Streams (watch) are read for a moment: long enough for the events the parent sends.
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, q.Method, "http://"+ipc.HTTPHost+q.Path, body)
		if q.Body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if q.Method == http.MethodPut {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		req.Close = true
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			out = append(out, routeResp{Err: err.Error()})
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20)) // a stream ends at the deadline
		resp.Body.Close()
		cancel()
		out = append(out, routeResp{Status: resp.StatusCode, Body: string(b)})
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// childBin is the test binary, copied once where every uid can run it (childDir, removed by
// TestMain).
var (
	childOnce sync.Once
	childDir  string
	childErr  error
)

func childBin() (string, error) {
	childOnce.Do(func() {
		childDir, childErr = os.MkdirTemp("", "skein-ipc-test-")
		if childErr != nil {
			return
		}
		if childErr = os.Chmod(childDir, 0o755); childErr != nil {
			return
		}
		var src string
		if src, childErr = os.Executable(); childErr != nil {
			return
		}
		var b []byte
		if b, childErr = os.ReadFile(src); childErr != nil {
			return
		}
		childErr = os.WriteFile(filepath.Join(childDir, "ipc.test"), b, 0o755)
	})
	return filepath.Join(childDir, "ipc.test"), childErr
}

// childCmd runs the test binary as uid, in child mode (env says which).
func childCmd(t *testing.T, uid int, env ...string) *exec.Cmd {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child as another uid")
	}
	bin, err := childBin()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = filepath.Dir(bin)
	// Under -race a process sleeps a second at exit unless told not to.
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "GORACE=atexit_sleep_ms=0"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	return cmd
}

// socketDir is a directory every user can reach for the server's socket.
func socketDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestEveryRouteAsPlainUser (S2) tries every method of every route in the server's table as
// uid 65534: the privileged ones are refused with a clear error before the backend sees them,
// and the ones anyone may read leak no secret: no pending login URL, no received file, no
// private key.
func TestEveryRouteAsPlainUser(t *testing.T) {
	const (
		secretURL  = "https://hs.example/register/SECRET-LOGIN-TOKEN"
		secretFile = "secret-file-name.txt"
	)
	st := testStatus()
	st.State, st.AuthURL = ipc.StateNeedsLogin, secretURL
	b := ipctest.NewBackend(st, ipc.Prefs{LoginServer: "https://hs.example"})
	b.AddFile(secretFile, "peer", []byte("data"))
	fail := func(what string) { t.Errorf("backend %s called for a plain user", what) }
	b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) { fail("Up"); return ipc.UpResponse{}, nil })
	b.OnDown(func(context.Context) error { fail("Down"); return nil })
	b.OnLogout(func(context.Context) error { fail("Logout"); return nil })
	b.OnSetPrefs(func(context.Context, ipc.PrefsPatch) (ipc.Prefs, error) { fail("SetPrefs"); return ipc.Prefs{}, nil })
	b.OnPutFile(func(context.Context, string, string, int64, io.Reader) (ipc.FilePutResult, error) {
		fail("PutFile")
		return ipc.FilePutResult{}, nil
	})
	sock := filepath.Join(socketDir(t), "skeind.sock")
	ipctest.ServeAt(t, sock, b, ipc.ServerOptions{})

	routes := ipc.RouteList()
	var reqs []routeReq
	for _, rt := range routes {
		q := routeReq{Method: rt.Method, Path: rt.Path}
		switch {
		case rt.Prefix && rt.Path == ipc.PathFilePut:
			q.Path += "/peer/x.txt"
			q.Body = "abc"
		case rt.Prefix:
			q.Path += "/" + secretFile
		}
		switch rt.Path {
		case ipc.PathPing:
			q.Path += "?peer=peer"
		case ipc.PathDNSQuery:
			q.Path += "?name=peer.tail.example"
		}
		if rt.Method == http.MethodPost {
			q.Body = "{}"
		}
		reqs = append(reqs, q)
	}
	rb, _ := json.Marshal(reqs)
	cmd := childCmd(t, 65534, childEnv+"="+sock, childRoutesEnv+"="+string(rb))

	// While the child reads the watch stream, a file arrives and the login URL changes: neither
	// may reach it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if b.Watchers() > 0 {
				b.AddFile("second-"+secretFile, "peer", []byte("x"))
				b.SetState(ipc.StateNeedsLogin, secretURL+"2")
				return
			}
		}
	}()
	out, err := cmd.Output()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var resps []routeResp
	if err := json.Unmarshal(out, &resps); err != nil || len(resps) != len(routes) {
		t.Fatalf("child output %q: %v", out, err)
	}
	sawWatch := false
	for i, rt := range routes {
		r := resps[i]
		name := rt.Method + " " + reqs[i].Path
		if r.Err != "" {
			t.Errorf("%s: %s", name, r.Err)
			continue
		}
		switch rt.Access {
		case ipc.Privileged:
			var e ipc.Error
			json.Unmarshal([]byte(r.Body), &e)
			if r.Status != http.StatusForbidden || e.Code != ipc.ErrNeedsOperator ||
				!strings.HasPrefix(e.Message, "permission denied: uid 65534") || e.Fix != "sudo skein set --operator=$USER" {
				t.Errorf("%s as a plain user: %d %s, want 403 needs_operator with the fix", name, r.Status, r.Body)
			}
		case ipc.Anyone:
			if r.Status == http.StatusForbidden || r.Status == http.StatusMethodNotAllowed {
				t.Errorf("%s is for anyone, got %d %s", name, r.Status, r.Body)
			}
			for _, secret := range []string{"SECRET-LOGIN-TOKEN", secretFile, "privkey:"} {
				if strings.Contains(r.Body, secret) {
					t.Errorf("%s as a plain user leaks %q: %s", name, secret, r.Body)
				}
			}
		}
		if rt.Path == ipc.PathWatch {
			sawWatch = true
			if !strings.Contains(r.Body, `"authURLHidden":true`) || strings.Count(r.Body, "\n") < 2 {
				t.Errorf("watch as a plain user: want the first status (URL hidden) and the later state event, got %q", r.Body)
			}
		}
		if rt.Path == ipc.PathStatus && !strings.Contains(r.Body, `"authURLHidden":true`) {
			t.Errorf("status as a plain user does not say a login URL is hidden: %s", r.Body)
		}
	}
	if !sawWatch {
		t.Error("the route list has no watch route")
	}
	if got := b.Inbox(); len(got) != 2 {
		t.Errorf("inbox after the plain user's requests: %v", got)
	}

	// Root sees both.
	c := ipc.NewClient(sock)
	st2, err := c.Status(ctxT(t))
	if err != nil || !strings.HasPrefix(st2.AuthURL, secretURL) || st2.AuthURLHidden {
		t.Errorf("root's status: %q hidden=%v %v", st2.AuthURL, st2.AuthURLHidden, err)
	}
}

// TestWatchRedactionFollowsOperator: a plain user's watch stream hides the login URL until
// that user becomes the operator, decided per event while the stream runs.
func TestWatchRedactionFollowsOperator(t *testing.T) {
	st := testStatus()
	b := ipctest.NewBackend(st, ipc.Prefs{})
	sock := filepath.Join(socketDir(t), "skeind.sock")
	ipctest.ServeAt(t, sock, b, ipc.ServerOptions{})
	if os.Getuid() != 0 {
		t.Skip("needs root for a plain-user child")
	}
	// The child's report: one line per event it saw, for 3 s.
	cmd := childCmd(t, 65534, childEnv+"="+sock, childRoutesEnv+`=[{"Method":"GET","Path":"/v1/watch"}]`)
	go func() {
		for deadline := time.Now().Add(5 * time.Second); b.Watchers() == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		b.SetState(ipc.StateNeedsLogin, "https://hs.example/a/BEFORE-OPERATOR")
		op := "nobody"
		b.SetPrefs(context.Background(), ipc.PrefsPatch{Operator: &op})
		b.Emit(ipc.Event{Kind: ipc.EventPrefs})
		b.SetState(ipc.StateNeedsLogin, "https://hs.example/a/AFTER-OPERATOR")
	}()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var resps []routeResp
	json.Unmarshal(out, &resps)
	if len(resps) != 1 {
		t.Fatalf("child output %q", out)
	}
	body := resps[0].Body
	if strings.Contains(body, "BEFORE-OPERATOR") {
		t.Errorf("a non-operator saw the login URL: %s", body)
	}
	if !strings.Contains(body, "AFTER-OPERATOR") {
		t.Errorf("once operator, the user did not see the login URL: %s", body)
	}
}

// floodReport is what a flood child saw: of its connections, how many were served (a watch
// stream started), refused for its connection limit or the total, or had their watch refused.
type floodReport struct {
	Dialed      int `json:"dialed"`
	Watching    int `json:"watching"`
	WatchBusy   int `json:"watchBusy"`
	ConnRefused int `json:"connRefused"` // 429 for connections, or closed at once
	Other       []string
}

// runFloodChild dials n connections, asks each for a watch stream, prints what it got, and
// holds everything open until its standard input closes.
func runFloodChild(sock, nStr string) int {
	n, _ := strconv.Atoi(nStr)
	var conns []net.Conn
	rep := floodReport{}
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			rep.Other = append(rep.Other, "dial: "+err.Error())
			continue
		}
		conns = append(conns, c)
	}
	rep.Dialed = len(conns)
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := io.WriteString(c, "GET /v1/watch HTTP/1.1\r\nHost: local\r\n\r\n")
		if err != nil {
			rep.ConnRefused++
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		switch {
		case err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)):
			rep.ConnRefused++
			continue
		case err != nil:
			rep.Other = append(rep.Other, err.Error())
			continue
		case resp.StatusCode == http.StatusOK:
			rep.Watching++
			continue
		case resp.StatusCode != http.StatusTooManyRequests:
			rep.Other = append(rep.Other, resp.Status)
			continue
		}
		// 429: the message tells the two limits apart.
		body, _ := io.ReadAll(resp.Body)
		switch {
		case strings.Contains(string(body), "event streams"):
			rep.WatchBusy++
		case strings.Contains(string(body), "connections"):
			rep.ConnRefused++
		default:
			rep.Other = append(rep.Other, string(body))
		}
	}
	for _, c := range conns {
		c.SetDeadline(time.Time{})
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	io.Copy(io.Discard, os.Stdin) // hold until the parent is done
	return 0
}

// TestFloodKeepsRootServed (hole 3): plain users flood the socket with connections and watch
// streams. Each gets at most its own share, all of them together at most the total, and root
// is answered promptly all the while.
func TestFloodKeepsRootServed(t *testing.T) {
	b := ipctest.NewBackend(testStatus(), ipc.Prefs{})
	sock := filepath.Join(socketDir(t), "skeind.sock")
	ipctest.ServeAt(t, sock, b, ipc.ServerOptions{})

	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		rep   floodReport
	}
	start := func(uid, n int) *child {
		cmd := childCmd(t, uid, childEnv+"="+sock, childFloodEnv+"="+strconv.Itoa(n))
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{cmd: cmd, stdin: in}
		t.Cleanup(func() { in.Close(); cmd.Wait() })
		if err := json.NewDecoder(out).Decode(&c.rep); err != nil {
			t.Fatalf("uid %d: %v", uid, err)
		}
		return c
	}
	rootServed := func(when string) {
		t.Helper()
		c := ipc.NewClient(sock)
		for range 10 {
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Status(ctx)
			cancel()
			if d := time.Since(t0); err != nil || d > 2*time.Second {
				t.Fatalf("%s: root's status took %v: %v", when, d, err)
			}
		}
	}

	// One user with 300 connections: 16 are served, 8 of them stream.
	one := start(65534, 300)
	t.Logf("uid 65534: %+v", one.rep)
	if one.rep.Watching != ipc.DefaultMaxWatchesPerUser || one.rep.WatchBusy != ipc.DefaultMaxConnsPerUser-ipc.DefaultMaxWatchesPerUser ||
		one.rep.ConnRefused != 300-ipc.DefaultMaxConnsPerUser || len(one.rep.Other) > 0 {
		t.Errorf("one user flooding: %+v, want %d streams, %d streams refused, the other connections refused",
			one.rep, ipc.DefaultMaxWatchesPerUser, ipc.DefaultMaxConnsPerUser-ipc.DefaultMaxWatchesPerUser)
	}
	rootServed("one user flooding")

	// Nineteen more users, 16 connections each: 20 × 16 = 320 wanted, the total is 256.
	kids := []*child{one}
	for i := range 19 {
		kids = append(kids, start(60000+i, ipc.DefaultMaxConnsPerUser))
	}
	var served, watching int
	for _, k := range kids {
		served += k.rep.Watching + k.rep.WatchBusy
		watching += k.rep.Watching
		if len(k.rep.Other) > 0 {
			t.Errorf("unexpected answers: %v", k.rep.Other)
		}
	}
	if served != ipc.DefaultMaxConns || watching != ipc.DefaultMaxWatches {
		t.Errorf("twenty users: %d connections served, %d streams; want the totals %d and %d", served, watching, ipc.DefaultMaxConns, ipc.DefaultMaxWatches)
	}
	rootServed("twenty users flooding")
	// Root may still watch.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := ipc.NewClient(sock).Watch(ctx, func(ipc.Event) error { return errStop })
	if !errors.Is(err, errStop) {
		t.Fatalf("root's watch during the flood: %v", err)
	}
	// Once the flood ends, a plain user is served again.
	for _, k := range kids {
		k.stdin.Close()
		k.cmd.Wait()
	}
	cmd := childCmd(t, 65534, childEnv+"="+sock)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("after the flood: %v %s", err, out)
	}
	var rep childReport
	json.Unmarshal(out, &rep)
	if rep.StatusErr != nil || rep.State != ipc.StateRunning {
		t.Errorf("plain user after the flood: %+v", rep)
	}
}

var errStop = errors.New("stop")
