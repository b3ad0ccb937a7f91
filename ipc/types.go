// Package ipc is the one contract between skeind and its unprivileged front ends (the skein CLI
// and the desktop app): HTTP+JSON over a Unix socket, with typed requests, responses, events and
// errors. Front ends import this package and nothing from daemon/.
package ipc

import (
	"net/netip"
	"strings"
	"time"
)

// APIVersion prefixes every path; a breaking change gets a new prefix.
const APIVersion = "v1"

// DefaultSocket is where skeind listens unless told otherwise.
const DefaultSocket = "/run/skein/skeind.sock"

// Paths of the API. Reads are GET; changes are POST with a JSON body.
const (
	PathStatus = "/" + APIVersion + "/status" // GET  → Status
	PathPrefs  = "/" + APIVersion + "/prefs"  // GET  → Prefs; POST PrefsPatch → Prefs
	PathUp     = "/" + APIVersion + "/up"     // POST UpRequest → UpResponse
	PathDown   = "/" + APIVersion + "/down"   // POST {} → Status
	PathLogout = "/" + APIVersion + "/logout" // POST {} → Status
	PathWatch  = "/" + APIVersion + "/watch"  // GET  → stream of Event, one JSON object per line
	// PathPing sends one disco ping: GET ?peer=NAME|IP → PingResult. Reading, so anyone may.
	PathPing = "/" + APIVersion + "/ping"
	// PathNetcheck runs a netcheck now: GET → NetcheckReport. Only root and the operator start
	// a new run; others get the last report (Cached set).
	PathNetcheck = "/" + APIVersion + "/netcheck"
	// PathDNSQuery asks the helper's MagicDNS resolver directly: GET ?name=NAME&type=A →
	// DNSQueryResult. Reading, so anyone may.
	PathDNSQuery = "/" + APIVersion + "/dns/query"
)

// State is the helper's connection state, named as the official client names it so that
// scripts that look for "Running" or "NeedsLogin" keep working.
type State string

const (
	StateNoState    State = "NoState"
	StateNeedsLogin State = "NeedsLogin"
	StateStopped    State = "Stopped"
	StateStarting   State = "Starting"
	StateRunning    State = "Running"
)

// Prefs are the user's wishes, persisted by the helper.
type Prefs struct {
	// LoginServer is the control server URL, e.g. https://headscale.example.com.
	LoginServer string `json:"loginServer"`
	// WantRunning is false after `skein down`.
	WantRunning bool `json:"wantRunning"`
	// Hostname overrides the OS hostname sent to control; empty = OS hostname.
	Hostname string `json:"hostname,omitempty"`
	// Operator is the local user name that may change state besides root.
	Operator string `json:"operator,omitempty"`

	// ExitNodeID is the StableID of the peer used as exit node; empty = none.
	ExitNodeID string `json:"exitNodeID,omitempty"`
	// ExitNodeAllowLANAccess keeps directly connected LANs on the host's own routing while an
	// exit node is in use.
	ExitNodeAllowLANAccess bool `json:"exitNodeAllowLANAccess,omitempty"`
	// ExitNodeBypass are destinations that keep using the main table while an exit node is in
	// use (ip rules ahead of table 52).
	ExitNodeBypass []netip.Prefix `json:"exitNodeBypass,omitempty"`
	// BypassVPNRoutes adds exit-node exceptions for the routes the main table sends to other
	// tunnel-like interfaces (another company VPN), kept up to date while they change.
	BypassVPNRoutes bool `json:"bypassVPNRoutes,omitempty"`
	// AdvertiseExitNode offers this host as exit node (0.0.0.0/0 and ::/0 in Hostinfo).
	AdvertiseExitNode bool `json:"advertiseExitNode,omitempty"`
	// AdvertiseRoutes are subnet routes offered to the tailnet.
	AdvertiseRoutes []netip.Prefix `json:"advertiseRoutes,omitempty"`
	// NoSNAT keeps tailnet source addresses on forwarded subnet traffic (--snat-subnet-routes=false).
	NoSNAT bool `json:"noSNAT,omitempty"`
	// AcceptRoutes installs the subnet routes peers offer (off by default on Linux).
	AcceptRoutes bool `json:"acceptRoutes,omitempty"`
	// NoAcceptDNS leaves the system resolver alone (`skein set --accept-dns=false`); the
	// resolver at 100.100.100.100 still answers.
	NoAcceptDNS bool `json:"noAcceptDNS,omitempty"`
	// PersistForwarding: the user agreed to make IP forwarding permanent in /etc/sysctl.d;
	// otherwise forwarding is switched on at run time only and restored when no longer needed.
	PersistForwarding bool `json:"persistForwarding,omitempty"`
	// NoPortMapping stops asking the router (UPnP, NAT-PMP, PCP) to map the tunnel's UDP port
	// (`skein set --port-mapping=false`).
	NoPortMapping bool `json:"noPortMapping,omitempty"`
	// RunSSH runs Tailscale SSH: peers log in over SSH as the tailnet's SSH policy says
	// (`skein set --ssh`).
	RunSSH bool `json:"runSSH,omitempty"`

	// AutoExitNode is "any" while the exit node follows the helper's suggestion
	// (--exit-node=auto:any): ExitNodeID is then the current pick, and traffic is dropped while
	// there is none. "" = the exit node is chosen by hand.
	AutoExitNode string `json:"autoExitNode,omitempty"`
	// LastExitNodeID is the exit node used last ("auto:any" for the automatic one), which the
	// one-click toggle (PrefsPatch.UseExitNode) turns back on.
	LastExitNodeID string `json:"lastExitNodeID,omitempty"`
	// ShieldsUp blocks new inbound tunnel connections ("Allow incoming connections" off);
	// replies to this device's own connections still pass.
	ShieldsUp bool `json:"shieldsUp,omitempty"`
	// LANUsesCGNAT: this machine's own network (an ISP's CGNAT, a carrier router) uses
	// 100.64.0.0/10, so packets from those addresses on other interfaces are not dropped as
	// spoofed tailnet sources (the guard is on otherwise).
	LANUsesCGNAT bool `json:"lanUsesCGNAT,omitempty"`
	// StatefulFiltering: as an exit node or subnet router, connections that other interfaces
	// open into the tailnet are dropped; replies to the tailnet's own connections pass.
	StatefulFiltering bool `json:"statefulFiltering,omitempty"`
}

// AutoExitNodeAny is the exit-node argument for the automatic exit node, as the official client
// spells it.
const AutoExitNodeAny = "auto:any"

// PrefsPatch changes only the fields that are set.
type PrefsPatch struct {
	Hostname *string `json:"hostname,omitempty"`
	Operator *string `json:"operator,omitempty"`

	// ExitNode selects the exit node by name, FQDN, Tailscale IP or StableID, or "auto:any" to
	// follow the helper's suggestion; "" clears it.
	ExitNode *string `json:"exitNode,omitempty"`
	// UseExitNode true turns the last used exit node (LastExitNodeID) back on; false stops using
	// one and remembers it. It cannot be combined with ExitNode.
	UseExitNode            *bool `json:"useExitNode,omitempty"`
	ExitNodeAllowLANAccess *bool `json:"exitNodeAllowLANAccess,omitempty"`
	// ExitNodeBypass and AdvertiseRoutes are CIDR strings so the helper can name a bad one.
	ExitNodeBypass    *[]string `json:"exitNodeBypass,omitempty"`
	BypassVPNRoutes   *bool     `json:"bypassVPNRoutes,omitempty"`
	AdvertiseExitNode *bool     `json:"advertiseExitNode,omitempty"`
	AdvertiseRoutes   *[]string `json:"advertiseRoutes,omitempty"`
	SNATSubnetRoutes  *bool     `json:"snatSubnetRoutes,omitempty"`
	AcceptRoutes      *bool     `json:"acceptRoutes,omitempty"`
	PersistForwarding *bool     `json:"persistForwarding,omitempty"`
	AcceptDNS         *bool     `json:"acceptDNS,omitempty"`
	PortMapping       *bool     `json:"portMapping,omitempty"`
	RunSSH            *bool     `json:"runSSH,omitempty"`
	ShieldsUp         *bool     `json:"shieldsUp,omitempty"`
	LANUsesCGNAT      *bool     `json:"lanUsesCGNAT,omitempty"`
	StatefulFiltering *bool     `json:"statefulFiltering,omitempty"`
}

// UpRequest asks the helper to connect, logging in first when needed.
type UpRequest struct {
	// LoginServer, when set, replaces the stored one (a different server means a new login).
	LoginServer string `json:"loginServer,omitempty"`
	// AuthKey is a pre-auth key; empty means interactive login when a login is needed.
	AuthKey string `json:"authKey,omitempty"`
	// Hostname, when set, replaces the stored hostname pref.
	Hostname string `json:"hostname,omitempty"`
	// ForceReauth logs in again even when the node is already registered.
	ForceReauth bool `json:"forceReauth,omitempty"`
	// NewProfile logs in as a new profile (another account or tailnet) and switches to it once
	// the login succeeds; the current profile is kept. Nickname names the new profile.
	NewProfile bool   `json:"newProfile,omitempty"`
	Nickname   string `json:"nickname,omitempty"`
}

// UpResponse is returned once the helper is Running, or as soon as an interactive login has an
// AuthURL for the user to visit (then watch for StateRunning).
type UpResponse struct {
	State   State  `json:"state"`
	AuthURL string `json:"authURL,omitempty"`
}

// Status is a snapshot of everything a front end shows. It never carries private keys.
type Status struct {
	Version string `json:"version"`
	State   State  `json:"state"`
	AuthURL string `json:"authURL,omitempty"`
	// AuthURLHidden: a login URL is waiting, but only root and the operator may see it (whoever
	// opens it first decides whose tailnet this machine joins).
	AuthURLHidden bool    `json:"authURLHidden,omitempty"`
	LoginServer   string  `json:"loginServer,omitempty"`
	Self          *Peer   `json:"self,omitempty"`
	Peers         []Peer  `json:"peers"`
	Users         []User  `json:"users,omitempty"`
	MagicDNS      string  `json:"magicDNSSuffix,omitempty"`
	Health        []Issue `json:"health,omitempty"`
	// ControlConnected is true while the map long-poll is up.
	ControlConnected bool `json:"controlConnected"`
	// ExitNode is the exit node in use (nil when none is selected). Online false means the
	// selected node is gone or offline: internet traffic is then dropped, never sent in clear.
	ExitNode *ExitNodeStatus `json:"exitNode,omitempty"`
	// Filter is the inbound packet filter's state (nil while the tunnel is down).
	Filter *FilterStatus `json:"filter,omitempty"`
	// Routing describes what the helper changed on the host for routes and forwarding.
	Routing *RoutingStatus `json:"routing,omitempty"`
	// DNS is the MagicDNS resolver's and the system resolver's configuration.
	DNS *DNSStatus `json:"dns,omitempty"`
	// Engine says how the helper keeps up with the network map (nil while the tunnel is down).
	Engine *EngineStats `json:"engine,omitempty"`
	// Profile is the login in use; Profiles are every login kept on this machine (the current
	// one included), in the order they were added.
	Profile  *Profile  `json:"profile,omitempty"`
	Profiles []Profile `json:"profiles,omitempty"`
	// SuggestedExitNode is the exit node the helper recommends now (online, offering, lowest
	// measured latency); nil when no peer offers one.
	SuggestedExitNode *ExitNodeSuggestion `json:"suggestedExitNode,omitempty"`
}

// EngineStats are the helper's own figures on applying network maps to the tunnel, for
// diagnosis and `make bench`: a large tailnet that changes often shows here first.
type EngineStats struct {
	// NetmapPeers are the peers in the map; WireGuardPeers those configured in WireGuard now
	// (peers without recent traffic are added on their first packet).
	NetmapPeers    int `json:"netmapPeers"`
	WireGuardPeers int `json:"wireguardPeers"`
	// Applies counts maps (full or delta) applied to the tunnel.
	Applies uint64 `json:"applies"`
	// Apply* are how long the tunnel took to apply a map; Latency* from the map's arrival from
	// control until the tunnel carried it (queueing included); over the last 256 applies.
	ApplyP50Ms   float64 `json:"applyP50Ms"`
	ApplyP99Ms   float64 `json:"applyP99Ms"`
	ApplyMaxMs   float64 `json:"applyMaxMs"`
	LatencyP50Ms float64 `json:"latencyP50Ms"`
	LatencyP99Ms float64 `json:"latencyP99Ms"`
}

// DNSStatus says what the helper configured for DNS, and why.
type DNSStatus struct {
	// AcceptDNS mirrors the pref: false means the system resolver is left alone.
	AcceptDNS bool `json:"acceptDNS"`
	// MagicDNS is true when the tailnet has MagicDNS on (names of peers are answered).
	MagicDNS bool `json:"magicDNS"`
	// Resolver is the address the helper answers on (100.100.100.100).
	Resolver []netip.Addr `json:"resolver,omitempty"`
	// Mode is how the system resolver is configured: "systemd-resolved", "resolv.conf" or
	// "" when not touched; ModeReason says why.
	Mode       string `json:"mode,omitempty"`
	ModeReason string `json:"modeReason,omitempty"`
	// Applied is true while the system resolver points at the helper.
	Applied bool `json:"applied"`
	// SearchDomains are added to the system's search list.
	SearchDomains []string `json:"searchDomains,omitempty"`
	// SplitRoutes map a DNS suffix to its resolvers ("" = answered locally).
	SplitRoutes map[string][]string `json:"splitRoutes,omitempty"`
	// Upstreams answer everything else: the tailnet's global resolvers, or the system's own.
	Upstreams []string `json:"upstreams,omitempty"`
	// UpstreamsFrom says where Upstreams come from ("tailnet" or "system").
	UpstreamsFrom string `json:"upstreamsFrom,omitempty"`
	// ExtraRecords counts the tailnet's extra records; Hosts the names answered locally.
	Hosts        int      `json:"hosts"`
	ExtraRecords int      `json:"extraRecords,omitempty"`
	Warnings     []string `json:"warnings,omitempty"`
}

// DNSQueryResult is the helper resolver's answer to one query.
type DNSQueryResult struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Rcode string `json:"rcode"` // NOERROR, NXDOMAIN, SERVFAIL, ...
	// Answers are the answer records in presentation format.
	Answers []string `json:"answers,omitempty"`
	// Via is "local" (answered from the tailnet's names) or the upstream used ("split:corp.example" / "upstream").
	Via       string  `json:"via,omitempty"`
	LatencyMs float64 `json:"latencyMs"`
}

// ExitNodeStatus is the selected exit node.
type ExitNodeStatus struct {
	ID     string     `json:"id"` // StableID ("" while the automatic exit node has no pick)
	Name   string     `json:"name"`
	IP     netip.Addr `json:"ip,omitzero"`
	Online bool       `json:"online"`
	// Auto: the node follows the helper's suggestion (auto:any).
	Auto bool `json:"auto,omitempty"`
}

// FilterStatus are the counters of the inbound packet filter (ACLs from the control server).
type FilterStatus struct {
	Rules    int    `json:"rules"`
	Accepted uint64 `json:"accepted"`
	Dropped  uint64 `json:"dropped"`
	// DroppedBy counts drops per reason ("no rule", "not for us", ...).
	DroppedBy map[string]uint64 `json:"droppedBy,omitempty"`
}

// RoutingStatus is the host routing state the helper keeps.
type RoutingStatus struct {
	// Bypass are the destinations currently kept on the main table (exceptions, other VPNs).
	Bypass []netip.Prefix `json:"bypass,omitempty"`
	// LANRoutes are the directly connected LANs kept local (exit node with LAN access).
	LANRoutes []netip.Prefix `json:"lanRoutes,omitempty"`
	// Forwarding is true while IP forwarding is on for an exit node or subnet router.
	Forwarding bool `json:"forwarding,omitempty"`
	// Masquerade is true while tailnet traffic leaving other interfaces is masqueraded.
	Masquerade bool `json:"masquerade,omitempty"`
	// AcceptedRoutes are peers' subnet routes installed in table 52.
	AcceptedRoutes []netip.Prefix `json:"acceptedRoutes,omitempty"`
}

// Peer is one node of the tailnet as the helper sees it (also used for Self).
type Peer struct {
	ID        int64        `json:"id"`
	StableID  string       `json:"stableID"`
	NodeKey   string       `json:"nodeKey"`
	HostName  string       `json:"hostName"` // the host's own name (Hostinfo)
	DNSName   string       `json:"dnsName"`  // FQDN with trailing dot
	OS        string       `json:"os"`
	UserID    int64        `json:"userID"`
	Addresses []netip.Addr `json:"addresses"`
	Online    bool         `json:"online"`
	LastSeen  *time.Time   `json:"lastSeen,omitempty"`
	KeyExpiry *time.Time   `json:"keyExpiry,omitempty"`
	Expired   bool         `json:"expired,omitempty"`
	Tags      []string     `json:"tags,omitempty"`

	// ExitNodeOption: the peer offers itself as exit node (its AllowedIPs hold a /0).
	ExitNodeOption bool `json:"exitNodeOption,omitempty"`
	// ExitNode: this peer is our exit node now.
	ExitNode bool `json:"exitNode,omitempty"`
	// PrimaryRoutes are the subnet routes this peer serves (installed only with AcceptRoutes).
	PrimaryRoutes []netip.Prefix `json:"primaryRoutes,omitempty"`
	// Location is "City, Country" when the peer reports one.
	Location string `json:"location,omitempty"`
	// SSHHostKeys are the peer's SSH host keys when it runs Tailscale SSH (for Self: ours,
	// while our SSH server runs).
	SSHHostKeys []string `json:"sshHostKeys,omitempty"`

	// Path data (the data plane's view); front ends read it through Path. Active: this device
	// sent the peer tunnel traffic in the last 45 s, as the official client counts. CurAddr is the
	// direct ip:port in use ("" when relayed); Relay is the DERP region code used otherwise (for
	// Self: our home region).
	Active    bool    `json:"active,omitempty"`
	CurAddr   string  `json:"curAddr,omitempty"`
	Relay     string  `json:"relay,omitempty"`
	LatencyMs float64 `json:"latencyMs,omitempty"`
	RxBytes   uint64  `json:"rxBytes"`
	TxBytes   uint64  `json:"txBytes"`
	// LastWrite is when this device last sent the peer tunnel traffic (nil: not since the
	// helper started). LastAddr is the direct ip:port that traffic took, or else LastRelay the
	// DERP region code; both stay after the peer goes idle.
	LastWrite *time.Time `json:"lastWrite,omitempty"`
	LastAddr  string     `json:"lastAddr,omitempty"`
	LastRelay string     `json:"lastRelay,omitempty"`
	// RelayCauses are the cause codes (see Cause) found for a peer that is relayed, most
	// likely first; `skein why PEER` explains them.
	RelayCauses []string `json:"relayCauses,omitempty"`
	// RelayCause is the most likely of them in full (one sentence and its fix), for a front end
	// to show beside the path.
	RelayCause *Cause `json:"relayCause,omitempty"`
}

// PingResult is the answer to one disco ping.
type PingResult struct {
	NodeName string     `json:"nodeName"` // short host name
	NodeIP   netip.Addr `json:"nodeIP"`
	// Endpoint is the direct ip:port that answered; empty when the pong came via DERP.
	Endpoint       string  `json:"endpoint,omitempty"`
	DERPRegionID   int     `json:"derpRegionID,omitempty"`
	DERPRegionCode string  `json:"derpRegionCode,omitempty"`
	LatencySeconds float64 `json:"latencySeconds"`
	// Err is set when no pong came (timeout) or the peer cannot be pinged.
	Err string `json:"err,omitempty"`
}

// NetcheckReport is what the helper learnt about the network from its UDP socket.
type NetcheckReport struct {
	UDP      bool   `json:"udp"`
	GlobalV4 string `json:"globalV4,omitempty"`
	GlobalV6 string `json:"globalV6,omitempty"`
	// MappingVariesByDestIP is nil when fewer than two STUN servers answered.
	MappingVariesByDestIP *bool `json:"mappingVariesByDestIP,omitempty"`
	PreferredDERP         int   `json:"preferredDERP"`
	// RegionLatency maps region ID to latency in seconds; RegionCodes names them.
	RegionLatency map[int]float64 `json:"regionLatency"`
	RegionCodes   map[int]string  `json:"regionCodes"`

	// Time is when the report was made.
	Time time.Time `json:"time,omitzero"`
	// IPv4 and IPv6: a STUN server answered over that family; OSHasIPv6: the host can send
	// IPv6 at all.
	IPv4      bool `json:"ipv4,omitempty"`
	IPv6      bool `json:"ipv6,omitempty"`
	OSHasIPv6 bool `json:"osHasIPv6,omitempty"`
	// RegionV4Latency and RegionV6Latency are per family, in seconds.
	RegionV4Latency map[int]float64 `json:"regionV4Latency,omitempty"`
	RegionV6Latency map[int]float64 `json:"regionV6Latency,omitempty"`
	// RegionNames are the regions' long names.
	RegionNames map[int]string `json:"regionNames,omitempty"`
	// PortMapping is what the router offers; nil when not checked.
	PortMapping *PortMapping `json:"portMapping,omitempty"`
	// Cached: this is the last report, not a new run (only root and the operator start one).
	Cached bool `json:"cached,omitempty"`
}

// PortMapping says which ways of mapping a port the router offers, and the mapping held.
type PortMapping struct {
	UPnP   bool   `json:"upnp"`
	NATPMP bool   `json:"natpmp"`
	PCP    bool   `json:"pcp"`
	Mapped string `json:"mapped,omitempty"` // external ip:port of our mapping, if any
}

// User is a tailnet user profile.
type User struct {
	ID          int64  `json:"id"`
	LoginName   string `json:"loginName"`
	DisplayName string `json:"displayName,omitempty"`
}

// Issue is one typed health problem. Front ends may word known codes themselves (in the
// user's language) from Data, and show Message for the others.
type Issue struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Fix is a command that fixes the problem, when one exists.
	Fix string `json:"fix,omitempty"`
	// Data are the facts the message is made of (e.g. "expiry": an RFC 3339 time, "name": a peer).
	Data map[string]string `json:"data,omitempty"`
}

// Codes of health issues front ends act on.
const (
	// IssueKeyExpiring: this device's node key expires within 7 days (Data "expiry").
	IssueKeyExpiring = "key_expiring"
	// IssueExitNodeOffline: the chosen exit node is unusable; internet traffic is dropped
	// (Data "name").
	IssueExitNodeOffline = "exit_node_offline"
	// IssueNoExitNode: the automatic exit node has no peer to use; internet traffic is dropped.
	IssueNoExitNode = "no_exit_node"
)

// EventKind says what changed.
type EventKind string

const (
	EventState  EventKind = "state"  // State / AuthURL / error changed
	EventNetmap EventKind = "netmap" // peers or self changed
	EventPrefs  EventKind = "prefs"
)

// Event is one message of the watch stream. The first event of every stream carries a full
// Status so that a subscriber never needs a separate GET.
type Event struct {
	Kind   EventKind `json:"kind"`
	Status *Status   `json:"status,omitempty"`
	Prefs  *Prefs    `json:"prefs,omitempty"`
	// Error is set when a background step failed (e.g. login), for the front end to show.
	Error *Error `json:"error,omitempty"`
	// File is set for EventFile: a file arrived in the inbox.
	File *WaitingFile `json:"file,omitempty"`
}

// ErrorCode classifies errors so that front ends can render fixes.
type ErrorCode string

const (
	ErrNeedsOperator     ErrorCode = "needs_operator"
	ErrNeedsRoot         ErrorCode = "needs_root"
	ErrNeedsLogin        ErrorCode = "needs_login"
	ErrHelperUnreachable ErrorCode = "helper_unreachable"
	ErrBadRequest        ErrorCode = "bad_request"
	ErrNotFound          ErrorCode = "not_found"
	ErrLoginFailed       ErrorCode = "login_failed"
	ErrServerUnreachable ErrorCode = "server_unreachable"
	ErrCertUntrusted     ErrorCode = "cert_untrusted"
	ErrInternal          ErrorCode = "internal"
	// ErrNeedsConfirmation: the request would replace something the user may not mean to
	// (another login server): repeat it with the confirmation (Fix says how).
	ErrNeedsConfirmation ErrorCode = "needs_confirmation"
	// ErrBusy: the caller holds too many connections or streams (HTTP 429).
	ErrBusy ErrorCode = "busy"
)

// Error is the body of every non-2xx response, and the value front ends render.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// Fix is a command that fixes the problem, when one exists.
	Fix string `json:"fix,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// FirstIP is the address front ends show for a peer: its IPv4 one when there is one.
func (p *Peer) FirstIP() string {
	for _, a := range p.Addresses {
		if a.Is4() {
			return a.String()
		}
	}
	if len(p.Addresses) > 0 {
		return p.Addresses[0].String()
	}
	return ""
}

// ShortName is the first label of the MagicDNS name, or the host's own name without one.
func (p *Peer) ShortName() string {
	if n, _, _ := strings.Cut(strings.TrimSuffix(p.DNSName, "."), "."); n != "" {
		return n
	}
	return p.HostName
}
