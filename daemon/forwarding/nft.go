package forwarding

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// TableName is our nftables table (family inet). Nothing else is touched.
const TableName = "skein"

const (
	// SubnetRouteMark is put on packets forwarded from the tun, in the bits
	// of MarkMask, so the nat chain can masquerade exactly those. It is the
	// value the official client uses for the same purpose.
	SubnetRouteMark = 0x40000
	MarkMask        = 0xff0000
)

// Address ranges the tailnet uses for its own nodes.
var (
	tailnetV4  = tsaddr.CGNATRange
	tailnetV6  = tsaddr.ULARange
	chromeOSV4 = tsaddr.ChromeOSVMRange
)

// neverForward are destinations that are never forwarded from the tailnet,
// whatever the advertised routes say: "this host" and unspecified addresses,
// loopback, link-local, multicast and broadcast, and IPv4-mapped IPv6.
var neverForward = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

func ourTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

type chainSpec struct {
	name  string
	hook  nftables.ChainHook
	prio  nftables.ChainPriority
	typ   nftables.ChainType
	rules []ruleSpec
}

type ruleSpec struct {
	comment string
	exprs   []expr.Any
}

func (c chainSpec) chain(t *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     c.name,
		Table:    t,
		Hooknum:  nftables.ChainHookRef(c.hook),
		Priority: nftables.ChainPriorityRef(c.prio),
		Type:     c.typ,
		Policy:   &accept,
	}
}

// plan is the whole content of our table for a normalized config.
func plan(c Config) []chainSpec {
	tun := c.TunName
	var fwd []ruleSpec
	add := func(list *[]ruleSpec, comment string, e ...[]expr.Any) {
		*list = append(*list, ruleSpec{comment: comment, exprs: slices.Concat(e...)})
	}
	if c.Forward {
		// Forwarded TCP connections are told the path's MTU in their SYN (the MSS only ever goes
		// down): the tunnel's 1280 bytes into the tailnet, the outgoing route's MTU out of it,
		// so hosts behind this router never send segments the path drops silently (issue 14,
		// R25; the official client clamps too).
		add(&fwd, "skein: clamp MSS into the tailnet", oif(tun, true), tcpSYN(), clampMSS())
		add(&fwd, "skein: clamp MSS out of the tailnet", iif(tun, true), tcpSYN(), clampMSS())
	}
	add(&fwd, "skein: mark tailnet-forwarded", iif(tun, true), setMark())
	add(&fwd, "skein: no tailnet hairpin", iif(tun, true), oif(tun, true), counterDrop())
	for _, p := range neverForward {
		add(&fwd, "skein: never forwarded", iif(tun, true), addr(p, true), counterDrop())
	}
	for _, p := range c.Deny {
		add(&fwd, "skein: exit node's own LAN", iif(tun, true), addr(p, true), counterDrop())
	}
	for _, p := range c.Routes {
		add(&fwd, "skein: advertised route", iif(tun, true), addr(p, true), verdict(expr.VerdictAccept))
	}
	add(&fwd, "skein: not an advertised route", iif(tun, true), counterDrop())
	add(&fwd, "skein: spoofed tailnet source", oif(tun, true), addr(tailnetV4, false), counterDrop())
	add(&fwd, "skein: spoofed tailnet source", oif(tun, true), addr(tailnetV6, false), counterDrop())
	if c.Stateful {
		add(&fwd, "skein: replies into tailnet", oif(tun, true), ctEstablished(), verdict(expr.VerdictAccept))
		add(&fwd, "skein: new flows into tailnet", oif(tun, true), counterDrop())
	} else {
		add(&fwd, "skein: into tailnet", oif(tun, true), verdict(expr.VerdictAccept))
	}
	chains := []chainSpec{{
		name: "forward", hook: *nftables.ChainHookForward, prio: *nftables.ChainPriorityFilter,
		typ: nftables.ChainTypeFilter, rules: fwd,
	}}

	if c.SpoofGuard {
		var in []ruleSpec
		add(&in, "skein: tailnet and loopback", iif(tun, true), verdict(expr.VerdictAccept))
		add(&in, "skein: tailnet and loopback", iif("lo", true), verdict(expr.VerdictAccept))
		add(&in, "skein: ChromeOS containers", addr(chromeOSV4, false), verdict(expr.VerdictAccept))
		add(&in, "skein: spoofed tailnet source", addr(tailnetV4, false), counterDrop())
		add(&in, "skein: spoofed tailnet source", addr(tailnetV6, false), counterDrop())
		chains = append(chains, chainSpec{
			name: "input", hook: *nftables.ChainHookInput, prio: *nftables.ChainPriorityFilter,
			typ: nftables.ChainTypeFilter, rules: in,
		})
	}

	if c.Masquerade {
		var nat []ruleSpec
		add(&nat, "skein: masquerade tailnet-forwarded", oif(tun, false), hasMark(), []expr.Any{&expr.Masq{}})
		chains = append(chains, chainSpec{
			name: "postrouting", hook: *nftables.ChainHookPostrouting, prio: *nftables.ChainPriorityNATSource,
			typ: nftables.ChainTypeNAT, rules: nat,
		})
	}
	return chains
}

func ifnameData(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func ifMatch(key expr.MetaKey, name string, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifnameData(name)},
	}
}

func iif(name string, eq bool) []expr.Any { return ifMatch(expr.MetaKeyIIFNAME, name, eq) }
func oif(name string, eq bool) []expr.Any { return ifMatch(expr.MetaKeyOIFNAME, name, eq) }

// addr matches the destination (dst) or source address against p; a /0
// matches the whole family.
func addr(p netip.Prefix, dst bool) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if p.Addr().Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	if dst {
		off += n
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if p.Bits() == 0 {
		return e
	}
	e = append(e, &expr.Payload{
		OperationType: expr.PayloadLoad, DestRegister: 1,
		Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n,
	})
	if p.Bits() < p.Addr().BitLen() {
		mask := netip.PrefixFrom(allOnes(p.Addr().Is6()), p.Bits()).Masked().Addr().AsSlice()
		e = append(e, &expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: n,
			Mask: mask, Xor: make([]byte, n),
		})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

func allOnes(v6 bool) netip.Addr {
	if v6 {
		var a [16]byte
		for i := range a {
			a[i] = 0xff
		}
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
}

func native32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// setMark sets SubnetRouteMark within MarkMask, keeping the other bits.
func setMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: native32(^uint32(MarkMask)), Xor: native32(SubnetRouteMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

func hasMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: native32(MarkMask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(SubnetRouteMark)},
	}
}

// tcpSYN matches TCP segments with SYN set and RST not.
func tcpSYN() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// clampMSS sets the TCP MSS option to the route's MTU less the headers ("tcp option maxseg
// size set rt mtu"); the kernel never raises it.
func clampMSS() []expr.Any {
	return []expr.Any{
		&expr.Counter{},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		// The route lookup gives the MSS in host order; the option is big-endian (the nft tool
		// adds the same conversion; without it a little-endian host writes nothing, since the
		// kernel only ever lowers the MSS).
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func counterDrop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

func commentData(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// installTable replaces our table with the planned one in one atomic
// transaction: there is no moment with a partial ruleset, and there is
// never more than one copy of a rule.
func installTable(chains []chainSpec) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := ourTable()
	c.AddTable(t) // so that the delete cannot fail when it is absent
	c.DelTable(t)
	c.AddTable(t)
	for _, cs := range chains {
		ch := c.AddChain(cs.chain(t))
		for _, r := range cs.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs, UserData: commentData(r.comment)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// tableExists reports whether our table is present.
func tableExists() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range ts {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

// deleteTable removes our table if present. It does nothing (and loads no
// kernel module) when nftables cannot even be listed.
func deleteTable() (bool, error) {
	ok, err := tableExists()
	if err != nil || !ok {
		return false, nil
	}
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	t := ourTable()
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		if again, _ := tableExists(); !again {
			return true, nil // someone else removed it meanwhile
		}
		return false, fmt.Errorf("delete nftables table inet %s: %w", TableName, err)
	}
	return true, nil
}

// verifyTable lists what differs between the kernel and the plan.
func verifyTable(chains []chainSpec) []string {
	ok, err := tableExists()
	if err != nil {
		return []string{fmt.Sprintf("cannot list nftables tables: %v", err)}
	}
	if !ok {
		return []string{fmt.Sprintf("nftables table inet %s is missing", TableName)}
	}
	c, err := nftables.New()
	if err != nil {
		return []string{err.Error()}
	}
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return []string{fmt.Sprintf("cannot list nftables chains: %v", err)}
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range all {
		if ch.Table != nil && ch.Table.Name == TableName {
			have[ch.Name] = ch
		}
	}
	var out []string
	t := ourTable()
	for _, cs := range chains {
		where := fmt.Sprintf("chain inet %s %s", TableName, cs.name)
		ch, ok := have[cs.name]
		if !ok {
			out = append(out, where+" is missing")
			continue
		}
		delete(have, cs.name)
		if !reflect.DeepEqual(ch, withTable(cs.chain(t), ch.Table)) {
			out = append(out, where+" has a different hook, priority, type or policy")
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: cannot list rules: %v", where, err))
			continue
		}
		out = append(out, diffRules(where, cs.rules, rules)...)
	}
	for name := range have {
		out = append(out, fmt.Sprintf("chain inet %s %s is not ours to have", TableName, name))
	}
	return out
}

func withTable(c *nftables.Chain, t *nftables.Table) *nftables.Chain {
	c.Table = t
	return c
}

func diffRules(where string, want []ruleSpec, got []*nftables.Rule) []string {
	var out []string
	for i, w := range want {
		if i >= len(got) {
			out = append(out, fmt.Sprintf("%s: %d of %d rules missing", where, len(want)-len(got), len(want)))
			break
		}
		if !sameRule(w, got[i]) {
			out = append(out, fmt.Sprintf("%s: rule %d (%q) missing or changed", where, i+1, w.comment))
			break
		}
	}
	if len(got) > len(want) {
		out = append(out, fmt.Sprintf("%s: %d extra rules", where, len(got)-len(want)))
	}
	return out
}

func sameRule(w ruleSpec, r *nftables.Rule) bool {
	// The nftables library lists rules without their "rt" and "byteorder" expressions (it
	// does not decode them), so the MSS clamp is compared without them.
	want := slices.DeleteFunc(slices.Clone(w.exprs), func(e expr.Any) bool {
		switch e.(type) {
		case *expr.Rt, *expr.Byteorder:
			return true
		}
		return false
	})
	if !bytes.Equal(r.UserData, commentData(w.comment)) || len(r.Exprs) != len(want) {
		return false
	}
	for i, e := range r.Exprs {
		if _, ok := e.(*expr.Counter); ok {
			e = &expr.Counter{}
		}
		if !reflect.DeepEqual(e, want[i]) {
			return false
		}
	}
	return true
}
