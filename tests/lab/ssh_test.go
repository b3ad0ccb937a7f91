package lab_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestTailscaleSSH: `skein set --ssh` makes the machine accept SSH from peers exactly as
// Headscale's SSH policy says, for OpenSSH and `tailscale ssh` on official peers, while the
// machine's own sshd keeps port 22 for everything that does not come through the tunnel.
func TestTailscaleSSH(t *testing.T) {
	t.Parallel()
	s := startSSHLab(t, nil)
	sshd := startHostSSHD(t, s.n.host)
	hostSSHDWorks := func(when string) { t.Helper(); sshd.works(t, s, when) }
	hostSSHDWorks("before SSH is on")

	// 1. The host keys reach the official peers, and are the keys the server presents.
	keys := s.enableSSH(t)
	t.Run("HostKeysAdvertised", func(t *testing.T) {
		scanned := keyscan(t, s.alice.Host(), s.skIP)
		if strings.Join(sorted(keys), "\n") != strings.Join(scanned, "\n") {
			t.Fatalf("ts-alice's status says\n%s\nssh-keyscan says\n%s", strings.Join(sorted(keys), "\n"), strings.Join(scanned, "\n"))
		}
		if st := s.n.status(); len(st.Self.SSHHostKeys) != 3 {
			t.Errorf("skein status: self has %d host keys", len(st.Self.SSHHostKeys))
		}
		if r := s.n.cli("status"); !strings.Contains(strings.SplitN(r.stdout, "\n", 2)[0], "offers SSH") {
			t.Errorf("skein status does not say this machine offers SSH:\n%s", r.stdout)
		}
		// An official peer that runs Tailscale SSH is marked too; one that does not is not.
		if out, err := s.alice.CLI("set", "--ssh"); err != nil {
			t.Fatalf("tailscale set --ssh on ts-alice: %v %s", err, out)
		}
		lab.Eventually(t, 30*time.Second, func() error {
			r := s.n.cli("status")
			for _, line := range strings.Split(r.stdout, "\n") {
				f := strings.Fields(line)
				if len(f) < 2 {
					continue
				}
				if f[1] == "ts-bob" && strings.Contains(line, "offers SSH") {
					t.Fatalf("ts-bob does not run Tailscale SSH:\n%s", r.stdout)
				}
				if f[1] == "ts-alice" && strings.Contains(line, "offers SSH") {
					return nil
				}
			}
			return fmt.Errorf("skein status does not say ts-alice offers SSH:\n%s", r.stdout)
		})
	})
	hostSSHDWorks("with SSH on")

	// 2. Plain OpenSSH from alice's official peer.
	t.Run("OpenSSH", func(t *testing.T) { testOpenSSH(t, s) })

	// 3. tailscale ssh checks the host key strictly against what the tailnet advertises.
	t.Run("TailscaleSSH", func(t *testing.T) {
		home := t.TempDir()
		r := runIn(t, s.alice.Host(), []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}, "", 60*time.Second,
			s.alice.CLIPath(), "--socket="+s.alice.Socket(), "ssh", "alice@sk", "id", "-un")
		if r.code != 0 || r.stdout != "alice\n" {
			t.Fatalf("tailscale ssh: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		kh, err := os.ReadFile(filepath.Join(home, ".config", "tailscale", "ssh_known_hosts"))
		if err != nil || strings.Count(string(kh), "sk.") < 3 {
			t.Errorf("tailscale ssh's known hosts: %q (%v)", kh, err)
		}
	})

	// 4. Files: scp and sftp land them the user's; /root stays closed.
	t.Run("Files", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "payload")
		os.WriteFile(local, []byte(strings.Repeat("skein ", 50000)), 0o644)
		r := runIn(t, s.alice.Host(), nil, "", 60*time.Second, "scp", append(sshOpts, local, s.target("alice")+":copied")...)
		if r.code != 0 {
			t.Fatalf("scp: exit %d %q", r.code, r.stderr)
		}
		got := filepath.Join(s.users.aliceHome, "copied")
		if b, _ := os.ReadFile(got); len(b) != 300000 || ownerOf(t, got) != aliceUID {
			t.Errorf("scp'd file: %d bytes, owner %d", len(b), ownerOf(t, got))
		}
		batch := filepath.Join(t.TempDir(), "batch")
		back := filepath.Join(t.TempDir(), "back")
		os.WriteFile(batch, []byte(fmt.Sprintf("put %s via-sftp\nget copied %s\nls -l\n", local, back)), 0o644)
		r = runIn(t, s.alice.Host(), nil, "", 60*time.Second, "sftp", append(sshOpts, "-b", batch, s.target("alice"))...)
		if r.code != 0 || !strings.Contains(r.stdout, "via-sftp") {
			t.Fatalf("sftp -b: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		if ownerOf(t, filepath.Join(s.users.aliceHome, "via-sftp")) != aliceUID {
			t.Error("sftp'd file is not alice's")
		}
		if b, _ := os.ReadFile(back); len(b) != 300000 {
			t.Errorf("sftp get: %d bytes", len(b))
		}
		r = runIn(t, s.alice.Host(), nil, "", 60*time.Second, "scp", append(sshOpts, local, s.target("alice")+":/root/skein-ssh-test")...)
		if r.code == 0 {
			os.Remove("/root/skein-ssh-test")
			t.Errorf("scp into /root succeeded")
		}
		if _, err := os.Stat("/root/skein-ssh-test"); err == nil {
			os.Remove("/root/skein-ssh-test")
			t.Errorf("a file landed in /root")
		}
	})

	// 5. Denials, with the official banners; nothing is started for them.
	t.Run("Denials", func(t *testing.T) {
		before := strings.Count(s.n.proc.Log(), " started (pid ")
		if r := s.ssh(s.bob.Host(), s.target("alice"), "true"); r.code != 255 || !strings.Contains(r.stderr, "tailscale: tailnet policy does not permit you to SSH to this node") {
			t.Errorf("bob (port 22 allowed, no SSH rule): exit %d %q", r.code, r.stderr)
		}
		if r := s.ssh(s.alice.Host(), s.target("root"), "true"); r.code != 255 || !strings.Contains(r.stderr, `tailscale: tailnet policy does not permit you to SSH as user "root"`) {
			t.Errorf("alice as root: exit %d %q", r.code, r.stderr)
		}
		for _, name := range []string{"0", "-oProxyCommand=x", "a;b", strings.Repeat("a", 33)} {
			banner, err := goSSH(t, s.alice.Host(), s.skIP, name)
			if err == nil || !strings.Contains(banner, "is not a valid user name") {
				t.Errorf("user %q: %v, banner %q", name, err, banner)
			}
		}
		if after := strings.Count(s.n.proc.Log(), " started (pid "); after != before {
			t.Errorf("denied logins started %d processes", after-before)
		}
		start := time.Now()
		r := runIn(t, s.carol.Host(), nil, "", 60*time.Second, "ssh", append(sshOpts, "-o", "ConnectTimeout=5", s.target("alice"), "true")...)
		if r.code != 255 || !strings.Contains(r.stderr, "timed out") {
			t.Errorf("carol (no ACL for port 22): exit %d after %v: %q", r.code, time.Since(start), r.stderr)
		}
	})

	// 6. A local user reaches neither the server through our own tailnet address nor its
	// listener directly: port 22 there is the host's sshd.
	t.Run("NotFromThisMachine", func(t *testing.T) {
		r := s.asUser(t, aliceUID, "ssh-keyscan", "-T", "5", "-t", "ed25519", s.skIP.String())
		if strings.Contains(r.stdout, strings.Fields(keys[0])[1]) || !strings.Contains(r.stdout, "ssh-ed25519") {
			t.Errorf("keyscan of our own tailnet address from this machine: %q", r.stdout)
		}
		r = s.asUser(t, aliceUID, "ssh", append(sshOpts, "-o", "ConnectTimeout=5", s.target("alice"), "true")...)
		if r.code == 0 || strings.Contains(r.stderr, "tailscale:") {
			t.Errorf("local ssh to our own tailnet address: exit %d %q", r.code, r.stderr)
		}
		port := listenerPort(t, s)
		conn, err := s.n.host.Dial(t.Context(), "tcp", net.JoinHostPort(s.skIP.String(), strconv.Itoa(port)))
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(conn)
			conn.Close()
			if strings.HasPrefix(string(b), "SSH-") {
				t.Errorf("a local connection to the listener's port got %q", b)
			}
		}
	})

	// 8. Forwarding and the environment.
	t.Run("Forwarding", func(t *testing.T) { testForwarding(t, s) })

	// 7. A live policy change ends an open session; `check` ends sessions after its period.
	t.Run("PolicyChange", func(t *testing.T) {
		// A job in the background besides the foreground command: the hang-up reaches the
		// session's whole process group, not only its shell.
		sess, err := s.alice.Host().StartProcess("ssh", nil, append(sshOpts, s.target("alice"), "sleep 3017 & echo started; sleep 300")...)
		if err != nil {
			t.Fatal(err)
		}
		lab.Eventually(t, 20*time.Second, func() error {
			if !strings.Contains(sess.Log(), "started") {
				return fmt.Errorf("session not open yet: %s", sess.Log())
			}
			return nil
		})
		lab.Eventually(t, 10*time.Second, func() error {
			if n := len(processesOf(aliceUID, "sleep 3017")); n != 1 {
				return fmt.Errorf("%d background jobs of the session", n)
			}
			return nil
		})
		if err := s.c.SetPolicy(sshPolicy(`{"action": "accept", "src": ["bob@"], "dst": ["alice@"], "users": ["autogroup:nonroot"]}`)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		select {
		case <-sess.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("session still open 10 s after the policy revoked it: %s", sess.Log())
		}
		if !strings.Contains(sess.Log(), "Access revoked.") {
			t.Errorf("session ended without the message: %s", sess.Log())
		}
		t.Logf("revoked %v after the policy reload", time.Since(start).Round(100*time.Millisecond))
		lab.Eventually(t, 10*time.Second, func() error {
			if p := processesOf(aliceUID, "sleep 3017"); len(p) != 0 {
				return fmt.Errorf("the session's background job outlived it: pids %v", p)
			}
			return nil
		})
		if r := s.ssh(s.alice.Host(), s.target("alice"), "true"); r.code != 255 || !strings.Contains(r.stderr, "does not permit") {
			t.Errorf("new connection after the change: exit %d %q", r.code, r.stderr)
		}

		if err := s.c.SetPolicy(sshPolicy(`{"action": "check", "checkPeriod": "5s", "src": ["alice@"], "dst": ["alice@"], "users": ["autogroup:nonroot"]}`)); err != nil {
			t.Fatal(err)
		}
		var r cmdResult
		lab.Eventually(t, 20*time.Second, func() error {
			start = time.Now()
			r = s.ssh(s.alice.Host(), s.target("alice"), "echo started; sleep 60")
			if strings.Contains(r.stderr, "does not permit") {
				return fmt.Errorf("the check policy has not arrived yet")
			}
			return nil
		})
		if d := time.Since(start); d > 15*time.Second || !strings.Contains(r.stdout, "started") || !strings.Contains(r.stderr, "Session timeout of 5s elapsed.") {
			t.Errorf("check mode: after %v, exit %d %q %q", d, r.code, r.stdout, r.stderr)
		}
	})
	hostSSHDWorks("at the end")
	s.n.stop() // cleanly: no race report, no panic
	if tbl := s.ingressTable(t); tbl != "" {
		t.Errorf("skeind stopped and left its redirect:\n%s", tbl)
	}
}

// testOpenSSH is acceptance 2: plain OpenSSH from alice's official peer logs in as the mapped
// user, gets the command's exit status and its whole output, and a pty with the client's TERM.
func testOpenSSH(t *testing.T, s *sshLab) {
	if r := s.ssh(s.alice.Host(), s.target("alice"), "id -un; pwd"); r.code != 0 || r.stdout != "alice\n"+s.users.aliceHome+"\n" {
		t.Fatalf("id -un: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.ssh(s.alice.Host(), s.target("alice"), "exit 7"); r.code != 7 {
		t.Errorf("exit 7 gave %d (%q)", r.code, r.stderr)
	}
	// 1 MB of distinct lines, compared byte for byte.
	r := s.ssh(s.alice.Host(), s.target("alice"), "seq 1 170000")
	want, _ := exec1(t, "seq", "1", "170000")
	if r.code != 0 || len(want) < 1<<20 || r.stdout != want {
		t.Errorf("1 MB of output: exit %d, %d bytes, want %d", r.code, len(r.stdout), len(want))
	}
	r = runIn(t, s.alice.Host(), []string{"TERM=xterm-skein"}, "", 30*time.Second, "ssh", append(sshOpts, "-tt", s.target("alice"), `tty; echo "$TERM"`)...)
	if r.code != 0 || !regexp.MustCompile(`^/dev/pts/\d+\r\nxterm-skein\r\n`).MatchString(r.stdout) {
		t.Errorf("ssh -tt: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// testForwarding: -L works, -R never on a privileged port for a non-root user and only on
// loopback, -A gives the user's own socket, and only TERM, LANG and LC_* come from the client.
func testForwarding(t *testing.T, s *sshLab) {
	// A service on the Skein machine's loopback, reached through -L from alice's peer.
	target, err := s.n.host.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "behind sk\n")
			c.Close()
		}
	}()
	tport := target.Addr().(*net.TCPAddr).Port
	fwd, err := s.alice.Host().StartProcess("ssh", nil, append(sshOpts, "-N", "-o", "ExitOnForwardFailure=yes",
		"-L", fmt.Sprintf("127.0.0.1:17022:127.0.0.1:%d", tport), s.target("alice"))...)
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		if fwd.Exited() {
			t.Fatalf("ssh -L exited: %s", fwd.Log())
		}
		c, err := s.alice.Host().Dial(t.Context(), "tcp", "127.0.0.1:17022")
		if err != nil {
			return err
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		if string(b) != "behind sk\n" {
			return fmt.Errorf("-L read %q", b)
		}
		return nil
	})
	fwd.Stop()

	r := s.ssh(s.alice.Host(), s.target("alice"), "-o", "ExitOnForwardFailure=yes", "-R", "80:127.0.0.1:9", "true")
	if r.code == 0 {
		t.Errorf("-R 80 as a non-root user succeeded")
	}
	r = s.ssh(s.alice.Host(), s.target("alice"), "-o", "ExitOnForwardFailure=yes", "-R", "0.0.0.0:17023:127.0.0.1:9", "ss -Htln 'sport = :17023'")
	if r.code != 0 || !strings.Contains(r.stdout, "127.0.0.1:17023") || strings.Contains(r.stdout, "0.0.0.0:17023") {
		t.Errorf("-R 0.0.0.0:17023: exit %d %q %q", r.code, r.stdout, r.stderr)
	}

	// An agent on alice's peer with one key, forwarded.
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	agent, err := s.alice.Host().StartProcess("ssh-agent", nil, "-D", "-a", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	lab.Eventually(t, 10*time.Second, func() error { _, err := os.Stat(sock); return err })
	key := filepath.Join(dir, "id")
	if out, err := exec1(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skein-agent-key", "-f", key); err != nil {
		t.Fatal(out)
	}
	if r := runIn(t, s.alice.Host(), []string{"SSH_AUTH_SOCK=" + sock}, "", 10*time.Second, "ssh-add", key); r.code != 0 {
		t.Fatalf("ssh-add: %q", r.stderr)
	}
	r = runIn(t, s.alice.Host(), []string{"SSH_AUTH_SOCK=" + sock}, "", 30*time.Second, "ssh",
		append(sshOpts, "-A", s.target("alice"), `stat -c '%U %a' "$SSH_AUTH_SOCK"; ssh-add -l`)...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "alice 600\n") || !strings.Contains(r.stdout, "skein-agent-key") {
		t.Errorf("-A: exit %d %q %q", r.code, r.stdout, r.stderr)
	}

	r = s.ssh(s.alice.Host(), s.target("alice"), "-o", "SetEnv=LD_PRELOAD=/tmp/evil.so LC_ALL=C.UTF-8 FOO=bar", `echo "[$LD_PRELOAD] [$LC_ALL] [$FOO]"`)
	if r.code != 0 || r.stdout != "[] [C.UTF-8] []\n" {
		t.Errorf("SetEnv: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// goSSH logs in from h with Go's SSH client (OpenSSH's refuses some of the names the server
// must refuse itself) and returns the banner the server sent.
func goSSH(t testing.TB, h *lab.Host, addr netip.Addr, user string) (string, error) {
	t.Helper()
	nc, err := h.Dial(t.Context(), "tcp", net.JoinHostPort(addr.String(), "22"))
	if err != nil {
		return "", err
	}
	defer nc.Close()
	var banner strings.Builder
	c, _, _, err := ssh.NewClientConn(nc, addr.String(), &ssh.ClientConfig{
		User:            user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback:  func(m string) error { banner.WriteString(m); return nil },
		Timeout:         10 * time.Second,
	})
	if err == nil {
		c.Close()
	}
	return banner.String(), err
}

// listenerPort finds the port of skeind's TUN-bound SSH listener.
func listenerPort(t testing.TB, s *sshLab) int {
	t.Helper()
	r := runIn(t, s.n.host, nil, "", 10*time.Second, "ss", "-Htln")
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.Contains(f[3], "%skein0:") {
			p, err := strconv.Atoi(f[3][strings.LastIndexByte(f[3], ':')+1:])
			if err == nil {
				return p
			}
		}
	}
	t.Fatalf("no listener bound to skein0:\n%s", r.stdout)
	return 0
}

// processesOf lists the pids of uid's processes whose command line (arguments joined by
// spaces) is cmdline.
func processesOf(uid int, cmdline string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil || !regexp.MustCompile(fmt.Sprintf(`(?m)^Uid:\t%d\t`, uid)).Match(status) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ") == cmdline {
			pids = append(pids, pid)
		}
	}
	return pids
}

// exec1 runs a program on the host and returns its output.
func exec1(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

// unitCaps runs a program with exactly the capabilities skeind.service leaves skeind.
var unitCaps = []string{"setpriv", "--no-new-privs", "--bounding-set=-all,+net_admin,+net_raw", "--inh-caps=-all", "--"}

// TestTailscaleSSHUnitCapabilities: skeind with only the unit's capabilities cannot run
// sessions itself; with the session helper socket-activated beside it (as the socket unit
// does) SSH works through it. Turning SSH off takes the keys from the peers, the redirect from the
// firewall and ends the sessions; the host's sshd keeps port 22 throughout.
func TestTailscaleSSHUnitCapabilities(t *testing.T) {
	t.Parallel()
	helperSock := helperSocketPath(t)
	s := startSSHLab(t, unitCaps, "--session-helper-socket", helperSock)
	sshd := startHostSSHD(t, s.n.host)
	hostSSHDWorks := func(when string) { t.Helper(); sshd.works(t, s, when) }
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.n.proc.Pid()))
	if !strings.Contains(string(status), "CapEff:\t0000000000003000") || !strings.Contains(string(status), "NoNewPrivs:\t1") {
		t.Fatalf("skeind does not run with the unit's capabilities:\n%s", status)
	}
	hostSSHDWorks("before")

	// No helper yet: SSH says what is missing and leaves port 22 alone.
	mustOK(t, s.n.cli("set", "--ssh"), "skein set --ssh")
	lab.Eventually(t, 20*time.Second, func() error {
		r := s.n.cli("status")
		if !strings.Contains(r.stdout, "systemctl enable --now skein-session-helper.socket") {
			return fmt.Errorf("status does not tell how to start the session helper:\n%s", r.stdout)
		}
		return nil
	})
	if tbl := s.ingressTable(t); tbl != "" {
		t.Errorf("redirect installed without a helper:\n%s", tbl)
	}

	// The helper, socket-activated as skein-session-helper.socket does it.
	helper := startSocketActivatedHelper(t, s.n.host, s.users, helperSock)
	lab.Eventually(t, 30*time.Second, func() error {
		if helper.Exited() {
			t.Fatalf("session helper exited: %s", helper.Log())
		}
		if s.ingressTable(t) == "" {
			return errors.New("no redirect yet")
		}
		return nil
	})
	helperServesSystemdSocket(t, helper)
	keys := s.enableSSH(t)
	if scanned := keyscan(t, s.alice.Host(), s.skIP); strings.Join(sorted(keys), "\n") != strings.Join(scanned, "\n") {
		t.Errorf("advertised %v, scanned %v", sorted(keys), scanned)
	}
	// Scenario 2 whole, through the helper.
	if !t.Run("OpenSSH", func(t *testing.T) { testOpenSSH(t, s) }) {
		t.FailNow()
	}
	if !strings.Contains(helper.Log(), `as "alice": exec started`) {
		t.Errorf("the session did not run in the helper:\n%s", helper.Log())
	}
	hostSSHDWorks("with SSH on")

	// SSH off: the session ends, the keys leave the peers, the redirect leaves the firewall.
	sess, err := s.alice.Host().StartProcess("ssh", nil, append(sshOpts, s.target("alice"), "echo started; sleep 300")...)
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(sess.Log(), "started") {
			return errors.New("session not open yet")
		}
		return nil
	})
	mustOK(t, s.n.cli("set", "--ssh=false"), "skein set --ssh=false")
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("session still open 10 s after SSH was turned off: %s", sess.Log())
	}
	if tbl := s.ingressTable(t); tbl != "" {
		t.Errorf("redirect left after --ssh=false:\n%s", tbl)
	}
	lab.Eventually(t, 30*time.Second, func() error {
		if k := officialSSHKeys(t, s.alice, "sk"); len(k) != 0 {
			return fmt.Errorf("ts-alice still sees %d host keys", len(k))
		}
		return nil
	})
	// Port 22 on the tailnet address is the host's own again.
	if scanned := keyscan(t, s.alice.Host(), s.skIP); len(scanned) != 1 || slices.Contains(keys, scanned[0]) {
		t.Errorf("after --ssh=false the tailnet's port 22 answers with %v", scanned)
	}
	hostSSHDWorks("after SSH is off")
	s.n.stop()
	helperClean(t, helper)
}
