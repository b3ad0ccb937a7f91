package ingress

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is our table (family inet); nothing else is touched.
const TableName = "skein-ingress"

// Rule redirects TCP to Addr:Port, arriving on the TUN device, to port To (our listener).
type Rule struct {
	Addr netip.Addr
	Port uint16
	To   uint16
}

func (r Rule) compare(o Rule) int {
	if c := r.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(r.Port, o.Port); c != 0 {
		return c
	}
	return cmp.Compare(r.To, o.To)
}

// Table owns our nftables table. Set with no rules removes it.
type Table struct {
	mu    sync.Mutex
	tun   string
	rules []Rule
	live  bool
}

// Set makes the table hold exactly these redirects for traffic arriving on tun: one atomic
// transaction, so there is no moment with half the rules. No rules: no table.
func (t *Table) Set(tun string, rules []Rule) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.live && t.tun == tun && SameRules(t.rules, rules) {
		return nil
	}
	if len(rules) == 0 {
		if _, err := deleteTable(); err != nil {
			return err
		}
		t.live, t.rules = false, nil
		return nil
	}
	if err := install(tun, rules); err != nil {
		return err
	}
	t.live, t.tun, t.rules = true, tun, append([]Rule(nil), rules...)
	return nil
}

// Cleanup removes our table, also one a crashed skeind left behind. It is part of
// dataplane.Cleanup.
func Cleanup(logf func(string, ...any)) error {
	removed, err := deleteTable()
	if removed && logf != nil {
		logf("ingress: removed nftables table inet %s", TableName)
	}
	return err
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

func install(tun string, rules []Rule) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := table()
	c.AddTable(t) // so that the delete cannot fail when it is absent
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: redirect(tun, r)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// redirect is `iifname TUN ip[6] daddr ADDR tcp dport PORT redirect to :TO`.
func redirect(tun string, r Rule) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, tun)
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if r.Addr.Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.Addr.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(r.Port)},
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: port(r.To)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

// deleteTable removes our table if present; it does nothing when nftables cannot be listed.
func deleteTable() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, nil
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, nil
	}
	found := false
	for _, t := range ts {
		found = found || t.Name == TableName
	}
	if !found {
		return false, nil
	}
	c.DelTable(table())
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("delete nftables table inet %s: %w", TableName, err)
	}
	return true, nil
}
