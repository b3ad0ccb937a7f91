package lab_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestNetcheckSTUNOnlyRegion: with a STUN-only region (the official stund) beside Headscale's
// relay, a public Skein node measures both, so netcheck knows its mapping does not vary by
// destination, and never makes the STUN-only region its home, however near: a home without a
// relay would leave it unreachable. A plain user gets the last report, not a new run.
func TestNetcheckSTUNOnlyRegion(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	stun, err := c.AddSTUNOnlyRegion("stun3")
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, public(t, l, "skein-nc"), true)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "skein-nc"), "skein up")
	lab.Eventually(t, 30*time.Second, func() error {
		r := n.cli("netcheck")
		for _, want := range []string{"* MappingVariesByDestIP: false\n", "- stun3: ", "- headscale: ", "* Nearest DERP: Headscale Embedded DERP\n"} {
			if !strings.Contains(r.stdout, want) {
				return fmt.Errorf("netcheck lacks %q:\n%s", want, r.stdout)
			}
		}
		return nil
	})
	if st := n.status(); st.Self == nil || st.Self.Relay != "headscale" {
		t.Errorf("home region %q, want headscale (region %d only runs STUN)", st.Self.Relay, stun.ID)
	}
	// A user who is neither root nor the operator: the last report, said to be so.
	r := n.cliAs(&syscall.Credential{Uid: 65534, Gid: 65534}, "netcheck")
	if r.code != 0 || !strings.Contains(r.stderr, "the helper's last report") || !strings.Contains(r.stdout, "- stun3: ") {
		t.Errorf("netcheck as nobody: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	n.stop()
}
