package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ruleSpec is one rule of the layout. The same four are installed for IPv4
// and IPv6.
type ruleSpec struct {
	pref   int
	mark   bool // match fwmark FwmarkBypass/FwmarkMask
	table  uint32
	action uint8
}

var layout = []ruleSpec{
	{PrefBypassMain, true, unix.RT_TABLE_MAIN, unix.FR_ACT_TO_TBL},
	{PrefBypassDefault, true, unix.RT_TABLE_DEFAULT, unix.FR_ACT_TO_TBL},
	{PrefBypassUnreachable, true, 0, unix.FR_ACT_UNREACHABLE},
	{PrefTable, false, Table, unix.FR_ACT_TO_TBL},
}

func famName(fam int) string {
	if fam == netlink.FAMILY_V6 {
		return "v6"
	}
	return "v4"
}

func (s ruleSpec) describe(fam int) string {
	d := fmt.Sprintf("rule %s %d: from all", famName(fam), s.pref)
	if s.mark {
		d += fmt.Sprintf(" fwmark %#x/%#x", FwmarkBypass, FwmarkMask)
	}
	if s.action == unix.FR_ACT_UNREACHABLE {
		return d + " unreachable"
	}
	switch s.table {
	case unix.RT_TABLE_MAIN:
		return d + " lookup main"
	case unix.RT_TABLE_DEFAULT:
		return d + " lookup default"
	}
	return d + fmt.Sprintf(" lookup %d", s.table)
}

func (s ruleSpec) nlRule(fam int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = fam
	r.Priority = s.pref
	r.Table = int(s.table)
	r.Type = s.action
	if s.mark {
		m := uint32(FwmarkMask)
		r.Mark, r.Mask = FwmarkBypass, &m
	}
	return r
}

// kRule is a rule as the kernel reports it.
type kRule struct {
	family  int
	pref    int
	action  uint8
	table   uint32
	hasMark bool
	mark    uint32
	mask    uint32
	dst     netip.Prefix // "to" selector; invalid for "to all"
	sel     bool         // selectors other than fwmark and "to"
}

// plain reports whether k is "from all to all" with no selector other than
// fwmark.
func (k kRule) plain() bool { return !k.sel && !k.dst.IsValid() }

// shaped reports whether k sits at a layout pref with that pref's action:
// ours, possibly with a stale fwmark. Rules of other shapes at our prefs
// belong to someone else and are left alone.
func (k kRule) shaped(s ruleSpec) bool {
	return k.pref == s.pref && k.action == s.action && k.table == s.table && k.plain()
}

func (k kRule) exact(s ruleSpec) bool {
	if !k.shaped(s) {
		return false
	}
	if !s.mark {
		return !k.hasMark
	}
	return k.hasMark && k.mark == FwmarkBypass && k.mask == FwmarkMask
}

// bypass reports whether k is one of our exit-node exceptions: at
// PrefBypassTo, from all, to a prefix, lookup main, and no other selector
// (not even a fwmark). Anything else at that pref is someone else's.
func (k kRule) bypass() bool {
	return k.pref == PrefBypassTo && k.action == unix.FR_ACT_TO_TBL && k.table == unix.RT_TABLE_MAIN &&
		!k.sel && !k.hasMark && k.dst.IsValid() && k.dst.Bits() > 0
}

// bypassDesc describes the bypass rule for p.
func bypassDesc(p netip.Prefix) string {
	return fmt.Sprintf("rule %s %d: from all to %v lookup main", famName(famOf(p)), PrefBypassTo, p)
}

func bypassRule(p netip.Prefix) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = famOf(p)
	r.Priority = PrefBypassTo
	r.Table = unix.RT_TABLE_MAIN
	r.Type = unix.FR_ACT_TO_TBL
	r.Dst = prefixIPNet(p)
	return r
}

// ours reports whether k is a rule this package owns.
func (k kRule) ours() bool {
	if k.bypass() {
		return true
	}
	for _, s := range layout {
		if k.shaped(s) {
			return true
		}
	}
	return false
}

// shadow returns the foreign rule the kernel would delete instead of
// rules[i] (rules in dump order, one family). A delete request only names
// the selectors our rule has, and the kernel removes the first rule at that
// pref that matches them, whatever else it selects: "to 10.0.0.0/8 fwmark
// 0x1 lookup main" goes before "to 10.0.0.0/8 lookup main" if it comes first.
// An earlier rule of ours is not a shadow: losing it instead is repaired by
// the next Set, and Close deletes it first anyway.
func shadow(rules []kRule, i int) (kRule, bool) {
	k := rules[i]
	for _, j := range rules[:i] {
		switch {
		case j.pref != k.pref, j.action != k.action,
			k.table != 0 && j.table != k.table,
			k.hasMark && k.mark != 0 && j.mark != k.mark,
			k.hasMark && k.mask != 0 && j.mask != k.mask,
			k.dst.IsValid() && j.dst != k.dst:
			continue
		}
		if !j.ours() {
			return j, true
		}
	}
	return kRule{}, false
}

func (k kRule) nlRule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = k.family
	r.Priority = k.pref
	r.Table = int(k.table)
	r.Type = k.action
	if k.hasMark {
		m := k.mask
		r.Mark, r.Mask = k.mark, &m
	}
	if k.dst.IsValid() {
		// Without it the kernel deletes the first rule at the pref with
		// the same action, whatever its destination.
		r.Dst = prefixIPNet(k.dst)
	}
	return r
}

func (k kRule) describe() string {
	d := fmt.Sprintf("rule %s %d:", famName(k.family), k.pref)
	if k.sel {
		d += " (with selectors)"
	}
	if k.dst.IsValid() {
		d += fmt.Sprintf(" to %v", k.dst)
	}
	if k.hasMark {
		d += fmt.Sprintf(" fwmark %#x/%#x", k.mark, k.mask)
	}
	switch {
	case k.action == unix.FR_ACT_TO_TBL:
		return d + fmt.Sprintf(" lookup %d", k.table)
	case k.action == unix.FR_ACT_UNREACHABLE:
		return d + " unreachable"
	}
	return d + fmt.Sprintf(" action %d", k.action)
}

// addRule adds r (family, pref, table, action, fwmark and destination are
// used) without NLM_F_EXCL. With it the kernel refuses a rule when one at the
// same pref matches it the way a delete request matches (see shadow): a
// foreign "to 10.0.0.0/8 lookup 52" would make our "lookup 52" fail with
// EEXIST. plan only adds rules of ours it did not find, so this makes no
// duplicates.
func (k *kernel) addRule(r *netlink.Rule) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_ACK)
	hdr := nl.NewRtMsg() // same layout as fib_rule_hdr
	hdr.Family = uint8(r.Family)
	hdr.Protocol, hdr.Scope = 0, 0 // res1, res2
	hdr.Type = r.Type              // action
	hdr.Table = unix.RT_TABLE_UNSPEC
	if r.Table > 0 && r.Table < 256 {
		hdr.Table = uint8(r.Table)
	}
	u32 := func(v uint32) []byte {
		b := make([]byte, 4)
		nl.NativeEndian().PutUint32(b, v)
		return b
	}
	var attrs []*nl.RtAttr
	if r.Dst != nil {
		p := ipNetPrefix(r.Dst)
		hdr.Dst_len = uint8(p.Bits())
		attrs = append(attrs, nl.NewRtAttr(unix.FRA_DST, p.Addr().AsSlice()))
	}
	attrs = append(attrs, nl.NewRtAttr(unix.FRA_PRIORITY, u32(uint32(r.Priority))))
	if r.Table > 0 {
		attrs = append(attrs, nl.NewRtAttr(unix.FRA_TABLE, u32(uint32(r.Table))))
	}
	if r.Mark != 0 || r.Mask != nil {
		attrs = append(attrs, nl.NewRtAttr(unix.FRA_FWMARK, u32(r.Mark)))
	}
	if r.Mask != nil {
		attrs = append(attrs, nl.NewRtAttr(unix.FRA_FWMASK, u32(*r.Mask)))
	}
	req.AddData(hdr)
	for _, a := range attrs {
		req.AddData(a)
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: k.rsock}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// listRules dumps the rules of one family.
func (k *kernel) listRules(fam int) ([]kRule, error) {
	var err error
	for range 3 {
		var msgs [][]byte
		req := nl.NewNetlinkRequest(unix.RTM_GETRULE, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(fam))
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: k.rsock}
		msgs, err = req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWRULE)
		if errors.Is(err, nl.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %s rules: %w", famName(fam), err)
		}
		out := make([]kRule, 0, len(msgs))
		for _, m := range msgs {
			r, err := parseRule(m)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return nil, fmt.Errorf("list %s rules: %w", famName(fam), err)
}

// parseRule decodes a fib_rule_hdr and its attributes.
func parseRule(m []byte) (kRule, error) {
	const hdrLen = 12
	if len(m) < hdrLen {
		return kRule{}, errors.New("short rule message")
	}
	ne := nl.NativeEndian()
	dstLen := int(m[1])
	r := kRule{
		family: int(m[0]),
		table:  uint32(m[4]),
		action: m[7],
		sel:    m[2] != 0 || m[3] != 0 || ne.Uint32(m[8:12])&unix.FIB_RULE_INVERT != 0,
	}
	attrs, err := nl.ParseRouteAttr(m[hdrLen:])
	if err != nil {
		return kRule{}, err
	}
	u32 := func(v []byte) uint32 {
		if len(v) < 4 {
			return 0
		}
		return ne.Uint32(v)
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.FRA_PRIORITY:
			r.pref = int(u32(a.Value))
		case unix.FRA_TABLE:
			r.table = u32(a.Value)
		case unix.FRA_FWMARK:
			r.hasMark, r.mark = true, u32(a.Value)
		case unix.FRA_FWMASK:
			r.hasMark, r.mask = true, u32(a.Value)
		case unix.FRA_DST:
			if a, ok := netip.AddrFromSlice(a.Value); ok && dstLen > 0 && dstLen <= a.BitLen() {
				r.dst = netip.PrefixFrom(a, dstLen).Masked()
			}
		case unix.FRA_SUPPRESS_PREFIXLEN, unix.FRA_SUPPRESS_IFGROUP:
			if u32(a.Value) != 0xffffffff {
				r.sel = true
			}
		case unix.FRA_PROTOCOL, unix.FRA_PAD, unix.FRA_UNSPEC:
		default:
			r.sel = true
		}
	}
	if dstLen > 0 && !r.dst.IsValid() {
		r.sel = true // a destination we could not read: not ours
	}
	if r.hasMark && r.mark == 0 && r.mask == 0 {
		r.hasMark = false
	}
	return r, nil
}

// listTable returns every route of one family in table 52.
func (k *kernel) listTable(fam int) ([]netlink.Route, error) {
	var (
		rts []netlink.Route
		err error
	)
	for range 3 {
		rts, err = k.h.RouteListFiltered(fam, &netlink.Route{Table: Table}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return nil, nil // table never created
	}
	if err != nil {
		return nil, fmt.Errorf("list %s table %d: %w", famName(fam), Table, err)
	}
	return rts, nil
}

// routeOurs reports whether a table-52 route is ours: it leaves via our
// device, or it is a throw route (only tailscale-layout clients put those in
// table 52). linkIndex < 0 means the device is gone.
func routeOurs(rt netlink.Route, linkIndex int) bool {
	if rt.Type == unix.RTN_THROW {
		return true
	}
	return linkIndex > 0 && rt.LinkIndex == linkIndex && rt.Type == unix.RTN_UNICAST
}

// defaultMetric is what the kernel records for a route added without one.
func defaultMetric(fam int) int {
	if fam == netlink.FAMILY_V6 {
		return 1024
	}
	return 0
}

func routePrefix(rt netlink.Route) netip.Prefix {
	if rt.Dst == nil {
		// The kernel reports a default route without a destination.
		switch rt.Family {
		case netlink.FAMILY_V4:
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		case netlink.FAMILY_V6:
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.Prefix{}
	}
	return ipNetPrefix(rt.Dst).Masked()
}

func ipNetPrefix(n *net.IPNet) netip.Prefix {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func nlAddr(p netip.Prefix) *netlink.Addr { return &netlink.Addr{IPNet: prefixIPNet(p)} }

func famOf(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// ownedAddrs lists the device's addresses we manage: all but IPv6 link-local
// (the kernel's) and those of a family we do not manage.
func (r *Router) ownedAddrs(link netlink.Link) []netip.Prefix {
	addrs, err := r.k.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		r.logf("router: list addresses of %s: %v", r.tun, err)
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		p := ipNetPrefix(a.IPNet)
		if !p.IsValid() || p.Addr().IsLinkLocalUnicast() || (p.Addr().Is6() && !r.v6) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// removeOwned deletes our rules and our table-52 routes (all of table 52 if
// wholeTable) for the given families. link may be nil when the device is
// gone. It returns how many objects it removed.
func (k *kernel) removeOwned(fams []int, link netlink.Link, wholeTable bool) (int, error) {
	idx := -1
	if link != nil {
		idx = link.Attrs().Index
	}
	n := 0
	var errs []error
	for _, fam := range fams {
		rts, err := k.listTable(fam)
		if err != nil {
			errs = append(errs, err)
		}
		for _, rt := range rts {
			if !wholeTable && !routeOurs(rt, idx) {
				continue
			}
			if err := k.h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("del route %v table %d: %w", routePrefix(rt), Table, err))
				continue
			}
			n++
		}
		rules, err := k.listRules(fam)
		if err != nil {
			errs = append(errs, err)
		}
		for i, kr := range rules {
			if !kr.ours() {
				continue
			}
			if f, ok := shadow(rules, i); ok {
				errs = append(errs, fmt.Errorf("left %s: deleting it would delete foreign %s", kr.describe(), f.describe()))
				continue
			}
			if err := k.h.RuleDel(kr.nlRule()); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("del %s: %w", kr.describe(), err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}
