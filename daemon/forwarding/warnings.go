package forwarding

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Warnings describes host configuration that will stop forwarding from
// working, each with the command that fixes it. It inspects the host live
// and changes nothing.
func (m *Manager) Warnings() []string {
	m.mu.Lock()
	n := m.cfg
	m.mu.Unlock()
	if n.isZero() || !n.Forward {
		return nil
	}
	return append(sysctlWarnings(n), firewallWarnings(n)...)
}

func sysctlWarnings(n Config) []string {
	var w []string
	if v, err := readSysctl(forwardKey(famV4)); err == nil && v != "1" {
		w = append(w, fmt.Sprintf("IPv4 forwarding is off (%s=%s), so nothing is routed for the tailnet: `sysctl -w %s=1`",
			dotted(forwardKey(famV4)), v, dotted(forwardKey(famV4))))
	} else if err == nil {
		w = append(w, perInterfaceOff(n.TunName)...)
	}

	switch {
	case !n.IPv6:
		if slices.ContainsFunc(n.Routes, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			w = append(w, "IPv6 routes are advertised but IPv6 forwarding is not enabled in Skein, so IPv6 traffic is not forwarded")
		}
	case !familyPresent(famV6):
		w = append(w, "IPv6 is disabled in the kernel (ipv6.disable=1 on the kernel command line), so IPv6 traffic is not forwarded: remove ipv6.disable=1 and reboot")
	default:
		if v, _ := readSysctl("net/ipv6/conf/all/disable_ipv6"); v == "1" {
			w = append(w, "IPv6 is disabled (net.ipv6.conf.all.disable_ipv6=1), so IPv6 traffic is not forwarded: `sysctl -w net.ipv6.conf.all.disable_ipv6=0`")
		}
		if v, err := readSysctl(forwardKey(famV6)); err == nil && v != "1" {
			w = append(w, fmt.Sprintf("IPv6 forwarding is off (%s=%s): `sysctl -w %s=1`",
				dotted(forwardKey(famV6)), v, dotted(forwardKey(famV6))))
		} else if err == nil {
			w = append(w, raWarnings()...)
		}
	}
	return w
}

// perInterfaceOff lists interfaces whose own IPv4 forwarding switch is off
// although the global one is on: traffic arriving there is not forwarded.
func perInterfaceOff(tun string) []string {
	ents, err := os.ReadDir(path.Join(procSys, confDir(famV4)))
	if err != nil {
		return nil
	}
	var w []string
	for _, e := range ents {
		name := e.Name()
		if name == "all" || name == "default" || name == "lo" {
			continue
		}
		k := confDir(famV4) + "/" + name + "/forwarding"
		if v, err := readSysctl(k); err == nil && v == "0" {
			what := "traffic arriving on " + name + " is not forwarded"
			if name == tun {
				what = "tailnet traffic is not forwarded"
			}
			w = append(w, fmt.Sprintf("%s (%s=0): `sysctl -w %s=1`", what, dotted(k), dotted(k)))
		}
	}
	return w
}

// raWarnings: with IPv6 forwarding on, an interface with accept_ra=1 stops
// accepting router advertisements, so a default route learned from them
// expires.
func raWarnings() []string {
	f, err := os.Open("/proc/thread-self/net/ipv6_route")
	if err != nil {
		return nil
	}
	defer f.Close()
	const rtfAddrconf = 0x40000
	seen := map[string]bool{}
	var w []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[1] != "00" || strings.Trim(fl[0], "0") != "" {
			continue
		}
		flags, err := strconv.ParseUint(fl[8], 16, 32)
		if err != nil || flags&rtfAddrconf == 0 || seen[fl[9]] {
			continue
		}
		dev := fl[9]
		seen[dev] = true
		k := confDir(famV6) + "/" + dev + "/accept_ra"
		if v, _ := readSysctl(k); v == "1" {
			w = append(w, fmt.Sprintf("with IPv6 forwarding on, %s ignores router advertisements and its default route will expire: `sysctl -w %s=2`", dev, dotted(k)))
		}
	}
	return w
}

// tableView is what we learn about one foreign table.
type tableView struct {
	family nftables.TableFamily
	name   string
	chains []*nftables.Chain
}

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

func firewallWarnings(n Config) []string {
	var w []string
	ufw := false
	c, err := nftables.New()
	if err == nil {
		chains, err := c.ListChains()
		if err == nil {
			var w2 []string
			w2, ufw = nftWarnings(c, chains, n)
			w = append(w, w2...)
		}
	}
	fams := []string{famV4}
	if n.IPv6 && n.Forward {
		fams = append(fams, famV6)
	}
	for _, fam := range fams {
		lt, err := readLegacyFilter(fam, n.TunName)
		if err != nil || lt == nil || !lt.forwardDrop || (lt.acceptIn && (lt.acceptOut || lt.acceptCtOnly)) {
			continue
		}
		isUFW := false
		for _, ch := range lt.chains {
			isUFW = isUFW || strings.HasPrefix(ch, "ufw")
		}
		if isUFW {
			if !ufw {
				w = append(w, ufwWarning(n.TunName))
				ufw = true
			}
			continue
		}
		cmd := "iptables"
		if fam == famV6 {
			cmd = "ip6tables"
		}
		w = append(w, iptablesWarning(cmd, "legacy iptables", "FORWARD", slices.Contains(lt.chains, "DOCKER-USER"), n.TunName))
	}
	return w
}

func ufwWarning(tun string) string {
	return fmt.Sprintf("ufw is active and drops forwarded traffic by default: `ufw route allow in on %s` (and `ufw route allow out on %s` if other networks start connections into the tailnet)", tun, tun)
}

func iptablesWarning(cmd, where, chain string, docker bool, tun string) string {
	target := chain
	if docker {
		target = "DOCKER-USER"
	}
	return fmt.Sprintf("%s chain %s drops forwarded traffic (policy DROP), so tailnet traffic routed through this host is dropped: `%s -I %s -i %s -j ACCEPT && %s -I %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`",
		where, chain, cmd, target, tun, cmd, target, tun)
}

func nftWarnings(c *nftables.Conn, chains []*nftables.Chain, n Config) (w []string, ufw bool) {
	tables := map[string]*tableView{}
	var order []string
	for _, ch := range chains {
		if ch.Table == nil {
			continue
		}
		f := ch.Table.Family
		if f != nftables.TableFamilyINet && f != nftables.TableFamilyIPv4 && f != nftables.TableFamilyIPv6 {
			continue
		}
		if f == nftables.TableFamilyINet && ch.Table.Name == TableName {
			continue
		}
		key := famName(f) + " " + ch.Table.Name
		tv := tables[key]
		if tv == nil {
			tv = &tableView{family: f, name: ch.Table.Name}
			tables[key] = tv
			order = append(order, key)
		}
		tv.chains = append(tv.chains, ch)
	}
	firewalld := false
	for _, key := range order {
		tv := tables[key]
		if tv.name == "firewalld" {
			if !firewalld {
				w = append(w, fmt.Sprintf("firewalld is running and rejects forwarding between zones: `firewall-cmd --permanent --zone=trusted --add-interface=%s && firewall-cmd --reload`", n.TunName))
				firewalld = true
			}
			continue
		}
		if tv.family == nftables.TableFamilyIPv6 && !(n.Forward && n.IPv6) {
			continue
		}
		var blocking *nftables.Chain
		for _, ch := range tv.chains {
			if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || (ch.Type != "" && ch.Type != nftables.ChainTypeFilter) {
				continue
			}
			if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
				blocking = ch
				break
			}
			if rules, err := c.GetRules(ch.Table, ch); err == nil && len(rules) > 0 && dropsAll(rules[len(rules)-1]) {
				blocking = ch
				break
			}
		}
		if blocking == nil {
			continue
		}
		var in, out, ct bool
		isUFW, docker := false, false
		for _, ch := range tv.chains {
			isUFW = isUFW || strings.HasPrefix(ch.Name, "ufw")
			docker = docker || ch.Name == "DOCKER-USER"
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				continue
			}
			for _, r := range rules {
				i, o, k := acceptsTun(r, n.TunName)
				in, out, ct = in || i, out || o, ct || k
			}
		}
		if in && (out || ct) {
			continue
		}
		if isUFW {
			if !ufw {
				w = append(w, ufwWarning(n.TunName))
				ufw = true
			}
			continue
		}
		if (tv.name == "filter") && blocking.Name == "FORWARD" && tv.family != nftables.TableFamilyINet {
			cmd := "iptables"
			if tv.family == nftables.TableFamilyIPv6 {
				cmd = "ip6tables"
			}
			w = append(w, iptablesWarning(cmd, "iptables (table "+key+")", "FORWARD", docker, n.TunName))
			continue
		}
		w = append(w, fmt.Sprintf("nftables chain %s %s drops forwarded traffic, so tailnet traffic routed through this host is dropped: `nft insert rule %s %s iifname \"%s\" accept && nft insert rule %s %s oifname \"%s\" ct state established,related accept`",
			key, blocking.Name, key, blocking.Name, n.TunName, key, blocking.Name, n.TunName))
	}
	return w, ufw
}

// dropsAll reports whether a rule drops or rejects everything (a final
// catch-all in a chain whose policy is accept).
func dropsAll(r *nftables.Rule) bool {
	final := false
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Counter:
		case *expr.Reject:
			final = true
		case *expr.Verdict:
			final = e.Kind == expr.VerdictDrop
		default:
			return false
		}
	}
	return final
}

// acceptsTun reports whether r accepts packets coming in on tun (in),
// going out on tun (out), or by conntrack state alone (ct).
func acceptsTun(r *nftables.Rule, tun string) (in, out, ct bool) {
	if len(r.Exprs) == 0 {
		return
	}
	if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictAccept {
		return
	}
	iface, state := false, false
	for i, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.Key != expr.MetaKeyIIFNAME && e.Key != expr.MetaKeyOIFNAME && e.Key != expr.MetaKeyIIF && e.Key != expr.MetaKeyOIF {
				continue
			}
			iface = true
			if i+1 >= len(r.Exprs) {
				continue
			}
			cmp, ok := r.Exprs[i+1].(*expr.Cmp)
			if !ok || cmp.Op != expr.CmpOpEq || cmp.Register != e.Register {
				continue
			}
			if string(bytes.TrimRight(cmp.Data, "\x00")) != tun || len(cmp.Data) <= len(tun) {
				continue
			}
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				in = true
			case expr.MetaKeyOIFNAME:
				out = true
			}
		case *expr.Ct:
			state = state || e.Key == expr.CtKeySTATE
		case *expr.Match:
			state = state || e.Name == "conntrack" || e.Name == "state"
		}
	}
	ct = state && !iface
	return
}
