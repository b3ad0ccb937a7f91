package lab_test

// The lab for Tailscale SSH: Headscale with a policy that has an `ssh` section, official
// tailscaled peers of three users, and skeind ("sk", user alice) on a machine with local
// accounts of its own.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// The Skein machine's local accounts: alice (uid 2001) besides the host's own, visible only to
// processes started through localUsers.wrap (a private mount namespace whose /etc/passwd and
// /etc/group list her), so no test touches the machine's real account files.
type localUsers struct {
	dir       string
	aliceHome string
}

const aliceUID = 2001

func newLocalUsers(t testing.TB) *localUsers {
	t.Helper()
	dir, err := os.MkdirTemp("", "skein-users-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	u := &localUsers{dir: dir, aliceHome: filepath.Join(dir, "home", "alice")}
	if err := os.MkdirAll(u.aliceHome, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(u.aliceHome, aliceUID, aliceUID)
	for _, f := range []struct{ name, src, line string }{
		{"passwd", "/etc/passwd", fmt.Sprintf("alice:x:%d:%d:Alice:%s:/bin/sh\n", aliceUID, aliceUID, u.aliceHome)},
		{"group", "/etc/group", fmt.Sprintf("alice:x:%d:\n", aliceUID)},
	} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), append(b, f.line...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// wrap is the command prefix that runs a program seeing these accounts.
func (u *localUsers) wrap() []string {
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"`, "sh",
		filepath.Join(u.dir, "passwd"), filepath.Join(u.dir, "group")}
}

// sshLab is the tailnet: alice's official peer (may log in as any non-root user), bob's (port
// 22 allowed by the ACL, no SSH rule), carol's (nothing allowed), and skeind "sk" of alice.
type sshLab struct {
	l                 *lab.Lab
	c                 *lab.Control
	n                 *node
	users             *localUsers
	alice, bob, carol *lab.Tailscaled
	skIP              netip.Addr
}

// sshPolicy is the tailnet policy with the given `ssh` section.
func sshPolicy(ssh string) string {
	return `{
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["*:*"]},
    {"action": "accept", "src": ["bob@"], "dst": ["alice@:22"]}
  ],
  "ssh": [` + ssh + `]
}`
}

const aliceNonRoot = `{"action": "accept", "src": ["alice@"], "dst": ["alice@"], "users": ["autogroup:nonroot"]}`

// startSSHLab starts the lab; wrap, when set, runs skeind through further commands (after the
// accounts' namespace), extra are skeind's extra flags.
func startSSHLab(t *testing.T, skeindWrap []string, extra ...string) *sshLab {
	t.Helper()
	s := &sshLab{l: lab.New(t), users: newLocalUsers(t)}
	var err error
	if s.c, err = s.l.StartControl(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.SetPolicy(sshPolicy(aliceNonRoot)); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := s.c.CreateUser(u); err != nil {
			t.Fatal(err)
		}
		if keys[u], err = s.c.PreAuthKey(u, true, false); err != nil {
			t.Fatal(err)
		}
	}
	official := func(user string) *lab.Tailscaled {
		h := mustHost(t, s.l, "ts-"+user)
		ts, err := h.StartTailscaled("ts-" + user)
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(s.c.URL(), keys[user]); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	s.alice, s.bob, s.carol = official("alice"), official("bob"), official("carol")

	h := mustHost(t, s.l, "sk")
	s.n = startNodeAs(t, h, s.users, skeindWrap, extra...)
	mustOK(t, s.n.cli("up", "--login-server", s.c.URL(), "--auth-key", keys["alice"], "--hostname", "sk"), "skein up")
	s.skIP = s.n.selfIP()
	for _, ts := range []*lab.Tailscaled{s.alice, s.bob, s.carol} {
		if err := ts.WaitPeers(30*time.Second, "sk"); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// startNodeAs starts skeind on h seeing the accounts of users, through wrap and with extra
// flags.
func startNodeAs(t *testing.T, h *lab.Host, users *localUsers, wrap []string, extra ...string) *node {
	t.Helper()
	n := &node{t: t, host: h, statedir: filepath.Join(h.Dir(), "skein-state"), bin: skeindBin,
		env: []string{"GORACE=halt_on_error=1"}, wrap: append(users.wrap(), wrap...), args: extra}
	sockDir, err := os.MkdirTemp("", "skein-sock-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	n.socket = filepath.Join(sockDir, "skeind.sock")
	n.start()
	return n
}

// sshOpts are the OpenSSH client options every test uses: no configuration files, no
// prompts, host keys taken as they come (tailscale ssh checks them strictly, see its test).
var sshOpts = []string{"-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
	"-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"}

type cmdResult struct {
	stdout, stderr string
	code           int
}

// runIn runs a program in a lab host with a time limit, environment env added.
func runIn(t testing.TB, h *lab.Host, env []string, stdin string, limit time.Duration, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := h.Command(ctx, name, args...)
	cmd.Env = append(cmd.Env, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	r := cmdResult{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

// ssh runs OpenSSH's client in h's namespace against target (user@host) with a command.
func (s *sshLab) ssh(h *lab.Host, target string, args ...string) cmdResult {
	s.n.t.Helper()
	return runIn(s.n.t, h, nil, "", 60*time.Second, "ssh", append(append(slices.Clone(sshOpts), target), args...)...)
}

func (s *sshLab) target(user string) string { return user + "@" + s.skIP.String() }

// officialSSHKeys is what an official peer's `tailscale status --json` says host's SSH host
// keys are.
func officialSSHKeys(t testing.TB, ts *lab.Tailscaled, host string) []string {
	t.Helper()
	out, err := ts.CLI("status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Peer map[string]struct {
			HostName     string
			SSH_HostKeys []string `json:"sshHostKeys"`
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peer {
		if p.HostName == host {
			return p.SSH_HostKeys
		}
	}
	t.Fatalf("%s is not in %s's status", host, ts.Hostname())
	return nil
}

// keyscan is `ssh-keyscan` of addr from h: "type base64" lines, sorted.
func keyscan(t testing.TB, h *lab.Host, addr netip.Addr) []string {
	t.Helper()
	r := runIn(t, h, nil, "", 30*time.Second, "ssh-keyscan", "-T", "10", "-t", "ed25519,ecdsa,rsa", addr.String())
	var keys []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) == 3 && !strings.HasPrefix(line, "#") {
			keys = append(keys, f[1]+" "+f[2])
		}
	}
	slices.Sort(keys)
	return keys
}

func sorted(l []string) []string {
	l = slices.Clone(l)
	slices.Sort(l)
	return l
}

// enableSSH turns Tailscale SSH on and waits until alice's official peer sees the host keys.
func (s *sshLab) enableSSH(t *testing.T) []string {
	t.Helper()
	mustOK(t, s.n.cli("set", "--ssh"), "skein set --ssh")
	var keys []string
	lab.Eventually(t, 30*time.Second, func() error {
		keys = officialSSHKeys(t, s.alice, "sk")
		if len(keys) != 3 {
			return fmt.Errorf("ts-alice sees %d SSH host keys of sk", len(keys))
		}
		return nil
	})
	return keys
}

// hostSSHD runs the machine's own sshd on 0.0.0.0:22 in h (a private /run, so nothing on the
// real machine changes), letting root in with a key of its own; login runs a command through
// it from a host.
type hostSSHD struct {
	dir string
	key string // the client's private key for root
}

func startHostSSHD(t *testing.T, h *lab.Host) *hostSSHD {
	t.Helper()
	dir := t.TempDir()
	d := &hostSSHD{dir: dir, key: filepath.Join(dir, "client_key")}
	for _, args := range [][]string{
		{"-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "host_key")},
		{"-q", "-t", "ed25519", "-N", "", "-f", d.key},
	} {
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(d.key + ".pub")
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	conf := fmt.Sprintf(`Port 22
ListenAddress 0.0.0.0
HostKey %[1]s/host_key
PidFile %[1]s/sshd.pid
AuthorizedKeysFile %[1]s/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`, dir)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600)
	// sshd needs /run/sshd: a tmpfs /run of its own provides it without touching the machine.
	p, err := h.StartProcess("unshare", nil, "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"`, "sh", filepath.Join(dir, "sshd_config"))
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			return fmt.Errorf("sshd exited: %s", p.Log())
		}
		if !strings.Contains(p.Log(), "Server listening on 0.0.0.0 port 22") {
			return errors.New("sshd not listening yet")
		}
		return nil
	})
	return d
}

// login runs a command as root through the host's sshd at addr, from h.
func (d *hostSSHD) login(t testing.TB, h *lab.Host, addr netip.Addr, cmd string) cmdResult {
	t.Helper()
	args := append(slices.Clone(sshOpts), "-i", d.key, "-o", "IdentitiesOnly=yes", "root@"+addr.String(), cmd)
	return runIn(t, h, nil, "", 30*time.Second, "ssh", args...)
}

// works checks that the host's sshd still answers on the Skein machine's LAN address, from
// alice's official peer.
func (d *hostSSHD) works(t testing.TB, s *sshLab, when string) {
	t.Helper()
	lan := s.n.host.Addr()
	if r := d.login(t, s.alice.Host(), lan, "echo host-sshd"); r.code != 0 || r.stdout != "host-sshd\n" {
		t.Errorf("%s: the host's sshd on %v:22: exit %d %q %q", when, lan, r.code, r.stdout, r.stderr)
	}
}

// asUser runs a program as the local user uid on the Skein machine (seeing its accounts).
func (s *sshLab) asUser(t testing.TB, uid int, name string, args ...string) cmdResult {
	t.Helper()
	w := s.users.wrap()
	all := append(append(w[1:], "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--"), name)
	return runIn(t, s.n.host, []string{"HOME=" + s.users.aliceHome}, "", 30*time.Second, w[0], append(all, args...)...)
}

// ingressTable is our nftables table in the Skein machine's namespace ("" when absent).
func (s *sshLab) ingressTable(t testing.TB) string { return ingressTableIn(t, s.n.host) }

func (s *serveLab) ingressTable(t testing.TB) string { return ingressTableIn(t, s.n.host) }

func ingressTableIn(t testing.TB, h *lab.Host) string {
	r := runIn(t, h, nil, "", 10*time.Second, "nft", "list", "table", "inet", "skein-ingress")
	if r.code != 0 {
		return ""
	}
	return r.stdout
}

// ownerOf is the uid that owns path.
func ownerOf(t testing.TB, path string) int {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid)
}

// helperSocketPath is a path for a session helper's socket, in a directory removed at the end.
func helperSocketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "skein-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "helper.sock")
}

// startSocketActivatedHelper starts the session helper on h as skein-session-helper.socket
// does (root, full capabilities), seeing the accounts of users: systemd-socket-activate holds
// sock and starts skeind --session-helper with it (LISTEN_FDS) when skeind first connects.
func startSocketActivatedHelper(t *testing.T, h *lab.Host, users *localUsers, sock string) *lab.Process {
	t.Helper()
	w := users.wrap()
	p, err := h.StartProcess(w[0], nil, append(w[1:], "systemd-socket-activate", "-l", sock, "-E", "GORACE=halt_on_error=1",
		skeindBin, "--session-helper")...)
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("systemd-socket-activate exited: %s", p.Log())
		}
		_, err := os.Stat(sock)
		return err
	})
	return p
}

// helperServesSystemdSocket checks that the helper took the socket it was activated with.
func helperServesSystemdSocket(t *testing.T, helper *lab.Process) {
	t.Helper()
	if !strings.Contains(helper.Log(), "(systemd's socket)") {
		t.Errorf("the helper did not serve the socket it was activated with:\n%s", helper.Log())
	}
}

// helperClean checks the helper's output for race reports and panics.
func helperClean(t *testing.T, helper *lab.Process) {
	t.Helper()
	if l := helper.Log(); strings.Contains(l, "DATA RACE") || strings.Contains(l, "panic:") {
		t.Errorf("the session helper:\n%s", l)
	}
}
