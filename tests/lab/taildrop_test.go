package lab_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

const gib = 1 << 30

// writePatternFile writes size bytes of the test pattern and returns the path and SHA-256.
func writePatternFile(t testing.TB, dir, name string, size int64) (string, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), &patternReader{left: size}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

func fileSum(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sendBothWays sends a file official → Skein and Skein → official and checks both arrive intact.
func sendBothWays(t *testing.T, n *node, ts *lab.Tailscaled, size int64, tag string) {
	t.Helper()
	src, sum := writePatternFile(t, ts.Host().Dir(), "from-official-"+tag+".bin", size)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := ts.CLIContext(ctx, "file", "cp", src, "sk-files:"); err != nil {
		t.Fatalf("tailscale file cp: %v\n%s", err, out)
	}
	d := time.Since(start)
	inbox := t.TempDir()
	r := n.cli("file", "get", inbox)
	mustOK(t, r, "skein file get")
	if got := fileSum(t, filepath.Join(inbox, filepath.Base(src))); got != sum {
		t.Fatalf("official → Skein (%s): checksum mismatch", tag)
	}
	t.Logf("official → Skein %s: %d MiB in %v (%.0f Mbit/s), checksum ok", tag, size>>20, d.Round(time.Millisecond), float64(size*8)/d.Seconds()/1e6)

	src2, sum2 := writePatternFile(t, n.host.Dir(), "from-skein-"+tag+".bin", size)
	start = time.Now()
	mustOK(t, n.cli("file", "cp", src2, "alpha-ts:"), "skein file cp")
	d = time.Since(start)
	out := t.TempDir()
	if o, err := ts.CLI("file", "get", out); err != nil {
		t.Fatalf("tailscale file get: %v\n%s", err, o)
	}
	if got := fileSum(t, filepath.Join(out, filepath.Base(src2))); got != sum2 {
		t.Fatalf("Skein → official (%s): checksum mismatch", tag)
	}
	t.Logf("Skein → official %s: %d MiB in %v (%.0f Mbit/s), checksum ok", tag, size>>20, d.Round(time.Millisecond), float64(size*8)/d.Seconds()/1e6)
	os.Remove(src)
	os.Remove(src2)
}

// TestTaildropInterop: 1 GiB both ways between Skein and the official client, over a direct
// path and over DERP, and a resumed transfer after the sender was killed halfway.
func TestTaildropInterop(t *testing.T) {
	t.Parallel()
	_, tn, n := joinedNode(t, "sk-files", "alpha-ts")
	alpha := tn.Peer("alpha-ts")
	pingICMP(t, n.host, func() netip.Addr { st, _ := alpha.Status(); return st.Self.IPv4() }())
	waitDirect(t, 20*time.Second, "skein→alpha", func() string { return n.pathOf("alpha-ts") })
	r := n.cli("file", "cp", "--targets")
	if r.code != 0 || !strings.Contains(r.stdout, "alpha-ts") {
		t.Fatalf("file cp --targets: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	sendBothWays(t, n, alpha, gib, "direct")

	// Interrupted Skein → official: kill the sending CLI halfway, send again: only the rest goes.
	src, sum := writePatternFile(t, n.host.Dir(), "resume.bin", gib)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, skeinBin, "--socket", n.socket, "file", "cp", src, "alpha-ts:")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	partialDir := filepath.Join(alpha.StateDir(), "files")
	lab.Eventually(t, 60*time.Second, func() error {
		var total int64
		filepath.Walk(partialDir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(p, ".partial") {
				total += fi.Size()
			}
			return nil
		})
		if total < gib/2 {
			return fmt.Errorf("partial at %d bytes", total)
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cancel()
	cmd.Wait()
	r = n.cli("file", "cp", "--verbose", src, "alpha-ts:")
	mustOK(t, r, "skein file cp (resume)")
	t.Logf("resumed send: %s%s", r.stdout, r.stderr)
	if !strings.Contains(r.stdout+r.stderr, "resumed at") {
		t.Errorf("second send did not resume")
	}
	out := t.TempDir()
	if o, err := alpha.CLI("file", "get", out); err != nil {
		t.Fatalf("tailscale file get: %v\n%s", err, o)
	}
	if got := fileSum(t, filepath.Join(out, "resume.bin")); got != sum {
		t.Fatalf("resumed file: checksum mismatch")
	}
	os.Remove(src)
}

// TestTaildropOverDERP: 1 GiB both ways with UDP between the two blocked, so over DERP. The
// plain skeind build: under the race detector the DERP path alone would take many minutes (the
// direct and hostile tests run the race build through the same Taildrop code).
func TestTaildropOverDERP(t *testing.T) {
	t.Parallel()
	_, tn, n := joinedNodeWith(t, true, "sk-files", "alpha-ts")
	alpha := tn.Peer("alpha-ts")
	if err := n.host.BlockUDP(alpha.Host().Addr()); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 30*time.Second, func() error {
		if p := n.pathOf("alpha-ts"); !strings.HasPrefix(p, "relay") {
			return fmt.Errorf("path %q, want relay", p)
		}
		return nil
	})
	sendBothWays(t, n, alpha, gib, "DERP")
}

// TestTaildropHostile: hostile requests to Skein's peer API from a lab peer are refused or
// made safe, nothing partial poses as complete, and the receiver keeps serving.
func TestTaildropHostile(t *testing.T) {
	t.Parallel()
	l, tn, n := joinedNode(t, "sk-files", "alpha-ts")
	alpha := tn.Peer("alpha-ts")
	var base string
	lab.Eventually(t, 30*time.Second, func() error {
		st, err := alpha.Status()
		if err != nil {
			return err
		}
		p := st.PeerByHostName("sk-files")
		if p == nil || len(p.PeerAPIURL) == 0 {
			return fmt.Errorf("alpha sees no peer API for sk-files: %+v", p)
		}
		base = p.PeerAPIURL[0]
		return nil
	})
	inbox := filepath.Join(n.statedir, "files")
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	// A symlink planted in the inbox under the name a peer will send.
	lab.Eventually(t, 10*time.Second, func() error { _, err := os.Stat(inbox); return err })
	if err := os.Symlink(victim, filepath.Join(inbox, "planted.txt")); err != nil {
		t.Fatal(err)
	}
	hc := alpha.Host().HTTPClient()
	put := func(name string, body string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("PUT", base+"/v0/put/"+name, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	for _, name := range []string{
		"..%2F..%2Fetc%2Fpasswd", "a%2Fb", ".", "..", "%2E%2E", "nul%00byte", "ctl%01x", "bell%07",
		strings.Repeat("x", 10000), "ends.partial", "back%5Cslash", "",
	} {
		code, body := put(name, "bad", nil)
		if code != http.StatusBadRequest || !strings.Contains(body, "invalid filename") {
			t.Errorf("PUT %.40q → %d %q, want 400 invalid filename", name, code, body)
		}
	}
	if code, body := put("planted.txt", "attack", nil); code != 200 {
		t.Errorf("PUT planted.txt: %d %s", code, body)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the symlink was followed: victim now %q", b)
	}
	// Far more than the free space: refused before any byte is written (raw request: net/http
	// would not send a Content-Length its body does not have).
	{
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := alpha.Host().Dial(ctx, "tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "PUT /v0/put/huge.bin HTTP/1.1\r\nHost: peer\r\nContent-Length: 1099511627776000\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("huge Content-Length: no answer before the body: %v", err)
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode != http.StatusInsufficientStorage {
				t.Errorf("huge Content-Length → %d %s, want 507", resp.StatusCode, b)
			}
			t.Logf("huge Content-Length → %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		c.Close()
		cancel()
	}
	// Slow loris: a connection that trickles gets cut off, and others are served meanwhile.
	u := strings.TrimPrefix(base, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	slow, err := alpha.Host().Dial(ctx, "tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(slow, "PUT /v0/put/slow.bin HTTP/1.1\r\nHost: peer\r\nContent-Length: 100000000\r\n\r\n")
	cut := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		for {
			slow.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := slow.Write([]byte("x")); err != nil {
				cut <- time.Since(start)
				return
			}
			time.Sleep(time.Second)
		}
	}()
	if code, body := put("normal.txt", "hello", nil); code != 200 {
		t.Errorf("normal PUT during slow loris: %d %s", code, body)
	}
	select {
	case d := <-cut:
		t.Logf("slow-loris sender cut off after %v", d.Round(time.Second))
	case <-ctx.Done():
		t.Errorf("slow-loris sender not cut off in 90 s")
	}
	slow.Close()
	// Only complete files wait in the inbox, none of the refused ones.
	lab.Eventually(t, 10*time.Second, func() error {
		st := map[string]bool{}
		files, err := ipcWaiting(n)
		if err != nil {
			return err
		}
		for _, f := range files {
			st[f] = true
		}
		if !st["normal.txt"] || !(st["planted (1).txt"] || st["planted.txt"]) {
			return fmt.Errorf("waiting files: %v", files)
		}
		for f := range st {
			if strings.Contains(f, "slow") || strings.Contains(f, "huge") || strings.Contains(f, "passwd") {
				return fmt.Errorf("refused upload is waiting: %s", f)
			}
		}
		return nil
	})

	// A node of another user: 403, nothing written.
	c := tn.Control
	if _, err := c.CreateUser("mallory"); err != nil {
		t.Fatal(err)
	}
	mkey, err := c.PreAuthKey("mallory", false, false)
	if err != nil {
		t.Fatal(err)
	}
	mh, err := l.AddHost("mallory-ts")
	if err != nil {
		t.Fatal(err)
	}
	mts, err := mh.StartTailscaled("mallory-ts")
	if err != nil {
		t.Fatal(err)
	}
	if err := mts.Up(c.URL(), mkey); err != nil {
		t.Fatal(err)
	}
	mc := mh.HTTPClient()
	lab.Eventually(t, 30*time.Second, func() error {
		req, _ := http.NewRequest("PUT", base+"/v0/put/from-mallory.txt", strings.NewReader("evil"))
		resp, err := mc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			return fmt.Errorf("another user's PUT → %d, want 403", resp.StatusCode)
		}
		return nil
	})
	if files, _ := ipcWaiting(n); strings.Contains(strings.Join(files, ","), "mallory") {
		t.Errorf("another user's file is waiting: %v", files)
	}
	if code, body := put("after.txt", "still serving", nil); code != 200 {
		t.Errorf("receiver stopped serving: %d %s", code, body)
	}
}

func ipcWaiting(n *node) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	files, err := ipcClient(n).WaitingFiles(ctx, 0)
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	return names, err
}
