//go:build bench

package bench_test

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

const tsVersion = lab.TailscaleVersion

// sysResult is everything measured for one system under test.
type sysResult struct {
	pair    *pairResult
	daemons []*daemonStats // A, B
	trials  []trial
}

// tailnet starts a fresh lab with Headscale, one user and a reusable pre-auth key.
func tailnet(t *testing.T) (*lab.Lab, *lab.Control, string) {
	t.Helper()
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser("bench"); err != nil {
		t.Fatal(err)
	}
	key, err := c.PreAuthKey("bench", true, false)
	if err != nil {
		t.Fatal(err)
	}
	return l, c, key
}

func addHosts(t *testing.T, l *lab.Lab, names ...string) []*lab.Host {
	t.Helper()
	var hs []*lab.Host
	for _, n := range names {
		h, err := l.AddHost(n)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	return hs
}

// benchBare measures the lab path itself (veth + bridge), the reference for everything else.
func benchBare(t *testing.T) *sysResult {
	l := lab.New(t)
	hs := addHosts(t, l, "bare-a", "bare-b")
	res := measurePair(t, hs[0], hs[1], hs[1].Addr())
	res.bareRTT = res.tunRTT
	return &sysResult{pair: res}
}

// skeinNode is skeind on one lab host, driven through the skein CLI.
type skeinNode struct {
	t      *testing.T
	host   *lab.Host
	proc   *lab.Process
	socket string
}

func startSkein(t *testing.T, h *lab.Host, env ...string) *skeinNode {
	t.Helper()
	n := &skeinNode{t: t, host: h, socket: filepath.Join(h.Dir(), "skeind.sock")}
	p, err := h.StartProcess(skeindBin, env, "--statedir", filepath.Join(h.Dir(), "skein-state"), "--socket", n.socket)
	if err != nil {
		t.Fatal(err)
	}
	n.proc = p
	lab.Eventually(t, 20*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("skeind exited: %s", p.Log())
		}
		_, err := os.Stat(n.socket)
		return err
	})
	checkComm(t, p.Pid(), skeindBin)
	return n
}

// cmd is the skein CLI for this node (run from the root namespace: the socket is a path).
func (n *skeinNode) cmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, skeinBin, append([]string{"--socket", n.socket}, args...)...)
}

func (n *skeinNode) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := n.cmd(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("skein %s on %s: %v: %s", strings.Join(args, " "), n.host.Name(), err, out)
	}
	return string(out), nil
}

func (n *skeinNode) up(url, key string) error {
	_, err := n.cli("up", "--login-server", url, "--auth-key", key, "--hostname", n.host.Name(), "--timeout", "60s")
	return err
}

func (n *skeinNode) status() (ipc.Status, error) {
	var st ipc.Status
	out, err := n.cli("status", "--json")
	if err != nil {
		return st, err
	}
	err = json.Unmarshal([]byte(out), &st)
	return st, err
}

func (n *skeinNode) selfIP() netip.Addr {
	n.t.Helper()
	st, err := n.status()
	if err != nil {
		n.t.Fatal(err)
	}
	if st.Self != nil {
		for _, a := range st.Self.Addresses {
			if a.Is4() {
				return a
			}
		}
	}
	n.t.Fatalf("%s: no tailnet IPv4", n.host.Name())
	return netip.Addr{}
}

// directTo returns nil once the node reports a direct path (curAddr) to the named peer.
func (n *skeinNode) directTo(peer string) error {
	st, err := n.status()
	if err != nil {
		return err
	}
	for _, p := range st.Peers {
		if p.HostName == peer {
			if p.CurAddr == "" {
				return fmt.Errorf("%s→%s: no direct path yet (relay %q)", n.host.Name(), peer, p.Relay)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: %s not in netmap", n.host.Name(), peer)
}

func (n *skeinNode) stop() {
	n.proc.Signal(syscall.SIGTERM)
	select {
	case <-n.proc.Done():
	case <-time.After(15 * time.Second):
		n.proc.Kill()
	}
}

func benchSkein(t *testing.T) *sysResult {
	l, c, key := tailnet(t)
	hs := addHosts(t, l, "skein-a", "skein-b")
	a, b := startSkein(t, hs[0]), startSkein(t, hs[1])
	for _, n := range []*skeinNode{a, b} {
		if err := n.up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
	}
	lab.Eventually(t, 30*time.Second, func() error {
		// `skein ping` is what starts discovery; it returns at the first direct pong. Both
		// ways, as for tailscaled, whose CurAddr needs its own pong.
		a.cli("ping", "-c", "3", "skein-b")
		b.cli("ping", "-c", "3", "skein-a")
		if err := a.directTo("skein-b"); err != nil {
			return err
		}
		return b.directTo("skein-a")
	})
	bIP := b.selfIP()
	pids := []int{a.proc.Pid(), b.proc.Pid()}
	time.Sleep(settle)
	res := &sysResult{daemons: measureIdle(t, pids...)}
	res.pair = measurePair(t, a.host, b.host, bIP, pids...)
	measureAfterLoad(t, res.daemons, pids...)
	a.stop() // the trials below use only b: leave the CPUs to them
	for i := range skeinTrials {
		h := addHosts(t, l, fmt.Sprintf("skein-f%d", i+1))[0]
		n := startSkein(t, h)
		start := time.Now()
		if err := n.up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		tr := pingTrial(t, start, h.Name(), func(ctx context.Context) *exec.Cmd {
			return n.cmd(ctx, "ping", "--c", "20", "skein-b")
		})
		res.trials = append(res.trials, tr)
		n.stop()
	}
	return res
}

// pingTrial measures one fresh node: `up` has just returned (it started at start); ping runs
// the CLI's ping (which stops at the first direct pong). A ping that fails before any pong
// (peer not in the netmap yet) is retried: that time counts too.
func pingTrial(t *testing.T, start time.Time, name string, ping func(context.Context) *exec.Cmd) trial {
	t.Helper()
	tr := trial{up: time.Since(start)}
	var log strings.Builder
	for attempt := 0; !tr.ok && time.Since(start) < 30*time.Second; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		cmd := ping(ctx)
		cmd.Stderr = &log
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		pongs := 0
		for sc.Scan() {
			line := sc.Text()
			at := time.Since(start)
			fmt.Fprintf(&log, "%7.3fs %s\n", at.Seconds(), line)
			if !anyPongRE.MatchString(line) {
				continue
			}
			pongs++
			if tr.firstPong == 0 {
				tr.firstPong = at
			}
			if directPongRE.MatchString(line) {
				tr.direct, tr.ok = at, true
				break
			}
			tr.derpPongs++
		}
		cmd.Wait()
		cancel()
		if pongs > 0 {
			break // pongs but none direct in 20 tries: a result, not a broken measurement
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s: up %v, first direct pong %v:\n%s", name, tr.up.Round(time.Millisecond), tr.direct.Round(time.Millisecond), log.String())
	if tr.firstPong == 0 {
		t.Fatalf("%s: no pong at all within 30 s", name)
	}
	return tr
}

func tsDirectTo(ts *lab.Tailscaled, peer string) error {
	st, err := ts.Status()
	if err != nil {
		return err
	}
	p := st.PeerByHostName(peer)
	if p == nil || p.CurAddr == "" {
		return fmt.Errorf("%s→%s: no direct path yet (%v)", ts.Hostname(), peer, p)
	}
	return nil
}

func benchTailscaled(t *testing.T) *sysResult {
	l, c, key := tailnet(t)
	hs := addHosts(t, l, "ts-a", "ts-b")
	var tss []*lab.Tailscaled
	for _, h := range hs {
		ts, err := h.StartTailscaled(h.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		tss = append(tss, ts)
	}
	a, b := tss[0], tss[1]
	if err := a.WaitPeers(30*time.Second, "ts-b"); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 30*time.Second, func() error {
		a.CLI("ping", "-c", "3", "ts-b")
		b.CLI("ping", "-c", "3", "ts-a")
		if err := tsDirectTo(a, "ts-b"); err != nil {
			return err
		}
		return tsDirectTo(b, "ts-a")
	})
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	_, daemon := lab.TailscaleBinaries("")
	pids := []int{a.Process().Pid(), b.Process().Pid()}
	for _, pid := range pids {
		checkComm(t, pid, daemon)
	}
	time.Sleep(settle)
	res := &sysResult{daemons: measureIdle(t, pids...)}
	res.pair = measurePair(t, a.Host(), b.Host(), st.Self.IPv4(), pids...)
	measureAfterLoad(t, res.daemons, pids...)
	a.Stop()
	for i := range tsTrials {
		h := addHosts(t, l, fmt.Sprintf("ts-f%d", i+1))[0]
		ts, err := h.StartTailscaled(h.Name())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := ts.Up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		tr := pingTrial(t, start, h.Name(), func(ctx context.Context) *exec.Cmd {
			return h.Command(ctx, ts.CLIPath(), "--socket="+ts.Socket(), "ping", "--c", "20", "ts-b")
		})
		res.trials = append(res.trials, tr)
		ts.Stop()
	}
	return res
}

// wgKey returns a new WireGuard private key and its public key, base64 as wg(8) wants them.
func wgKey(t *testing.T) (priv, pub string) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString
	return enc(k.Bytes()), enc(k.PublicKey().Bytes())
}

func benchWireguardGo(t *testing.T) *sysResult {
	if _, err := exec.LookPath("wg"); err != nil {
		t.Fatal("missing wg: run `make deps` (wireguard-tools)")
	}
	l := lab.New(t)
	hs := addHosts(t, l, "wg-a", "wg-b")
	const port = 51820
	tunIP := []netip.Addr{netip.MustParseAddr("100.99.0.1"), netip.MustParseAddr("100.99.0.2")}
	var privs, pubs [2]string
	for i := range hs {
		privs[i], pubs[i] = wgKey(t)
	}
	var pids []int
	for i, h := range hs {
		// The UAPI socket /var/run/wireguard/IFNAME.sock is machine-wide, not per namespace:
		// the name carries the lab ID and the side so that it never collides.
		ifname := fmt.Sprintf("wg%s%c", l.ID(), 'a'+i)
		sock := filepath.Join("/var/run/wireguard", ifname+".sock")
		p, err := h.StartProcess(wgBin, []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}, "-f", ifname)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(sock) })
		lab.Eventually(t, 10*time.Second, func() error {
			if p.Exited() {
				t.Fatalf("wireguard-go exited: %s", p.Log())
			}
			_, err := os.Stat(sock)
			return err
		})
		checkComm(t, p.Pid(), wgBin)
		pids = append(pids, p.Pid())
		keyFile := filepath.Join(h.Dir(), "wg.key")
		if err := os.WriteFile(keyFile, []byte(privs[i]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		other := hs[1-i]
		for _, args := range [][]string{
			{"wg", "set", ifname, "private-key", keyFile, "listen-port", strconv.Itoa(port),
				"peer", pubs[1-i], "endpoint", netip.AddrPortFrom(other.Addr(), port).String(),
				"allowed-ips", netip.PrefixFrom(tunIP[1-i], 32).String()},
			// 1280: the MTU Skein and tailscaled use.
			{"ip", "link", "set", ifname, "mtu", "1280", "up"},
			{"ip", "addr", "add", netip.PrefixFrom(tunIP[i], 24).String(), "dev", ifname},
		} {
			if _, err := h.Run(args[0], args[1:]...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, err := hs[0].Run("ping", "-c", "3", "-i", "0.2", "-W", "2", tunIP[1].String()); err != nil {
		show, _ := hs[0].Run("wg", "show")
		t.Fatalf("wireguard-go tunnel does not carry ping: %v\n%s\n%s", err, out, show)
	}
	res := &sysResult{pair: measurePair(t, hs[0], hs[1], tunIP[1], pids...)}
	// Peak RSS only: shows how much of the others' RSS after load is wireguard-go's own pools.
	for _, pid := range pids {
		_, hwm, err := procMem(pid)
		if err != nil {
			t.Fatal(err)
		}
		res.daemons = append(res.daemons, &daemonStats{hwm: hwm})
	}
	return res
}
