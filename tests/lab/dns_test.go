package lab_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	mdns "github.com/miekg/dns"

	"github.com/skeinvpn/skein/internal/lab"
)

var quad100 = netip.MustParseAddrPort("100.100.100.100:53")

func netnsResolvConf(h *lab.Host) string {
	return filepath.Join("/etc/netns", h.Netns(), "resolv.conf")
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantA(t testing.TB, h *lab.Host, name string, tcp bool, want netip.Addr) {
	t.Helper()
	lab.Eventually(t, 10*time.Second, func() error {
		rc, addrs, err := h.LookupA(quad100, name, tcp)
		if err != nil {
			return err
		}
		if rc != mdns.RcodeSuccess || !slices.Contains(addrs, want) {
			return fmt.Errorf("%s (tcp=%v): rcode %s, %v; want %v", name, tcp, mdns.RcodeToString[rc], addrs, want)
		}
		return nil
	})
}

// TestMagicDNS: names of peers resolve at 100.100.100.100 (FQDN, short, PTR, UDP and TCP); the
// system resolver is pointed at it in resolv.conf mode and ordinary names still resolve
// through the original upstream; removed peers stop resolving; down, accept-dns=false,
// kill -9 + cleanup and restart all leave resolv.conf right.
func TestMagicDNS(t *testing.T) {
	t.Parallel()
	l, tn, n := joinedNode(t, "sk-dns", "alpha-ts", "beta-ts")
	upstream, err := l.Inet().StartDNS(map[string]netip.Addr{"www.example.test": netip.MustParseAddr("198.51.100.7")})
	if err != nil {
		t.Fatal(err)
	}
	rc := netnsResolvConf(n.host)
	// The lab wrote this file when it made the namespace; skeind has changed it since.
	original := "# skein lab " + l.ID() + ": nothing answers here\nnameserver " + l.Inet().Addr().String() + "\n"
	alphaSt, _ := tn.Peer("alpha-ts").Status()
	alphaIP := alphaSt.Self.IPv4()
	betaSt, _ := tn.Peer("beta-ts").Status()
	betaIP := betaSt.Self.IPv4()
	fq := func(h string) string { return h + "." + lab.MagicDNSSuffix }

	for _, tcp := range []bool{false, true} {
		wantA(t, n.host, fq("alpha-ts"), tcp, alphaIP)
	}
	wantA(t, n.host, "alpha-ts", false, alphaIP) // short name via the search domain
	// The same with dig, as a user would check it.
	for _, args := range [][]string{{"+short", "@100.100.100.100", fq("alpha-ts")}, {"+short", "+tcp", "@100.100.100.100", fq("alpha-ts")}, {"+short", "@100.100.100.100", "-x", alphaIP.String()}} {
		out, err := n.host.Run("dig", args...)
		want := alphaIP.String()
		if args[len(args)-2] == "-x" {
			want = fq("alpha-ts") + "."
		}
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("dig %v: %v %q, want %s", args, err, out, want)
		}
	}
	wantA(t, n.host, strings.ToUpper(fq("beta-ts")), false, betaIP)
	names, err := n.host.LookupPTR(quad100, alphaIP)
	if err != nil || !slices.Contains(names, fq("alpha-ts")+".") {
		t.Errorf("PTR %v: %v %v", alphaIP, names, err)
	}
	if code, _, err := n.host.LookupA(quad100, "nosuch."+lab.MagicDNSSuffix, false); err != nil || code != mdns.RcodeNameError {
		t.Errorf("unknown tailnet name: rcode %d err %v", code, err)
	}
	start := time.Now()
	if code, _, err := n.host.LookupA(quad100, "printer.local", false); err != nil || code != mdns.RcodeNameError {
		t.Errorf(".local: rcode %d err %v", code, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf(".local name took %v", d)
	}

	// resolv.conf mode: the system resolver asks us; other names go to the original upstream.
	if got := readFile(t, rc); !strings.Contains(got, "nameserver 100.100.100.100") || !strings.Contains(got, lab.MagicDNSSuffix) {
		t.Fatalf("resolv.conf not pointed at MagicDNS:\n%s", got)
	}
	for name, want := range map[string]string{"www.example.test": "198.51.100.7", "alpha-ts": alphaIP.String(), fq("beta-ts"): betaIP.String()} {
		lab.Eventually(t, 10*time.Second, func() error {
			out, err := n.host.Run("getent", "ahostsv4", name)
			if err != nil || !strings.Contains(out, want) {
				return fmt.Errorf("getent %s: %v %q, want %s", name, err, out, want)
			}
			return nil
		})
	}
	if !slices.Contains(upstream.Asked(), "www.example.test.") {
		t.Errorf("original upstream was not asked: %v", upstream.Asked())
	}
	for _, a := range upstream.Asked() {
		if strings.Contains(a, lab.MagicDNSSuffix) {
			t.Errorf("a tailnet name leaked to the upstream: %s", a)
		}
	}
	st := n.status()
	if st.DNS == nil || st.DNS.Mode != "resolv.conf" || !st.DNS.Applied || !st.DNS.MagicDNS {
		t.Errorf("status dns: %+v", st.DNS)
	}
	r := n.cli("dns", "query", "alpha-ts."+lab.MagicDNSSuffix)
	if r.code != 0 || !strings.Contains(r.stdout, alphaIP.String()) {
		t.Errorf("skein dns query: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = n.cli("dns", "status")
	t.Logf("skein dns status:\n%s", r.stdout)

	// A removed peer stops resolving within 5 s of the netmap change.
	node, err := tn.Control.NodeByName("beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Control.Headscale("nodes", "delete", "--identifier", strconv.FormatUint(node.ID, 10), "--force"); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 10*time.Second, func() error {
		if n.peer(n.status(), "beta-ts") != nil {
			return fmt.Errorf("beta-ts still in the netmap")
		}
		return nil
	})
	gone := time.Now()
	lab.Eventually(t, 5*time.Second, func() error {
		code, _, err := n.host.LookupA(quad100, fq("beta-ts"), false)
		if err != nil || code != mdns.RcodeNameError {
			return fmt.Errorf("removed peer: rcode %d err %v", code, err)
		}
		return nil
	})
	t.Logf("removed peer stopped resolving %v after it left the netmap", time.Since(gone).Round(10*time.Millisecond))

	// accept-dns=false: the system resolver is left alone; 100.100.100.100 still answers.
	mustOK(t, n.cli("set", "--accept-dns=false"), "set --accept-dns=false")
	lab.Eventually(t, 5*time.Second, func() error {
		if got := readFile(t, rc); got != original {
			return fmt.Errorf("resolv.conf with --accept-dns=false:\n%s", got)
		}
		return nil
	})
	wantA(t, n.host, fq("alpha-ts"), false, alphaIP)
	mustOK(t, n.cli("set", "--accept-dns"), "set --accept-dns")
	lab.Eventually(t, 5*time.Second, func() error {
		if got := readFile(t, rc); !strings.Contains(got, "nameserver 100.100.100.100") {
			return fmt.Errorf("resolv.conf not ours again:\n%s", got)
		}
		return nil
	})

	// down: the original, byte for byte.
	mustOK(t, n.cli("down"), "skein down")
	if got := readFile(t, rc); got != original {
		t.Errorf("resolv.conf after down:\n%q\nwant\n%q", got, original)
	}
	// kill -9 while up: cleanup repairs it; a restart takes it over again; a clean stop restores.
	mustOK(t, n.cli("up"), "skein up")
	lab.Eventually(t, 10*time.Second, func() error {
		if got := readFile(t, rc); !strings.Contains(got, "nameserver 100.100.100.100") {
			return fmt.Errorf("resolv.conf not ours after up:\n%s", got)
		}
		return nil
	})
	n.proc.Kill()
	if out, err := n.host.Run(n.bin, "--cleanup", "--statedir", n.statedir); err != nil {
		t.Fatalf("skeind --cleanup: %v\n%s", err, out)
	}
	if got := readFile(t, rc); got != original {
		t.Errorf("resolv.conf after kill -9 + cleanup:\n%q\nwant\n%q", got, original)
	}
	// A plain start after a crash repairs first and then takes the file over again (once).
	n.start()
	lab.Eventually(t, 20*time.Second, func() error {
		got := readFile(t, rc)
		if ns := nameservers(got); !slices.Equal(ns, []string{"100.100.100.100", "fd7a:115c:a1e0::53"}) {
			return fmt.Errorf("resolv.conf after restart:\n%s", got)
		}
		return nil
	})
	n.proc.Kill()
	n.start()
	lab.Eventually(t, 20*time.Second, func() error {
		got := readFile(t, rc)
		if ns := nameservers(got); !slices.Equal(ns, []string{"100.100.100.100", "fd7a:115c:a1e0::53"}) {
			return fmt.Errorf("resolv.conf after kill -9 and restart:\n%s", got)
		}
		return nil
	})
	wantA(t, n.host, fq("alpha-ts"), false, alphaIP)
	n.stop()
	if got := readFile(t, rc); got != original {
		t.Errorf("resolv.conf after a clean stop:\n%q\nwant\n%q", got, original)
	}
}

// TestSplitDNS: Headscale routes corp.example to a DNS server on a LAN behind an official subnet
// router; Skein (accepting routes) resolves corp.example names through it over the tunnel, and
// nothing else goes there.
func TestSplitDNS(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	site, err := l.AddNAT("corp-site", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	dnsHost, err := site.AddHost("corp-dns")
	if err != nil {
		t.Fatal(err)
	}
	corp, err := dnsHost.StartDNS(map[string]netip.Addr{"db.corp.example": netip.MustParseAddr("10.1.2.3")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := readFile(t, c.ConfigFile())
	split := "split:\n      corp.example:\n        - " + dnsHost.Addr().String()
	if !strings.Contains(cfg, "split: {}") {
		t.Fatalf("headscale config has no empty split section:\n%s", cfg)
	}
	if err := os.WriteFile(c.ConfigFile(), []byte(strings.Replace(cfg, "split: {}", split, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	tsHost, err := site.AddHost("corp-router")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tsHost.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	tsr, err := tsHost.StartTailscaledWith(lab.TailscaledOptions{Hostname: "corp-router", Env: []string{"TS_DEBUG_FIREWALL_MODE=nftables"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tsr.Up(c.URL(), key, "--advertise-routes="+site.LAN().String()); err != nil {
		t.Fatal(err)
	}
	if err := c.ApproveRoutes("corp-router", site.LAN().String()); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, l, "sk-split")
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "sk-split", "--accept-routes"), "skein up")

	wantA(t, n.host, "db.corp.example", false, netip.MustParseAddr("10.1.2.3"))
	lab.Eventually(t, 10*time.Second, func() error {
		out, err := n.host.Run("getent", "ahostsv4", "db.corp.example")
		if err != nil || !strings.Contains(out, "10.1.2.3") {
			return fmt.Errorf("getent db.corp.example: %v %q", err, out)
		}
		return nil
	})
	n.host.LookupA(quad100, "www.other.example", false)
	n.host.LookupA(quad100, "corp.example.evil.test", false)
	for _, a := range corp.Asked() {
		if !strings.HasSuffix(a, "corp.example.") {
			t.Errorf("the corp resolver was asked for %s", a)
		}
	}
	if !slices.Contains(corp.Asked(), "db.corp.example.") {
		t.Errorf("corp resolver not asked: %v", corp.Asked())
	}
	st := n.status()
	if st.DNS == nil || len(st.DNS.SplitRoutes["corp.example"]) != 1 {
		t.Errorf("status split routes: %+v", st.DNS)
	}
}

// fakeResolved stands in for systemd-resolved on a private system bus and records calls.
type fakeResolved struct {
	calls chan string
}

func (f *fakeResolved) rec(s string) *dbus.Error {
	select {
	case f.calls <- s:
	default:
	}
	return nil
}

type linkAddr struct {
	Family int32
	Addr   []byte
}

type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

func (f *fakeResolved) SetLinkDNS(ifindex int32, addrs []linkAddr) *dbus.Error {
	var s []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Addr)
		s = append(s, ip.String())
	}
	return f.rec(fmt.Sprintf("SetLinkDNS %d %v", ifindex, s))
}

func (f *fakeResolved) SetLinkDomains(ifindex int32, doms []linkDomain) *dbus.Error {
	var s []string
	for _, d := range doms {
		if d.RoutingOnly {
			s = append(s, "~"+d.Domain)
		} else {
			s = append(s, d.Domain)
		}
	}
	return f.rec(fmt.Sprintf("SetLinkDomains %d %s", ifindex, strings.Join(s, " ")))
}

func (f *fakeResolved) SetLinkDefaultRoute(ifindex int32, v bool) *dbus.Error {
	return f.rec(fmt.Sprintf("SetLinkDefaultRoute %d %v", ifindex, v))
}
func (f *fakeResolved) SetLinkLLMNR(ifindex int32, v string) *dbus.Error {
	return f.rec("SetLinkLLMNR " + v)
}
func (f *fakeResolved) SetLinkMulticastDNS(ifindex int32, v string) *dbus.Error {
	return f.rec("SetLinkMulticastDNS " + v)
}
func (f *fakeResolved) SetLinkDNSSEC(ifindex int32, v string) *dbus.Error {
	return f.rec("SetLinkDNSSEC " + v)
}
func (f *fakeResolved) SetLinkDNSOverTLS(ifindex int32, v string) *dbus.Error {
	return f.rec("SetLinkDNSOverTLS " + v)
}
func (f *fakeResolved) FlushCaches() *dbus.Error { return f.rec("FlushCaches") }
func (f *fakeResolved) RevertLink(ifindex int32) *dbus.Error {
	return f.rec(fmt.Sprintf("RevertLink %d", ifindex))
}

// privateSystemBus starts a dbus-daemon with a permissive system-bus-like config.
func privateSystemBus(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "system_bus_socket")
	conf := filepath.Join(dir, "bus.conf")
	err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=`+sock+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := execCommand(ctx, "dbus-daemon", "--nofork", "--nopidfile", "--config-file="+conf)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addr := "unix:path=" + sock
	lab.Eventually(t, 5*time.Second, func() error {
		_, err := os.Stat(sock)
		return err
	})
	return addr
}

// TestResolvedMode: against a stand-in org.freedesktop.resolve1 on a real (private) system bus,
// skeind sets the tunnel link's DNS and domains while up and reverts them on down.
func TestResolvedMode(t *testing.T) {
	t.Parallel()
	busAddr := privateSystemBus(t)
	conn, err := dbus.Connect(busAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fake := &fakeResolved{calls: make(chan string, 1000)}
	if err := conn.Export(fake, "/org/freedesktop/resolve1", "org.freedesktop.resolve1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName("org.freedesktop.resolve1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning org.freedesktop.resolve1: %v %v", reply, err)
	}

	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	h := mustHost(t, l, "sk-resolved")
	// resolv.conf points at the resolved stub, as on a systemd-resolved host.
	stub := "nameserver 127.0.0.53\noptions edns0 trust-ad\n"
	if err := os.WriteFile(netnsResolvConf(h), []byte(stub), 0o644); err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, h, false, "DBUS_SYSTEM_BUS_ADDRESS="+busAddr)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "sk-resolved"), "skein up")
	ifindex := ""
	if out, err := h.Run("cat", "/sys/class/net/skein0/ifindex"); err == nil {
		ifindex = strings.TrimSpace(out)
	}
	want := []string{
		"SetLinkDNS " + ifindex + " [100.100.100.100",
		"SetLinkDomains " + ifindex + " " + lab.MagicDNSSuffix,
		"~64.100.in-addr.arpa",
		"SetLinkDefaultRoute " + ifindex + " false",
		"FlushCaches",
	}
	var got []string
	deadline := time.After(15 * time.Second)
	for !allSeen(got, want) {
		select {
		case cl := <-fake.calls:
			got = append(got, cl)
		case <-deadline:
			t.Fatalf("resolved calls so far:\n%s\nwant items containing %q", strings.Join(got, "\n"), want)
		}
	}
	st := n.status()
	if st.DNS == nil || st.DNS.Mode != "systemd-resolved" || !st.DNS.Applied {
		t.Errorf("status dns: %+v", st.DNS)
	}
	if b := readFile(t, netnsResolvConf(h)); b != stub {
		t.Errorf("resolv.conf changed in resolved mode:\n%s", b)
	}
	mustOK(t, n.cli("down"), "skein down")
	deadline = time.After(10 * time.Second)
	for {
		select {
		case cl := <-fake.calls:
			if cl == "RevertLink "+ifindex {
				return
			}
		case <-deadline:
			t.Fatalf("no RevertLink %s after down", ifindex)
		}
	}
}

func allSeen(got, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			return false
		}
	}
	return true
}

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// nameservers lists the nameserver lines of a resolv.conf.
func nameservers(conf string) []string {
	var out []string
	for _, l := range strings.Split(conf, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}
