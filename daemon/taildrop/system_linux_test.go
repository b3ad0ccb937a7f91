package taildrop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTmpfsFull runs the disk-space cases against a real 8 MiB tmpfs, mounted in a private
// mount namespace of a child process (so nothing leaks into the host's mounts). Needs root.
func TestTmpfsFull(t *testing.T) {
	if dir := os.Getenv("SKEIN_TAILDROP_TMPFS"); dir != "" {
		tmpfsChild(t, dir)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTmpfsFull$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SKEIN_TAILDROP_TMPFS="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "tmpfs cases done") {
		t.Fatal("child did not run the cases")
	}
}

func tmpfsChild(t *testing.T, dir string) {
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=8m,mode=0700"); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	ctx := withContext(t, time.Minute)

	// Reserve 1 MiB of the 8.
	f := newFixtureAt(t, filepath.Join(dir, "inbox"), func(h *Handler) { h.Reserve = 1 << 20 })
	f.in.SetLimits(Limits{MaxBytes: 1 << 40}) // the space on disk is what is tested here
	_, err := Send(ctx, f.client("127.0.0.1"), f.base(), "big.bin", 16<<20, io.LimitReader(zeroReader{}, 16<<20), nil)
	if err == nil || !strings.Contains(err.Error(), "507") {
		t.Errorf("16 MiB with Content-Length: %v", err)
	}
	t.Logf("16 MiB with Content-Length: %v", err)
	if got := f.files(); len(got) != 0 {
		t.Errorf("inbox = %q", got)
	}
	r := f.do("127.0.0.1", "PUT", "/v0/put/stream.bin", io.LimitReader(zeroReader{}, 16<<20), -1)
	if r.err == nil && r.code != 507 {
		t.Errorf("16 MiB chunked: %d %q", r.code, r.body)
	}
	t.Logf("16 MiB chunked: %d %q %v", r.code, strings.TrimSpace(r.body), r.err)
	f.waitIdle()
	if got := f.files(); len(got) != 0 {
		t.Errorf("inbox = %q", got)
	}
	if _, err := Send(ctx, f.client("127.0.0.1"), f.base(), "fits.bin", 4<<20, io.LimitReader(zeroReader{}, 4<<20), nil); err != nil {
		t.Errorf("4 MiB: %v", err)
	}
	f.in.Delete("fits.bin")

	// No reserve: the file system fills up (ENOSPC) and the partial is removed.
	g := newFixtureAt(t, filepath.Join(dir, "inbox2"), func(h *Handler) { h.Reserve = -1 })
	g.in.avail = func() (int64, error) { return 1 << 40, nil } // statfs lies
	g.in.SetLimits(Limits{MaxBytes: 1 << 40})
	r = g.do("127.0.0.1", "PUT", "/v0/put/full.bin", io.LimitReader(zeroReader{}, 16<<20), -1)
	if r.err == nil && (r.code != 507 || !strings.Contains(r.body, "full")) {
		t.Errorf("ENOSPC: %d %q", r.code, r.body)
	}
	t.Logf("ENOSPC: %d %q %v", r.code, strings.TrimSpace(r.body), r.err)
	g.waitIdle()
	if got := g.files(); len(got) != 0 {
		t.Errorf("inbox2 = %q", got)
	}
	t.Log("tmpfs cases done")
}

// TestEndToEnd sends a file over a real socket with Send to a NewServer and reports
// throughput and the process's resident memory. SKEIN_TAILDROP_E2E_MB sets the size (256),
// SKEIN_TAILDROP_E2E_DIR the directory the inbox is created in (a temporary one).
//
// It runs in a child process of its own, so that the memory figures are this transfer's and
// not those of the tests before it.
func TestEndToEnd(t *testing.T) {
	if os.Getenv("SKEIN_TAILDROP_E2E_CHILD") == "" {
		args := []string{"-test.run=^TestEndToEnd$", "-test.v", "-test.count=1"}
		if testing.Short() {
			args = append(args, "-test.short")
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "SKEIN_TAILDROP_E2E_CHILD=1")
		out, err := cmd.CombinedOutput()
		t.Logf("child:\n%s", out)
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		return
	}
	mb := 256
	if v, err := strconv.Atoi(os.Getenv("SKEIN_TAILDROP_E2E_MB")); err == nil && v > 0 {
		mb = v
	}
	if testing.Short() {
		mb = 32
	}
	size := int64(mb) << 20
	seed := [32]byte{1, 2, 3}
	h := sha256.New()
	io.Copy(h, io.LimitReader(rand.NewChaCha8(seed), size))
	want := h.Sum(nil)

	parent := t.TempDir()
	if d := os.Getenv("SKEIN_TAILDROP_E2E_DIR"); d != "" {
		p, err := os.MkdirTemp(d, "e2e")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(p)
		parent = p
	}
	dir := filepath.Join(parent, "inbox")
	in, err := OpenInbox(dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	handler := &Handler{
		Inbox:     in,
		Lookup:    func(a netip.Addr) (Peer, bool) { return alice, a == netip.MustParseAddr("127.0.0.1") },
		SelfAddrs: func() []netip.Addr { return selfAddrs },
		Allow:     func(Peer) error { return nil },
		Logf:      t.Logf,
	}
	srv := NewServer(handler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	var peak atomic.Int64
	base := rssBytes()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			if r := rssBytes(); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	})

	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t0 := time.Now()
	off, err := Send(context.Background(), client, "http://"+ln.Addr().String(), "e2e.bin", size, io.LimitReader(rand.NewChaCha8(seed), size), nil)
	d := time.Since(t0)
	close(stop)
	wg.Wait()
	if err != nil || off != 0 {
		t.Fatal(off, err)
	}

	rf, n, err := in.Open("e2e.bin")
	if err != nil || n != size {
		t.Fatal(n, err)
	}
	h.Reset()
	io.Copy(h, rf)
	rf.Close()
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("received content differs")
	}
	growth := peak.Load() - base
	t.Logf("%d MiB in %v = %.0f MB/s (sender and receiver in one process, incl. fsync); RSS before %.1f MB, peak %.1f MB (+%.1f MB), VmHWM %.1f MB; race=%v",
		mb, d.Round(time.Millisecond), float64(size)/1e6/d.Seconds(), float64(base)/1e6, float64(peak.Load())/1e6, float64(growth)/1e6, float64(hwmBytes())/1e6, raceEnabled)
	if !raceEnabled && peak.Load() > 40e6 {
		t.Errorf("peak RSS %.1f MB > 40 MB", float64(peak.Load())/1e6)
	}
}

func rssBytes() int64 { return statusKB("VmRSS:") * 1024 }
func hwmBytes() int64 { return statusKB("VmHWM:") * 1024 }

func statusKB(key string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
