package lab_test

import (
	"bufio"
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
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// The lab for `skein serve`: skeind "sk" (user alice, with the local account alice as its
// operator), official peers of alice and bob, and a tagged official node; services on sk's
// loopback that record what reaches them.
type serveLab struct {
	l          *lab.Lab
	c          *lab.Control
	n          *node
	users      *localUsers
	alice, bob *lab.Tailscaled
	tagged     *lab.Tailscaled
	skIP       netip.Addr
	fqdn       string
	backend    *recorder // 127.0.0.1:3002 on sk
	backend2   *recorder // 127.0.0.1:3004 on sk
	echoAddr   string    // a TCP echo server on sk's loopback
}

func servePolicy(bobPorts string) string {
	return `{
  "tagOwners": {"tag:web": ["alice@"]},
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["*:*"]},
    {"action": "accept", "src": ["tag:web"], "dst": ["alice@:*"]},
    {"action": "accept", "src": ["bob@"], "dst": ["alice@:` + bobPorts + `"]}
  ]
}`
}

// recorder is an HTTP server on a lab host that keeps the requests it got.
type recorder struct {
	ln   net.Listener
	reqs chan *http.Request
}

func newRecorder(t *testing.T, h *lab.Host, addr, name string) *recorder {
	t.Helper()
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, reqs: make(chan *http.Request, 100)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.reqs <- req
		fmt.Fprintf(w, "%s %s", name, req.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

// last is the newest request the recorder got (waiting up to 5 s for one).
func (r *recorder) last(t *testing.T) *http.Request {
	t.Helper()
	select {
	case req := <-r.reqs:
		return req
	case <-time.After(5 * time.Second):
		t.Fatal("the backend got no request")
		return nil
	}
}

// startServeLab starts the lab; skeindWrap, when set, runs skeind through further commands,
// extra are skeind's extra flags.
func startServeLab(t *testing.T, skeindWrap []string, extra ...string) *serveLab {
	t.Helper()
	s := &serveLab{l: lab.New(t), users: newLocalUsers(t)}
	var err error
	if s.c, err = s.l.StartControl(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.SetPolicy(servePolicy("*")); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, u := range []string{"alice", "bob"} {
		if _, err := s.c.CreateUser(u); err != nil {
			t.Fatal(err)
		}
		if keys[u], err = s.c.PreAuthKey(u, true, false); err != nil {
			t.Fatal(err)
		}
	}
	official := func(name, key string, extra ...string) *lab.Tailscaled {
		ts, err := mustHost(t, s.l, name).StartTailscaled(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(s.c.URL(), key, extra...); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	s.alice = official("ts-alice", keys["alice"])
	s.bob = official("ts-bob", keys["bob"])
	s.tagged = official("ts-tag", keys["alice"], "--advertise-tags=tag:web")

	h := mustHost(t, s.l, "sk")
	s.n = startNodeAs(t, h, s.users, skeindWrap, extra...)
	mustOK(t, s.n.cli("up", "--login-server", s.c.URL(), "--auth-key", keys["alice"], "--hostname", "sk"), "skein up")
	mustOK(t, s.n.cli("set", "--operator=alice"), "skein set --operator")
	s.skIP = s.n.selfIP()
	s.fqdn = strings.TrimSuffix(s.n.status().Self.DNSName, ".")
	for _, ts := range []*lab.Tailscaled{s.alice, s.bob, s.tagged} {
		if err := ts.WaitPeers(30*time.Second, "sk"); err != nil {
			t.Fatal(err)
		}
	}
	s.backend = newRecorder(t, h, "127.0.0.1:3002", "backend")
	s.backend2 = newRecorder(t, h, "127.0.0.1:3004", "backend2")
	echo, err := h.Listen("tcp", "127.0.0.1:7007")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	s.echoAddr = "127.0.0.1:7007"
	return s
}

// get is an HTTP GET from h to sk's tailnet address and port, with Host host and headers.
func (s *serveLab) get(h *lab.Host, port int, host, path string, hdr map[string]string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s%s", net.JoinHostPort(s.skIP.String(), fmt.Sprint(port)), path), nil)
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func (s *serveLab) hostPort(port int) string { return fmt.Sprintf("%s:%d", s.fqdn, port) }

// serveJSON is `skein serve status --json`.
func (s *serveLab) serveJSON(t *testing.T) string {
	t.Helper()
	r := s.n.cli("serve", "status", "--json")
	mustOK(t, r, "serve status --json")
	return r.stdout
}

// jsonKeys lists every object key in a JSON document, as "path.key" with map keys (ports,
// host:ports, mounts) written as "*", for comparing shapes.
func jsonKeys(t *testing.T, doc string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("%v: %s", err, doc)
	}
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for k, c := range m {
			name := k
			switch prefix {
			case ".TCP", ".Web", ".Web.*.Handlers", ".Foreground":
				name = "*"
			}
			set[prefix+"."+name] = true
			walk(prefix+"."+name, c)
		}
	}
	walk("", v)
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestServe: `skein serve` in the official command forms against official peers.
func TestServe(t *testing.T) {
	t.Parallel()
	s := startServeLab(t, nil)

	// 1. A background proxy: the peer gets 200; the backend sees the peer's address, its user
	// and the original Host; forged identity is replaced; a tagged peer gets none.
	t.Run("Proxy", func(t *testing.T) { testServeProxy(t, s) })

	// 2. A second backend under --set-path with the prefix stripped; TCP to an echo server.
	t.Run("SetPathAndTCP", func(t *testing.T) { testServeSetPathTCP(t, s) })

	// 3. Files, served by the operator's own foreground command.
	t.Run("Files", func(t *testing.T) { testServeFiles(t, s) })

	// 4. What skeind refuses from the operator.
	t.Run("Refusals", func(t *testing.T) {
		op := &syscall.Credential{Uid: aliceUID, Gid: aliceUID}
		for target, want := range map[string]string{
			"http://198.18.0.1:80":      "only this machine's loopback",
			"http://example.com:80":     "only this machine's loopback",
			"unix:/var/run/docker.sock": "unix: targets are not supported",
			"text:hello":                "text: targets are for root only",
		} {
			r := s.n.cliAs(op, "serve", "--bg", "--http", "3010", target)
			if r.code != 1 || !strings.Contains(r.stderr, want) {
				t.Errorf("serve %s as the operator: exit %d %q", target, r.code, r.stderr)
			}
		}
	})

	// 6. HTTPS needs certificates Headscale does not issue; nothing changes.
	t.Run("HTTPS", func(t *testing.T) {
		before := s.serveJSON(t)
		for _, args := range [][]string{{"serve", "3001"}, {"serve", "--https", "443", "3001"}, {"serve", "--bg", "--https", "8443", "3001"}, {"serve", "--tls-terminated-tcp", "443", "3001"}} {
			r := s.n.cli(args...)
			if r.code != 1 || !strings.Contains(r.stderr, "this control server issues no certificates; use --http PORT") {
				t.Errorf("skein %v: exit %d %q", args, r.code, r.stderr)
			}
		}
		if after := s.serveJSON(t); after != before {
			t.Errorf("a refused HTTPS serve changed the config:\n%s\n%s", before, after)
		}
		if r := s.n.cli("funnel", "3001"); r.code != 1 || !strings.Contains(r.stderr, "Tailscale's service") {
			t.Errorf("funnel: exit %d %q", r.code, r.stderr)
		}
	})

	// 5. An ACL change takes bob's access to the port away, live; alice keeps it.
	t.Run("ACL", func(t *testing.T) {
		if code, _, err := s.get(s.bob.Host(), 3003, s.hostPort(3003), "/", nil); err != nil || code != 200 {
			t.Fatalf("bob before the change: %d %v", code, err)
		}
		if err := s.c.SetPolicy(servePolicy("22")); err != nil {
			t.Fatal(err)
		}
		lab.Eventually(t, 20*time.Second, func() error {
			if _, _, err := s.get(s.bob.Host(), 3003, s.hostPort(3003), "/", nil); err == nil {
				return errors.New("bob still reaches port 3003")
			}
			return nil
		})
		_, _, err := s.get(s.bob.Host(), 3003, s.hostPort(3003), "/", nil)
		if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(fmt.Sprint(err), "deadline") && !strings.Contains(fmt.Sprint(err), "timeout") {
			t.Errorf("bob's request should time out, got %v", err)
		}
		if code, _, err := s.get(s.alice.Host(), 3003, s.hostPort(3003), "/", nil); err != nil || code != 200 {
			t.Errorf("alice after the change: %d %v", code, err)
		}
		for len(s.backend.reqs) > 0 {
			<-s.backend.reqs
		}
	})

	// 9. Parity: the same `--http 3005 --set-path /a2` serve on an official peer and on
	// Skein, each asked by name from the other side with forged identity headers, hands its
	// backend the same request (relative to who asked and how); by IP the official one answers
	// 404, where Skein answers.
	t.Run("Parity", func(t *testing.T) {
		theirBackend := newRecorder(t, s.alice.Host(), "127.0.0.1:3006", "parity-backend")
		ourBackend := newRecorder(t, s.n.host, "127.0.0.1:3006", "parity-backend")
		if out, err := s.alice.CLI("serve", "--bg", "--http", "3005", "--set-path", "/a2", "http://127.0.0.1:3006"); err != nil {
			t.Fatalf("tailscale serve: %v %s", err, out)
		}
		mustOK(t, s.n.cli("serve", "--bg", "--http", "3005", "--set-path", "/a2", "http://127.0.0.1:3006"), "skein serve (parity)")
		ost, _ := s.alice.Status()
		aliceIP, aliceFQDN := ost.Self.IPv4(), strings.TrimSuffix(ost.Self.DNSName, ".")
		type seen struct {
			code                                      int
			path, host, xff, xfh, xfp, login, name    string
			pic, info                                 string
			hasLogin, hasName, hasPic, forgedFromPeer bool
		}
		// ask GETs /a2/deep/x from h at ip:3005 with Host host, and describes what the backend
		// got with the asker's address and the Host replaced by placeholders.
		ask := func(h *lab.Host, ip netip.Addr, host string, backend *recorder, asker netip.Addr) (seen, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/a2/deep/x", net.JoinHostPort(ip.String(), "3005")), nil)
			req.Host = host
			req.Header.Set("Tailscale-User-Login", "forged@evil")
			req.Header.Set("Tailscale-User-Name", "Mallory")
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			resp, err := h.HTTPClient().Do(req)
			if err != nil {
				return seen{}, err
			}
			resp.Body.Close()
			v := seen{code: resp.StatusCode}
			if resp.StatusCode != 200 {
				return v, nil
			}
			r := backend.last(t)
			placeholders := strings.NewReplacer(host, "HOST", asker.String(), "ASKER")
			v.path, v.host = r.URL.Path, placeholders.Replace(r.Host)
			v.xff, v.xfh, v.xfp = placeholders.Replace(r.Header.Get("X-Forwarded-For")), placeholders.Replace(r.Header.Get("X-Forwarded-Host")), r.Header.Get("X-Forwarded-Proto")
			v.login, v.name, v.pic, v.info = r.Header.Get("Tailscale-User-Login"), r.Header.Get("Tailscale-User-Name"), r.Header.Get("Tailscale-User-Profile-Pic"), r.Header.Get("Tailscale-Headers-Info")
			_, v.hasLogin = r.Header["Tailscale-User-Login"]
			_, v.hasName = r.Header["Tailscale-User-Name"]
			_, v.hasPic = r.Header["Tailscale-User-Profile-Pic"]
			v.forgedFromPeer = strings.Contains(fmt.Sprint(r.Header), "forged@evil") || strings.Contains(fmt.Sprint(r.Header), "Mallory") || strings.Contains(fmt.Sprint(r.Header), "6.6.6.6")
			return v, nil
		}
		var theirs seen
		lab.Eventually(t, 20*time.Second, func() error {
			var err error
			theirs, err = ask(s.n.host, aliceIP, aliceFQDN+":3005", theirBackend, s.skIP)
			return err
		})
		ours, err := ask(s.alice.Host(), s.skIP, s.hostPort(3005), ourBackend, aliceIP)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the official serve's backend saw %+v", theirs)
		if theirs.code != 200 || theirs.path != "/deep/x" || theirs.xff != "ASKER" || theirs.login != "alice" {
			t.Errorf("official serve from Skein's side: %+v", theirs)
		}
		if ours != theirs {
			t.Errorf("the same serve differs:\nofficial: %+v\nSkein:    %+v", theirs, ours)
		}
		// By IP: the official serve's 404, Skein's answer.
		if v, err := ask(s.n.host, aliceIP, aliceIP.String()+":3005", theirBackend, s.skIP); err != nil || v.code != 404 {
			t.Errorf("official serve by IP: %+v %v (expected its 404)", v, err)
		}
		if v, err := ask(s.alice.Host(), s.skIP, s.skIP.String()+":3005", ourBackend, aliceIP); err != nil || v.code != 200 {
			t.Errorf("Skein's serve by IP: %+v %v", v, err)
		}
		// The official serve status and ours print the same tree for it.
		out, err := s.alice.CLI("serve", "status")
		if err != nil {
			t.Fatal(err)
		}
		theirTree := statusBlock(out, aliceFQDN, 3005)
		ourTree := statusBlock(s.n.cli("serve", "status").stdout, s.fqdn, 3005)
		if theirTree == "" || ourTree != theirTree {
			t.Errorf("serve status differs:\nofficial:\n%s\nSkein:\n%s", theirTree, ourTree)
		}
		// The official serve status --json and ours have the same keys.
		out, err = s.alice.CLI("serve", "status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		theirKeys, ourKeys := jsonKeys(t, out), jsonKeys(t, s.serveJSON(t))
		for _, k := range theirKeys {
			if !slices.Contains(ourKeys, k) {
				t.Errorf("the official serve status --json has %s, ours does not (ours: %v)", k, ourKeys)
			}
		}
		for _, k := range ourKeys {
			if !strings.HasPrefix(k, ".Foreground") && !slices.Contains(theirKeys, k) && !strings.Contains(k, "TCPForward") && !strings.Contains(k, "Path") {
				t.Errorf("our serve status --json has %s, the official one does not (theirs: %v)", k, theirKeys)
			}
		}
	})

	// 7. status, off, reset, and a restart that keeps only background entries.
	t.Run("StatusOffResetRestart", func(t *testing.T) { testServeLifecycle(t, s, true) })

	// A crash leaves the redirects; --cleanup (the unit's ExecStopPost) takes them away.
	mustOK(t, s.n.cli("serve", "--bg", "--http", "3030", "3002"), "serve before the crash")
	if !strings.Contains(s.ingressTable(t), "dport 3030") {
		t.Fatalf("no redirect for 3030:\n%s", s.ingressTable(t))
	}
	s.n.proc.Kill()
	w := s.users.wrap()
	if r := runIn(t, s.n.host, nil, "", 30*time.Second, w[0], append(slices.Clone(w[1:]), skeindBin, "--cleanup", "--statedir", s.n.statedir)...); r.code != 0 {
		t.Fatalf("skeind --cleanup: exit %d %s", r.code, r.stderr)
	}
	if tbl := s.ingressTable(t); tbl != "" {
		t.Errorf("--cleanup left the redirects:\n%s", tbl)
	}
}

// statusBlock is the block of `serve status` output for http on fqdn:port, up to its blank
// line, with the node's names written as SHORT and FQDN.
func statusBlock(out, fqdn string, port int) string {
	short, _, _ := strings.Cut(fqdn, ".")
	start := fmt.Sprintf("http://%s:%d (", short, port)
	var block []string
	for _, line := range strings.Split(out, "\n") {
		if len(block) == 0 && !strings.HasPrefix(line, start) {
			continue
		}
		if line == "" {
			break
		}
		block = append(block, strings.ReplaceAll(strings.ReplaceAll(line, fqdn, "FQDN"), "//"+short+":", "//SHORT:"))
	}
	return strings.Join(block, "\n")
}

// testServeFiles: the operator's foreground share of a folder in their home: a normal file
// arrives; a symlink out, "..", a root-only file inside fail without content; the share
// stops with the command; the operator cannot share /root in the background.
func testServeFiles(t *testing.T, s *serveLab) {
	share := s.makeShare(t)
	w := s.users.wrap()
	args := append(slices.Clone(w[1:]), "setpriv", fmt.Sprintf("--reuid=%d", aliceUID), fmt.Sprintf("--regid=%d", aliceUID), "--clear-groups", "--",
		skeinBin, "--socket", s.n.socket, "serve", "--http", "8080", share)
	fg, err := s.n.host.StartProcess(w[0], []string{"HOME=" + s.users.aliceHome}, args...)
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		if fg.Exited() {
			t.Fatalf("skein serve exited: %s", fg.Log())
		}
		code, body, err := s.get(s.alice.Host(), 8080, s.hostPort(8080), "/normal.txt", nil)
		if err != nil || code != 200 || body != "shared by alice\n" {
			return fmt.Errorf("normal file: %d %q %v", code, body, err)
		}
		return nil
	})
	if !strings.Contains(fg.Log(), "Press Ctrl+C to exit.") {
		t.Errorf("foreground message: %s", fg.Log())
	}
	shadow, _ := os.ReadFile("/etc/shadow")
	passwd, _ := os.ReadFile("/etc/passwd")
	for _, p := range []string{"/shadow-link", "/../../etc/passwd", "/..%2f..%2fetc/passwd", "/root-only", "/%2e%2e/%2e%2e/etc/shadow"} {
		code, body, err := s.get(s.alice.Host(), 8080, s.hostPort(8080), p, nil)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		leaked := (len(shadow) > 0 && strings.Contains(body, strings.SplitN(string(shadow), "\n", 2)[0])) ||
			strings.Contains(body, strings.SplitN(string(passwd), "\n", 2)[0]) || strings.Contains(body, "root's secret")
		if code == 200 && p != "/../../etc/passwd" || leaked {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	// The listing shows the share's own names.
	if code, body, _ := s.get(s.alice.Host(), 8080, s.hostPort(8080), "/", nil); code != 200 || !strings.Contains(body, "normal.txt") {
		t.Errorf("listing: %d %q", code, body)
	}
	fg.Signal(syscall.SIGINT)
	select {
	case <-fg.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("skein serve did not stop on Ctrl+C")
	}
	lab.Eventually(t, 10*time.Second, func() error {
		if _, _, err := s.get(s.alice.Host(), 8080, s.hostPort(8080), "/normal.txt", nil); err == nil {
			return errors.New("the share is still there after the command stopped")
		}
		return nil
	})
	if strings.Contains(s.serveJSON(t), "8080") {
		t.Errorf("the foreground entry outlived its command: %s", s.serveJSON(t))
	}
	r := s.n.cliAs(&syscall.Credential{Uid: aliceUID, Gid: aliceUID}, "serve", "--bg", "--http", "8081", "/root")
	if r.code != 1 || !strings.Contains(r.stderr, "only its owner (or root) may share it") {
		t.Errorf("--bg /root as the operator: exit %d %q", r.code, r.stderr)
	}
	if strings.Contains(s.serveJSON(t), "8081") {
		t.Error("the refused share is in the config")
	}
	testServeBackgroundFiles(t, s, share)
}

// makeShare makes the operator's folder to share: alice's normal file, a symlink to
// /etc/shadow and a root-only file.
func (s *serveLab) makeShare(t *testing.T) string {
	t.Helper()
	share := filepath.Join(s.users.aliceHome, "share")
	os.MkdirAll(share, 0o755)
	os.WriteFile(filepath.Join(share, "normal.txt"), []byte("shared by alice\n"), 0o644)
	os.Symlink("/etc/shadow", filepath.Join(share, "shadow-link"))
	os.WriteFile(filepath.Join(share, "root-only"), []byte("root's secret\n"), 0o600)
	for _, p := range []string{share, filepath.Join(share, "normal.txt")} {
		os.Lchown(p, aliceUID, aliceUID)
	}
	os.Lchown(filepath.Join(share, "shadow-link"), aliceUID, aliceUID)
	return share
}

// testServeBackgroundFiles: the operator's own folder in the background on port 8082, read
// as alice (by the session helper's file server): her file arrives, root's does not.
func testServeBackgroundFiles(t *testing.T, s *serveLab, share string) {
	mustOK(t, s.n.cliAs(&syscall.Credential{Uid: aliceUID, Gid: aliceUID}, "serve", "--bg", "--http", "8082", share), "serve --bg of the operator's folder")
	if code, body, err := s.get(s.alice.Host(), 8082, s.hostPort(8082), "/normal.txt", nil); err != nil || code != 200 || body != "shared by alice\n" {
		t.Errorf("background share: %d %q %v", code, body, err)
	}
	for _, p := range []string{"/root-only", "/shadow-link"} {
		if code, body, _ := s.get(s.alice.Host(), 8082, s.hostPort(8082), p, nil); code == 200 || strings.Contains(body, "secret") || strings.Contains(body, "root:") {
			t.Errorf("background share served %s: %d %q", p, code, body)
		}
	}
}

// testServeLifecycle: status shows the official tree; off removes the port and its redirect;
// a restart keeps background entries and not foreground ones; reset clears all.
func testServeLifecycle(t *testing.T, s *serveLab, files bool) {
	r := s.n.cli("serve", "status")
	for _, want := range []string{"http://" + s.fqdn + ":3003 (tailnet only)", "|-- /   proxy http://127.0.0.1:3002", "|-- /a2 proxy http://127.0.0.1:3004", "|-- tcp://" + s.fqdn + ":2222 (TLS over TCP, tailnet only)", "|--> tcp://127.0.0.1:7007"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("serve status lacks %q:\n%s", want, r.stdout)
		}
	}
	var cfg struct {
		TCP map[string]struct {
			HTTP       bool
			TCPForward string
		}
		Web map[string]struct {
			Handlers map[string]struct{ Proxy, Path string }
		}
	}
	json.Unmarshal([]byte(s.serveJSON(t)), &cfg)
	if !cfg.TCP["3003"].HTTP || cfg.TCP["2222"].TCPForward != "127.0.0.1:7007" || cfg.Web[s.hostPort(3003)].Handlers["/a2"].Proxy != "http://127.0.0.1:3004" {
		t.Errorf("serve status --json: %s", s.serveJSON(t))
	}
	if !strings.Contains(s.ingressTable(t), "dport 2222") {
		t.Fatalf("no redirect for 2222:\n%s", s.ingressTable(t))
	}
	mustOK(t, s.n.cli("serve", "--tcp=2222", "off"), "serve --tcp=2222 off")
	if tbl := s.ingressTable(t); strings.Contains(tbl, "dport 2222") {
		t.Errorf("the redirect for 2222 stayed after off:\n%s", tbl)
	}
	if strings.Contains(s.serveJSON(t), "2222") {
		t.Error("2222 still in the config after off")
	}

	// A foreground entry next to the background ones, then a restart.
	fg, err := s.n.host.StartProcess(skeinBin, nil, "--socket", s.n.socket, "serve", "--http", "3020", "3002")
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(s.serveJSON(t), "3020") {
			return errors.New("the foreground entry is not there yet")
		}
		return nil
	})
	s.n.stop()
	fg.Kill()
	s.n.start()
	lab.Eventually(t, 30*time.Second, func() error {
		if _, _, err := s.get(s.alice.Host(), 3003, s.hostPort(3003), "/", nil); err != nil {
			return err
		}
		return nil
	})
	s.backend.last(t)
	if j := s.serveJSON(t); strings.Contains(j, "3020") || !strings.Contains(j, "3003") || files && !strings.Contains(j, "8082") {
		t.Errorf("after a restart: %s", j)
	}
	if files {
		if code, body, err := s.get(s.alice.Host(), 8082, s.hostPort(8082), "/normal.txt", nil); err != nil || code != 200 || body != "shared by alice\n" {
			t.Errorf("background share after a restart: %d %q %v", code, body, err)
		}
	}
	mustOK(t, s.n.cli("serve", "reset"), "serve reset")
	if r := s.n.cli("serve", "status"); strings.TrimSpace(r.stdout) != "No serve config" {
		t.Errorf("after reset: %q", r.stdout)
	}
	if tbl := s.ingressTable(t); tbl != "" {
		t.Errorf("redirects left after reset:\n%s", tbl)
	}
	if _, _, err := s.get(s.alice.Host(), 3003, s.hostPort(3003), "/", nil); err == nil {
		t.Error("port 3003 still answers after reset")
	}
}

// testServeProxy is acceptance 1: a background proxy reached from official peers.
func testServeProxy(t *testing.T, s *serveLab) {
	r := s.n.cliAs(&syscall.Credential{Uid: aliceUID, Gid: aliceUID}, "serve", "--bg", "--http", "3003", "http://127.0.0.1:3002")
	mustOK(t, r, "serve --bg --http 3003 (as the operator)")
	if !strings.Contains(r.stdout, "http://"+s.fqdn+":3003/") || !strings.Contains(r.stdout, "skein serve --http=3003 off") {
		t.Errorf("serve's message:\n%s", r.stdout)
	}
	var code int
	var body string
	lab.Eventually(t, 20*time.Second, func() error {
		var err error
		code, body, err = s.get(s.alice.Host(), 3003, s.hostPort(3003), "/x", map[string]string{"Tailscale-User-Login": "forged@evil", "X-Forwarded-For": "6.6.6.6"})
		if err != nil {
			return err
		}
		return nil
	})
	req := s.backend.last(t)
	if code != 200 || body != "backend /x" {
		t.Errorf("GET: %d %q", code, body)
	}
	aliceIP := s.alice.Host() // the official peer's tailnet address:
	st, _ := s.alice.Status()
	if req.Header.Get("X-Forwarded-For") != st.Self.IPv4().String() || req.Header.Get("Tailscale-User-Login") != "alice" || req.Host != s.hostPort(3003) || req.Header.Get("X-Forwarded-Host") != s.hostPort(3003) {
		t.Errorf("backend saw Host %q, X-Forwarded-For %q, login %q, X-Forwarded-Host %q (peer %v)", req.Host, req.Header.Get("X-Forwarded-For"), req.Header.Get("Tailscale-User-Login"), req.Header.Get("X-Forwarded-Host"), aliceIP.Name())
	}
	code, _, err := s.get(s.tagged.Host(), 3003, "sk:3003", "/", map[string]string{"Tailscale-User-Login": "forged@evil", "Tailscale-User-Name": "Mallory"})
	if err != nil || code != 200 {
		t.Fatalf("tagged peer: %d %v", code, err)
	}
	req = s.backend.last(t)
	if req.Header.Get("Tailscale-User-Login") != "" || req.Header.Get("Tailscale-User-Name") != "" {
		t.Errorf("tagged peer's request carries identity %q %q", req.Header.Get("Tailscale-User-Login"), req.Header.Get("Tailscale-User-Name"))
	}
	// This machine itself reaching its own tailnet address: not through the tunnel, so not
	// the share (and never with a tailnet identity).
	if code, _, err := s.get(s.n.host, 3003, s.hostPort(3003), "/", map[string]string{"Tailscale-User-Login": "forged@evil"}); err == nil {
		t.Errorf("a local connection to our own tailnet address reached the share: %d", code)
	}
	select {
	case req := <-s.backend.reqs:
		t.Errorf("the backend got a request from this machine itself: %v", req.Header)
	default:
	}
	if code, _, _ := s.get(s.alice.Host(), 3003, "evil.example", "/", nil); code != 404 {
		t.Errorf("foreign Host: %d", code)
	}
	if code, _, _ := s.get(s.alice.Host(), 3003, s.skIP.String()+":3003", "/", nil); code != 200 {
		t.Errorf("Host = our tailnet IP: %d", code)
	}
	for len(s.backend.reqs) > 0 {
		<-s.backend.reqs
	}

}

// testServeSetPathTCP is acceptance 2: --set-path to a second backend, and TCP forwarding.
func testServeSetPathTCP(t *testing.T, s *serveLab) {
	mustOK(t, s.n.cli("serve", "--bg", "--http", "3003", "--set-path", "/a2", "3004"), "serve --set-path /a2")
	code, body, err := s.get(s.alice.Host(), 3003, s.hostPort(3003), "/a2/deep/file", nil)
	if err != nil || code != 200 || body != "backend2 /deep/file" {
		t.Errorf("GET /a2/deep/file: %d %q %v", code, body, err)
	}
	s.backend2.last(t)
	mustOK(t, s.n.cli("serve", "--bg", "--tcp", "2222", "7007"), "serve --tcp 2222")
	lab.Eventually(t, 10*time.Second, func() error {
		c, err := s.alice.Host().Dial(t.Context(), "tcp", net.JoinHostPort(s.skIP.String(), "2222"))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "ping over tcp\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if line != "ping over tcp\n" {
			return fmt.Errorf("echo: %q %v", line, err)
		}
		return nil
	})

}

// TestServeUnitCapabilities: with skeind under the unit's capabilities only, proxies, TCP
// forwarding, status, off, reset and restarts work the same; a folder in the background is
// refused with the fix while no session helper runs, and is served as its owner through the
// socket-activated helper once one does, also after a restart.
func TestServeUnitCapabilities(t *testing.T) {
	t.Parallel()
	helperSock := helperSocketPath(t)
	s := startServeLab(t, unitCaps, "--session-helper-socket", helperSock)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.n.proc.Pid()))
	if !strings.Contains(string(status), "CapEff:\t0000000000003000") || !strings.Contains(string(status), "NoNewPrivs:\t1") {
		t.Fatalf("skeind does not run with the unit's capabilities:\n%s", status)
	}
	t.Run("Proxy", func(t *testing.T) { testServeProxy(t, s) })
	t.Run("SetPathAndTCP", func(t *testing.T) { testServeSetPathTCP(t, s) })

	share := s.makeShare(t)
	before := s.serveJSON(t)
	r := s.n.cliAs(&syscall.Credential{Uid: aliceUID, Gid: aliceUID}, "serve", "--bg", "--http", "8082", share)
	if r.code != 1 || !strings.Contains(r.stderr, "needs the session helper") || !strings.Contains(r.stderr, "systemctl enable --now skein-session-helper.socket") {
		t.Errorf("--bg of a folder without a session helper: exit %d %q", r.code, r.stderr)
	}
	if after := s.serveJSON(t); after != before {
		t.Errorf("the refused share changed the config:\n%s\n%s", before, after)
	}
	helper := startSocketActivatedHelper(t, s.n.host, s.users, helperSock)
	t.Run("BackgroundFiles", func(t *testing.T) { testServeBackgroundFiles(t, s, share) })
	helperServesSystemdSocket(t, helper)

	t.Run("StatusOffResetRestart", func(t *testing.T) { testServeLifecycle(t, s, true) })
	s.n.stop()
	helperClean(t, helper)
}
