package lab

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MiniUPnPdBinary is Debian's miniupnpd-nftables (scripts/deps.sh installs
// it); $SKEIN_LAB_MINIUPNPD overrides it.
func MiniUPnPdBinary() string {
	if p := os.Getenv("SKEIN_LAB_MINIUPNPD"); p != "" {
		return p
	}
	return "/usr/sbin/miniupnpd"
}

// PortMappingOptions choose what the router's miniupnpd offers. miniupnpd
// has one switch for NAT-PMP and PCP together.
type PortMappingOptions struct {
	UPnP   bool // UPnP IGD (SSDP on udp/1900, HTTP on tcp/5000)
	NATPMP bool // NAT-PMP and PCP on udp/5351
}

// PortMapper is miniupnpd running in a NAT router's namespace.
//
// miniupnpd refuses to map while its WAN address is on its list of
// reserved ranges, and the lab's internet (198.18.0.0/15) is on it, as are
// the private ranges, CGNAT and the TEST-NETs. So EnablePortMapping moves
// the router's WAN leg to 44.0.N.1/24 (N: the NAT's LAN number), with the
// internet router at 44.0.N.254 on the same bridge: an address miniupnpd
// accepts, and nothing leaves the machine because the lab has no uplink.
// (The other way, ext_perform_stun=yes with a STUN server answering RFC
// 5780 requests, would make every start depend on a second server and on
// STUN round trips; the address is simpler and just as real.)
//
// Its nftables build expects its table and chains to exist; they live in
// table inet upnp of the router: regular chains miniupnpd (forward
// accepts), prerouting_miniupnpd (DNAT) and postrouting_miniupnpd, jumped
// to from base chains. That build only DNATs inbound: outbound packets of
// a mapped host keep being masqueraded by the NAT's own rule (for a
// HardNAT, to a random port per destination). See docs/lab-notes.md.
type PortMapper struct {
	nat   *NAT
	opts  PortMappingOptions
	dir   string
	conf  string
	pid   string
	lease string

	mu   sync.Mutex
	proc *Process
}

const (
	upnpTable     = "upnp"
	upnpNATChain  = "prerouting_miniupnpd"
	upnpFwdChain  = "miniupnpd"
	upnpPostChain = "postrouting_miniupnpd"
	upnpHTTPPort  = 5000
)

// EnablePortMapping starts miniupnpd on the NAT router (once per NAT),
// moving its WAN address as PortMapper explains, and waits until it
// listens. Hosts behind the NAT see a public address change; enable it
// before starting their daemons.
func (n *NAT) EnablePortMapping(o PortMappingOptions) (*PortMapper, error) {
	if !o.UPnP && !o.NATPMP {
		return nil, errors.New("EnablePortMapping: want UPnP, NAT-PMP/PCP or both")
	}
	if _, err := os.Stat(MiniUPnPdBinary()); err != nil {
		return nil, fmt.Errorf("EnablePortMapping: %s missing: install miniupnpd-nftables (scripts/deps.sh)", MiniUPnPdBinary())
	}
	n.mu.Lock()
	if n.portMapper != nil {
		n.mu.Unlock()
		return nil, errors.New("EnablePortMapping: already enabled")
	}
	pm := &PortMapper{nat: n, opts: o, dir: filepath.Join(n.router.dir, "miniupnpd")}
	n.portMapper = pm
	n.mu.Unlock()
	if err := os.MkdirAll(pm.dir, 0o755); err != nil {
		return nil, err
	}
	pm.conf = filepath.Join(pm.dir, "miniupnpd.conf")
	pm.pid = filepath.Join(pm.dir, "miniupnpd.pid")
	pm.lease = filepath.Join(pm.dir, "upnp.leases")
	if err := n.moveWANOffReserved(); err != nil {
		return nil, fmt.Errorf("EnablePortMapping: %w", err)
	}
	if err := n.router.nft(pm.rules()); err != nil {
		return nil, fmt.Errorf("EnablePortMapping: %w", err)
	}
	if err := os.WriteFile(pm.conf, []byte(pm.config()), 0o644); err != nil {
		return nil, err
	}
	if err := pm.Start(); err != nil {
		return nil, fmt.Errorf("EnablePortMapping: %w", err)
	}
	return pm, nil
}

// PortMapper returns the NAT's miniupnpd, or nil.
func (n *NAT) PortMapper() *PortMapper {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.portMapper
}

// wanNet is the router's WAN subnet once port mapping is on: 44.0.N.0/24.
func (n *NAT) wanNet() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{44, 0, n.lan.Addr().As4()[2], 0}), 24)
}

// moveWANOffReserved gives the router 44.0.N.1/24 and the internet router
// 44.0.N.254/24 on its bridge, and flushes the router's conntrack table.
func (n *NAT) moveWANOffReserved() error {
	wan := n.wanNet()
	base := wan.Addr().As4()
	base[3] = 1
	addr := netip.AddrFrom4(base)
	base[3] = 254
	gw := netip.AddrFrom4(base)
	inet := n.lab.inet.netns
	r := n.router
	r.mu.Lock()
	old := r.addr
	r.mu.Unlock()
	err := ipCmds(
		[]string{"-n", inet, "addr", "add", netip.PrefixFrom(gw, 24).String(), "dev", "br0"},
		// The internet router forwards between 198.18.X/24 and 44.0.N/24 on
		// the same bridge; redirects would tell hosts a shortcut they must
		// not take (the router is not on their subnet).
		[]string{"netns", "exec", inet, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.br0.send_redirects=0"},
		[]string{"-n", r.netns, "addr", "del", netip.PrefixFrom(old, 24).String(), "dev", "eth0"},
		[]string{"-n", r.netns, "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0"},
		[]string{"-n", r.netns, "route", "replace", "default", "via", gw.String(), "dev", "eth0"},
	)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.addr, r.gw = addr, gw
	r.mu.Unlock()
	return flushConntrack(r.netns)
}

// rules are miniupnpd's table, and the one rule a home router adds to its
// own forward policy so that what miniupnpd DNATs is let through.
func (pm *PortMapper) rules() string {
	return replaceTable("inet "+upnpTable, `
	chain `+upnpFwdChain+` {
	}
	chain `+upnpNATChain+` {
	}
	chain `+upnpPostChain+` {
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		jump `+upnpFwdChain+`
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump `+upnpNATChain+`
	}
	chain postrouting {
		type nat hook postrouting priority srcnat - 10; policy accept;
		jump `+upnpPostChain+`
	}`) + "insert rule ip " + natTable + " forward ct status dnat accept\n"
}

func (pm *PortMapper) config() string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	n := pm.nat
	return fmt.Sprintf(`# Generated by internal/lab for run %s.
ext_ifname=eth0
listening_ip=lan0
http_port=%d
enable_upnp=%s
enable_natpmp=%s
secure_mode=yes
system_uptime=no
notify_interval=60
clean_ruleset_interval=600
uuid=3d5e6f70-0000-4000-8000-%012d
lease_file=%s
upnp_table_name=%s
upnp_nat_table_name=%s
upnp_forward_chain=%s
upnp_nat_chain=%s
upnp_nat_postrouting_chain=%s
allow 1024-65535 %s 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, n.lab.id, upnpHTTPPort, yn(pm.opts.UPnP), yn(pm.opts.NATPMP), n.lan.Addr().As4()[2],
		pm.lease, upnpTable, upnpTable, upnpFwdChain, upnpNATChain, upnpPostChain, n.lan)
}

// Options are what this miniupnpd offers.
func (pm *PortMapper) Options() PortMappingOptions { return pm.opts }

// LeaseFile is miniupnpd's lease file: one line per mapping,
// PROTO:EXTPORT:INTERNALIP:INTPORT:EXPIRY:DESCRIPTION.
func (pm *PortMapper) LeaseFile() string { return pm.lease }

// ConfigFile is miniupnpd's configuration.
func (pm *PortMapper) ConfigFile() string { return pm.conf }

// PublicAddr is the router's WAN address (44.0.N.1).
func (pm *PortMapper) PublicAddr() netip.Addr { return pm.nat.router.Addr() }

// Process is the running miniupnpd (nil while stopped).
func (pm *PortMapper) Process() *Process {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.proc
}

// Start starts miniupnpd (again after Stop) and waits until it listens
// for what it offers. Its epoch (NAT-PMP/PCP) starts at 0 each time.
func (pm *PortMapper) Start() error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.proc != nil && !pm.proc.Exited() {
		return errors.New("miniupnpd is running")
	}
	r := pm.nat.router
	p, err := r.startProcess(r.name+"/miniupnpd", filepath.Join(pm.dir, "miniupnpd.log"), nil,
		MiniUPnPdBinary(), "-d", "-f", pm.conf, "-P", pm.pid)
	if err != nil {
		return err
	}
	pm.proc = p
	var want []string
	if pm.opts.NATPMP {
		want = append(want, "Listening for NAT-PMP/PCP traffic on port 5351")
	}
	if pm.opts.UPnP {
		want = append(want, "HTTP listening on port "+strconv.Itoa(upnpHTTPPort))
	}
	return WaitFor(15*time.Second, func() error {
		log := p.Log()
		if i := strings.LastIndex(log, "=== lab:"); i >= 0 {
			log = log[i:] // this start only
		}
		if p.Exited() {
			return stopWaiting(fmt.Errorf("miniupnpd exited: %v\n%s", p.Wait(), tailLines(log, 30)))
		}
		for _, w := range want {
			if !strings.Contains(log, w) {
				return fmt.Errorf("miniupnpd has not logged %q yet", w)
			}
		}
		return nil
	})
}

// Stop stops miniupnpd (SIGTERM). It deletes its rules on the way out but
// keeps the lease file, from which the next Start restores the mappings.
func (pm *PortMapper) Stop() error {
	pm.mu.Lock()
	p := pm.proc
	pm.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop()
}

// Restart stops and starts miniupnpd: a new epoch. With reboot, it also
// forgets every mapping (lease file and rules), as a router that lost
// power does; without, miniupnpd restores them from its lease file.
func (pm *PortMapper) Restart(reboot bool) error {
	if err := pm.Stop(); err != nil {
		return err
	}
	if reboot {
		if err := os.Remove(pm.lease); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := pm.nat.router.nft(fmt.Sprintf("flush chain inet %[1]s %[2]s\nflush chain inet %[1]s %[3]s\nflush chain inet %[1]s %[4]s\n",
			upnpTable, upnpFwdChain, upnpNATChain, upnpPostChain)); err != nil {
			return err
		}
		if err := flushConntrack(pm.nat.router.netns); err != nil {
			return err
		}
	}
	return pm.Start()
}

// Lease is one line of miniupnpd's lease file.
type Lease struct {
	Proto       string // "UDP" or "TCP"
	External    uint16
	Internal    netip.AddrPort
	Expiry      time.Time // zero: permanent
	Description string
}

// Leases reads the lease file (none when it does not exist).
func (pm *PortMapper) Leases() ([]Lease, error) {
	f, err := os.Open(pm.lease)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Lease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 6)
		if len(parts) != 6 {
			continue
		}
		ext, err1 := strconv.ParseUint(parts[1], 10, 16)
		ip, err2 := netip.ParseAddr(parts[2])
		port, err3 := strconv.ParseUint(parts[3], 10, 16)
		exp, err4 := strconv.ParseInt(parts[4], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("lease %q: %w", sc.Text(), err)
		}
		l := Lease{Proto: parts[0], External: uint16(ext), Internal: netip.AddrPortFrom(ip, uint16(port)), Description: parts[5]}
		if exp != 0 {
			l.Expiry = time.Unix(exp, 0)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// Rules lists miniupnpd's DNAT chain (nft syntax).
func (pm *PortMapper) Rules() (string, error) {
	return pm.nat.router.Run("nft", "list", "chain", "inet", upnpTable, upnpNATChain)
}

// Mapped reports whether miniupnpd forwards UDP ext to internal: a DNAT
// rule in its chain and a line in its lease file, as a test checks them.
func (pm *PortMapper) Mapped(ext uint16, internal netip.AddrPort) (bool, error) {
	rules, err := pm.Rules()
	if err != nil {
		return false, err
	}
	rule := false
	port := "dport " + strconv.Itoa(int(ext)) + " "
	for _, line := range strings.Split(rules, "\n") {
		// miniupnpd matches the protocol on the IP header's byte 9
		// (nft prints "@nh,72,8 0x11 th dport N"), older builds "udp dport N".
		udp := strings.Contains(line, "udp "+port) || strings.Contains(line, "@nh,72,8 0x11 th "+port)
		if udp && strings.Contains(line, "dnat ip to "+internal.String()) {
			rule = true
		}
	}
	leases, err := pm.Leases()
	if err != nil {
		return false, err
	}
	lease := false
	for _, l := range leases {
		if l.Proto == "UDP" && l.External == ext && l.Internal == internal {
			lease = true
		}
	}
	if rule != lease {
		return false, fmt.Errorf("miniupnpd disagrees with itself: rule %v, lease %v\n%s", rule, lease, rules)
	}
	return rule, nil
}

// UDPMappings lists miniupnpd's UDP leases (for "no mapping is left").
func (pm *PortMapper) UDPMappings() ([]Lease, error) {
	ls, err := pm.Leases()
	var out []Lease
	for _, l := range ls {
		if l.Proto == "UDP" {
			out = append(out, l)
		}
	}
	return out, err
}

// WaitMapping waits until miniupnpd has (want) or has not (!want) a UDP
// mapping to internal (any external port), rule and lease alike, and
// returns it when there is one.
func (pm *PortMapper) WaitMapping(internal netip.AddrPort, want bool, timeout time.Duration) (Lease, error) {
	var found Lease
	err := WaitFor(timeout, func() error {
		ls, err := pm.UDPMappings()
		if err != nil {
			return err
		}
		found = Lease{}
		for _, l := range ls {
			if l.Internal == internal {
				ok, err := pm.Mapped(l.External, internal)
				if err != nil {
					return err
				}
				if ok {
					found = l
				}
			}
		}
		if got := found.External != 0; got != want {
			return fmt.Errorf("miniupnpd mapping to %v: %v, want %v (leases %+v)", internal, got, want, ls)
		}
		return nil
	})
	return found, err
}
