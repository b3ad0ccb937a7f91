package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// step is one kernel change; desc reads like the object it adds or removes.
type step struct {
	desc string
	do   func() error
}

// plan is the difference between a Config and the kernel state. Adds run
// before deletes so the device never passes through an empty state.
type plan struct {
	adds, dels []step
	notes      []string
}

func (p *plan) empty() bool { return len(p.adds) == 0 && len(p.dels) == 0 }

func (p *plan) apply(logf func(string, ...any)) error {
	for _, n := range p.notes {
		logf("router: %s", n)
	}
	var errs []error
	for _, s := range p.adds {
		if err := s.do(); err != nil {
			errs = append(errs, fmt.Errorf("add %s: %w", s.desc, err))
		}
	}
	for _, s := range p.dels {
		if err := s.do(); err != nil {
			errs = append(errs, fmt.Errorf("del %s: %w", s.desc, err))
		}
	}
	return errors.Join(errs...)
}

// plan reads the kernel state and computes what Set has to change.
func (r *Router) plan(cfg Config) (*plan, error) {
	h := r.k.h
	link, err := h.LinkByName(r.tun)
	if err != nil {
		return nil, fmt.Errorf("router: link %q: %w", r.tun, err)
	}
	attrs := link.Attrs()
	p := &plan{}
	add := func(desc string, f func() error) { p.adds = append(p.adds, step{desc, f}) }
	del := func(desc string, f func() error) { p.dels = append(p.dels, step{desc, f}) }

	// The link comes first: the kernel refuses routes via a down device.
	if cfg.MTU > 0 && attrs.MTU != cfg.MTU {
		add(fmt.Sprintf("link %s mtu %d", r.tun, cfg.MTU), func() error { return h.LinkSetMTU(link, cfg.MTU) })
	}
	if attrs.Flags&net.FlagUp == 0 {
		add(fmt.Sprintf("link %s up", r.tun), func() error { return h.LinkSetUp(link) })
	}

	var bad []netip.Prefix
	usable := func(p netip.Prefix) bool {
		if !p.IsValid() {
			bad = append(bad, p)
			return false
		}
		return p.Addr().Is4() || r.v6
	}

	// Addresses.
	wantAddr := map[netip.Prefix]bool{}
	for _, a := range cfg.LocalAddrs {
		if usable(a) {
			wantAddr[netip.PrefixFrom(a.Addr().Unmap(), a.Bits())] = true
		}
	}
	haveAddr := map[netip.Prefix]bool{}
	for _, a := range r.ownedAddrs(link) {
		haveAddr[a] = true
		if !wantAddr[a] {
			del(fmt.Sprintf("addr %v dev %s", a, r.tun), func() error {
				err := h.AddrDel(link, nlAddr(a))
				if errors.Is(err, unix.EADDRNOTAVAIL) {
					return nil
				}
				return err
			})
		}
	}
	for _, a := range sortedKeys(wantAddr) {
		if !haveAddr[a] {
			add(fmt.Sprintf("addr %v dev %s", a, r.tun), func() error { return h.AddrReplace(link, nlAddr(a)) })
		}
	}

	// Routes and throw routes in table 52.
	wantRoute := map[netip.Prefix]bool{}
	for _, rt := range cfg.Routes {
		if usable(rt) {
			wantRoute[rt.Masked()] = true
		}
	}
	wantThrow := map[netip.Prefix]bool{}
	for _, rt := range cfg.LocalRoutes {
		if !usable(rt) {
			continue
		}
		if wantRoute[rt.Masked()] {
			// Same kernel key: one would replace the other on every Set.
			p.notes = append(p.notes, fmt.Sprintf("%v is in both Routes and LocalRoutes; routing it via the tunnel", rt))
			continue
		}
		wantThrow[rt.Masked()] = true
	}
	for _, fam := range r.families() {
		rts, err := r.k.listTable(fam)
		if err != nil {
			return nil, err
		}
		haveRoute, haveThrow := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
		for _, rt := range rts {
			if !routeOurs(rt, attrs.Index) {
				continue
			}
			pfx := routePrefix(rt)
			plainKey := rt.Tos == 0 && rt.Priority == defaultMetric(fam) && rt.Gw == nil && len(rt.MultiPath) == 0
			switch {
			case plainKey && rt.Type == unix.RTN_UNICAST && wantRoute[pfx] && !haveRoute[pfx]:
				haveRoute[pfx] = true
				continue
			case plainKey && rt.Type == unix.RTN_THROW && wantThrow[pfx] && !haveThrow[pfx]:
				haveThrow[pfx] = true
				continue
			}
			kind := "route"
			if rt.Type == unix.RTN_THROW {
				kind = "throw"
			}
			del(fmt.Sprintf("%s %v table %d", kind, pfx, Table), func() error {
				err := h.RouteDel(&rt)
				if errors.Is(err, unix.ESRCH) {
					return nil
				}
				return err
			})
		}
		for _, pfx := range sortedKeys(wantRoute) {
			if famOf(pfx) == fam && !haveRoute[pfx] {
				add(fmt.Sprintf("route %v dev %s table %d", pfx, r.tun, Table), func() error {
					return h.RouteReplace(&netlink.Route{LinkIndex: attrs.Index, Dst: prefixIPNet(pfx), Table: Table})
				})
			}
		}
		for _, pfx := range sortedKeys(wantThrow) {
			if famOf(pfx) == fam && !haveThrow[pfx] {
				add(fmt.Sprintf("throw %v table %d", pfx, Table), func() error {
					return h.RouteReplace(&netlink.Route{Dst: prefixIPNet(pfx), Table: Table, Type: unix.RTN_THROW})
				})
			}
		}
	}

	// Bypass rules, one per prefix.
	wantBypass := map[netip.Prefix]bool{}
	for _, b := range cfg.Bypass {
		if b.IsValid() && b.Addr().Is4In6() && b.Bits() >= 96 {
			b = netip.PrefixFrom(b.Addr().Unmap(), b.Bits()-96)
		}
		if !usable(b) {
			continue
		}
		if b.Bits() == 0 {
			p.notes = append(p.notes, fmt.Sprintf("ignoring bypass %v: it would take all traffic off the tunnel", b))
			continue
		}
		wantBypass[b.Masked()] = true
	}

	// delRule removes rules[i], one of ours, unless the kernel would take a
	// foreign rule instead (see shadow).
	delRule := func(rules []kRule, i int) {
		kr := rules[i]
		if f, ok := shadow(rules, i); ok {
			p.notes = append(p.notes, fmt.Sprintf("keeping extra %s: deleting it would delete foreign %s", kr.describe(), f.describe()))
			return
		}
		del(kr.describe(), func() error {
			err := h.RuleDel(kr.nlRule())
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		})
	}

	// Rules, last: they switch traffic to table 52, which is complete by now.
	for _, fam := range r.families() {
		rules, err := r.k.listRules(fam)
		if err != nil {
			return nil, err
		}
		// The exceptions go in before the layout so that a new "lookup 52"
		// never catches their traffic.
		haveBypass := map[netip.Prefix]bool{}
		for i, kr := range rules {
			if kr.pref != PrefBypassTo {
				continue
			}
			switch {
			case kr.bypass() && wantBypass[kr.dst] && !haveBypass[kr.dst]:
				haveBypass[kr.dst] = true
			case kr.bypass():
				delRule(rules, i)
			default:
				p.notes = append(p.notes, fmt.Sprintf("leaving foreign %s alone", kr.describe()))
			}
		}
		for _, b := range sortedKeys(wantBypass) {
			if famOf(b) == fam && !haveBypass[b] {
				add(bypassDesc(b), func() error {
					return r.k.addRule(bypassRule(b))
				})
			}
		}
		for _, s := range layout {
			found := false
			for i, kr := range rules {
				if kr.pref != s.pref {
					continue
				}
				switch {
				case kr.exact(s) && !found:
					found = true
				case kr.shaped(s):
					delRule(rules, i)
				default:
					p.notes = append(p.notes, fmt.Sprintf("leaving foreign %s alone", kr.describe()))
				}
			}
			if !found {
				add(s.describe(fam), func() error {
					return r.k.addRule(s.nlRule(fam))
				})
			}
		}
	}
	if len(bad) > 0 {
		p.notes = append(p.notes, fmt.Sprintf("ignoring invalid prefixes %v", bad))
	}
	return p, nil
}

func sortedKeys(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	// Stable order keeps logs and Check output comparable between runs.
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}
