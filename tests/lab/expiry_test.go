package lab_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// TestNodeKeyExpiry: when the admin expires the node, skeind notices from the netmap and asks
// for a login; logging in again rotates the node key and keeps the same Headscale node.
func TestNodeKeyExpiry(t *testing.T) {
	t.Parallel()
	_, tn, n := joinedNode(t, "skein-x", "alpha-ts")
	c := tn.Control
	r := n.cli("status")
	t.Logf("skein status:\n%s", r.stdout)
	before := n.status()
	hs, err := c.NodeByName("skein-x")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.Headscale("nodes", "expire", "--identifier", strconv.FormatUint(hs.ID, 10)); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 15*time.Second, func() error {
		if st := n.status(); st.State != ipc.StateNeedsLogin {
			return fmt.Errorf("state %s after expiry", st.State)
		}
		return nil
	})
	if r := n.cli("status"); r.code == 0 {
		t.Errorf("status exit 0 while logged out:\n%s", r.stdout)
	}

	mustOK(t, n.cli("up", "--auth-key", tn.AuthKey), "skein up after expiry")
	after := n.status()
	if after.State != ipc.StateRunning || after.Self == nil {
		t.Fatalf("after re-login: %s", after.State)
	}
	if after.Self.NodeKey == before.Self.NodeKey {
		t.Errorf("node key not rotated after expiry")
	}
	hs2, err := c.NodeByName("skein-x")
	if err != nil {
		t.Fatal(err)
	}
	if hs2.ID != hs.ID || hs2.NodeKey != after.Self.NodeKey {
		t.Errorf("headscale node after re-login: id %d (was %d) key %s (ours %s)", hs2.ID, hs.ID, hs2.NodeKey, after.Self.NodeKey)
	}
	if !hs2.Expiry.IsZero() && !hs2.Expiry.After(time.Now()) {
		t.Errorf("node still expired in headscale: %v", hs2.Expiry)
	}
	if after.Self.Addresses[0] != before.Self.Addresses[0] {
		t.Errorf("address changed: %v -> %v", before.Self.Addresses[0], after.Self.Addresses[0])
	}
	n.stop()
}
