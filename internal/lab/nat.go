package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
)

// NATKind selects how a NAT maps LAN sources to public ports.
type NATKind int

const (
	// EasyNAT is nftables `masquerade`: endpoint-independent mapping (one
	// local ip:port gets the same public port for every destination), and
	// that port is the local one when it is free.
	EasyNAT NATKind = iota + 1
	// HardNAT is `masquerade random,fully-random`: every new destination
	// gets a random public port (endpoint-dependent, "symmetric" NAT).
	HardNAT
)

func (k NATKind) String() string {
	switch k {
	case EasyNAT:
		return "EasyNAT"
	case HardNAT:
		return "HardNAT"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// NAT is a NAT router: a namespace whose eth0 is on the internet bridge with
// a public address and whose bridge lan0 (192.168.N.1/24) is the LAN of the
// hosts added with NAT.AddHost. Like a home router, it drops unsolicited
// traffic from the internet: a LAN host is reachable only through the
// mappings its own outgoing packets create. New inbound TCP and UDP to the
// router itself is dropped too: accepted, it would leave a conntrack entry
// that holds the public port, and the LAN host sending from that port next
// (as in hole punching) would get another one.
type NAT struct {
	lab    *Lab
	kind   NATKind
	router *Host
	lan    netip.Prefix

	mu         sync.Mutex
	nextHost   int         // next LAN address (last byte)
	portMapper *PortMapper // EnablePortMapping
}

const (
	natTable = "skein_lab_nat" // ip family: masquerade and the forward policy
	fwdTable = "skein_lab_fwd" // inet family: NAT.BlockUDP
)

// AddNAT creates a NAT router namespace skl<id>-<name> (name as for
// AddHost, sharing its namespace) with the next free public address.
func (l *Lab) AddNAT(name string, kind NATKind) (*NAT, error) {
	if !hostRE.MatchString(name) || reserved[name] {
		return nil, fmt.Errorf("AddNAT(%q): want 2-32 chars of [a-z0-9-], not inet/ctl", name)
	}
	if kind != EasyNAT && kind != HardNAT {
		return nil, fmt.Errorf("AddNAT(%q): bad kind %v", name, kind)
	}
	if err := needNft(); err != nil {
		return nil, fmt.Errorf("AddNAT(%q): %w", name, err)
	}
	l.mu.Lock()
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("AddNAT(%q): host exists", name)
	}
	if l.nextLAN > 254 {
		l.mu.Unlock()
		return nil, fmt.Errorf("AddNAT(%q): too many NATs", name)
	}
	last, err := l.allocAddrLocked()
	if err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("AddNAT(%q): %w", name, err)
	}
	lan := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(l.nextLAN), 0}), 24)
	l.nextLAN++
	r := &Host{lab: l, name: name, netns: l.nsName(name), addr: l.addrAt(last), dir: filepath.Join(l.dir, name)}
	l.hosts[name] = r
	l.mu.Unlock()

	n := &NAT{lab: l, kind: kind, router: r, lan: lan, nextHost: firstHost}
	if err := n.setup(last); err != nil {
		return nil, fmt.Errorf("AddNAT(%q): %w", name, err)
	}
	return n, nil
}

func (n *NAT) setup(last int) error {
	l, r := n.lab, n.router
	if err := l.plugHost(r, last); err != nil {
		return err
	}
	if err := ipCmds(
		[]string{"-n", r.netns, "link", "add", "lan0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		[]string{"-n", r.netns, "addr", "add", netip.PrefixFrom(n.lanAddr(1), 24).String(), "dev", "lan0"},
		[]string{"-n", r.netns, "link", "set", "lan0", "up"},
		[]string{"netns", "exec", r.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	); err != nil {
		return err
	}
	// With br_netfilter loaded (Docker loads it), traffic between two LAN hosts would cross
	// the router's forward chain below and be dropped; on a real home router it is plain
	// switching. Absent module: nothing to switch off.
	for _, k := range []string{"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"} {
		ipCmds([]string{"netns", "exec", r.netns, "sysctl", "-qw", k})
	}
	flags := ""
	if n.kind == HardNAT {
		flags = " random,fully-random"
	}
	return r.nft(fmt.Sprintf(`table ip %[1]s {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" ip saddr %[2]s masquerade%[3]s
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan0" oifname "eth0" accept
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "eth0" ct state new meta l4proto { tcp, udp } drop
	}
}
`, natTable, n.lan, flags))
}

func (n *NAT) lanAddr(last int) netip.Addr {
	a := n.lan.Addr().As4()
	a[3] = byte(last)
	return netip.AddrFrom4(a)
}

// AddHost creates a host namespace skl<id>-<name> on the NAT's LAN
// (192.168.N.10 and up, default route via 192.168.N.1). It is a Host like
// those of Lab.AddHost; its Addr is private.
func (n *NAT) AddHost(name string) (*Host, error) {
	l := n.lab
	if !hostRE.MatchString(name) || reserved[name] {
		return nil, fmt.Errorf("AddHost(%q): want 2-32 chars of [a-z0-9-], not inet/ctl", name)
	}
	n.mu.Lock()
	if n.nextHost > 254 {
		n.mu.Unlock()
		return nil, fmt.Errorf("AddHost(%q): LAN full", name)
	}
	last := n.nextHost
	n.nextHost++
	n.mu.Unlock()
	l.mu.Lock()
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("AddHost(%q): host exists", name)
	}
	h := &Host{lab: l, name: name, netns: l.nsName(name), addr: n.lanAddr(last), dir: filepath.Join(l.dir, name)}
	l.hosts[name] = h
	l.mu.Unlock()
	if err := l.plug(h, n.router.netns, "lan0", fmt.Sprintf("vh%d", last), n.lanAddr(1)); err != nil {
		return nil, fmt.Errorf("AddHost(%q): %w", name, err)
	}
	return h, nil
}

// Host is the router namespace itself (its Addr is the public address,
// LinkDown/LinkUp act on its WAN leg).
func (n *NAT) Host() *Host { return n.router }

// Kind is the NAT's kind.
func (n *NAT) Kind() NATKind { return n.kind }

// LAN is the NAT's private subnet, e.g. 192.168.1.0/24.
func (n *NAT) LAN() netip.Prefix { return n.lan }

// PublicAddr is the NAT's current public address.
func (n *NAT) PublicAddr() netip.Addr { return n.router.Addr() }

// ChangePublicAddr moves the NAT to the next free public address, like an
// ISP handing out a new one, and returns it. See SetPublicAddr.
func (n *NAT) ChangePublicAddr() (netip.Addr, error) {
	l := n.lab
	l.mu.Lock()
	last, err := l.allocAddrLocked()
	l.mu.Unlock()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ChangePublicAddr: %w", err)
	}
	a := l.addrAt(last)
	return a, n.setPublicAddr(a)
}

// SetPublicAddr moves the NAT's WAN leg to a, an unused address of the
// lab's subnet (.10-.254), and flushes the NAT's conntrack table, so that
// every existing mapping is dropped: the next packet of an ongoing flow gets
// a new mapping from the new address, and replies to the old one are lost.
func (n *NAT) SetPublicAddr(a netip.Addr) error {
	l := n.lab
	if !l.prefix.Contains(a) {
		return fmt.Errorf("SetPublicAddr(%v): not in %v", a, l.prefix)
	}
	last := int(a.As4()[3])
	if last < firstHost || last > 254 {
		return fmt.Errorf("SetPublicAddr(%v): want .%d-.254", a, firstHost)
	}
	l.mu.Lock()
	used := l.usedAddr[last]
	l.usedAddr[last] = true
	l.mu.Unlock()
	if used {
		return fmt.Errorf("SetPublicAddr(%v): address in use", a)
	}
	return n.setPublicAddr(a)
}

func (n *NAT) setPublicAddr(a netip.Addr) error {
	if n.PortMapper() != nil {
		return fmt.Errorf("SetPublicAddr(%v): the NAT runs miniupnpd, whose WAN address must stay off its reserved list", a)
	}
	r := n.router
	r.mu.Lock()
	old := r.addr
	r.addr = a
	r.mu.Unlock()
	ns := r.netns
	// Delete first: deleting a primary address also deletes secondaries.
	err := ipCmds(
		[]string{"-n", ns, "addr", "del", netip.PrefixFrom(old, 24).String(), "dev", "eth0"},
		[]string{"-n", ns, "addr", "add", netip.PrefixFrom(a, 24).String(), "dev", "eth0"},
		[]string{"-n", ns, "route", "replace", "default", "via", r.gw.String(), "dev", "eth0"},
	)
	if err != nil {
		return fmt.Errorf("SetPublicAddr(%v): %w", a, err)
	}
	// Masquerade itself drops the old address's entries on "addr del", but
	// from a work queue; flushing is synchronous and covers all entries.
	if err := flushConntrack(ns); err != nil {
		return fmt.Errorf("SetPublicAddr(%v): %w", a, err)
	}
	return nil
}

// BlockUDP drops all UDP the NAT forwards, in both directions (its hosts
// keep TCP, hence DERP). The router's own traffic is not affected.
func (n *NAT) BlockUDP() error {
	return n.router.nft(replaceTable("inet "+fwdTable, `
	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		meta l4proto udp drop
	}`))
}

// UnblockUDP undoes BlockUDP.
func (n *NAT) UnblockUDP() error {
	return n.router.nft(deleteTable("inet " + fwdTable))
}
