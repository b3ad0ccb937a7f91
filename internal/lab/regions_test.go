package lab

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestExtraRegions checks the lab's extra DERP regions with the official
// client: both appear in its DERP map as configured, netcheck measures
// both, and derper relays (tailscale debug derp connects through it).
func TestExtraRegions(t *testing.T) {
	t.Parallel()
	l := New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	derp2, err := c.AddDERPRegion("derp2")
	if err != nil {
		t.Fatal(err)
	}
	stun3, err := c.AddSTUNOnlyRegion("stun3")
	if err != nil {
		t.Fatal(err)
	}
	if derp2.ID != 900 || stun3.ID != 901 || len(c.Regions()) != 2 {
		t.Fatalf("regions %+v %+v", derp2, stun3)
	}
	tn, err := l.StartTailnet("lab", "ts-a")
	if err != nil {
		t.Fatal(err)
	}
	ts := tn.Peers[0]

	out, err := ts.CLI("debug", "derp-map")
	if err != nil {
		t.Fatal(err)
	}
	var dm struct {
		Regions map[string]struct {
			RegionCode string
			Nodes      []struct {
				IPv4     string
				STUNPort int
				DERPPort int
				STUNOnly bool
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &dm); err != nil {
		t.Fatalf("derp-map: %v\n%s", err, out)
	}
	for id, want := range map[string]*Region{"900": derp2, "901": stun3} {
		r := dm.Regions[id]
		if r.RegionCode != want.Code || len(r.Nodes) != 1 || r.Nodes[0].IPv4 != want.Host.Addr().String() ||
			r.Nodes[0].STUNOnly != want.STUNOnly || r.Nodes[0].STUNPort != 3478 {
			t.Errorf("region %s: %+v, want %+v", id, r, want)
		}
	}
	if _, ok := dm.Regions["999"]; !ok || len(dm.Regions) != 3 {
		t.Errorf("regions %v, want 900, 901 and the embedded 999", dm.Regions)
	}

	Eventually(t, 60*time.Second, func() error {
		out, err := ts.CLI("netcheck")
		if err != nil {
			return err
		}
		for _, want := range []string{"- headscale: ", "- derp2: ", "- stun3: ", "* MappingVariesByDestIP: false\n"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("netcheck lacks %q:\n%s", want, out)
			}
		}
		return nil
	})
	out, err = ts.CLI("debug", "derp", "derp2")
	if err != nil || !strings.Contains(out, "Successfully established a DERP connection") {
		t.Fatalf("tailscale debug derp derp2: %v\n%s", err, out)
	}
}
