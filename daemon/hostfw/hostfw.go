// Package hostfw reads this machine's firewall, without changing it, to answer one question:
// would a new UDP packet from a peer on the internet to our WireGuard port get in? A firewall
// that drops it (ufw's default "deny incoming", a policy-drop input chain that only accepts
// established traffic) still lets replies to our own packets in, so direct paths work with
// most peers, but not with a peer behind a NAT that changes ports per destination: its packets
// arrive from a port we never sent to.
//
// The answer comes from simulating the packet through the input hook's chains (nftables; ufw,
// firewalld and iptables-nft all live there), with the command that opens the port for the
// firewall found.
package hostfw

import "fmt"

// Verdict is what the input hook does with a new UDP packet to the port.
type Verdict struct {
	// Blocked: the packet is dropped or rejected.
	Blocked bool
	// Kind is the firewall that owns the dropping chain: "ufw", "firewalld", "iptables" or
	// "nftables" (empty when nothing blocks).
	Kind string
	// Where names the table and chain ("inet filter input") and Why the rule or policy.
	Where, Why string
	// Fix is the command that lets the port in.
	Fix string
}

// String describes the verdict in one line.
func (v Verdict) String() string {
	if !v.Blocked {
		return "the firewall lets new inbound UDP in"
	}
	return fmt.Sprintf("%s (%s): %s", v.Kind, v.Where, v.Why)
}

// fixFor is the command that opens udp port for the firewall kind, with the nft chain when
// the rule goes there directly.
func fixFor(kind, family, table, chain string, port uint16) string {
	switch kind {
	case "ufw":
		return fmt.Sprintf("sudo ufw allow %d/udp", port)
	case "firewalld":
		return fmt.Sprintf("sudo firewall-cmd --permanent --add-port=%d/udp && sudo firewall-cmd --reload", port)
	case "iptables":
		cmd := "iptables"
		if family == "ip6" {
			cmd = "ip6tables"
		}
		return fmt.Sprintf("sudo %s -I %s -p udp --dport %d -j ACCEPT", cmd, chain, port)
	}
	return fmt.Sprintf("sudo nft insert rule %s %s %s udp dport %d accept", family, table, chain, port)
}
