package lab

import (
	"fmt"

	"path/filepath"
	"strings"
	"time"
)

// HostState is what a VPN helper may change on a host: policy rules, every routing table,
// the nftables ruleset, the forwarding sysctls and the links. Tests compare snapshots before
// and after a helper ran (or crashed) to prove it left nothing behind.
func (h *Host) HostState() (string, error) {
	// A new link's IPv6 link-local address appears only after duplicate address detection;
	// wait for it so that a snapshot of a fresh host is not missing it.
	WaitFor(10*time.Second, func() error {
		out, err := h.Run("ip", "-6", "addr", "show", "tentative")
		if err == nil && strings.TrimSpace(out) != "" {
			return fmt.Errorf("tentative addresses: %s", out)
		}
		return nil
	})
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule", "show"},
		{"-6", "rule", "show"},
		{"-4", "route", "show", "table", "all"},
		{"-6", "route", "show", "table", "all"},
		{"-br", "link", "show"},
	} {
		out, err := h.Run("ip", args...)
		if err != nil {
			return "", fmt.Errorf("ip %v: %w", args, err)
		}
		fmt.Fprintf(&b, "# ip %s\n%s\n", strings.Join(args, " "), out)
	}
	out, err := h.Run("nft", "list", "ruleset")
	if err != nil {
		return "", fmt.Errorf("nft list ruleset: %w", err)
	}
	fmt.Fprintf(&b, "# nft list ruleset\n%s\n", out)
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		out, err := h.Run("cat", filepath.Join("/proc/sys", k))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "# %s = %s\n", k, strings.TrimSpace(out))
	}
	return b.String(), nil
}

// DiffLines returns the lines of a not in b and of b not in a, prefixed "-" and "+".
func DiffLines(a, b string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	ca, cb := count(a), count(b)
	var out strings.Builder
	for _, l := range strings.Split(a, "\n") {
		if cb[l] < ca[l] {
			fmt.Fprintf(&out, "-%s\n", l)
			ca[l]--
		}
	}
	ca = count(a)
	for _, l := range strings.Split(b, "\n") {
		if ca[l] < cb[l] {
			fmt.Fprintf(&out, "+%s\n", l)
			cb[l]--
		}
	}
	return out.String()
}
