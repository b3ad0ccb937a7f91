package packaging

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The packages hold what they should, with sane control fields and maintainer scripts.
func TestDebContents(t *testing.T) {
	needPackageTest(t)
	need(t, "dpkg-deb", "sh")
	skein, desktop := debs(t)

	field := func(deb, name string) string { return strings.TrimSpace(run(t, "", "dpkg-deb", "-f", deb, name)) }
	version := field(skein, "Version")
	if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*$`).MatchString(version) {
		t.Errorf("skein Version %q is not a Debian version", version)
	}
	if v := field(desktop, "Version"); v != version {
		t.Errorf("skein-desktop Version %q, skein %q", v, version)
	}
	if d := field(skein, "Depends"); d != "" {
		t.Errorf("skein (static Go binaries) should depend on nothing, has Depends: %s", d)
	}
	dep := field(desktop, "Depends")
	for _, want := range []string{"skein (= " + version + ")", "libc6 (>= ", "libgl1", "libx11-6"} {
		if !strings.Contains(dep, want) {
			t.Errorf("skein-desktop Depends lacks %q: %s", want, dep)
		}
	}

	wantFiles := map[string][]string{
		skein: {
			"usr/sbin/skeind", "usr/bin/skein",
			"usr/lib/systemd/system/skeind.service", "usr/lib/tmpfiles.d/skein.conf",
			"usr/lib/systemd/system/skein-session-helper.socket", "usr/lib/systemd/system/skein-session-helper.service",
			"usr/share/man/man1/skein.1.gz", "usr/share/man/man8/skeind.8.gz",
			"usr/share/bash-completion/completions/skein",
			"usr/share/zsh/vendor-completions/_skein",
			"usr/share/fish/vendor_completions.d/skein.fish",
			"usr/share/doc/skein/copyright",
		},
		desktop: {
			"usr/bin/skein-gui",
			"usr/share/applications/" + appID + ".desktop",
			"usr/share/metainfo/" + appID + ".metainfo.xml",
			"usr/share/icons/hicolor/256x256/apps/" + appID + ".png",
			"usr/share/icons/hicolor/48x48/apps/" + appID + ".png",
			"usr/share/doc/skein-desktop/copyright",
			"usr/share/dbus-1/services/" + appID + ".service",
			"usr/lib/systemd/user/skein-receive.service",
		},
	}
	for deb, files := range wantFiles {
		dir := extract(t, deb)
		for _, f := range files {
			if !exists(filepath.Join(dir, f)) {
				t.Errorf("%s lacks /%s", filepath.Base(deb), f)
			}
		}
		// Nothing outside /usr: state and the socket directory are made at run time.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "usr" {
				t.Errorf("%s installs /%s; everything belongs under /usr", filepath.Base(deb), e.Name())
			}
		}
		listing := run(t, "", "dpkg-deb", "-c", deb)
		for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] != "root/root" {
				t.Errorf("%s: not owned by root: %s", filepath.Base(deb), l)
			}
		}
	}
	checkDBusService(t, filepath.Join(extract(t, desktop), "usr/share/dbus-1/services", appID+".service"), "/usr/bin")
	ctl := t.TempDir()
	run(t, "", "dpkg-deb", "-e", skein, ctl)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(ctl, s)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("skein has no executable %s: %v", s, err)
			continue
		}
		run(t, "", "sh", "-n", p)
	}
}

// make package is reproducible: building again gives byte-identical .deb files.
func TestReproducible(t *testing.T) {
	needPackageTest(t)
	skein, desktop := debs(t)
	out := t.TempDir()
	cmd := exec.Command("packaging/build-packages.sh")
	cmd.Dir = repo(t)
	cmd.Env = append(os.Environ(), "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second build: %v\n%s", err, tail(string(b), 30))
	}
	for _, deb := range []string{skein, desktop} {
		a, b := sha(t, deb), sha(t, filepath.Join(out, filepath.Base(deb)))
		if a != b {
			t.Errorf("%s differs between two builds of the same tree: %s vs %s", filepath.Base(deb), a, b)
		} else {
			t.Logf("%s sha256 %s, the same twice", filepath.Base(deb), a)
		}
	}
}

func sha(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The packages install with dpkg into a clean Debian root (debootstrap minbase), the
// programs run there, the service is enabled and passes systemd-analyze, and remove and
// purge leave the system as they should.
func TestInstallInCleanDebianRoot(t *testing.T) {
	needPackageTest(t)
	skein, desktop := debs(t)
	root := cleanRoot(t)
	copyFile(t, skein, filepath.Join(root, "tmp/skein.deb"))
	copyFile(t, desktop, filepath.Join(root, "tmp/skein-desktop.deb"))
	version := strings.TrimSpace(run(t, "", "dpkg-deb", "-f", skein, "Version"))

	// 1. skein alone, with plain dpkg: it depends on nothing.
	inRoot(t, root, "dpkg", "-i", "/tmp/skein.deb")
	out := inRoot(t, root, "skein", "version")
	t.Logf("skein version in the clean root: %s", strings.Join(strings.Fields(out), " "))
	if strings.TrimSpace(out) == "" {
		t.Errorf("skein version printed nothing")
	}
	out = inRoot(t, root, "skeind", "--version")
	t.Logf("skeind --version in the clean root: %s", strings.Join(strings.Fields(out), " "))
	if !strings.Contains(out, "go version") {
		t.Errorf("skeind --version: %q", out)
	}
	help := inRoot(t, root, "skein", "help")
	if !strings.Contains(help, "Commands:") {
		t.Errorf("skein help: %q", help)
	}
	// The man page lists every command the installed skein has.
	man := gunzip(t, filepath.Join(root, "usr/share/man/man1/skein.1.gz"))
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z][a-z-]*) `).FindAllStringSubmatch(help, -1) {
		if !strings.Contains(man, ".SS skein "+strings.ReplaceAll(m[1], "-", `\-`)) {
			t.Errorf("skein(1) has no section for %q, which 'skein help' lists", m[1])
		}
	}
	if out, err := inRootErr(root, "dpkg", "-s", "systemd"); err == nil {
		t.Fatalf("the clean root should not have systemd yet:\n%s", out)
	}

	// 2. With apt, so that skein-desktop's library dependencies come from the archive, plus
	// systemd and man-db for the unit checks. skein-gui --version runs only when the dynamic
	// loader finds every library the binary links.
	inRoot(t, root, "apt-get", "update", "-qq")
	inRoot(t, root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd", "man-db", "/tmp/skein-desktop.deb")
	out = inRoot(t, root, "skein-gui", "--version")
	if !strings.Contains(out, "skein-gui") {
		t.Errorf("skein-gui --version: %q", out)
	}
	t.Logf("skein-gui --version in the clean root: %s", strings.TrimSpace(lastLine(out)))
	if ldd, err := inRootErr(root, "ldd", "/usr/bin/skein-gui"); err != nil || strings.Contains(ldd, "not found") {
		t.Errorf("ldd skein-gui in the clean root: %v\n%s", err, ldd)
	}

	// 3. The unit: systemd-analyze verify inside the root (where the binary, the man pages of
	// its Documentation= and systemd's own units are) and the hardening score.
	unit := "/usr/lib/systemd/system/skeind.service"
	if out, err := inRootErr(root, "systemd-analyze", "verify", unit); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify skeind.service: %v\n%s", err, out)
	}
	sec := inRoot(t, root, "systemd-analyze", "security", "--offline=yes", unit)
	m := regexp.MustCompile(`Overall exposure level for skeind.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Errorf("systemd-analyze security printed no score:\n%s", tail(sec, 5))
	} else {
		score, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("systemd-analyze security: exposure %.1f (0 = locked down, 10 = unprotected)", score)
		if score > 3.5 {
			t.Errorf("skeind.service exposure %.1f; the hardening slipped (2.7 when the unit was written)", score)
		}
	}

	// The session helper (Tailscale SSH's sessions): a root-only socket that starts the
	// helper, which runs the installed skeind in its helper mode.
	for _, u := range []string{"skein-session-helper.socket", "skein-session-helper.service"} {
		if out, err := inRootErr(root, "systemd-analyze", "verify", "/usr/lib/systemd/system/"+u); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
	sock, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/skein-session-helper.socket"))
	svc, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/skein-session-helper.service"))
	for _, want := range []string{"ListenStream=/run/skein-session-helper.sock", "SocketMode=0600", "SocketUser=root"} {
		if !strings.Contains(string(sock), want+"\n") {
			t.Errorf("skein-session-helper.socket lacks %s", want)
		}
	}
	if !strings.Contains(string(svc), "ExecStart=/usr/sbin/skeind --session-helper\n") {
		t.Errorf("skein-session-helper.service does not run the installed skeind --session-helper:\n%s", svc)
	}
	if !exists(filepath.Join(root, "etc/systemd/system/sockets.target.wants/skein-session-helper.socket")) {
		t.Errorf("skein-session-helper.socket is not enabled after install")
	}

	// 4. Lifecycle. Reinstalling now that systemd is there enables the service (first install
	// happened without systemctl; deb-systemd-helper enables on first configure).
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/skeind.service")
	if !exists(wants) {
		t.Errorf("skeind.service is not enabled after install (%s missing)", wants)
	}
	state := filepath.Join(root, "var/lib/skein")
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "marker"), []byte("keys"), 0o600)
	inRoot(t, root, "dpkg", "-r", "skein-desktop", "skein")
	for _, f := range []string{"usr/sbin/skeind", "usr/bin/skein", "usr/bin/skein-gui", "usr/lib/systemd/system/skeind.service"} {
		if exists(filepath.Join(root, f)) {
			t.Errorf("/%s is still there after dpkg -r", f)
		}
	}
	if !exists(filepath.Join(state, "marker")) {
		t.Errorf("dpkg -r deleted /var/lib/skein: a remove must keep the machine's keys")
	}
	// Disabled by the admin, then reinstalled: stays disabled.
	inRoot(t, root, "dpkg", "-i", "/tmp/skein.deb")
	if !exists(wants) {
		t.Errorf("reinstall after remove: skeind.service not enabled")
	}
	inRoot(t, root, "systemctl", "disable", "skeind.service")
	inRoot(t, root, "dpkg", "-i", "/tmp/skein.deb")
	if exists(wants) {
		t.Errorf("upgrade re-enabled skeind.service that the admin had disabled")
	}
	inRoot(t, root, "dpkg", "--purge", "skein")
	if exists(state) {
		t.Errorf("dpkg --purge left /var/lib/skein")
	}
	if exists(filepath.Join(root, "etc/systemd/system/sockets.target.wants/skein-session-helper.socket")) {
		t.Errorf("dpkg --purge left the session helper's socket enabled")
	}
	if exists(wants) {
		t.Errorf("dpkg --purge left %s", wants)
	}
	if out, err := inRootErr(root, "dpkg-query", "-W", "-f=${db:Status-Status}", "skein"); err == nil && strings.TrimSpace(out) != "not-installed" {
		t.Errorf("after purge dpkg says skein is %q", out)
	}
	t.Logf("installed, ran, removed and purged skein %s in a clean %s root", version, filepath.Base(root))
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	for _, x := range l {
		if strings.HasPrefix(x, "skein-gui ") {
			return x
		}
	}
	return l[len(l)-1]
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	return run(t, "", "gzip", "-dc", path)
}

// plantAndClean ($1 bounding set, $2 skeind, $3 state dir) makes what a crashed skeind leaves
// behind, runs skeind --cleanup with only the capabilities in $1 and prints its exit status
// and what is left.
const plantAndClean = `
ip link set lo up
ip tuntap add dev skeintest0 mode tun
ip link set skeintest0 up
ip route add 100.64.0.0/10 dev skeintest0 table 52
ip rule add pref 5270 table 52
rc=0
setpriv --no-new-privs --bounding-set="$1" --inh-caps=-all -- "$2" --cleanup --statedir "$3" --tun skeintest0 2>/dev/null || rc=$?
left=""
if ip link show skeintest0 >/dev/null 2>&1; then left="$left link"; fi
if ip rule show | grep -q '^5270:'; then left="$left rule"; fi
if [ -n "$(ip route show table 52)" ]; then left="$left route"; fi
echo "rc=$rc left=$left"
`

// skeind runs with nothing but the capabilities the unit leaves it (CAP_NET_ADMIN and
// CAP_NET_RAW, no new privileges) in a fresh network namespace: it starts, serves its socket,
// answers skein status, stops on SIGTERM, and --cleanup works under the same limits.
func TestHelperCapabilities(t *testing.T) {
	needPackageTest(t)
	needRoot(t)
	need(t, "setpriv", "unshare", "ip")
	skein, _ := debs(t)
	dir := extract(t, skein)
	skeind, cli := filepath.Join(dir, "usr/sbin/skeind"), filepath.Join(dir, "usr/bin/skein")
	unit, err := os.ReadFile(filepath.Join(dir, "usr/lib/systemd/system/skeind.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("skeind.service has no CapabilityBoundingSet")
	}
	var caps []string
	for _, c := range strings.Fields(string(m[1])) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	set := "-all," + strings.Join(caps, ",")
	work := t.TempDir()
	sock := filepath.Join(work, "run/skeind.sock")
	limited := func(args ...string) *exec.Cmd {
		full := append([]string{"--net", "setpriv", "--no-new-privs", "--bounding-set=" + set, "--inh-caps=-all", "--"}, args...)
		return exec.Command("unshare", full...)
	}
	// The unit is Type=notify: skeind tells systemd through $NOTIFY_SOCKET. Here the test is
	// systemd's end of that socket.
	if !regexp.MustCompile(`(?m)^Type=notify$`).Match(unit) || !regexp.MustCompile(`(?m)^NotifyAccess=main$`).Match(unit) {
		t.Errorf("skeind.service is not Type=notify with NotifyAccess=main")
	}
	// A private UTS namespace would hide every later hostname change from skeind.
	if regexp.MustCompile(`(?m)^ProtectHostname=(yes|true|on|1)`).Match(unit) {
		t.Errorf("skeind.service has ProtectHostname=yes: skeind would never see the hostname change")
	}
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(work, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	var log bytes.Buffer
	d := limited(skeind, "--statedir", filepath.Join(work, "state"), "--socket", sock, "--tun", "skeintest0", "--port", "0")
	d.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(work, "notify"))
	d.Stdout, d.Stderr = &log, &log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	defer func() {
		d.Process.Signal(syscall.SIGKILL)
	}()
	msgs := readNotify(notify)
	waitMsg := func(what string, timeout time.Duration) string {
		t.Helper()
		select {
		case msg := <-msgs:
			return msg
		case err := <-done:
			t.Fatalf("skeind with only %s exited before %s: %v\n%s", m[1], what, err, log.String())
		case <-time.After(timeout):
			t.Fatalf("skeind with only %s sent no %s in %v\n%s", m[1], what, timeout, log.String())
		}
		return ""
	}
	ready := waitMsg("READY=1", 15*time.Second)
	// Ready means ready: the socket answers at once, without a retry.
	out, err := runErr("", nil, cli, "--socket", sock, "status", "--json")
	if err != nil || !strings.Contains(out, "{") {
		t.Errorf("skein status right after READY=1: %v\n%s", err, out)
	}
	if !strings.HasPrefix(ready, "READY=1\n") || !regexp.MustCompile(`(?m)^STATUS=Logged out; run 'skein up' to log in$`).MatchString(ready) {
		t.Errorf("first notify message %q, want READY=1 and the logged-out STATUS", ready)
	}
	t.Logf("notify: %q", ready)
	d.Process.Signal(syscall.SIGTERM)
	if msg := waitMsg("STOPPING=1", 20*time.Second); !strings.HasPrefix(msg, "STOPPING=1") {
		t.Errorf("after SIGTERM skeind sent %q, want STOPPING=1", msg)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("skeind exited with %v after SIGTERM\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("skeind did not stop in 20 s after SIGTERM\n%s", log.String())
	}
	if !regexp.MustCompile(`(?m)^skeind: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+ version `).MatchString(log.String()) {
		t.Errorf("log lines on a plain stderr should carry their own timestamp and prefix:\n%s", log.String())
	}

	// Leftovers of a crashed run (a TUN device, a rule at skeind's priority, a table-52 route)
	// planted with full root in a fresh namespace; skeind --cleanup with the unit's
	// capabilities removes them all, and without them it cannot (so the check means something).
	leftovers := func(bounding string) string {
		out, err := runErr("", nil, "unshare", "--net", "sh", "-ec", plantAndClean, "sh", bounding, skeind, filepath.Join(work, "state"))
		if err != nil {
			t.Fatalf("planting leftovers: %v\n%s", err, out)
		}
		return lastLine(out)
	}
	if got := leftovers(set); got != "rc=0 left=" {
		t.Errorf("skeind --cleanup with only %s: %s", m[1], got)
	}
	if got := leftovers("-all"); !strings.Contains(got, "link rule route") {
		t.Errorf("skeind --cleanup without capabilities removed leftovers (%s): the check proves nothing", got)
	}
	t.Logf("skeind ran, served skein status, stopped, and removed a crashed run's link, rule and route with only %s (and could not without)", m[1])
}

// readNotify delivers each datagram sent to systemd's end of NOTIFY_SOCKET.
func readNotify(c *net.UnixConn) <-chan string {
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

// make install puts the same files under DESTDIR/PREFIX (the unit pointing at PREFIX's
// skeind), and make uninstall takes them all away again.
func TestMakeInstall(t *testing.T) {
	needPackageTest(t)
	need(t, "make")
	dest := t.TempDir()
	run(t, repo(t), "make", "install", "DESTDIR="+dest, "PREFIX=/opt/skein")
	for _, f := range []string{"opt/skein/sbin/skeind", "opt/skein/bin/skein", "opt/skein/bin/skein-gui",
		"opt/skein/share/man/man1/skein.1.gz", "opt/skein/share/applications/" + appID + ".desktop",
		"opt/skein/share/zsh/site-functions/_skein", "opt/skein/lib/tmpfiles.d/skein.conf",
		"opt/skein/share/doc/skein/copyright", "opt/skein/share/doc/skein-desktop/copyright",
		"opt/skein/lib/systemd/system/skein-session-helper.socket", "opt/skein/lib/systemd/user/skein-receive.service"} {
		if !exists(filepath.Join(dest, f)) {
			t.Errorf("make install did not install /%s", f)
		}
	}
	checkDBusService(t, filepath.Join(dest, "opt/skein/share/dbus-1/services", appID+".service"), "/opt/skein/bin")
	unit, err := os.ReadFile(filepath.Join(dest, "opt/skein/lib/systemd/system/skeind.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/opt/skein/sbin/skeind ") || strings.Contains(string(unit), "@SBINDIR@") {
		t.Errorf("the installed unit does not run /opt/skein/sbin/skeind:\n%s", unit)
	}
	if helper, _ := os.ReadFile(filepath.Join(dest, "opt/skein/lib/systemd/system/skein-session-helper.service")); !strings.Contains(string(helper), "ExecStart=/opt/skein/sbin/skeind --session-helper\n") {
		t.Errorf("the installed session helper unit does not run /opt/skein/sbin/skeind:\n%s", helper)
	}
	run(t, repo(t), "make", "uninstall", "DESTDIR="+dest, "PREFIX=/opt/skein")
	var left []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest))
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("make uninstall left %q", left)
	}
}
