package main

import (
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/skeinvpn/skein/ipc"
)

// prefsFlags are the preference flags that both set and up accept. Like the official client,
// only the flags the user actually typed change anything: the rest never reach the patch, so
// the flag defaults mean nothing (a bare bool flag is true) and the help shows none.
type prefsFlags struct {
	exitNode          string
	exitNodeLAN       bool
	exitNodeBypass    string
	bypassVPNRoutes   bool
	advertiseExitNode bool
	advertiseRoutes   string
	snat              bool
	acceptRoutes      bool
	acceptDNS         bool
	persistForwarding bool
	portMapping       bool
	runSSH            bool
	shieldsUp         bool
	lanUsesCGNAT      bool
	statefulFiltering bool
}

// Default routes: the official client takes both of them in --advertise-routes as another way
// to say --advertise-exit-node.
const (
	allIPv4 = "0.0.0.0/0"
	allIPv6 = "::/0"
)

func (pf *prefsFlags) register(f *flagSet) {
	f.StringVar(&pf.exitNode, "exit-node", "", "exit node (name, FQDN, tailnet IP or ID) for internet traffic, or auto:any to follow the recommended one; empty to stop using one")
	f.BoolVar(&pf.exitNodeLAN, "exit-node-allow-lan-access", false, "keep direct access to the local network while using an exit node")
	f.StringVar(&pf.exitNodeBypass, "exit-node-bypass", "", "comma-separated CIDRs that skip the exit node, e.g. \"10.0.0.0/8,192.168.0.0/24\"; empty for none (Skein only)")
	f.BoolVar(&pf.bypassVPNRoutes, "bypass-vpn-routes", false, "let routes of other VPN interfaces skip the exit node, following them as they change (Skein only)")
	f.BoolVar(&pf.advertiseExitNode, "advertise-exit-node", false, "offer this machine as an exit node for the tailnet's internet traffic")
	f.StringVar(&pf.advertiseRoutes, "advertise-routes", "", "comma-separated subnet routes to offer to the tailnet, e.g. \"10.0.0.0/8,192.168.0.0/24\"; empty for none")
	f.BoolVar(&pf.snat, "snat-subnet-routes", false, "source-NAT traffic to the subnet routes advertised with --advertise-routes (on unless set to false)")
	f.BoolVar(&pf.acceptRoutes, "accept-routes", false, "use the subnet routes other machines advertise")
	f.BoolVar(&pf.acceptDNS, "accept-dns", false, "point this machine's resolver at skeind (100.100.100.100) and use the tailnet's DNS settings (on unless set to false)")
	f.BoolVar(&pf.persistForwarding, "persist-forwarding", false, "allow writing IP forwarding to /etc/sysctl.d so it survives reboots (otherwise it is switched on at run time only)")
	f.BoolVar(&pf.portMapping, "port-mapping", false, "ask the router (UPnP, NAT-PMP, PCP) to map the tunnel's UDP port, for direct paths through hard NATs (on unless set to false; Skein only)")
	f.BoolVar(&pf.runSSH, "ssh", false, "run Tailscale SSH: peers log in over SSH as the tailnet's SSH policy allows (needs the session helper, see skeind(8))")
	f.BoolVar(&pf.shieldsUp, "shields-up", false, "block incoming connections from other machines of the tailnet (replies to this machine's own connections still pass)")
	f.BoolVar(&pf.lanUsesCGNAT, "lan-uses-cgnat", false, "this machine's own network uses 100.64.0.0/10 (a carrier's CGNAT): do not drop its packets as spoofed tailnet sources (Skein only)")
	f.BoolVar(&pf.statefulFiltering, "stateful-filtering", false, "as an exit node or subnet router, drop connections other networks open into the tailnet")
}

// patch builds the patch from the flags the user gave; a usage problem comes back as an error
// for usageError. Values are checked by skeind, which names the bad one.
func (pf *prefsFlags) patch(f *flagSet) (ipc.PrefsPatch, error) {
	var p ipc.PrefsPatch
	var routes []string
	var defaultRoutes []string
	f.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "exit-node":
			p.ExitNode = &pf.exitNode
		case "exit-node-allow-lan-access":
			p.ExitNodeAllowLANAccess = &pf.exitNodeLAN
		case "exit-node-bypass":
			l := splitList(pf.exitNodeBypass)
			p.ExitNodeBypass = &l
		case "bypass-vpn-routes":
			p.BypassVPNRoutes = &pf.bypassVPNRoutes
		case "advertise-exit-node":
			p.AdvertiseExitNode = &pf.advertiseExitNode
		case "advertise-routes":
			routes = []string{}
			for _, r := range splitList(pf.advertiseRoutes) {
				if r == allIPv4 || r == allIPv6 {
					defaultRoutes = append(defaultRoutes, r)
				} else {
					routes = append(routes, r)
				}
			}
			p.AdvertiseRoutes = &routes
		case "snat-subnet-routes":
			p.SNATSubnetRoutes = &pf.snat
		case "accept-routes":
			p.AcceptRoutes = &pf.acceptRoutes
		case "accept-dns":
			p.AcceptDNS = &pf.acceptDNS
		case "persist-forwarding":
			p.PersistForwarding = &pf.persistForwarding
		case "port-mapping":
			p.PortMapping = &pf.portMapping
		case "ssh":
			p.RunSSH = &pf.runSSH
		case "shields-up":
			p.ShieldsUp = &pf.shieldsUp
		case "lan-uses-cgnat":
			p.LANUsesCGNAT = &pf.lanUsesCGNAT
		case "stateful-filtering":
			p.StatefulFiltering = &pf.statefulFiltering
		}
	})
	if v := strings.TrimSpace(ptrOr(p.ExitNode)); strings.HasPrefix(v, "auto:") && v != ipc.AutoExitNodeAny {
		return p, fmt.Errorf("--exit-node=%s: the only automatic choice is %s", v, ipc.AutoExitNodeAny)
	}
	if len(defaultRoutes) > 0 {
		switch {
		case !slices.Contains(defaultRoutes, allIPv6):
			return p, fmt.Errorf("%s advertised without its IPv6 counterpart, please also advertise %s", allIPv4, allIPv6)
		case !slices.Contains(defaultRoutes, allIPv4):
			return p, fmt.Errorf("%s advertised without its IPv4 counterpart, please also advertise %s", allIPv6, allIPv4)
		case p.AdvertiseExitNode != nil && !*p.AdvertiseExitNode:
			return p, fmt.Errorf("--advertise-routes=%s,%s offers an exit node, but --advertise-exit-node=false says not to", allIPv4, allIPv6)
		}
		// Both default routes: the same as --advertise-exit-node.
		yes := true
		p.AdvertiseExitNode = &yes
	}
	return p, nil
}

func ptrOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// splitList splits a comma-separated flag value, dropping blanks. The result is never nil, so
// that an empty value is sent as an empty list ("clear") rather than as "unchanged".
func splitList(s string) []string {
	out := []string{}
	for _, it := range strings.Split(s, ",") {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out
}
