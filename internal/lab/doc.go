// Package lab is Skein's network test lab: a fake "internet" built from Linux
// network namespaces on one machine, a real Headscale control server with its
// embedded DERP and STUN servers, and real official tailscaled peers.
// Nothing leaves the machine: the lab's namespaces have no uplink.
//
// It is used by `go test` lab tests (which must run as root; they fail, they
// do not skip, when not root or when the peer binaries are missing) and by
// cmd/skein-lab.
//
// # Topology
//
// Every Lab (one "run") gets a short random run ID and its own /24 out of
// 198.18.0.0/15 (RFC 2544 benchmarking space, our stand-in for public
// addresses):
//
//	skl<id>-inet   the "internet": bridge br0 with 198.18.X.1/24, router
//	skl<id>-ctl    198.18.X.2: Headscale on https://198.18.X.2 (TLS, tcp 443),
//	               embedded DERP (region 999) and STUN (udp 3478)
//	skl<id>-h10..  hosts from AddHost, 198.18.X.10 and up, eth0 plugged into
//	               br0, default route via 198.18.X.1
//	skl<id>-<nat>  NAT routers from AddNAT: eth0 on br0 with the next free
//	               public address, bridge lan0 with 192.168.N.1/24 (N = 1, 2,
//	               ... per NAT in the run)
//	skl<id>-<h>    hosts from NAT.AddHost: eth0 on that lan0, 192.168.N.10
//	               and up, default route via 192.168.N.1
//
// Veth pairs are created directly between a router namespace (inet or a
// NAT) and the host namespaces, so no interface of the lab ever appears in
// the root namespace. Host names are unique per lab, NATs included. Each
// namespace gets /etc/netns/NS/resolv.conf (nameserver 198.18.X.1, which
// answers nothing) and /etc/netns/NS/hosts (localhost, control.skein.test ->
// 198.18.X.2), bind-mounted by `ip netns exec`.
//
// A per-run CA (CACertFile) signs Headscale's certificate (SANs 198.18.X.2 and
// control.skein.test). Commands run through Host.Command/StartProcess get
// SSL_CERT_FILE pointing at it and no *_PROXY variables.
//
// # NATs, UDP blocking, link flaps
//
// These need nftables' `nft` (scripts/deps.sh installs it). All rules live
// in the lab's own tables inside the lab's namespaces, so they die with them.
//
// A NAT masquerades its LAN (table ip skein_lab_nat). EasyNAT is plain
// `masquerade`: endpoint-independent mapping, keeping the local port when it
// is free. HardNAT is `masquerade random,fully-random`: a new random port
// per destination. Both behave like home routers: no unsolicited inbound
// (forward policy drop except established/related and LAN->WAN), so public
// hosts reach a NATed host only at the NAT's public address, through the
// mappings the NATed host's own packets created (hole punching), and hosts
// behind two different NATs likewise. New inbound TCP/UDP to the router
// itself is dropped too (see NAT). ChangePublicAddr/SetPublicAddr move the
// WAN address and flush the router's conntrack table over ctnetlink (no
// conntrack tool needed), so ongoing flows get new mappings. Public
// addresses are never reused within a run.
//
// Host.BlockUDP(peers...) drops UDP to and from peers (none: all UDP through
// eth0, sparing lo and tailscale0) in the host's input and output hooks
// (table inet skein_lab_udp), so the host's own sends fail with EPERM, as
// behind a host firewall. NAT.BlockUDP drops all forwarded UDP (table inet
// skein_lab_fwd), silently for the hosts behind it, which leaves them DERP
// over TCP only. UnblockUDP deletes the table.
//
// Host.LinkDown/LinkUp set the host's eth0 down/up: a public host's uplink,
// a NATed host's LAN leg, a NAT router's WAN leg. The kernel drops the
// routes on down; LinkUp restores the address and default route.
//
// # Port mapping and extra DERP regions
//
// NAT.EnablePortMapping runs Debian's miniupnpd-nftables in the NAT router
// (UPnP, NAT-PMP+PCP, or both) with its WAN moved to 44.0.N.1/24, off
// miniupnpd's reserved ranges; PortMapper gives its rules, lease file,
// Restart (a new epoch; reboot also forgets the mappings) and
// WaitMapping. Control.AddDERPRegion (official derper) and
// AddSTUNOnlyRegion (official stund) add a second STUN server in a region
// of its own, so that netcheck can measure MappingVariesByDestIP.
// docs/lab-notes.md has what was measured with them.
//
// # Lifetime and cleanup
//
// New registers a t.Cleanup; NewStandalone returns a Lab to Close. Cleanup
// stops every process the lab started (SIGTERM, then SIGKILL after a grace
// period), kills whatever else is still inside the lab's namespaces, deletes
// the namespaces, the /etc/netns/NS dirs, the run dir and the run record.
// Processes are also started with Pdeathsig=SIGKILL so they die with the test
// binary. If a run still dies uncleanly (e.g. `go test -timeout` panics), the
// next New/NewStandalone/Sweep removes its leftovers: runs are recorded in
// /run/skein-lab/<id>.json with the owning PID and its start time, and a run
// whose owner is gone is stale. Only names matching the lab's scheme
// (namespaces "skl" + 4 chars + "-...", dirs $TMPDIR/skein-lab-<id>) are ever
// touched.
//
// When a test fails, the tail of every process log is written with t.Log
// (SKEIN_LAB_LOG_LINES lines, default 60). Set SKEIN_LAB_KEEP=1 to keep the
// run dir of a failed test (it is renamed to $TMPDIR/skein-lab-kept-<id>).
//
// # Binaries
//
// Headscale and tailscale/tailscaled come from
// ${SKEIN_LAB_CACHE:-/var/cache/skein-lab}/headscale-v0.27.1/headscale and
// .../tailscale-<version>/{tailscale,tailscaled} (and stund, derper);
// scripts/lab-peers.sh builds them.
//
// # Typical use
//
//	l := lab.New(t)
//	tn, err := l.StartTailnet("lab", "alpha-ts", "beta-ts")
//	// or piecewise: l.StartControl(), c.CreateUser, c.PreAuthKey,
//	// l.AddHost, h.StartTailscaled, ts.Up
//	h, _ := l.AddHost("skein-a")
//	nat, _ := l.AddNAT("home", lab.HardNAT)
//	nh, _ := nat.AddHost("skein-b") // behind the NAT
//	p, _ := h.StartProcess("/path/to/skeind", nil, "--flag")
//	lab.Eventually(t, 30*time.Second, func() error { ... })
//
// Host.Dial, Listen, ListenPacket and HTTPClient open sockets inside a
// namespace from the test process itself (literal IP addresses only).
//
// # Notes
//
// Official tailscaled runs with its kernel TUN (tailscale0 inside its
// namespace) by default, --no-logs-no-support, a per-peer --statedir and
// --socket, and TS_LOGS_DIR=<statedir> (else it writes into the machine's
// /var/lib/tailscale). Up passes --accept-dns=false by default: tailscaled's
// "direct" DNS mode would write a backup file into the machine's real /etc
// (only /etc/resolv.conf itself is per-namespace). With no iptables binary
// on the machine tailscaled uses nftables inside its namespace.
//
// Headscale (v0.27.1) runs with server_url https://198.18.X.2, so the DERP
// map's HostName is that IP (the certificate has it as an IP SAN); sqlite,
// keys, policy and the CLI's unix socket live in Dir()/ctl. The CLI needs
// numeric user IDs for preauthkeys (--user ID) but a user name for `nodes
// register --user NAME --key ID`. `policy set` works only with the database
// policy mode; the lab uses the file mode, and SetPolicy reloads with SIGHUP.
// Headscale drops its global flags (-c, -o) whenever the arguments contain
// both "policy" and "check".
//
// A peer listed in `tailscale status` is not necessarily reachable yet: until
// its home DERP and endpoints have arrived, a `tailscale ping` times out.
// WaitPeers and StartTailnet wait for those.
package lab
