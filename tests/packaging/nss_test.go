package packaging

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nssNamespace runs skeind ($1, its args after) in a mount namespace where NSS also reads
// libnss-extrausers' files ($NSS_PASSWD), the way SSSD, LDAP or systemd-homed add users that
// /etc/passwd does not list. Nothing changes outside the namespace.
const nssNamespace = `
set -e
sed -E 's/^(passwd|group):.*/\1: files extrausers/' /etc/nsswitch.conf >"$NSS_DIR/nsswitch.conf"
mount --bind "$NSS_DIR/nsswitch.conf" /etc/nsswitch.conf
mount --bind "$NSS_DIR/extrausers" /var/lib/extrausers
exec "$@"
`

// An operator known only through NSS can be set and is recognised by the packaged skeind
// (no cgo, the unit's capabilities): it asks getent when /etc/passwd does not know the name.
func TestOperatorFromNSS(t *testing.T) {
	needPackageTest(t)
	needRoot(t)
	need(t, "unshare", "setpriv", "getent", "mount")
	if m, _ := filepath.Glob("/usr/lib/*/libnss_extrausers.so.2"); len(m) == 0 {
		if m, _ = filepath.Glob("/usr/lib/libnss_extrausers.so.2"); len(m) == 0 {
			t.Fatal("libnss-extrausers is not installed (make deps installs it)")
		}
	}
	if fi, err := os.Stat("/var/lib/extrausers"); err != nil || !fi.IsDir() {
		t.Fatalf("/var/lib/extrausers: %v (libnss-extrausers makes it)", err)
	}
	skeinDeb, _ := debs(t)
	ext := extract(t, skeinDeb)
	// A directory every uid can reach: the operator's skein runs as uid 4711.
	work, err := os.MkdirTemp("", "skein-nss-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	os.Chmod(work, 0o755)
	cli := filepath.Join(work, "skein")
	copyFile(t, filepath.Join(ext, "usr/bin/skein"), cli)
	os.Chmod(cli, 0o755)
	nss := filepath.Join(work, "nss")
	os.MkdirAll(filepath.Join(nss, "extrausers"), 0o755)
	os.WriteFile(filepath.Join(nss, "extrausers/passwd"), []byte("nssop:x:4711:4711:NSS operator:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	os.WriteFile(filepath.Join(nss, "extrausers/group"), []byte("nssop:x:4711:\n"), 0o644)
	if out, err := runErr("", nil, "getent", "passwd", "nssop"); err == nil {
		t.Fatalf("nssop is known outside the test's namespace: %s", out)
	}

	sock := filepath.Join(work, "run/skeind.sock")
	set := "-all,+net_admin,+net_raw"
	cmd := exec.Command("unshare", "--mount", "--net", "sh", "-c", nssNamespace, "sh",
		"setpriv", "--no-new-privs", "--bounding-set="+set, "--inh-caps=-all", "--",
		filepath.Join(ext, "usr/sbin/skeind"), "--statedir", filepath.Join(work, "state"), "--socket", sock, "--tun", "skeinnss0", "--port", "0")
	cmd.Env = append(os.Environ(), "NSS_DIR="+nss)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	}()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("skeind exited: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skeind did not open its socket\n%s", log.String())
		}
	}
	as := func(uid string, args ...string) (string, error) {
		full := append([]string{"--reuid=" + uid, "--regid=" + uid, "--clear-groups", "--", cli, "--socket", sock}, args...)
		return runErr("", nil, "setpriv", full...)
	}

	// Root sets the NSS-only user as the operator; a name nobody knows is refused.
	if out, err := as("0", "set", "--operator=nssop"); err != nil {
		t.Fatalf("skein set --operator=nssop: %v\n%s\nskeind log:\n%s", err, out, log.String())
	}
	if out, err := as("0", "set", "--operator=nosuchskeinuser"); err == nil || !strings.Contains(out, "nosuchskeinuser") {
		t.Errorf("an unknown operator was accepted: %v\n%s", err, out)
	}
	// The operator (uid 4711) may change state; another uid may not.
	if out, err := as("4711", "set", "--accept-routes=true"); err != nil {
		t.Errorf("the NSS operator (uid 4711) was refused: %v\n%s", err, out)
	}
	out, err := as("4712", "set", "--accept-routes=false")
	if err == nil || !regexp.MustCompile(`permission denied`).MatchString(out) {
		t.Errorf("uid 4712 (not the operator) was let in: %v\n%s", err, out)
	}
	st, err := as("4711", "status", "--json")
	if err != nil || !strings.Contains(st, `"state"`) {
		t.Errorf("skein status as the operator: %v\n%s", err, st)
	}
	t.Logf("operator nssop (uid 4711, known only to NSS through extrausers) set and recognised by the packaged skeind")
}
