package netmap

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/safetext"
	"github.com/skeinvpn/skein/internal/tsaddr"
)

// A control server is trusted with the tailnet's policy, not with skeind's memory or the user's
// terminal. Each message is bounded by the map stream (64 MiB), but deltas accumulate: without
// these limits a hostile server could grow peers, filter sets, user profiles or health messages
// with every message. Whatever passes a limit is left out (filter rules only ever allow, so
// dropping them fails closed) and said once in LimitsHit, which the status shows.
//
// Text that front ends show (names, OS, location, tags, user names, DERP region names, health
// messages) is cleaned of control and format characters here, where it enters, so no front end
// has to (hole 5 of issue 14).
var (
	// maxPeers bounds the peers of one map (a variable for tests).
	maxPeers = 32768
)

const (
	maxAddresses    = 16   // a node's own tailnet addresses
	maxAllowedIPs   = 4096 // routes to one node (subnet routers may have many)
	maxEndpoints    = 64   // candidate ip:ports of one node
	maxTags         = 64   // tags of one node
	maxCapMap       = 256  // capabilities of one node
	maxCapValue     = 64 << 10
	maxServices     = 64    // Hostinfo.Services
	maxText         = 256   // bytes of a name, OS string, tag or location field
	maxUserProfiles = 65536 // across deltas
	maxFilterSets   = 64    // named packet filters
	maxFilterRules  = 65536 // rules over every set
	maxRuleEntries  = 4096  // SrcIPs, DstPorts, IPProto or CapGrant of one rule
	maxDERPRegions  = 256
	maxDERPNodes    = 32 // per region
	maxHealth       = 32
	maxHealthText   = 1024
	maxDNSRecords   = 16384
	maxDNSRoutes    = 1024
	maxResolvers    = 16 // per list
	maxDomains      = 256
	maxLimitNotes   = 16 // LimitsHit
)

// limitHit records that a limit was reached (once per kind).
func (nm *NetworkMap) limitHit(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if slices.Contains(nm.LimitsHit, msg) || len(nm.LimitsHit) >= maxLimitNotes {
		return
	}
	nm.LimitsHit = append(slices.Clip(nm.LimitsHit), msg)
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n:n]
	}
	return s
}

func clean(s string) string { return safetext.Clean(s, maxText) }

// cleanNode bounds and cleans a node from control (self or peer) in place; n is already a copy.
// Addresses that are not single tailnet addresses are dropped: a node's own addresses go on our
// TUN device and into routes, and must never claim a LAN or internet address.
func (nm *NetworkMap) cleanNode(n *wire.Node) {
	var addrs []netip.Prefix
	for _, a := range n.Addresses {
		ip := a.Addr().Unmap()
		if a.IsSingleIP() && tsaddr.IsTailnetAddr(ip) && ip != tsaddr.MagicDNSv4 && ip != tsaddr.MagicDNSv6 {
			addrs = append(addrs, netip.PrefixFrom(ip, ip.BitLen()))
		} else {
			nm.limitHit("node %d: address %v is not a tailnet address; ignored", n.ID, a)
		}
	}
	if len(addrs) > maxAddresses {
		addrs = addrs[:maxAddresses]
		nm.limitHit("node %d: more than %d addresses; the rest are ignored", n.ID, maxAddresses)
	}
	if len(n.Addresses) > 0 || addrs != nil {
		n.Addresses = addrs
	}
	if len(n.AllowedIPs) > maxAllowedIPs {
		nm.limitHit("node %d: more than %d allowed IPs; the rest are ignored", n.ID, maxAllowedIPs)
		n.AllowedIPs = first(n.AllowedIPs, maxAllowedIPs)
	}
	// An empty or malformed prefix would fail the whole apply of the routes.
	n.AllowedIPs = validPrefixes(n.AllowedIPs)
	n.PrimaryRoutes = validPrefixes(first(n.PrimaryRoutes, maxAllowedIPs))
	n.Endpoints = validEndpoints(first(n.Endpoints, maxEndpoints))
	// A key of small order gives a Diffie-Hellman result anyone knows: such a node gets no key
	// (and so no tunnel), whatever control says (issue 14, R5).
	if !n.Key.IsZero() && n.Key.LowOrder() {
		nm.limitHit("node %d: its node key is a point of small order; ignored", n.ID)
		n.Key = key.NodePublic{}
	}
	n.Name = safetext.Clean(n.Name, 255)
	n.StableID = safetext.Clean(n.StableID, 64)
	n.DERP = safetext.Clean(n.DERP, 64)
	n.Tags = safetext.Strings(n.Tags, maxTags, maxText)
	n.CapMap = cleanCapMap(n.CapMap)
	if n.Hostinfo != nil {
		n.Hostinfo = cleanHostinfo(n.Hostinfo)
	}
}

// validPrefixes drops invalid prefixes (a new slice only when there are any).
func validPrefixes(ps []netip.Prefix) []netip.Prefix {
	if !slices.ContainsFunc(ps, func(p netip.Prefix) bool { return !p.IsValid() }) {
		return ps
	}
	return slices.DeleteFunc(slices.Clone(ps), func(p netip.Prefix) bool { return !p.IsValid() })
}

func validEndpoints(eps []netip.AddrPort) []netip.AddrPort {
	if !slices.ContainsFunc(eps, func(e netip.AddrPort) bool { return !e.IsValid() }) {
		return eps
	}
	return slices.DeleteFunc(slices.Clone(eps), func(e netip.AddrPort) bool { return !e.IsValid() })
}

func cleanCapMap(m map[string]json.RawMessage) map[string]json.RawMessage {
	if m == nil {
		return nil
	}
	ok := len(m) <= maxCapMap
	for k, v := range m {
		if len(v) > maxCapValue || len(k) > maxText {
			ok = false
		}
	}
	if ok {
		return m
	}
	out := make(map[string]json.RawMessage, min(len(m), maxCapMap))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same capabilities survive every time
	for _, k := range keys {
		if len(out) == maxCapMap {
			break
		}
		if v := m[k]; len(v) <= maxCapValue && len(k) <= maxText {
			out[k] = v
		}
	}
	return out
}

func cleanHostinfo(h *wire.Hostinfo) *wire.Hostinfo {
	c := *h
	for _, s := range []*string{&c.IPNVersion, &c.BackendLogID, &c.OS, &c.OSVersion, &c.Distro, &c.DistroVersion,
		&c.Hostname, &c.GoArch, &c.GoVersion, &c.ExitNodeID} {
		*s = clean(*s)
	}
	c.RoutableIPs = first(c.RoutableIPs, maxAllowedIPs)
	c.RequestTags = safetext.Strings(c.RequestTags, maxTags, maxText)
	if len(c.Services) > 0 {
		svcs := make([]wire.Service, 0, min(len(c.Services), maxServices))
		for _, s := range first(c.Services, maxServices) {
			s.Proto, s.Description = clean(s.Proto), clean(s.Description)
			svcs = append(svcs, s)
		}
		c.Services = svcs
	}
	if l := c.Location; l != nil {
		lc := *l
		lc.Country, lc.CountryCode, lc.City, lc.CityCode = clean(lc.Country), clean(lc.CountryCode), clean(lc.City), clean(lc.CityCode)
		c.Location = &lc
	}
	if ni := c.NetInfo; ni != nil && len(ni.DERPLatency) > maxDERPRegions {
		nc := *ni
		nc.DERPLatency = nil
		c.NetInfo = &nc
	}
	return &c
}

func cleanUserProfile(u wire.UserProfile) wire.UserProfile {
	u.LoginName, u.DisplayName = clean(u.LoginName), clean(u.DisplayName)
	u.ProfilePicURL = safetext.Clean(u.ProfilePicURL, 1024)
	return u
}

// cleanDERPMap bounds a DERP map and cleans the names front ends show.
func (nm *NetworkMap) cleanDERPMap(d *wire.DERPMap) *wire.DERPMap {
	if d.Regions == nil {
		return d
	}
	ids := make([]int, 0, len(d.Regions))
	for id := range d.Regions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > maxDERPRegions {
		nm.limitHit("more than %d DERP regions; the rest are ignored", maxDERPRegions)
		ids = ids[:maxDERPRegions]
	}
	out := &wire.DERPMap{Regions: make(map[int]*wire.DERPRegion, len(ids)), OmitDefaultRegions: d.OmitDefaultRegions}
	for _, id := range ids {
		r := d.Regions[id]
		if r == nil {
			out.Regions[id] = nil
			continue
		}
		rc := *r
		rc.RegionCode, rc.RegionName = clean(rc.RegionCode), clean(rc.RegionName)
		rc.Nodes = nil
		for _, n := range first(r.Nodes, maxDERPNodes) {
			if n == nil {
				continue
			}
			c := *n
			c.Name, c.HostName, c.CertName = clean(c.Name), clean(c.HostName), clean(c.CertName)
			c.IPv4, c.IPv6 = clean(c.IPv4), clean(c.IPv6)
			rc.Nodes = append(rc.Nodes, &c)
		}
		out.Regions[id] = &rc
	}
	return out
}

// cleanDNSConfig bounds a DNS configuration (it replaces the old one whole).
func cleanDNSConfig(d *wire.DNSConfig) *wire.DNSConfig {
	c := *d
	c.Resolvers = first(c.Resolvers, maxResolvers)
	c.FallbackResolvers = first(c.FallbackResolvers, maxResolvers)
	c.Nameservers = first(c.Nameservers, maxResolvers)
	c.Domains = safetext.Strings(c.Domains, maxDomains, 255)
	c.ExtraRecords = first(c.ExtraRecords, maxDNSRecords)
	if len(c.Routes) > maxDNSRoutes {
		keys := make([]string, 0, len(c.Routes))
		for k := range c.Routes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		routes := make(map[string][]*wire.Resolver, maxDNSRoutes)
		for _, k := range keys[:maxDNSRoutes] {
			routes[k] = c.Routes[k]
		}
		c.Routes = routes
	}
	for k, rs := range c.Routes {
		if len(rs) > maxResolvers {
			if len(c.Routes) == len(d.Routes) { // still the message's own map: copy before changing
				c.Routes = cloneRoutes(c.Routes)
			}
			c.Routes[k] = rs[:maxResolvers]
		}
	}
	return &c
}

func cloneRoutes(m map[string][]*wire.Resolver) map[string][]*wire.Resolver {
	out := make(map[string][]*wire.Resolver, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// cleanRules bounds one filter set: each rule's lists, and the number of rules to what is left
// of the map-wide budget.
func cleanRules(rules []wire.FilterRule, budget int) []wire.FilterRule {
	rules = first(rules, max(budget, 0))
	var out []wire.FilterRule
	for i, r := range rules {
		if len(r.SrcIPs) > maxRuleEntries || len(r.DstPorts) > maxRuleEntries || len(r.IPProto) > maxRuleEntries || len(r.CapGrant) > maxRuleEntries {
			if out == nil {
				out = slices.Clone(rules[:i])
			}
			r.SrcIPs, r.DstPorts = first(r.SrcIPs, maxRuleEntries), first(r.DstPorts, maxRuleEntries)
			r.IPProto, r.CapGrant = first(r.IPProto, maxRuleEntries), first(r.CapGrant, maxRuleEntries)
		}
		if out != nil {
			out = append(out, r)
		}
	}
	if out == nil {
		return rules
	}
	return out
}

// boundFilters keeps the packet filter sets within their limits after a response changed the
// sets named in changed (only those are cleaned; the others were before).
func (nm *NetworkMap) boundFilters(changed map[string]bool) {
	names := make([]string, 0, len(nm.PacketFilters))
	for name := range nm.PacketFilters {
		names = append(names, name)
	}
	slices.Sort(names)
	if i := slices.Index(names, "base"); i > 0 { // the base set first: it is the policy
		names = append([]string{"base"}, slices.Delete(names, i, i+1)...)
	}
	budget := maxFilterRules
	for i, name := range names {
		if i >= maxFilterSets {
			nm.limitHit("more than %d packet filter sets; the rest are ignored", maxFilterSets)
			delete(nm.PacketFilters, name)
			continue
		}
		rules := nm.PacketFilters[name]
		if len(rules) > budget {
			nm.limitHit("more than %d packet filter rules; the rest are ignored (nothing they would allow passes)", maxFilterRules)
			rules = rules[:budget:budget]
			nm.PacketFilters[name] = rules
		}
		if changed[name] {
			nm.PacketFilters[name] = cleanRules(rules, budget)
		}
		budget -= len(rules)
	}
}

func cleanHealth(h []string) []string {
	out := make([]string, 0, min(len(h), maxHealth))
	for _, m := range first(h, maxHealth) {
		if m = safetext.Clean(m, maxHealthText); m != "" {
			out = append(out, m)
		}
	}
	return out
}
