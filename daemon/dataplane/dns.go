package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/skeinvpn/skein/daemon/dns"
	"github.com/skeinvpn/skein/daemon/dns/osdns"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// MagicDNS service addresses, answered from the TUN packet path.
var (
	MagicDNSv4 = tsaddr.MagicDNSv4
	MagicDNSv6 = tsaddr.MagicDNSv6
)

// dnsPlan is the resolver and system configuration for one netmap.
type dnsPlan struct {
	server dns.Config
	os     osdns.Config // zero: leave the system resolver alone
	// from the tailnet: global resolvers; otherwise the system's own upstreams are used.
	tailnetUpstreams bool
	magicDNS         bool
	extraRecords     int
	splitRoutes      map[string][]string
	skipped          []string // resolvers that cannot be used (DoH), for one log line each
}

func fqdn(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// parseUpstream accepts "1.2.3.4", "1.2.3.4:53", "[v6]:53" and "v6"; DoH and other URLs are
// not supported (false).
func parseUpstream(s string) (dns.Upstream, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return dns.Upstream{Addr: ap}, true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return dns.Upstream{Addr: netip.AddrPortFrom(a, 53)}, true
	}
	return dns.Upstream{}, false
}

// computeDNS follows the official client's rules: MagicDNS (Proxied) answers self and peer
// names under the tailnet suffix and the tailnet's reverse zones; when self has an IPv4
// address, peers' IPv6 addresses are left out; extra records are always served; split routes
// go to their resolvers; everything else goes to the tailnet's global resolvers or, without
// them, to the system's original upstreams.
func computeDNS(nm *netmap.NetworkMap, names dns.Names, acceptDNS, v6 bool, sysUpstreams []netip.AddrPort) dnsPlan {
	var p dnsPlan
	p.server.Hosts = map[string][]netip.Addr{}
	p.splitRoutes = map[string][]string{}
	if nm.Self == nil {
		return p
	}
	cfg := nm.DNSConfig
	if cfg == nil {
		cfg = &wire.DNSConfig{}
	}
	selfHas4 := slices.ContainsFunc(nm.Self.Addresses, func(a netip.Prefix) bool { return a.Addr().Is4() })
	addHost := func(n *wire.Node) {
		if n.Name == "" {
			return
		}
		var addrs []netip.Addr
		for _, a := range n.Addresses {
			if !a.IsSingleIP() || (selfHas4 && a.Addr().Is6()) {
				continue
			}
			addrs = append(addrs, a.Addr())
		}
		if len(addrs) > 0 {
			p.server.Hosts[fqdn(n.Name)] = addrs
		}
	}
	p.magicDNS = cfg.Proxied
	var match []string
	if cfg.Proxied {
		// Peers are answered from the netmap's indexes (peerNames), not compiled here.
		addHost(nm.Self)
		p.server.Names = names
		if _, suffix, ok := strings.Cut(strings.TrimSuffix(nm.Self.Name, "."), "."); ok && suffix != "" {
			p.server.LocalDomains = append(p.server.LocalDomains, fqdn(suffix))
			match = append(match, suffix)
		}
		for _, z := range tsaddr.ReverseZones() {
			p.server.LocalDomains = append(p.server.LocalDomains, z)
			match = append(match, strings.TrimSuffix(z, "."))
		}
	}
	for _, r := range cfg.ExtraRecords {
		if r.Type != "" && r.Type != "A" && r.Type != "AAAA" {
			continue
		}
		a, err := netip.ParseAddr(r.Value)
		if err != nil || (r.Type == "A" && !a.Is4()) || (r.Type == "AAAA" && !a.Is6()) {
			continue
		}
		name := fqdn(r.Name)
		if !slices.Contains(p.server.Hosts[name], a) {
			p.server.Hosts[name] = append(p.server.Hosts[name], a)
		}
		p.extraRecords++
	}
	p.server.SearchDomains = slices.Clone(cfg.Domains)
	for suffix, rs := range cfg.Routes {
		key := fqdn(suffix)
		if len(rs) == 0 {
			p.server.LocalDomains = append(p.server.LocalDomains, key)
			if !strings.HasSuffix(key, ".arpa.") { // reverse zones of the tailnet: not worth listing
				p.splitRoutes[strings.TrimSuffix(key, ".")] = nil
			}
			match = append(match, strings.TrimSuffix(key, "."))
			continue
		}
		var ups []dns.Upstream
		var names []string
		for _, r := range rs {
			if r == nil {
				continue
			}
			if u, ok := parseUpstream(r.Addr); ok {
				ups = append(ups, u)
				names = append(names, u.Addr.String())
			} else {
				p.skipped = append(p.skipped, r.Addr)
			}
		}
		if len(ups) == 0 {
			continue
		}
		if p.server.Routes == nil {
			p.server.Routes = map[string][]dns.Upstream{}
		}
		p.server.Routes[key] = ups
		p.splitRoutes[strings.TrimSuffix(key, ".")] = names
		match = append(match, strings.TrimSuffix(key, "."))
	}
	for _, r := range cfg.Resolvers {
		if r == nil {
			continue
		}
		if u, ok := parseUpstream(r.Addr); ok {
			p.server.Upstreams = append(p.server.Upstreams, u)
		} else {
			p.skipped = append(p.skipped, r.Addr)
		}
	}
	p.tailnetUpstreams = len(p.server.Upstreams) > 0
	if !p.tailnetUpstreams {
		for _, u := range sysUpstreams {
			p.server.Upstreams = append(p.server.Upstreams, dns.Upstream{Addr: u})
		}
	}
	slices.Sort(p.server.LocalDomains)
	slices.Sort(match)

	// Nothing for the system to send us: leave it alone, as the official client does.
	if !acceptDNS || (!cfg.Proxied && len(cfg.Routes) == 0 && len(cfg.Resolvers) == 0 && len(cfg.Domains) == 0 && len(cfg.ExtraRecords) == 0) {
		return p
	}
	p.os = osdns.Config{
		Nameservers:   []netip.Addr{MagicDNSv4},
		SearchDomains: slices.Clone(cfg.Domains),
		MatchDomains:  match,
		DefaultRoute:  p.tailnetUpstreams,
	}
	if v6 && slices.ContainsFunc(nm.Self.Addresses, func(a netip.Prefix) bool { return a.Addr().Is6() }) {
		p.os.Nameservers = append(p.os.Nameservers, MagicDNSv6)
	}
	return p
}

// applyDNSLocked configures the MagicDNS resolver and, when accepted, the system resolver.
func (d *Dataplane) applyDNSLocked(nm *netmap.NetworkMap, prefs Prefs) {
	var sys []netip.AddrPort
	if d.osdns != nil {
		sys = d.osdns.Upstreams()
	}
	d.names.set(nm)
	p := computeDNS(nm, &d.names, prefs.AcceptDNS, d.rt.IPv6(), sys)
	for _, s := range p.skipped {
		if !d.dnsWarned[s] {
			d.dnsWarned[s] = true
			d.logf("dns: resolver %q is not supported (only plain DNS); leaving it out", s)
		}
	}
	d.dnsSrv.SetConfig(p.server)
	if d.osdns != nil {
		if err := d.osdns.Set(p.os); err != nil {
			d.logf("dns: configuring the system resolver: %v", err)
		}
	}
	d.dns = p
	d.pubMu.Lock()
	d.pub.dns = p
	d.pubMu.Unlock()
}

// DNSState is the MagicDNS and system resolver state, for status.
type DNSState struct {
	MagicDNS         bool
	Hosts            int
	ExtraRecords     int
	SearchDomains    []string
	SplitRoutes      map[string][]string
	Upstreams        []string
	TailnetUpstreams bool
	Mode, Reason     string
	Applied          bool
	Warnings         []string
}

// DNS reports the DNS state.
func (d *Dataplane) DNS() DNSState {
	d.pubMu.Lock()
	p := d.pub.dns
	d.pubMu.Unlock()
	st := DNSState{
		MagicDNS:         p.magicDNS,
		Hosts:            len(p.server.Hosts),
		ExtraRecords:     p.extraRecords,
		SearchDomains:    p.server.SearchDomains,
		SplitRoutes:      p.splitRoutes,
		TailnetUpstreams: p.tailnetUpstreams,
	}
	if nm := d.names.nm.Load(); p.magicDNS && nm != nil {
		st.Hosts += nm.Len() // the peers, answered from the netmap
	}
	for _, u := range p.server.Upstreams {
		st.Upstreams = append(st.Upstreams, u.Addr.String())
	}
	if d.osdns != nil {
		os := d.osdns.Status()
		st.Mode, st.Reason, st.Applied = os.Mode, os.Reason, os.Applied
		st.Warnings = append(st.Warnings, os.Warnings...)
		if os.LastError != "" {
			st.Warnings = append(st.Warnings, os.LastError)
		}
	} else if d.osdnsErr != "" {
		st.Warnings = append(st.Warnings, "the system resolver cannot be managed: "+d.osdnsErr)
	}
	for _, s := range p.skipped {
		st.Warnings = append(st.Warnings, fmt.Sprintf("resolver %s is not supported (only plain DNS) and is not used", s))
	}
	return st
}
