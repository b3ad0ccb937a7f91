package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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
			// Everything the client sends to the router must carry skeind's
			// bypass mark (SO_MARK 0x80000, HTTP included): drop the rest.
			if err := h.nft(replaceTable("inet skein_lab_mark", fmt.Sprintf(`
	chain output {
		type filter hook output priority filter; policy accept;
		ip daddr %s meta mark != 0x80000 counter drop
	}`, nat.lanAddr(1)))); err != nil {
				t.Fatal(err)
			}
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
			if m.Gateway != nat.lanAddr(1) { // found over netlink
				t.Errorf("gateway %v, want %v", m.Gateway, nat.lanAddr(1))
			}
			// Probe (netcheck's PortMapping line) names what the router
			// answered, among the protocols the client may use.
			if err := p.proc.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			p.wait("a probe", 10*time.Second, func(st helperStatus) error {
				if st.Offers != string(tc.proto) {
					return fmt.Errorf("Probe: %q, want %q", st.Offers, tc.proto)
				}
				return nil
			})
			checkMapped(t, pm, m.External.Port(), internal, true)
			checkMarkRequired(t, h, nat.lanAddr(1), tc.router)

			// Let the mapping age in the router's epoch before it restarts,
			// so that a restart shows as the epoch going backwards.
			time.Sleep(4 * time.Second)
			if err := pm.Restart(true); err != nil {
				t.Fatal(err)
			}
			// (The client may map again before we could look at the empty
			// router; TestPortMappingHardNAT shows a reboot forgets.)
			st = p.wait("a new mapping after the router restarted", 30*time.Second, func(st helperStatus) error {
				if st.Status.Remaps < 1 || st.Mapping == nil {
					return fmt.Errorf("remaps %d, mapping %v", st.Status.Remaps, st.Mapping)
				}
				return nil
			})
			t.Logf("after the restart: %s mapping %v (remaps %d)", st.Mapping.Protocol, st.Mapping.External, st.Status.Remaps)
			checkMapped(t, pm, st.Mapping.External.Port(), internal, true)

			if tc.proto == portmap.PCP {
				// A restart that keeps the leases (miniupnpd reloads them):
				// a new epoch all the same; asking again with the same
				// nonce gets the same mapping back.
				time.Sleep(4 * time.Second)
				if err := pm.Restart(false); err != nil {
					t.Fatal(err)
				}
				st2 := p.wait("the mapping asked for again", 30*time.Second, func(st helperStatus) error {
					if st.Status.Remaps < 2 || st.Mapping == nil {
						return fmt.Errorf("remaps %d, mapping %v (%s)", st.Status.Remaps, st.Mapping, st.Status.LastError)
					}
					return nil
				})
				if st2.Mapping.External != st.Mapping.External {
					t.Errorf("after a restart with leases kept: %v, want %v again", st2.Mapping.External, st.Mapping.External)
				}
				checkMapped(t, pm, st.Mapping.External.Port(), internal, true)
			}

			p.close()
			if ls, err := pm.UDPMappings(); err != nil || len(ls) != 0 {
				t.Fatalf("after Close the router still has %+v (%v)", ls, err)
			}
			checkMapped(t, pm, st.Mapping.External.Port(), internal, false)

			// A crash leaves the mapping and the journal; skeind --cleanup
			// (portmap.Cleanup) deletes it.
			p = startPortmap(t, h, tc.client)
			st = p.wait("a mapping", 30*time.Second, func(st helperStatus) error {
				if st.Mapping == nil {
					return errors.New("no mapping yet")
				}
				return nil
			})
			if err := p.proc.Kill(); err != nil {
				t.Fatal(err)
			}
			checkMapped(t, pm, st.Mapping.External.Port(), internal, true)
			exe, _ := os.Executable()
			cmd := h.Command(nil, exe)
			cmd.Env = append(cmd.Env, "SKEIN_LAB_PORTMAP_HELPER=cleanup", "SKEIN_LAB_PORTMAP_STATEDIR="+p.opts.StateDir)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("cleanup: %v\n%s", err, out)
			}
			t.Logf("cleanup after a crash: %s", strings.TrimSpace(string(out)))
			checkMapped(t, pm, st.Mapping.External.Port(), internal, false)
			if _, err := os.Stat(filepath.Join(p.opts.StateDir, portmap.JournalFile)); !os.IsNotExist(err) {
				t.Errorf("journal left after cleanup: %v", err)
			}
		})
	}
}

// checkMarkRequired shows that the host's drop rule for unmarked packets to
// the router bites: the same requests without the mark get no answer.
func checkMarkRequired(t *testing.T, h *Host, gw netip.Addr, o PortMappingOptions) {
	t.Helper()
	if o.UPnP {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c, err := h.Dial(ctx, "tcp4", netip.AddrPortFrom(gw, upnpHTTPPort).String()); err == nil {
			c.Close()
			t.Fatal("an unmarked HTTP connection to miniupnpd got through the drop rule")
		}
	}
	if o.NATPMP {
		pc := listenUDP(t, h, 0)
		pc.WriteTo([]byte{0, 0}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, 5351)))
		pc.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := pc.ReadFrom(make([]byte, 64)); err == nil {
			t.Fatal("an unmarked NAT-PMP request got an answer through the drop rule")
		}
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

// TestPortMappingHardNAT measures what miniupnpd-nftables' mapping means
// behind a hard NAT (masquerade random,fully-random). Its nftables build
// only adds a DNAT rule (its iptables build also pins the mapped port's
// outbound traffic with an SNAT rule), so:
//   - outbound packets from the mapped port still leave from a random port
//     per destination: STUN still sees a hard NAT;
//   - a peer that sends to the mapped address reaches the host, and the
//     host's answers on that flow leave from the mapped port (conntrack
//     reverses the DNAT);
//   - if the host sent to that peer ip:port first, the peer's packets to
//     the mapped port still arrive, but with the peer's source port
//     rewritten (the router's implicit source NAT, since the inbound
//     flow's reply tuple would equal the host's own flow); the host's
//     packets to the peer's real address keep using its own flow's random
//     port, and those to the rewritten alias leave from the mapped port.
//
// docs/lab-notes.md says what follows for traversal.
func TestPortMappingHardNAT(t *testing.T) {
	t.Parallel()
	l := New(t)
	pub1, pub2 := mustHost(t, l, "pub1"), mustHost(t, l, "pub2")
	echo1, echo2 := startUDPEcho(t, pub1, 7100), startUDPEcho(t, pub2, 7100)
	nat, err := l.AddNAT("hardpm", HardNAT)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := nat.EnablePortMapping(PortMappingOptions{NATPMP: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := nat.AddHost("mapped")
	if err != nil {
		t.Fatal(err)
	}
	p := startPortmap(t, h, helperOptions{DisablePCP: true})
	st := p.wait("a mapping", 30*time.Second, func(st helperStatus) error {
		if st.Mapping == nil {
			return errors.New("no mapping yet")
		}
		return nil
	})
	mapped := st.Mapping.External
	if mapped != netip.AddrPortFrom(pm.PublicAddr(), 41641) {
		t.Fatalf("mapped %v", mapped)
	}
	local := listenUDP(t, h, 41641)

	// Outbound: no pinning, a random port per destination.
	s1, err := udpProbe(local, echo1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := udpProbe(local, echo2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("from the mapped port %v: to %v as %v, to %v as %v", mapped, echo1, s1, echo2, s2)
	if s1.Addr() != pm.PublicAddr() || s2.Addr() != pm.PublicAddr() || s1.Port() == s2.Port() || s1.Port() == 41641 && s2.Port() == 41641 {
		t.Errorf("outbound from the mapped port: %v and %v, want the public address with a random port each", s1, s2)
	}

	// Inbound to the mapped port: delivered, and answered from it.
	peer := listenUDP(t, pub1, 7200)
	from, err := sendUntil(peer, mapped, local, 5*time.Second)
	if err != nil {
		t.Fatalf("a peer's packet to the mapped %v: %v", mapped, err)
	}
	if from != netip.AddrPortFrom(pub1.Addr(), 7200) {
		t.Errorf("the host saw %v, want the peer's own address", from)
	}
	back, err := sendUntil(local, netip.AddrPortFrom(pub1.Addr(), 7200), peer, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peer %v -> mapped %v: delivered; the host's answer arrives from %v", from, mapped, back)
	if back != mapped {
		t.Errorf("the answer on the inbound flow came from %v, want the mapped %v", back, mapped)
	}

	// The host sends to a peer first, then the peer to the mapped port.
	peer2 := listenUDP(t, pub2, 7300)
	first, err := sendUntil(local, netip.AddrPortFrom(pub2.Addr(), 7300), peer2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	from2, err := sendUntil(peer2, mapped, local, 5*time.Second)
	if err != nil {
		t.Fatalf("host -> peer first, then peer -> mapped %v: not delivered: %v", mapped, err)
	}
	back2, err := sendUntil(local, netip.AddrPortFrom(pub2.Addr(), 7300), peer2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host -> peer %v first (seen as %v), then peer -> mapped %v: delivered (from %v); the host's answer arrives from %v",
		pub2.Addr(), first, mapped, from2, back2)
	if back2 != first {
		t.Errorf("the host's packets to a peer it had sent to first now come from %v, want its first flow's %v", back2, first)
	}
	// The router rewrote the peer's source port on the inbound flow (its
	// reply tuple would have clashed with the host's own flow); answering
	// that alias goes back through the mapping.
	if from2.Addr() != pub2.Addr() || from2.Port() == 7300 {
		t.Errorf("the host saw the peer as %v, want %v with another port", from2, pub2.Addr())
	}
	back3, err := sendUntil(local, from2, peer2, 5*time.Second)
	if err != nil {
		t.Fatalf("answering the alias %v: %v", from2, err)
	}
	t.Logf("the host's answer to the alias %v arrives from %v", from2, back3)
	if back3 != mapped {
		t.Errorf("the answer to the alias came from %v, want the mapped %v", back3, mapped)
	}

	// A router reboot forgets the mappings (the client is gone, so nobody
	// asks again); a restart that keeps the lease file restores them.
	if err := p.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pm.Restart(false); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.WaitMapping(netip.AddrPortFrom(h.Addr(), 41641), true, 10*time.Second); err != nil {
		t.Fatalf("after a restart with leases kept: %v", err)
	}
	if err := pm.Restart(true); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.WaitMapping(netip.AddrPortFrom(h.Addr(), 41641), false, 10*time.Second); err != nil {
		t.Fatalf("after a reboot: %v", err)
	}
}

// TestPortMappingOfficialClient checks the lab's router and STUN region
// with the official client: `tailscale netcheck` behind each miniupnpd
// flavour names what it offers on its PortMapping line, the official
// client maps its port there, and with a second region (AddDERPRegion, the
// official derper) netcheck tells a hard NAT (MappingVariesByDestIP: true)
// from a public host (false).
func TestPortMappingOfficialClient(t *testing.T) {
	t.Parallel()
	l := New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	region, err := c.AddDERPRegion("derp2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser("lab"); err != nil {
		t.Fatal(err)
	}
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	up := func(h *Host) *Tailscaled {
		ts, err := h.StartTailscaled(h.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	netcheck := func(ts *Tailscaled, portMapping, varies string) {
		t.Helper()
		var out string
		Eventually(t, 60*time.Second, func() error {
			var err error
			if out, err = ts.CLI("netcheck"); err != nil {
				return err
			}
			for _, want := range []string{
				"* PortMapping: " + portMapping + "\n",
				"* MappingVariesByDestIP: " + varies + "\n",
				"- " + region.Code + ": ",
			} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("%s: netcheck lacks %q:\n%s", ts.Hostname(), want, out)
				}
			}
			return nil
		})
		t.Logf("%s: tailscale netcheck:\n%s", ts.Hostname(), out)
	}

	pub := up(mustHost(t, l, "pub-ts"))
	netcheck(pub, "", "false")

	for _, tc := range []struct {
		name   string
		router PortMappingOptions
		line   string
	}{
		{"both", PortMappingOptions{UPnP: true, NATPMP: true}, "UPnP, NAT-PMP, PCP"},
		{"upnp", PortMappingOptions{UPnP: true}, "UPnP"},
		{"pmp", PortMappingOptions{NATPMP: true}, "NAT-PMP, PCP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nat, err := l.AddNAT("r-"+tc.name, HardNAT)
			if err != nil {
				t.Fatal(err)
			}
			pm, err := nat.EnablePortMapping(tc.router)
			if err != nil {
				t.Fatal(err)
			}
			h, err := nat.AddHost("ts-" + tc.name)
			if err != nil {
				t.Fatal(err)
			}
			ts := up(h)
			netcheck(ts, tc.line, "true")
			Eventually(t, 60*time.Second, func() error {
				ls, err := pm.UDPMappings()
				if err != nil {
					return err
				}
				for _, m := range ls {
					if m.Internal.Addr() == h.Addr() {
						ok, err := pm.Mapped(m.External, m.Internal)
						if err != nil || !ok {
							return fmt.Errorf("lease %+v without its rule (%v)", m, err)
						}
						t.Logf("the official client's mapping: %+v", m)
						return nil
					}
				}
				return fmt.Errorf("no mapping for %v in %+v", h.Addr(), ls)
			})
		})
	}
}
