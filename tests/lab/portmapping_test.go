package lab_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// Port mapping against a real router: Debian's miniupnpd-nftables in the NAT's namespace (see
// internal/lab/portmap.go and docs/lab-notes.md). Its nftables build only DNATs inbound: the
// mapped host's own packets keep being masqueraded by the NAT's rule (for a hard NAT, to a
// random port per destination), so a peer reaches us at the mapped address and our answers go
// back through that mapping's conntrack entry.

// netcheckJSON runs `skein netcheck --format=json` as root (a new run: it also checks the
// router's mapping for a restart).
func (n *node) netcheckJSON() map[string]any {
	n.t.Helper()
	r := n.cli("netcheck", "--format=json")
	mustOK(n.t, r, "skein netcheck --format=json")
	var j map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		n.t.Fatalf("netcheck JSON: %v\n%s", err, r.stdout)
	}
	return j
}

// TestPortMappingProtocols: behind a router that offers only UPnP, only NAT-PMP/PCP (PCP is
// used first), or NAT-PMP alone (PCP turned off on our side), skeind maps its port: the
// mapping shows in the router's nft chain and lease file, `skein netcheck` names what the
// router offers, the mapped endpoint is advertised; a router reboot (new epoch, mappings lost)
// is noticed and the port mapped again; `skein down` deletes the mapping.
func TestPortMappingProtocols(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	// An official node on the internet: what it is told of the mapped nodes' endpoints.
	watcher, err := public(t, l, "watcher").StartTailscaled("watcher")
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name   string
		router lab.PortMappingOptions
		env    []string
		offers string // netcheck's PortMapping line
	}{
		{"UPnP", lab.PortMappingOptions{UPnP: true}, nil, "UPnP"},
		{"PCP", lab.PortMappingOptions{NATPMP: true}, nil, "NAT-PMP, PCP"},
		{"NAT-PMP", lab.PortMappingOptions{NATPMP: true}, []string{"SKEIN_PORTMAP_ONLY=natpmp"}, "NAT-PMP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nat, err := l.AddNAT(fmt.Sprintf("pm%d", i), lab.HardNAT)
			if err != nil {
				t.Fatal(err)
			}
			router, err := nat.EnablePortMapping(tc.router)
			if err != nil {
				t.Fatal(err)
			}
			routerUp := time.Now()
			name := fmt.Sprintf("skein-pm%d", i)
			h, err := nat.AddHost(name)
			if err != nil {
				t.Fatal(err)
			}
			n := startNodeWith(t, h, true, tc.env...)
			mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", name), "skein up")
			internal := netip.AddrPortFrom(h.Addr(), 41641)
			lease, err := router.WaitMapping(internal, true, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			mapped := netip.AddrPortFrom(router.PublicAddr(), lease.External)
			t.Logf("mapped %v -> %v (%q)", mapped, internal, lease.Description)
			r := n.cli("netcheck")
			if !strings.Contains(r.stdout, "\t* PortMapping: "+tc.offers+"\n") {
				t.Errorf("skein netcheck, want PortMapping: %s:\n%s", tc.offers, r.stdout)
			}
			// Advertised first: what an official peer is told of the node.
			lab.Eventually(t, 15*time.Second, func() error {
				eps, err := officialEndpointsOf(watcher, name)
				if err != nil {
					return err
				}
				if len(eps) == 0 || eps[0] != mapped.String() {
					return fmt.Errorf("watcher's netmap has %s at %v, want %v first", name, eps, mapped)
				}
				return nil
			})

			// A router that lost power: a new epoch, no mappings. The next check (a netcheck
			// runs one) maps again. NAT-PMP and PCP tell a reboot by an epoch (seconds since
			// the router started) that went back by more than the time since our last look
			// allows; a router up for seconds only cannot go back far enough to tell, so it
			// has been up a while, as routers are.
			time.Sleep(time.Until(routerUp.Add(15 * time.Second)))
			if err := router.Restart(true); err != nil {
				t.Fatal(err)
			}
			lab.Eventually(t, 30*time.Second, func() error {
				n.cli("netcheck")
				_, err := router.WaitMapping(internal, true, 2*time.Second)
				return err
			})
			t.Logf("mapped again after the router's reboot")

			mustOK(t, n.cli("down"), "skein down")
			if _, err := router.WaitMapping(internal, false, 15*time.Second); err != nil {
				t.Fatalf("after skein down: %v", err)
			}
			n.stop()
		})
	}
}

// TestPortMappingHardNATBoth: two hard NATs. With miniupnpd on one of them, Skein behind it
// and an official node and a Skein node behind the other go direct and carry 200 MB intact;
// without it, they stay relayed and `skein why` says both are behind hard NAT with no port
// mapping (a second DERP region lets netcheck measure the NAT type).
func TestPortMappingHardNATBoth(t *testing.T) {
	t.Parallel()
	for _, mapping := range []bool{true, false} {
		t.Run(fmt.Sprintf("mapping=%v", mapping), func(t *testing.T) {
			l, c := labWithUser(t)
			if _, err := c.AddDERPRegion("derp2"); err != nil {
				t.Fatal(err)
			}
			key, err := c.PreAuthKey("lab", true, false)
			if err != nil {
				t.Fatal(err)
			}
			natA, err := l.AddNAT("nat-a", lab.HardNAT)
			if err != nil {
				t.Fatal(err)
			}
			if mapping {
				if _, err := natA.EnablePortMapping(lab.PortMappingOptions{UPnP: true, NATPMP: true}); err != nil {
					t.Fatal(err)
				}
			}
			var natB *lab.NAT
			tr := newTrioOn(t, l, c, key, func(t testing.TB, l *lab.Lab, name string) *lab.Host {
				h, err := natA.AddHost(name)
				if err != nil {
					t.Fatal(err)
				}
				return h
			}, behind(lab.HardNAT, "nat-b", &natB))
			// Both sides know their NAT maps per destination.
			lab.Eventually(t, 40*time.Second, func() error {
				j := tr.a.netcheckJSON()
				if j["MappingVariesByDestIP"] != "true" {
					return fmt.Errorf("skein-a netcheck: MappingVariesByDestIP %q", j["MappingVariesByDestIP"])
				}
				return nil
			})
			if mapping {
				tr.checkPairs(wantDirect)
			} else {
				tr.checkPairs(wantRelay)
				lab.Eventually(t, 30*time.Second, func() error {
					rep := tr.a.why("official-o")
					if rep.Path != "relay" || len(rep.Causes) == 0 || rep.Causes[0].Code != ipc.CauseHardNATBoth {
						return fmt.Errorf("why: path %s, causes %+v", rep.Path, rep.Causes)
					}
					return nil
				})
			}
			tr.stop()
		})
	}
}

// officialEndpointsOf is what an official node's netmap says of a peer's endpoints.
func officialEndpointsOf(ts *lab.Tailscaled, host string) ([]string, error) {
	out, err := ts.CLI("debug", "netmap")
	if err != nil {
		return nil, err
	}
	var nm struct {
		Peers []struct {
			Endpoints []string
			Hostinfo  struct{ Hostname string }
		}
	}
	if err := json.Unmarshal([]byte(out), &nm); err != nil {
		return nil, fmt.Errorf("debug netmap: %v", err)
	}
	for _, p := range nm.Peers {
		if p.Hostinfo.Hostname == host {
			return p.Endpoints, nil
		}
	}
	return nil, fmt.Errorf("%s not in the netmap", host)
}
