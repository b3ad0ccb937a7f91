package portmap

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eachProtocol is a fake router offering one protocol, for each protocol.
var eachProtocol = []struct {
	proto          Protocol
	pmp, pcp, upnp bool
}{
	{NATPMP, true, false, false},
	{PCP, false, true, false},
	{UPnP, false, false, true},
}

// eachRouter runs fn in parallel subtests, each against a fake router that
// offers one protocol.
func eachRouter(t *testing.T, fn func(t *testing.T, proto Protocol, f *fakeRouter)) {
	for _, tc := range eachProtocol {
		t.Run(string(tc.proto), func(t *testing.T) {
			t.Parallel()
			fn(t, tc.proto, newFakeRouter(t, tc.pmp, tc.pcp, tc.upnp))
		})
	}
}

func startClient(t *testing.T, o Options) *Client {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

func waitMapping(t *testing.T, c *Client) Mapping {
	t.Helper()
	var m Mapping
	waitFor(t, "a mapping", 10*time.Second, func() bool {
		var ok bool
		m, ok = c.Mapping()
		return ok
	})
	return m
}

func closeClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// Each protocol alone maps, reports the router's external address and the
// protocol, journals the mapping and deletes it on Close.
func TestEachProtocolAlone(t *testing.T) {
	eachRouter(t, func(t *testing.T, proto Protocol, f *fakeRouter) {
		o := f.options(41641)
		o.StateDir = t.TempDir()
		var markedTCP atomic.Int32
		o.Control = func(network, address string, c syscall.RawConn) error {
			if strings.HasPrefix(network, "tcp") {
				markedTCP.Add(1)
			}
			return nil
		}
		c := startClient(t, o)
		m := waitMapping(t, c)
		if m.Protocol != proto {
			t.Errorf("protocol %s, want %s", m.Protocol, proto)
		}
		want := netip.AddrPortFrom(f.external, 41641)
		if m.External != want {
			t.Errorf("external %v, want %v", m.External, want)
		}
		if m.Internal != netip.MustParseAddrPort("127.0.0.1:41641") || m.Gateway != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("internal %v gateway %v", m.Internal, m.Gateway)
		}
		fm := f.mapping(41641)
		if fm == nil || fm.proto != proto || fm.lifetime != 7200 {
			t.Fatalf("router's mapping %+v, want %s with 7200 s", fm, proto)
		}
		st := c.Status()
		if got := st.Offers.String(); got != string(proto) {
			t.Errorf("offers %q, want %q", got, proto)
		}
		if proto == UPnP && fm.desc != "skein" {
			t.Errorf("UPnP description %q", fm.desc)
		}
		j, ok, err := readJournal(o.StateDir)
		if err != nil || !ok || j.Protocol != proto || j.External != 41641 {
			t.Errorf("journal %+v %v %v", j, ok, err)
		}
		if proto == UPnP {
			f.mu.Lock()
			conns := f.tcpConns
			f.mu.Unlock()
			// Every HTTP connection went through our Control hook.
			if conns == 0 || int(markedTCP.Load()) != conns {
				t.Errorf("%d HTTP connections, %d TCP sockets through Control", conns, markedTCP.Load())
			}
		}
		closeClient(t, c)
		if f.count() != 0 {
			t.Errorf("mapping left on the router after Close: %+v", f.mapping(41641))
		}
		if _, err := os.Stat(filepath.Join(o.StateDir, JournalFile)); !os.IsNotExist(err) {
			t.Errorf("journal left after Close: %v", err)
		}
	})
}

// Renewal comes at half the granted lifetime; PCP renews and deletes with
// the nonce of the first request.
func TestRenewAtHalf(t *testing.T) {
	eachRouter(t, func(t *testing.T, proto Protocol, f *fakeRouter) {
		o := f.options(41641)
		o.Lifetime = 4 * time.Second
		c := startClient(t, o)
		m := waitMapping(t, c)
		if m.Lifetime != 4*time.Second {
			t.Fatalf("lifetime %v", m.Lifetime)
		}
		waitFor(t, "a renewal", 10*time.Second, func() bool { return len(f.requests(proto, "map")) >= 2 })
		maps := f.requests(proto, "map")
		gap := maps[1].at.Sub(maps[0].at)
		if gap < 1900*time.Millisecond || gap > 3500*time.Millisecond {
			t.Errorf("renewed after %v, want about 2 s (half of 4 s)", gap)
		}
		if proto == PCP && maps[1].nonce != maps[0].nonce {
			t.Errorf("renewal nonce %x differs from %x", maps[1].nonce, maps[0].nonce)
		}
		m2, _ := c.Mapping()
		if m2.External != m.External {
			t.Errorf("renewal moved the mapping: %v -> %v", m.External, m2.External)
		}
		closeClient(t, c)
		if proto == PCP {
			dels := f.requests(PCP, "delete")
			if len(dels) != 1 || dels[0].nonce != maps[0].nonce {
				t.Errorf("delete %+v, want one with nonce %x", dels, maps[0].nonce)
			}
		}
		if f.count() != 0 {
			t.Errorf("mapping left after Close")
		}
	})
}

// A router restart (NAT-PMP/PCP epoch going back; for UPnP the mapping
// gone) is noticed at the next check, and the port is mapped again.
func TestRouterRestartRemaps(t *testing.T) {
	eachRouter(t, func(t *testing.T, proto Protocol, f *fakeRouter) {
		o := f.options(41641)
		o.CheckInterval = 300 * time.Millisecond
		c := startClient(t, o)
		waitMapping(t, c)
		<-c.Changes() // the first mapping's signal
		f.reboot()
		select {
		case <-c.Changes():
		case <-time.After(10 * time.Second):
			t.Fatal("no change signal after the router restarted")
		}
		waitFor(t, "the router to hold a mapping again", 10*time.Second, func() bool { return f.mapping(41641) != nil })
		waitMapping(t, c)
		if st := c.Status(); st.Remaps != 1 {
			t.Errorf("Remaps = %d, want 1", st.Remaps)
		}
	})
}

// Probe also notices a restart, without waiting for the check interval.
func TestProbeNoticesEpochDrop(t *testing.T) {
	f := newFakeRouter(t, true, true, true)
	c := startClient(t, f.options(41641))
	m := waitMapping(t, c)
	if m.Protocol != PCP {
		t.Fatalf("mapped over %s, want PCP first", m.Protocol)
	}
	offers, err := c.Probe(context.Background())
	if err != nil || offers.String() != "UPnP, NAT-PMP, PCP" {
		t.Fatalf("Probe: %q, %v", offers, err)
	}
	f.reboot()
	if _, err := c.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new mapping", 10*time.Second, func() bool { return f.mapping(41641) != nil })
	if st := c.Status(); st.Remaps != 1 {
		t.Errorf("Remaps = %d", st.Remaps)
	}
}

// A router whose external address is not public is never reported, and
// the mapping it granted is given back (UPnP: never made).
func TestLyingRouter(t *testing.T) {
	for _, ext := range []string{"0.0.0.0", "127.0.0.1", "10.1.2.3", "192.168.0.1", "100.64.1.1", "224.0.0.1", "169.254.1.1", "255.255.255.255"} {
		t.Run(ext, func(t *testing.T) {
			t.Parallel()
			eachRouter(t, func(t *testing.T, proto Protocol, f *fakeRouter) {
				f.mu.Lock()
				f.external = netip.MustParseAddr(ext)
				f.mu.Unlock()
				c := startClient(t, f.options(41641))
				waitFor(t, "a rejection", 10*time.Second, func() bool { return c.Status().Rejected != "" })
				if m, ok := c.Mapping(); ok {
					t.Fatalf("reported %v", m)
				}
				// The address the router claimed, for "why relay?" (double NAT); UPnP's
				// empty or unparsable answers may leave none to name.
				got := c.Status().RejectedExternal
				if (proto != UPnP || got.IsValid()) && got != netip.MustParseAddr(ext) {
					t.Errorf("RejectedExternal %v, want %v", got, ext)
				}
				if f.count() != 0 {
					t.Errorf("mapping left on a lying router: %+v", f.mapping(41641))
				}
				t.Logf("status: %q", c.Status().Rejected)
			})
		})
	}
}

// IGDv1 has no AddAnyPortMapping: AddPortMapping, then another port after
// a conflict.
func TestUPnPv1Conflict(t *testing.T) {
	f := newFakeRouter(t, false, false, true)
	f.mu.Lock()
	f.igdV2 = false
	f.maps[41641] = &fakeMap{proto: UPnP, internal: netip.MustParseAddrPort("127.0.0.9:41641"), external: 41641}
	f.mu.Unlock()
	c := startClient(t, f.options(41641))
	m := waitMapping(t, c)
	if m.External.Port() == 41641 || m.External.Port() < 1024 {
		t.Errorf("mapped to %v over another client's port", m.External)
	}
	f.mu.Lock()
	fm := f.maps[m.External.Port()]
	f.mu.Unlock()
	if fm == nil || fm.internal != netip.MustParseAddrPort("127.0.0.1:41641") {
		t.Errorf("router has %+v", fm)
	}
}

func TestDisableAndPortChange(t *testing.T) {
	f := newFakeRouter(t, true, false, false)
	o := f.options(41641)
	c := startClient(t, o)
	waitMapping(t, c)
	c.SetLocalPort(50000)
	waitFor(t, "the new port's mapping", 10*time.Second, func() bool {
		m, ok := c.Mapping()
		return ok && m.Internal.Port() == 50000 && f.mapping(41641) == nil && f.mapping(50000) != nil
	})
	c.SetDisabled(true)
	waitFor(t, "the mapping to go", 10*time.Second, func() bool {
		_, ok := c.Mapping()
		return !ok && f.count() == 0
	})
	if _, err := c.Probe(context.Background()); err != ErrDisabled {
		t.Errorf("Probe while disabled: %v", err)
	}
	n := len(f.requests(NATPMP, "external"))
	time.Sleep(300 * time.Millisecond)
	if len(f.requests(NATPMP, "external")) != n {
		t.Error("packets sent while disabled")
	}

	// Disabled from the start: nothing at all is sent.
	g := newFakeRouter(t, true, true, true)
	o = g.options(41641)
	o.Disabled = true
	startClient(t, o)
	time.Sleep(500 * time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.log) != 0 {
		t.Errorf("disabled client sent %d requests", len(g.log))
	}
}

// Turning NAT-PMP off on our side maps over PCP alone (miniupnpd answers
// both or neither); with PCP off too, UPnP.
func TestOurSideDisables(t *testing.T) {
	f := newFakeRouter(t, true, true, true)
	o := f.options(41641)
	o.DisableNATPMP = true
	c := startClient(t, o)
	if m := waitMapping(t, c); m.Protocol != PCP {
		t.Errorf("mapped over %s", m.Protocol)
	}
	if n := len(f.requests(NATPMP, "external")); n != 0 {
		t.Errorf("%d NAT-PMP requests with NAT-PMP off", n)
	}
	closeClient(t, c)

	o.DisablePCP = true
	c = startClient(t, o)
	if m := waitMapping(t, c); m.Protocol != UPnP {
		t.Errorf("mapped over %s", m.Protocol)
	}
}

// Cleanup deletes what a crashed process's journal records.
func TestCleanupFromJournal(t *testing.T) {
	eachRouter(t, func(t *testing.T, proto Protocol, f *fakeRouter) {
		o := f.options(41641)
		o.StateDir = t.TempDir()
		c := startClient(t, o)
		waitMapping(t, c)
		saved, err := os.ReadFile(filepath.Join(o.StateDir, JournalFile))
		if err != nil {
			t.Fatal(err)
		}
		// Simulate the crash: the router keeps the mapping, the
		// journal stays.
		f.mu.Lock()
		kept := map[uint16]*fakeMap{}
		for k, v := range f.maps {
			kept[k] = v
		}
		f.mu.Unlock()
		closeClient(t, c)
		f.mu.Lock()
		f.maps = kept
		f.mu.Unlock()
		os.WriteFile(filepath.Join(o.StateDir, JournalFile), saved, 0o600)

		cleanupWithHooks(t, o)
		if f.count() != 0 {
			t.Errorf("Cleanup left %+v", f.mapping(41641))
		}
		if _, err := os.Stat(filepath.Join(o.StateDir, JournalFile)); !os.IsNotExist(err) {
			t.Errorf("journal still there: %v", err)
		}
	})
}

// cleanupWithHooks runs Cleanup against the fake's ports.
func cleanupWithHooks(t *testing.T, o Options) {
	t.Helper()
	if err := cleanup(o.StateDir, o); err != nil {
		t.Fatal(err)
	}
}

func TestCleanupBadJournal(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{"{", `{"protocol":"PCP","gateway":"127.0.0.1","self":"127.0.0.1","pcp_nonce":"zz"}`, `{"protocol":"X","gateway":"127.0.0.1","self":"127.0.0.1"}`} {
		os.WriteFile(filepath.Join(dir, JournalFile), []byte(bad), 0o600)
		if err := Cleanup(dir, nil, t.Logf); err != nil {
			t.Errorf("%s: %v", bad, err)
		}
		if _, err := os.Stat(filepath.Join(dir, JournalFile)); !os.IsNotExist(err) {
			t.Errorf("%s: journal kept", bad)
		}
	}
	if err := Cleanup(dir, nil, nil); err != nil {
		t.Errorf("no journal: %v", err)
	}
}

func TestNoRouter(t *testing.T) {
	f := newFakeRouter(t, false, false, false)
	c := startClient(t, f.options(41641))
	waitFor(t, "an error", 10*time.Second, func() bool { return c.Status().LastError != "" })
	if st := c.Status(); st.Offers.Any() || st.ProbedAt.IsZero() {
		t.Errorf("status %+v", st)
	}
}

// A renewal the router no longer answers ends the mapping: it is not
// advertised past the point where the client knows nothing about it.
func TestRenewalFailureDrops(t *testing.T) {
	f := newFakeRouter(t, true, false, false)
	o := f.options(41641)
	o.Lifetime = 4 * time.Second
	c := startClient(t, o)
	waitMapping(t, c)
	<-c.Changes()
	f.mu.Lock()
	f.offerPMP = false
	f.mu.Unlock()
	select {
	case <-c.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no change signal after a failed renewal")
	}
	if m, ok := c.Mapping(); ok {
		t.Fatalf("still reported %v", m)
	}
	if st := c.Status(); st.LastError == "" {
		t.Errorf("no error in status %+v", st)
	}
}
