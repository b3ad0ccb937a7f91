package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/portmap"
)

// TestPortmapMiniupnpd runs daemon/portmap inside a lab host behind the
// real miniupnpd, once per protocol: the mapping shows in the router's DNAT
// chain and lease file, a router restart that forgets it (new epoch) gets
// it mapped again, and closing the client deletes it.
func TestPortmapMiniupnpd(t *testing.T) {
	t.Parallel()
	l := New(t)
	for i, tc := range []struct {
		proto  portmap.Protocol
		router PortMappingOptions
		client helperOptions
	}{
		{portmap.UPnP, PortMappingOptions{UPnP: true}, helperOptions{}},
		// miniupnpd offers NAT-PMP and PCP together; each alone by
		// turning the other off on our side.
		{portmap.PCP, PortMappingOptions{NATPMP: true}, helperOptions{DisableNATPMP: true}},
		{portmap.NATPMP, PortMappingOptions{NATPMP: true}, helperOptions{DisablePCP: true}},
	} {
		t.Run(string(tc.proto), func(t *testing.T) {
			t.Parallel()
			nat, err := l.AddNAT(fmt.Sprintf("pmr%d", i), HardNAT)
			if err != nil {
				t.Fatal(err)
			}
			pm, err := nat.EnablePortMapping(tc.router)
			if err != nil {
				t.Fatal(err)
			}
			h, err := nat.AddHost(fmt.Sprintf("pmh%d", i))
			if err != nil {
				t.Fatal(err)
			}
			internal := netip.AddrPortFrom(h.Addr(), 41641)
			tc.client.CheckInterval = time.Second
			p := startPortmap(t, h, tc.client)
			st := p.wait("a mapping", 30*time.Second, func(st helperStatus) error {
				if st.Mapping == nil {
					return fmt.Errorf("no mapping yet (%s)", st.Status.LastError)
				}
				return nil
			})
			m := st.Mapping
			t.Logf("%s mapping %v -> %v (lifetime %v)", m.Protocol, m.External, m.Internal, m.Lifetime)
			if m.Protocol != tc.proto || m.External.Addr() != pm.PublicAddr() || m.Internal != internal {
				t.Fatalf("mapping %+v, want %s from %v to %v", m, tc.proto, pm.PublicAddr(), internal)
			}
			if m.Lifetime != portmap.DefaultLifetime {
				t.Errorf("granted lifetime %v, want %v", m.Lifetime, portmap.DefaultLifetime)
			}
			checkMapped(t, pm, m.External.Port(), internal, true)

			// Let the mapping age in the router's epoch before it restarts,
			// so that a restart shows as the epoch going backwards.
			time.Sleep(4 * time.Second)
			if err := pm.Restart(true); err != nil {
				t.Fatal(err)
			}
			checkMapped(t, pm, m.External.Port(), internal, false)
			st = p.wait("a new mapping after the router restarted", 30*time.Second, func(st helperStatus) error {
				if st.Status.Remaps < 1 || st.Mapping == nil {
					return fmt.Errorf("remaps %d, mapping %v", st.Status.Remaps, st.Mapping)
				}
				return nil
			})
			t.Logf("after the restart: %s mapping %v (remaps %d)", st.Mapping.Protocol, st.Mapping.External, st.Status.Remaps)
			checkMapped(t, pm, st.Mapping.External.Port(), internal, true)

			p.close()
			if ls, err := pm.UDPMappings(); err != nil || len(ls) != 0 {
				t.Fatalf("after Close the router still has %+v (%v)", ls, err)
			}
			checkMapped(t, pm, st.Mapping.External.Port(), internal, false)
		})
	}
}

// checkMapped waits until the router's rule and lease for ext agree with want.
func checkMapped(t *testing.T, pm *PortMapper, ext uint16, internal netip.AddrPort, want bool) {
	t.Helper()
	err := WaitFor(10*time.Second, func() error {
		got, err := pm.Mapped(ext, internal)
		if err != nil {
			return err
		}
		if got != want {
			rules, _ := pm.Rules()
			leases, _ := pm.Leases()
			return fmt.Errorf("mapped %d -> %v: %v, want %v\n%s\nleases: %+v", ext, internal, got, want, rules, leases)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	_ = errors.New
	_ = strings.Contains
	_ = syscall.SIGKILL
)
