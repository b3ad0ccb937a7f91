package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
)

// TestDeltaApplyMatchesFull: a real data plane (kernel TUN, table 52, wireguard-go, the
// transport) takes random deltas, and after each one what it has configured equals what a full
// plan of the same map says: the WireGuard peers and their AllowedIPs, the transport's peers and
// the kernel's table-52 routes. The data plane runs in a child process inside a network
// namespace of its own, so nothing it does can reach the host's network.
func TestDeltaApplyMatchesFull(t *testing.T) {
	if os.Getenv("SKEIN_DATAPLANE_CHILD") == "delta" {
		deltaChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, TUN)")
	}
	ns := fmt.Sprintf("skdp-%d-%08x", os.Getpid(), rand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	// ip netns exec bind-mounts this over /etc/resolv.conf for the child (it must never write
	// the host's; the test also leaves DNS alone).
	etc := filepath.Join("/etc/netns", ns)
	os.MkdirAll(etc, 0o755)
	defer os.RemoveAll(etc)
	os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644)
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestDeltaApplyMatchesFull$", "-test.v")
	cmd.Env = append(os.Environ(), "SKEIN_DATAPLANE_CHILD=delta", "SKEIN_STATE="+t.TempDir())
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
}

func deltaChild(t *testing.T) {
	exec.Command("ip", "link", "set", "lo", "up").Run()
	d, err := Start(Options{TunName: "skdelta0", NodeKey: key.NewNode(), DiscoKey: key.NewDisco(), StateDir: os.Getenv("SKEIN_STATE"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r := rand.New(rand.NewPCG(7, 9))
	prefs := Prefs{AcceptRoutes: true, ExitNodeID: "p3"}
	nm := netmap.New()
	self := &wire.Node{ID: 1, Name: "self.ts.test.", Key: key.NewNode().Public(),
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("fd7a:115c:a1e0::1/128")}}
	var peers []*wire.Node
	next := 2
	newPeer := func() *wire.Node {
		id := next
		next++
		p := &wire.Node{ID: wire.NodeID(id), StableID: fmt.Sprintf("p%d", id), Name: fmt.Sprintf("p%d.ts.test.", id),
			Key: key.NewNode().Public(), DiscoKey: key.NewDisco().Public(), HomeDERP: 1,
			Addresses: []netip.Prefix{
				netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(id >> 8), byte(id)}), 32),
				netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 14: byte(id >> 8), 15: byte(id)}), 128),
			}}
		p.AllowedIPs = slices.Clone(p.Addresses)
		return p
	}
	for range 20 {
		peers = append(peers, newPeer())
	}
	peers[1].AllowedIPs = append(peers[1].AllowedIPs, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")) // p3: exit
	nm.Apply(&wire.MapResponse{Node: self, Peers: peers, DERPMap: &wire.DERPMap{}}, time.Now())
	apply := func(step string) {
		t.Helper()
		if err := d.SetNetmap(nm.Clone(), prefs); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		d.checkAgainstPlan(t, nm, prefs, step)
	}
	apply("full")
	full := 0
	for step := range 150 {
		var mr wire.MapResponse
		ids := nm.SortedPeers()
		pick := ids[r.IntN(len(ids))]
		op := r.IntN(6)
		t.Logf("step %d: op %d on %d", step, op, pick.ID)
		switch op {
		case 0: // a new peer
			mr.PeersChanged = []*wire.Node{newPeer()}
		case 1: // one leaves
			mr.PeersRemoved = []wire.NodeID{pick.ID}
		case 2: // online / endpoints: no change for WireGuard or routes
			on := r.IntN(2) == 0
			mr.PeersChangedPatch = []*wire.PeerChange{{NodeID: pick.ID, Online: &on, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:41641")}}}
		case 3: // a subnet route comes or goes
			p := *pick
			if len(p.AllowedIPs) > 2 && p.StableID != "p3" {
				p.AllowedIPs = slices.Clone(p.Addresses)
			} else {
				p.AllowedIPs = append(slices.Clone(p.AllowedIPs), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), 0, 0}), 16))
			}
			mr.PeersChanged = []*wire.Node{&p}
		case 4: // a new node key (re-login)
			k := key.NewNode().Public()
			mr.PeersChangedPatch = []*wire.PeerChange{{NodeID: pick.ID, Key: &k}}
		case 5: // unusable: neither disco key nor home region
			p := *pick
			p.DiscoKey, p.HomeDERP = key.DiscoPublic{}, 0
			mr.PeersChanged = []*wire.Node{&p}
		}
		nm.Apply(&mr, time.Now())
		if !d.deltaOK(nm, prefs) {
			full++
		}
		apply(fmt.Sprintf("step %d", step))
	}
	if full > 0 {
		t.Errorf("%d of 150 peer deltas took the full path", full)
	}
	// Lazy WireGuard: nobody is configured until a packet goes to them; a ping to a peer's
	// address through the real TUN configures exactly that peer.
	d.lazy.mu.Lock()
	had := len(d.lazy.have)
	d.lazy.mu.Unlock()
	if had != 0 {
		t.Errorf("%d peers configured without any traffic", had)
	}
	target := computePlan(nm, prefs, time.Now()).peers[0]
	addr := target.allowed[0].Addr()
	exec.Command("ping", "-c", "1", "-W", "1", addr.String()).Run()
	d.lazy.mu.Lock()
	_, ok := d.lazy.have[target.cfg.NodeKey]
	n := len(d.lazy.have)
	d.lazy.mu.Unlock()
	if !ok || n != 1 {
		t.Errorf("after a ping to %v: target configured %v, %d peers configured", addr, ok, n)
	}
	d.checkAgainstPlan(t, nm, prefs, "after the ping")

	// Trimming: a peer without traffic for idleTrim goes; before its first packet the time
	// counts from when it was configured, not from the data plane's start (seconds earlier
	// here, hours in a long-running skeind).
	other := computePlan(nm, prefs, time.Now()).peers[1].cfg.NodeKey
	d.ensurePeer(other)
	d.lazy.mu.Lock()
	since := d.lazy.since[other]
	d.lazy.mu.Unlock()
	d.trimIdle(since.Add(idleTrim - 100*time.Millisecond))
	d.lazy.mu.Lock()
	_, kept := d.lazy.have[other]
	d.lazy.mu.Unlock()
	if !kept {
		t.Errorf("a peer configured %v ago without traffic yet was trimmed", idleTrim-100*time.Millisecond)
	}
	d.trimIdle(time.Now().Add(idleTrim + time.Second))
	d.lazy.mu.Lock()
	n = len(d.lazy.have)
	d.lazy.mu.Unlock()
	if n != 0 {
		t.Errorf("%d peers still configured after %v without traffic", n, idleTrim)
	}
	d.checkAgainstPlan(t, nm, prefs, "after trimming")

	// S20: a peer jailed in a delta opens nothing here even where a rule lets everyone in, and
	// unjailed in the next delta it may again (jailing is in the filter's rules).
	all := []wire.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []wire.NetPortRange{{IP: "*", Ports: wire.PortRange{First: 0, Last: 65535}}}}}
	nm.Apply(&wire.MapResponse{PacketFilter: all}, time.Now())
	apply("allow all")
	var p wire.Node // a peer in the plan (some were made unusable above)
	for _, n := range nm.SortedPeers() {
		if n.Key == target.cfg.NodeKey {
			p = *n
		}
	}
	syn := tcpSYN(p.Addresses[0].Addr(), self.Addresses[0].Addr())
	if !d.filter.In(syn) {
		t.Fatal("a SYN from a peer is dropped under an allow-all rule")
	}
	for _, jailed := range []bool{true, false} {
		p.IsJailed = jailed
		q := p
		nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{&q}}, time.Now())
		apply(fmt.Sprintf("jailed %v", jailed))
		if in := d.filter.In(syn); in == jailed {
			t.Errorf("jailed %v: the peer's SYN let in: %v", jailed, in)
		}
	}
}

// tcpSYN is an IPv4 TCP SYN from src:40000 to dst:22 (checksums are not looked at).
func tcpSYN(src, dst netip.Addr) []byte {
	b := make([]byte, 40)
	b[0], b[3], b[8], b[9] = 0x45, 40, 64, 6
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	b[20], b[21], b[23] = 40000>>8, 40000&0xff, 22
	b[32], b[33] = 5<<4, 0x02 // data offset 5 words; SYN
	return b
}

// checkAgainstPlan compares what the data plane has configured with a full plan of nm.
func (d *Dataplane) checkAgainstPlan(t *testing.T, nm *netmap.NetworkMap, prefs Prefs, step string) {
	t.Helper()
	np := computePlan(nm, prefs, time.Now())
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[key.NodePublic]string{}
	for _, pp := range np.peers {
		want[pp.cfg.NodeKey] = pp.block
	}
	l := d.lazy
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range want {
		if l.want[k] != b {
			t.Fatalf("%s: wanted WireGuard block of %v:\n%q\nwant\n%q", step, k, l.want[k], b)
		}
	}
	if len(l.want) != len(want) {
		t.Fatalf("%s: %d wanted WireGuard peers, plan %d", step, len(l.want), len(want))
	}
	// What WireGuard has is a part of what it may have, with the same blocks: wireguard-go's
	// own view agrees.
	for k, b := range l.have {
		if want[k] != b {
			t.Fatalf("%s: configured %v with a stale or unwanted block", step, k)
		}
	}
	conf, err := d.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(conf, "public_key="); got != len(l.have) {
		t.Fatalf("%s: wireguard-go has %d peers, configured %d", step, got, len(l.have))
	}
	for _, pp := range np.peers {
		if _, ok := d.conn.PeerPath(pp.cfg.NodeKey); !ok {
			t.Fatalf("%s: transport lacks %v", step, pp.cfg.NodeKey)
		}
	}
	if n := d.conn.PeerCount(); n != len(want) {
		t.Fatalf("%s: transport has %d peers, plan %d", step, n, len(want))
	}
	// The kernel's table 52.
	out, _ := exec.Command("ip", "-4", "route", "show", "table", "52").Output()
	out6, _ := exec.Command("ip", "-6", "route", "show", "table", "52").Output()
	have := map[string]bool{}
	for fam, text := range map[string][]byte{"4": out, "6": out6} {
		for _, l := range strings.Split(string(text), "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				have[fam+" "+f[0]] = true
			}
		}
	}
	for _, r := range np.routes {
		s := r.String()
		if r.IsSingleIP() {
			s = r.Addr().String()
		}
		if r.Bits() == 0 {
			s = "default"
		}
		s = map[bool]string{true: "4 ", false: "6 "}[r.Addr().Is4()] + s
		if !have[s] {
			t.Fatalf("%s: route %s missing from table 52:\n%s%s", step, s, out, out6)
		}
		delete(have, s)
	}
	for s := range have {
		t.Fatalf("%s: route %s in table 52 but not planned", step, s)
	}
}
