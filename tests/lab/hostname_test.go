package lab_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestHostnameChangeReachesControl: the machine is renamed while skeind runs (its own UTS
// namespace stands for the machine); an official peer sees the new name without a restart.
// With a name set by --hostname, a rename of the machine changes nothing.
func TestHostnameChangeReachesControl(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("needs unshare and nsenter (util-linux)")
	}
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	alpha := tn.Peer("alpha-ts")
	h, err := l.AddHost("sk-renamed")
	if err != nil {
		t.Fatal(err)
	}
	sockDir := t.TempDir()
	os.Chmod(sockDir, 0o755)
	n := &node{t: t, host: h, bin: skeindFastBin, statedir: filepath.Join(h.Dir(), "skein-state"),
		socket: filepath.Join(sockDir, "skeind.sock"), env: []string{"SKEIN_HOSTNAME_POLL=1s"}, wrap: []string{"unshare", "--uts"}}
	n.start()
	rename := func(name string) {
		t.Helper()
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(n.proc.Pid()), "-u", "hostname", name).CombinedOutput()
		if err != nil {
			t.Fatalf("renaming the machine: %v: %s", err, out)
		}
	}
	seenAs := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		lab.Eventually(t, within, func() error {
			st, err := alpha.Status()
			if err != nil {
				return err
			}
			for _, p := range st.Peer {
				if p.HostName == want {
					return nil
				}
			}
			return fmt.Errorf("alpha does not see %q", want)
		})
		return time.Since(start)
	}
	rename("skein-first")
	mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey), "skein up")
	seenAs("skein-first", 20*time.Second)
	rename("skein-renamed")
	took := seenAs("skein-renamed", 15*time.Second)
	t.Logf("alpha saw the new host name %.1f s after the rename", took.Seconds())

	mustOK(t, n.cli("set", "--hostname", "fixed-name"), "skein set --hostname")
	seenAs("fixed-name", 15*time.Second)
	rename("os-name-again")
	time.Sleep(4 * time.Second) // four polls
	if st, err := alpha.Status(); err == nil {
		for _, p := range st.Peer {
			if p.HostName == "os-name-again" {
				t.Errorf("a machine rename replaced the name set with --hostname")
			}
		}
	}
	n.stop()
}
