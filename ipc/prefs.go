package ipc

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// ParseCIDRList parses "10.0.0.0/16,192.168.50.0/24" (commas and/or spaces; "" = none) into
// canonical prefixes, naming the first bad entry. what names the list in errors.
func ParseCIDRList(what string, items []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, it := range items {
		for _, s := range strings.FieldsFunc(it, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("%s: %q is not a CIDR like 10.0.0.0/16", what, s)}
			}
			if p.Addr().Zone() != "" {
				return nil, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("%s: %q has a zone", what, s)}
			}
			if p.Masked() != p {
				return nil, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("%s: %s has host bits set; did you mean %s?", what, p, p.Masked())}
			}
			if p.Bits() == 0 {
				return nil, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("%s: %s covers every address", what, p)}
			}
			// Never an exception or an advertised route: sending the tailnet's own ranges anywhere
			// but the tunnel would break the tailnet itself.
			if tsaddr.OverlapsTailnet(p) {
				return nil, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("%s: %s overlaps the tailnet's own addresses (%s, %s)", what, p, tsaddr.CGNATRange, tsaddr.ULARange)}
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out, nil
}

// ApplyPatch returns p with patch applied, or an *Error naming the first bad field; p itself is
// never changed, so a bad patch leaves the prefs as they were. resolveExitNode maps the
// user's exit-node argument (name, IP, StableID) to a StableID, or returns an *Error; it is only
// called for a non-empty ExitNode. Hostname and Operator are checked by the helper, which knows
// the system's users.
func (p Prefs) ApplyPatch(patch PrefsPatch, resolveExitNode func(string) (string, error)) (Prefs, error) {
	next := p
	next.ExitNodeBypass = slices.Clone(p.ExitNodeBypass)
	next.AdvertiseRoutes = slices.Clone(p.AdvertiseRoutes)
	if patch.Hostname != nil {
		next.Hostname = *patch.Hostname
	}
	if patch.Operator != nil {
		next.Operator = *patch.Operator
	}
	if patch.ExitNodeBypass != nil {
		l, err := ParseCIDRList("exit-node bypass", *patch.ExitNodeBypass)
		if err != nil {
			return p, err
		}
		next.ExitNodeBypass = l
	}
	if patch.AdvertiseRoutes != nil {
		l, err := ParseCIDRList("advertised routes", *patch.AdvertiseRoutes)
		if err != nil {
			return p, err
		}
		next.AdvertiseRoutes = l
	}
	if patch.ExitNode != nil && patch.UseExitNode != nil {
		return p, &Error{Code: ErrBadRequest, Message: "choose an exit node or turn the last one on or off, not both"}
	}
	if patch.ExitNode != nil {
		switch q := strings.TrimSpace(*patch.ExitNode); {
		case q == "":
			next.ExitNodeID, next.AutoExitNode = "", ""
		case strings.HasPrefix(q, "auto:"):
			if q != AutoExitNodeAny {
				return p, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("exit node %q: the only automatic choice is %s", q, AutoExitNodeAny)}
			}
			// The helper picks the node right after (and keeps picking while this is set).
			next.ExitNodeID, next.AutoExitNode = "", "any"
		default:
			if resolveExitNode == nil {
				return p, &Error{Code: ErrBadRequest, Message: "exit nodes cannot be resolved here"}
			}
			id, err := resolveExitNode(q)
			if err != nil {
				return p, err
			}
			next.ExitNodeID, next.AutoExitNode = id, ""
		}
	}
	if patch.UseExitNode != nil {
		inUse := next.ExitNodeID != "" || next.AutoExitNode != ""
		switch {
		case !*patch.UseExitNode:
			next.ExitNodeID, next.AutoExitNode = "", ""
		case inUse:
		case next.LastExitNodeID == AutoExitNodeAny:
			next.AutoExitNode = "any"
		case next.LastExitNodeID != "":
			next.ExitNodeID = next.LastExitNodeID
		default:
			return p, &Error{Code: ErrBadRequest, Message: "no exit node was used before: choose one first", Fix: "skein exit-node list"}
		}
	}
	// Remember the last exit node for the one-click toggle.
	switch {
	case next.AutoExitNode != "":
		next.LastExitNodeID = AutoExitNodeAny
	case next.ExitNodeID != "":
		next.LastExitNodeID = next.ExitNodeID
	}
	setBool := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	setBool(&next.ExitNodeAllowLANAccess, patch.ExitNodeAllowLANAccess)
	setBool(&next.BypassVPNRoutes, patch.BypassVPNRoutes)
	setBool(&next.AdvertiseExitNode, patch.AdvertiseExitNode)
	setBool(&next.AcceptRoutes, patch.AcceptRoutes)
	setBool(&next.PersistForwarding, patch.PersistForwarding)
	setBool(&next.RunSSH, patch.RunSSH)
	setBool(&next.ShieldsUp, patch.ShieldsUp)
	setBool(&next.LANUsesCGNAT, patch.LANUsesCGNAT)
	setBool(&next.StatefulFiltering, patch.StatefulFiltering)
	if patch.AcceptDNS != nil {
		next.NoAcceptDNS = !*patch.AcceptDNS
	}
	if patch.SNATSubnetRoutes != nil {
		next.NoSNAT = !*patch.SNATSubnetRoutes
	}
	if patch.PortMapping != nil {
		next.NoPortMapping = !*patch.PortMapping
	}
	if (next.ExitNodeID != "" || next.AutoExitNode != "") && next.AdvertiseExitNode {
		return p, &Error{Code: ErrBadRequest, Message: "cannot use an exit node while offering to be one", Fix: "skein set --exit-node= (or --advertise-exit-node=false)"}
	}
	return next, nil
}
