package hostfw

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// InboundUDP tells whether the firewall of this network namespace drops a new UDP packet from
// the internet to port (IPv4).
func InboundUDP(port uint16) (Verdict, error) {
	c, err := nftables.New()
	if err != nil {
		return Verdict{}, err
	}
	return inspect(c, port)
}

// inspect walks every input-hook base chain that sees an IPv4 packet (families ip and inet):
// the packet is dropped when any of them drops it.
func inspect(c *nftables.Conn, port uint16) (Verdict, error) {
	chains, err := c.ListChains()
	if err != nil {
		return Verdict{}, fmt.Errorf("listing nftables chains: %w", err)
	}
	byTable := map[string][]*nftables.Chain{}
	var order []string
	for _, ch := range chains {
		t := ch.Table
		if t == nil || (t.Family != nftables.TableFamilyIPv4 && t.Family != nftables.TableFamilyINet) {
			continue
		}
		k := tableKey(t)
		if _, ok := byTable[k]; !ok {
			order = append(order, k)
		}
		byTable[k] = append(byTable[k], ch)
	}
	for _, k := range order {
		ev := &evaluator{c: c, port: port, chains: map[string]*nftables.Chain{}, rules: map[string][]*nftables.Rule{}}
		for _, ch := range byTable[k] {
			ev.table = ch.Table
			ev.chains[ch.Name] = ch
		}
		for _, ch := range byTable[k] {
			if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookInput || (ch.Type != "" && ch.Type != nftables.ChainTypeFilter) {
				continue
			}
			o, why, err := ev.chain(ch.Name, 0)
			if err != nil {
				return Verdict{}, err
			}
			if o == cont {
				if ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
					continue
				}
				o, why = drop, "policy drop, and no rule accepts new UDP to port "+fmt.Sprint(port)
			}
			if o != drop {
				continue
			}
			kind := ev.kind()
			fam := famName(ch.Table.Family)
			return Verdict{
				Blocked: true,
				Kind:    kind,
				Where:   fmt.Sprintf("%s %s %s", fam, ch.Table.Name, ch.Name),
				Why:     why,
				Fix:     fixFor(kind, fam, ch.Table.Name, ch.Name, port),
			}, nil
		}
	}
	return Verdict{}, nil
}

func tableKey(t *nftables.Table) string { return famName(t.Family) + " " + t.Name }

func famName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprint(int(f))
}

// outcome of a chain or rule for the packet.
type outcome int

const (
	cont outcome = iota // no verdict: the next rule, or the caller's
	accept
	drop
)

// evaluator runs the packet "new UDP from the internet to port, IPv4, not on loopback" through
// one table's chains.
type evaluator struct {
	c      *nftables.Conn
	table  *nftables.Table
	port   uint16
	chains map[string]*nftables.Chain
	rules  map[string][]*nftables.Rule
	sets   map[string]*setView
}

// kind names the firewall that owns the table.
func (ev *evaluator) kind() string {
	if ev.table.Name == "firewalld" {
		return "firewalld"
	}
	for name := range ev.chains {
		if strings.HasPrefix(name, "ufw") {
			return "ufw"
		}
	}
	if ev.table.Family == nftables.TableFamilyIPv4 && ev.table.Name == "filter" && ev.chains["INPUT"] != nil {
		return "iptables"
	}
	return "nftables"
}

const maxDepth = 16

func (ev *evaluator) chain(name string, depth int) (outcome, string, error) {
	if depth > maxDepth {
		return cont, "", nil
	}
	ch := ev.chains[name]
	if ch == nil {
		return cont, "", nil
	}
	rules, ok := ev.rules[name]
	if !ok {
		var err error
		rules, err = ev.c.GetRules(ev.table, ch)
		if err != nil {
			return cont, "", fmt.Errorf("reading chain %s: %w", name, err)
		}
		ev.rules[name] = rules
	}
	for i, r := range rules {
		m, v := ev.rule(r)
		if !m || v == nil {
			continue
		}
		switch v.Kind {
		case expr.VerdictAccept:
			return accept, "", nil
		case expr.VerdictDrop:
			return drop, fmt.Sprintf("rule %d of chain %s drops it", i+1, name), nil
		case expr.VerdictJump:
			o, why, err := ev.chain(v.Chain, depth+1)
			if err != nil || o != cont {
				return o, why, err
			}
		case expr.VerdictGoto:
			return ev.chain(v.Chain, depth+1)
		case expr.VerdictReturn:
			return cont, "", nil
		}
	}
	return cont, "", nil
}

// value is a register's content for the packet: bytes, or "an interface that is not lo"
// (what the rule compares with decides), or unknown.
type value struct {
	b     []byte
	notLo bool // an input interface (name or index) other than loopback
	known bool
}

// rule reports whether r matches the packet and its verdict (nil: none, the next rule).
// Anything the packet's facts cannot decide makes the rule not match: a rule that depends on
// the source address or another unknown cannot count for or against an arbitrary peer.
func (ev *evaluator) rule(r *nftables.Rule) (bool, *expr.Verdict) {
	regs := map[uint32]value{}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				continue
			}
			regs[e.Register] = metaValue(e.Key)
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				continue
			}
			regs[e.DestRegister] = ev.payloadValue(e)
		case *expr.Ct:
			if e.SourceRegister {
				continue
			}
			regs[e.Register] = ctValue(e.Key)
		case *expr.Bitwise:
			v := regs[e.SourceRegister]
			if !v.known || v.notLo || len(v.b) < int(e.Len) || len(e.Mask) < int(e.Len) || len(e.Xor) < int(e.Len) {
				regs[e.DestRegister] = value{}
				continue
			}
			out := make([]byte, e.Len)
			for i := range out {
				out[i] = v.b[i]&e.Mask[i] ^ e.Xor[i]
			}
			regs[e.DestRegister] = value{b: out, known: true}
		case *expr.Cmp:
			if !cmpMatches(regs[e.Register], e.Op, e.Data) {
				return false, nil
			}
		case *expr.Range:
			v := regs[e.Register]
			if !v.known || v.notLo {
				return false, nil
			}
			in := bytes.Compare(v.b, e.FromData) >= 0 && bytes.Compare(v.b, e.ToData) <= 0
			if in != (e.Op == expr.CmpOpEq) {
				return false, nil
			}
		case *expr.Lookup:
			if e.IsDestRegSet {
				return false, nil // a map lookup: not followed
			}
			v := regs[e.SourceRegister]
			if !v.known || v.notLo {
				return false, nil
			}
			in, ok := ev.inSet(e, v.b)
			if !ok || in == e.Invert {
				return false, nil
			}
		case *expr.Match:
			// iptables-nft's conntrack or state match: in an input chain, what it accepts is
			// established and related traffic, not a new packet.
			return false, nil
		case *expr.Counter, *expr.Log, *expr.Limit, *expr.Quota, *expr.Notrack, *expr.Dynset, *expr.Objref:
		case *expr.Verdict:
			return true, e
		case *expr.Reject:
			return true, &expr.Verdict{Kind: expr.VerdictDrop}
		case *expr.Target:
			if e.Name == "REJECT" || e.Name == "DROP" {
				return true, &expr.Verdict{Kind: expr.VerdictDrop}
			}
		case *expr.Immediate:
			regs[e.Register] = value{b: e.Data, known: true}
		default:
			return false, nil
		}
	}
	return true, nil
}

func metaValue(k expr.MetaKey) value {
	switch k {
	case expr.MetaKeyL4PROTO:
		return value{b: []byte{unix.IPPROTO_UDP}, known: true}
	case expr.MetaKeyNFPROTO:
		return value{b: []byte{unix.NFPROTO_IPV4}, known: true}
	case expr.MetaKeyPROTOCOL:
		return value{b: []byte{0x08, 0x00}, known: true}
	case expr.MetaKeyIIFNAME, expr.MetaKeyIIF:
		return value{notLo: true, known: true}
	case expr.MetaKeyIIFTYPE:
		return value{b: binary.NativeEndian.AppendUint16(nil, unix.ARPHRD_ETHER), known: true}
	case expr.MetaKeyMARK:
		return value{b: make([]byte, 4), known: true}
	case expr.MetaKeyPKTTYPE:
		return value{b: []byte{unix.PACKET_HOST}, known: true}
	}
	return value{}
}

// ctValue: the packet is the first of a new flow.
func ctValue(k expr.CtKey) value {
	switch k {
	case expr.CtKeySTATE:
		const ctStateNew = 1 << 3
		return value{b: binary.NativeEndian.AppendUint32(nil, ctStateNew), known: true}
	case expr.CtKeyDIRECTION:
		return value{b: []byte{0}, known: true}
	case expr.CtKeySTATUS, expr.CtKeyMARK:
		return value{b: make([]byte, 4), known: true}
	}
	return value{}
}

// payloadValue loads from the headers of the packet: the IP protocol and the UDP ports (a
// source port no rule can rely on, our port as destination).
func (ev *evaluator) payloadValue(e *expr.Payload) value {
	const sport = 40000
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		if e.Offset == 9 && e.Len == 1 {
			return value{b: []byte{unix.IPPROTO_UDP}, known: true}
		}
	case expr.PayloadBaseTransportHeader:
		hdr := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, sport), ev.port)
		if int(e.Offset+e.Len) <= len(hdr) {
			return value{b: hdr[e.Offset : e.Offset+e.Len], known: true}
		}
	}
	return value{}
}

func cmpMatches(v value, op expr.CmpOp, data []byte) bool {
	if !v.known {
		return false
	}
	if v.notLo {
		isLo := string(bytes.TrimRight(data, "\x00")) == "lo" ||
			(len(data) == 4 && binary.NativeEndian.Uint32(data) == 1)
		switch op {
		case expr.CmpOpEq:
			return !isLo
		case expr.CmpOpNeq:
			return true
		}
		return false
	}
	c := bytes.Compare(v.b, data)
	switch op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

// setView is a set's elements, for membership.
type setView struct {
	interval bool
	elems    []nftables.SetElement
}

// inSet reports whether key is in the lookup's set; ok false when the set cannot be read.
func (ev *evaluator) inSet(l *expr.Lookup, key []byte) (in, ok bool) {
	if ev.sets == nil {
		ev.sets = map[string]*setView{}
		sets, err := ev.c.GetSets(ev.table)
		if err != nil {
			return false, false
		}
		for _, s := range sets {
			elems, err := ev.c.GetSetElements(s)
			if err != nil {
				continue
			}
			sv := &setView{interval: s.Interval, elems: elems}
			ev.sets[s.Name] = sv
			ev.sets[fmt.Sprintf("#%d", s.ID)] = sv
		}
	}
	sv := ev.sets[l.SetName]
	if sv == nil {
		sv = ev.sets[fmt.Sprintf("#%d", l.SetID)]
	}
	if sv == nil {
		return false, false
	}
	if !sv.interval {
		for _, e := range sv.elems {
			if bytes.Equal(e.Key, key) {
				return true, true
			}
		}
		return false, true
	}
	// An interval set lists each interval's start, and its end (exclusive) as an element
	// flagged IntervalEnd.
	elems := slices.Clone(sv.elems)
	slices.SortFunc(elems, func(a, b nftables.SetElement) int { return bytes.Compare(a.Key, b.Key) })
	in = false
	for _, e := range elems {
		if bytes.Compare(e.Key, key) > 0 {
			break
		}
		in = !e.IntervalEnd
	}
	return in, true
}

// Watch calls onChange (at most once per quiet period of 200 ms) whenever the nftables ruleset
// of this network namespace changes, until ctx ends.
func Watch(ctx context.Context, onChange func()) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	return watch(ctx, c, onChange)
}

func watch(ctx context.Context, c *nftables.Conn, onChange func()) error {
	mon := nftables.NewMonitor()
	events, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		return fmt.Errorf("watching nftables: %w", err)
	}
	defer func() {
		mon.Close()
		go func() {
			for range events { // the monitor's reader blocks until it has handed over its last
			}
		}()
	}()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				return nil
			}
			quiet.Reset(200 * time.Millisecond)
		case <-quiet.C:
			onChange()
		}
	}
}
