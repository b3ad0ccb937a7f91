package lab_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestLongHaul runs the three cases that need minutes, side by side in one tailnet so that
// their waits overlap:
//
//   - R4 (issue 14): skein-rk streams to an official peer for 130 s, past WireGuard's 120 s
//     rekey: the checksum matches, the stream never stalls, and a new handshake is seen on the
//     wire during it.
//   - R16: skein-ss's skeind is stopped with SIGSTOP for 3 minutes (as over a suspend, past
//     WireGuard's 180 s key lifetime) and continued: within 5 s it has a working direct path
//     again.
//   - R26: after the stream, skein-rk idles for a minute: its UDP packets and CPU time stay
//     far below what a spinning loop would use (loose bounds; issue 13 has the real targets).
func TestLongHaul(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	alpha := tn.Peer("alpha-ts")
	ast, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	alphaIP := ast.Self.IPv4()
	join := func(name string) *node {
		h, err := l.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		n := startNodeWith(t, h, true)
		mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", name), "skein up "+name)
		lab.Eventually(t, 20*time.Second, func() error {
			if n.peer(n.status(), "alpha-ts") == nil {
				return fmt.Errorf("%s: alpha-ts not in netmap", name)
			}
			return nil
		})
		pingICMP(t, n.host, alphaIP)
		waitDirect(t, 30*time.Second, name+"→alpha", func() string { return n.pathOf("alpha-ts") })
		return n
	}
	rk, ss := join("skein-rk"), join("skein-ss")

	// R16: stop skein-ss now; it stays stopped for the whole stream and a bit.
	if err := ss.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := make(chan struct{})
	defer func() {
		select {
		case <-resumed:
		default:
			ss.proc.Signal(syscall.SIGCONT) // a failure on the way must not leave it stopped
		}
	}()

	// R4: count WireGuard handshake initiations (type 1, 148 bytes) leaving and reaching
	// skein-rk, then stream for 130 s.
	if out, err := rk.host.Run("nft", "add table inet hs; "+
		"add chain inet hs out { type filter hook output priority 0; }; add chain inet hs in { type filter hook input priority 0; }; "+
		"add rule inet hs out udp length 156 @th,64,8 1 counter; add rule inet hs in udp length 156 @th,64,8 1 counter; "+
		"add rule inet hs out meta l4proto udp counter; add rule inet hs in meta l4proto udp counter"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	counters := func() (handshakes, udp int) {
		out, err := rk.host.Run("nft", "list", "table", "inet", "hs")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if m := counterPackets.FindStringSubmatch(line); m != nil {
				v, _ := strconv.Atoi(m[1])
				if strings.Contains(line, "udp length 156") {
					handshakes += v
				} else {
					udp += v
				}
			}
		}
		return handshakes, udp
	}
	streamFor(t, rk.host, alpha.Host(), alphaIP, 130*time.Second, 512<<10)
	hs, _ := counters()
	t.Logf("R4: %d handshake initiations on the wire during 130 s of streaming", hs)
	if hs < 1 {
		t.Errorf("R4: no WireGuard handshake during 130 s of streaming: no rekey happened")
	}

	// R26: a minute without traffic. Measured 115 and 127 UDP packets (the first 45 s still
	// count as an active session: disco heartbeats every 3 s and their pongs, then STUN and
	// netcheck) and 90 ms CPU. The bounds catch a loop, not a few packets more: one disco ping
	// every 100 ms to one endpoint would be 600 packets.
	_, udp0 := counters()
	cpu0 := cpuTicks(t, rk.proc.Pid())
	time.Sleep(60 * time.Second)
	_, udp1 := counters()
	cpu1 := cpuTicks(t, rk.proc.Pid())
	cpuMs := (cpu1 - cpu0) * 1000 / clockTicks
	t.Logf("R26: idle minute: %d UDP packets, %d ms CPU", udp1-udp0, cpuMs)
	if udp1-udp0 > 300 {
		t.Errorf("R26: %d UDP packets in an idle minute, want ≤ 300", udp1-udp0)
	}
	if cpuMs > 3000 {
		t.Errorf("R26: %d ms CPU in an idle minute, want ≤ 3000 (the benchmark's goal is 30)", cpuMs)
	}

	// R16: continue skein-ss after 3 minutes.
	if d := 180*time.Second - time.Since(stopped); d > 0 {
		time.Sleep(d)
	}
	if err := ss.proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	close(resumed)
	back := time.Now()
	// The budget holds for the answer itself: a ping sent before 5 s that comes back after
	// does not count.
	var last string
	for {
		out, err := ss.host.Run("ping", "-c", "1", "-W", "1", alphaIP.String())
		took := time.Since(back)
		if err == nil {
			if p := ss.pathOf("alpha-ts"); strings.HasPrefix(p, "direct ") {
				if took > 5*time.Second {
					t.Errorf("R16: a working direct path only %v after SIGCONT, want within 5 s", took.Round(time.Millisecond))
				}
				t.Logf("R16: stopped %v; working direct path %v after SIGCONT", time.Since(stopped).Round(time.Second), took.Round(time.Millisecond))
				break
			} else {
				last = "path " + p
			}
		} else {
			last = fmt.Sprintf("ping: %v %s", err, out)
		}
		if took > 5*time.Second {
			t.Errorf("R16: no working direct path within 5 s of SIGCONT (%v; last: %s)", took.Round(time.Millisecond), last)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rk.stop()
	ss.stop()
}

// streamFor sends a checksummed TCP stream from `from` to toIP at about rate bytes/s for d,
// failing if it stalls (no progress for 15 s) or arrives changed.
func streamFor(t *testing.T, from, to *lab.Host, toIP netip.Addr, d time.Duration, rate int) {
	t.Helper()
	ln, err := to.Listen("tcp", netip.AddrPortFrom(toIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		var r result
		for {
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			m, err := io.CopyN(h, c, 64<<10)
			r.n += m
			if err != nil {
				if !errors.Is(err, io.EOF) {
					r.err = err
				}
				break
			}
		}
		copy(r.sum[:], h.Sum(nil))
		got <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := from.Dial(ctx, "tcp", netip.AddrPortFrom(toIP, uint16(ln.Addr().(*net.TCPAddr).Port)).String())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := &patternReader{left: 1 << 62}
	chunk := make([]byte, rate/20)
	var sent int64
	for start := time.Now(); time.Since(start) < d; {
		io.ReadFull(src, chunk)
		c.SetWriteDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Write(chunk); err != nil {
			c.Close()
			t.Fatalf("stream stalled after %v (%d bytes): %v", time.Since(start).Round(time.Second), sent, err)
		}
		h.Write(chunk)
		sent += int64(len(chunk))
		time.Sleep(50 * time.Millisecond)
	}
	c.(*net.TCPConn).CloseWrite()
	r := <-got
	c.Close()
	var want [32]byte
	copy(want[:], h.Sum(nil))
	if r.err != nil || r.n != sent || r.sum != want {
		t.Fatalf("stream: received %d of %d bytes (%v), checksum match %v", r.n, sent, r.err, r.sum == want)
	}
	t.Logf("streamed %d MB in %v, checksum matched", sent>>20, d)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

var statTimes = regexp.MustCompile(`\) \S+ (?:\S+ ){10}(\d+) (\d+)`)

// cpuTicks is utime+stime of a process.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := statTimes.FindSubmatch(b)
	if m == nil {
		t.Fatalf("cannot parse /proc/%d/stat: %s", pid, b)
	}
	u, _ := strconv.Atoi(string(m[1]))
	s, _ := strconv.Atoi(string(m[2]))
	return u + s
}
