package router

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dummy adds a standalone virtual link: a dummy, or an ifb (just as inert)
// on kernels built without dummy.
func (e *env) dummy(name string) {
	e.t.Helper()
	if _, err := e.ipErr("link", "add", name, "type", "dummy"); err != nil {
		e.ip("link", "add", name, "type", "ifb")
	}
}

// lan gives the namespace a veth pair with 192.168.50.1/24 and
// 2001:db8:50::1/64 on vth0, and a dummy dum0 with 10.77.1.1/16.
func (e *env) lan() {
	e.t.Helper()
	e.ip("link", "add", "vth0", "type", "veth", "peer", "name", "vth1")
	e.ip("addr", "add", "192.168.50.1/24", "dev", "vth0")
	e.ip("-6", "addr", "add", "2001:db8:50::1/64", "dev", "vth0", "nodad")
	e.ip("link", "set", "vth0", "up")
	e.ip("link", "set", "vth1", "up")
	e.dummy("dum0")
	e.ip("addr", "add", "10.77.1.1/16", "dev", "dum0")
	e.ip("link", "set", "dum0", "up")
	e.ip("link", "set", "lo", "up")
}

// ipBatch runs several ip commands in one process (ip -batch), so they reach
// the kernel within milliseconds of each other even on a loaded machine.
func (e *env) ipBatch(cmds ...string) {
	e.t.Helper()
	c := exec.Command("ip", "netns", "exec", e.ns, "ip", "-batch", "-")
	c.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := c.CombinedOutput(); err != nil {
		e.t.Fatalf("ip -batch: %v: %s", err, out)
	}
}

func assertPrefixes(t *testing.T, what string, got []netip.Prefix, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func TestLANRoutes(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, baseConfig()) // TUN up with its addresses
	e.lan()
	// The same LAN on a second device is reported once.
	e.ip("addr", "add", "192.168.50.5/24", "dev", "vth1")
	// Not directly connected LANs:
	e.ip("route", "add", "100.64.0.0/10", "dev", tunName)                    // via our TUN (excluded)
	e.ip("route", "add", "198.51.100.0/24", "via", "192.168.50.2")           // behind a gateway
	e.ip("route", "add", "default", "via", "192.168.50.254")                 // default
	e.ip("route", "add", "default", "dev", "dum0", "metric", "10")           // on-link default
	e.ip("route", "add", "203.0.113.0/24", "dev", "lo")                      // loopback
	e.ip("route", "add", "224.0.0.0/4", "dev", "vth0")                       // multicast
	e.ip("-6", "route", "add", "2001:db8:60::/48", "via", "2001:db8:50::fe") // behind a gateway
	e.ip("route", "add", "10.99.0.0/16", "dev", "vth0", "table", "100")      // not the main table

	got, err := LANRoutes(tunName)
	assertPrefixes(t, "LANRoutes", got, err, "10.77.0.0/16", "192.168.50.0/24", "2001:db8:50::/64")

	// Without exclude our TUN's routes count too (the kernel gives its
	// point-to-point IPv6 address a main-table route).
	got, err = LANRoutes()
	assertPrefixes(t, "LANRoutes()", got, err,
		"10.77.0.0/16", "100.64.0.0/10", "192.168.50.0/24", "2001:db8:50::/64", "fd7a:115c:a1e0::1/128")
}

func TestVPNRoutes(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, baseConfig())
	e.lan()
	for _, dev := range []string{"tun7", "wg0", "tailscale0", "corpvpn"} {
		e.ip("tuntap", "add", "dev", dev, "mode", "tun")
	}
	e.ip("tuntap", "add", "dev", "tap3", "mode", "tap")
	e.dummy("ppp9") // tunnel-like by name only
	for _, dev := range []string{"tun7", "wg0", "tailscale0", "corpvpn", "tap3", "ppp9"} {
		e.ip("link", "set", dev, "up")
	}
	for _, rt := range [][]string{
		// Included.
		{"10.20.0.0/16", "dev", "tun7"},
		{"10.21.0.0/16", "dev", "wg0"},
		{"10.22.0.0/16", "dev", "corpvpn"}, // tuntap kind, ordinary name
		{"10.23.0.0/16", "dev", "ppp9"},
		{"10.24.0.0/16", "dev", "tap3"},
		{"10.25.0.0/16", "nexthop", "dev", "tun7", "nexthop", "via", "192.168.50.2", "dev", "vth0"},
		// Left out.
		{"default", "dev", "tun7", "metric", "50"},
		{"0.0.0.0/1", "dev", "tun7"}, // full tunnel in two halves
		{"128.0.0.0/1", "dev", "tun7"},
		{"10.30.0.0/16", "dev", "tailscale0"},
		{"10.40.0.0/16", "via", "192.168.50.2", "dev", "vth0"},
		{"10.41.0.0/16", "dev", "vth0"},
		{"100.64.0.0/10", "dev", tunName},
		{"10.26.0.0/16", "dev", "tun7", "table", "100"},
	} {
		e.ip(append([]string{"route", "add"}, rt...)...)
	}
	for _, rt := range [][]string{
		{"2001:db8:20::/48", "dev", "wg0"},
		{"fd00:20::/64", "dev", "tun7"},
		{"::/0", "dev", "wg0"},
		{"::/3", "dev", "wg0"},
		{"2001:db8:40::/48", "dev", "vth0"},
	} {
		e.ip(append([]string{"-6", "route", "add"}, rt...)...)
	}

	got, err := VPNRoutes(tunName)
	assertPrefixes(t, "VPNRoutes", got, err,
		"10.20.0.0/16", "10.21.0.0/16", "10.22.0.0/16", "10.23.0.0/16", "10.24.0.0/16", "10.25.0.0/16",
		"2001:db8:20::/48", "fd00:20::/64")

	// Without exclude our TUN is just another tunnel; tailscale0 never counts.
	got, err = VPNRoutes()
	assertPrefixes(t, "VPNRoutes()", got, err,
		"10.20.0.0/16", "10.21.0.0/16", "10.22.0.0/16", "10.23.0.0/16", "10.24.0.0/16", "10.25.0.0/16",
		"100.64.0.0/10", "2001:db8:20::/48", "fd00:20::/64", "fd7a:115c:a1e0::1/128")
}

func TestWatchLinks(t *testing.T) {
	defer func(d, m time.Duration) { linkDebounce, linkMaxDelay = d, m }(linkDebounce, linkMaxDelay)
	linkDebounce, linkMaxDelay = 300*time.Millisecond, 2*time.Second

	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, baseConfig())
	e.lan()
	e.dummy("dum1") // down, no address: changed in one batch below

	calls := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.WatchLinks(ctx, func() { calls <- struct{}{} }) }()
	time.Sleep(100 * time.Millisecond) // let it subscribe

	expect := func(what string, n int) {
		t.Helper()
		deadline := time.After(3 * time.Second)
		for i := 0; i < n; i++ {
			select {
			case <-calls:
			case <-deadline:
				t.Fatalf("%s: onChange called %d times, want %d", what, i, n)
			}
		}
		// Nothing more once the debounce has long passed.
		select {
		case <-calls:
			t.Errorf("%s: onChange called more than %d times", what, n)
		case <-time.After(4 * linkDebounce):
		}
	}

	// Our own changes (TUN addresses and link, table 52, rules) and other
	// tables are not host changes.
	cfg := baseConfig()
	cfg.LocalAddrs = []netip.Prefix{pfx("100.64.0.9/32"), pfx("fd7a:115c:a1e0::9/128")}
	cfg.Routes = append(cfg.Routes, pfx("0.0.0.0/0"))
	cfg.Bypass = []netip.Prefix{pfx("10.0.0.0/8")}
	mustSet(t, r, cfg)
	e.ip("route", "add", "10.99.0.0/16", "dev", "vth0", "table", "100")
	expect("own changes", 0)

	e.ip("route", "add", "10.60.0.0/16", "via", "192.168.50.2")
	expect("route add", 1)

	// A burst is one call.
	e.ipBatch(
		"addr add 10.78.0.1/16 dev dum1",
		"link set dum1 up",
		"route add 10.61.0.0/16 via 192.168.50.2",
		"route add 2001:db8:61::/48 via 2001:db8:50::fe",
	)
	expect("burst", 1)

	e.ip("route", "del", "10.60.0.0/16")
	expect("route del", 1)

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchLinks: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchLinks still running after Close")
	}
}
