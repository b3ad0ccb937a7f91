// Package wire holds the JSON shapes of the Tailscale control protocol that Skein sends and
// reads (register, map poll, netmap nodes, DERP map, DNS config, packet filter). Field names
// follow the protocol exactly; only the fields Skein uses are declared, the rest are ignored.
package wire

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// NodeID is the control server's numeric node ID.
type NodeID int64

// UserID is the control server's numeric user ID.
type UserID int64

// LogoutExpiry is the past Expiry that asks the server to log the node out (any past time
// works; this is the one the official client sends).
var LogoutExpiry = time.Unix(123, 0).UTC()

// RegisterRequest is the body of POST /machine/register.
type RegisterRequest struct {
	Version          int
	NodeKey          key.NodePublic
	OldNodeKey       key.NodePublic
	NLKey            key.NLPublic
	Auth             *AuthInfo `json:",omitempty"`
	Expiry           time.Time
	Followup         string
	Hostinfo         *Hostinfo
	NodeKeySignature json.RawMessage
}

// AuthInfo carries a pre-auth key.
type AuthInfo struct {
	AuthKey string `json:",omitempty"`
}

// RegisterResponse is the answer to a RegisterRequest.
type RegisterResponse struct {
	User              UserProfile
	Login             Login
	NodeKeyExpired    bool
	MachineAuthorized bool
	AuthURL           string
	Error             string
}

// Login is the login the node registered as.
type Login struct {
	ID          int64
	LoginName   string
	DisplayName string
}

// Hostinfo describes this host to control and, through it, to peers.
type Hostinfo struct {
	IPNVersion    string         `json:",omitempty"`
	BackendLogID  string         `json:",omitempty"`
	OS            string         `json:",omitempty"`
	OSVersion     string         `json:",omitempty"`
	Distro        string         `json:",omitempty"`
	DistroVersion string         `json:",omitempty"`
	Hostname      string         `json:",omitempty"`
	GoArch        string         `json:",omitempty"`
	GoVersion     string         `json:",omitempty"`
	RoutableIPs   []netip.Prefix `json:",omitempty"`
	RequestTags   []string       `json:",omitempty"`
	Services      []Service      `json:",omitempty"`
	NetInfo       *NetInfo       `json:",omitempty"`
	Location      *Location      `json:",omitempty"`
	// ShieldsUp says the host blocks incoming connections (informational, for admin consoles).
	ShieldsUp bool `json:",omitempty"`
	// ExitNodeID is the StableID of the exit node this host uses (informational).
	ExitNodeID string `json:",omitempty"`
	// SSH_HostKeys are the host's SSH public keys as authorized_keys lines without a comment;
	// a node that lists any runs an SSH server that follows the tailnet's SSH policy.
	SSH_HostKeys []string `json:"sshHostKeys,omitempty"`
}

// Location is where a node says it is (exit-node pickers show it).
type Location struct {
	Country     string `json:",omitempty"`
	CountryCode string `json:",omitempty"`
	City        string `json:",omitempty"`
	CityCode    string `json:",omitempty"`
	Priority    int    `json:",omitempty"`
}

// Service is a port the host offers (peerapi and friends).
type Service struct {
	Proto       string
	Port        uint16
	Description string `json:",omitempty"`
}

// NetInfo is what the host learnt about its network (home DERP, UDP, NAT).
type NetInfo struct {
	MappingVariesByDestIP *bool              `json:",omitempty"`
	WorkingIPv6           *bool              `json:",omitempty"`
	OSHasIPv6             *bool              `json:",omitempty"`
	WorkingUDP            *bool              `json:",omitempty"`
	PreferredDERP         int                `json:",omitempty"`
	DERPLatency           map[string]float64 `json:",omitempty"`
	// HavePortMap: the node holds a port mapping on its router (UPnP, NAT-PMP or PCP).
	HavePortMap bool `json:",omitempty"`
}

// MapRequest is the body of POST /machine/map.
type MapRequest struct {
	Version       int
	Compress      string
	KeepAlive     bool
	NodeKey       key.NodePublic
	DiscoKey      key.DiscoPublic
	Stream        bool
	Hostinfo      *Hostinfo
	Endpoints     []netip.AddrPort `json:",omitempty"`
	EndpointTypes []int            `json:",omitempty"`
	OmitPeers     bool             `json:",omitempty"`
}

// MapResponse is one message of the map stream; zero fields mean "unchanged".
type MapResponse struct {
	KeepAlive         bool                    `json:",omitempty"`
	Node              *Node                   `json:",omitempty"`
	DERPMap           *DERPMap                `json:",omitempty"`
	Peers             []*Node                 `json:",omitempty"`
	PeersChanged      []*Node                 `json:",omitempty"`
	PeersRemoved      []NodeID                `json:",omitempty"`
	PeersChangedPatch []*PeerChange           `json:",omitempty"`
	PeerSeenChange    map[NodeID]bool         `json:",omitempty"`
	OnlineChange      map[NodeID]bool         `json:",omitempty"`
	DNSConfig         *DNSConfig              `json:",omitempty"`
	Domain            string                  `json:",omitempty"`
	PacketFilter      []FilterRule            `json:",omitempty"`
	PacketFilters     map[string][]FilterRule `json:",omitempty"`
	UserProfiles      []UserProfile           `json:",omitempty"`
	ControlTime       *time.Time              `json:",omitempty"`
	Health            []string                `json:",omitempty"`
	// SSHPolicy replaces the SSH policy when set; nil means unchanged.
	SSHPolicy *SSHPolicy `json:",omitempty"`
}

// Node is a tailnet node: the self node or a peer.
type Node struct {
	ID                NodeID
	StableID          string
	Name              string // FQDN with trailing dot
	User              UserID
	Key               key.NodePublic
	KeyExpiry         time.Time
	Machine           key.MachinePublic
	DiscoKey          key.DiscoPublic
	Addresses         []netip.Prefix
	AllowedIPs        []netip.Prefix
	Endpoints         []netip.AddrPort
	DERP              string `json:",omitempty"` // legacy "127.3.3.40:<region>"
	HomeDERP          int    `json:",omitempty"`
	Hostinfo          *Hostinfo
	Created           time.Time
	Cap               int                        `json:",omitempty"`
	Tags              []string                   `json:",omitempty"`
	PrimaryRoutes     []netip.Prefix             `json:",omitempty"`
	LastSeen          *time.Time                 `json:",omitempty"`
	Online            *bool                      `json:",omitempty"`
	MachineAuthorized bool                       `json:",omitempty"`
	CapMap            map[string]json.RawMessage `json:",omitempty"`
	Expired           bool                       `json:",omitempty"`
	// IsJailed: this peer may not open connections to us (control's client-side jailing,
	// capability version 94); replies to ours still pass.
	IsJailed bool `json:",omitempty"`
}

// PeerChange is a partial update of one peer; set fields replace, zero fields are unchanged.
type PeerChange struct {
	NodeID     NodeID
	DERPRegion int                        `json:",omitempty"`
	Cap        int                        `json:",omitempty"`
	CapMap     map[string]json.RawMessage `json:",omitempty"`
	Endpoints  []netip.AddrPort           `json:",omitempty"`
	Key        *key.NodePublic            `json:",omitempty"`
	DiscoKey   *key.DiscoPublic           `json:",omitempty"`
	Online     *bool                      `json:",omitempty"`
	LastSeen   *time.Time                 `json:",omitempty"`
	KeyExpiry  *time.Time                 `json:",omitempty"`
}

// UserProfile names a user.
type UserProfile struct {
	ID            UserID
	LoginName     string
	DisplayName   string
	ProfilePicURL string `json:",omitempty"`
}

// DERPMap lists the relay regions.
type DERPMap struct {
	Regions            map[int]*DERPRegion
	OmitDefaultRegions bool `json:"omitDefaultRegions,omitempty"`
}

// DERPRegion is one relay region.
type DERPRegion struct {
	RegionID   int
	RegionCode string
	RegionName string
	Avoid      bool `json:",omitempty"`
	// NoMeasureNoHome: never measure this region nor pick it as home (it stays usable to reach
	// peers whose home it is).
	NoMeasureNoHome bool `json:",omitempty"`
	Nodes           []*DERPNode
}

// DERPNode is one relay server of a region.
type DERPNode struct {
	Name             string
	RegionID         int
	HostName         string
	CertName         string `json:",omitempty"`
	IPv4             string `json:",omitempty"`
	IPv6             string `json:",omitempty"`
	STUNPort         int    `json:",omitempty"`
	STUNOnly         bool   `json:",omitempty"`
	DERPPort         int    `json:",omitempty"`
	InsecureForTests bool   `json:",omitempty"`
	CanPort80        bool   `json:",omitempty"`
}

// DNSConfig is the tailnet's DNS settings.
type DNSConfig struct {
	Resolvers         []*Resolver            `json:",omitempty"`
	Routes            map[string][]*Resolver `json:",omitempty"`
	FallbackResolvers []*Resolver            `json:",omitempty"`
	Domains           []string               `json:",omitempty"`
	Proxied           bool                   `json:",omitempty"`
	ExtraRecords      []DNSRecord            `json:",omitempty"`
	Nameservers       []netip.Addr           `json:",omitempty"`
	// CertDomains are the names control issues TLS certificates for (Tailscale's service;
	// Headscale sends none).
	CertDomains []string `json:",omitempty"`
}

// Resolver is one upstream DNS resolver.
type Resolver struct {
	Addr                string       `json:",omitempty"`
	BootstrapResolution []netip.Addr `json:",omitempty"`
}

// DNSRecord is an extra record served by MagicDNS.
type DNSRecord struct {
	Name  string
	Type  string `json:",omitempty"`
	Value string
}

// FilterRule is one packet-filter rule; addresses stay strings (they carry ranges and "*").
type FilterRule struct {
	SrcIPs   []string
	DstPorts []NetPortRange    `json:",omitempty"`
	IPProto  []int             `json:",omitempty"`
	CapGrant []json.RawMessage `json:",omitempty"`
}

// NetPortRange is a destination and a port range.
type NetPortRange struct {
	IP    string
	Ports PortRange
}

// PortRange is an inclusive port range.
type PortRange struct {
	First uint16
	Last  uint16
}

// SSHPolicy says who may log in over SSH as whom. The first rule that matches a connection
// decides; a connection no rule matches is refused.
type SSHPolicy struct {
	Rules []*SSHRule `json:"rules"`
}

// SSHRule matches connections by the peer's identity and the requested user.
type SSHRule struct {
	// RuleExpires: past this time the rule matches nothing.
	RuleExpires *time.Time      `json:"ruleExpires,omitempty"`
	Principals  []*SSHPrincipal `json:"principals"`
	// SSHUsers maps a requested user (or "*" for any) to the local user: "=" is the same
	// name, "" means this rule does not match that user.
	SSHUsers map[string]string `json:"sshUsers"`
	// Action is taken when the rule matches; nil denies.
	Action *SSHAction `json:"action"`
	// AcceptEnv are patterns (with * and ?) of environment variables the client may set.
	AcceptEnv []string `json:"acceptEnv,omitempty"`
}

// SSHPrincipal matches a peer: any one set field that matches is enough.
type SSHPrincipal struct {
	Node      string `json:"node,omitempty"` // StableID
	NodeIP    string `json:"nodeIP,omitempty"`
	UserLogin string `json:"userLogin,omitempty"`
	Any       bool   `json:"any,omitempty"`
}

// SSHAction is what happens to a matching connection.
type SSHAction struct {
	// Message is shown to the user (an authentication banner).
	Message string `json:"message,omitempty"`
	Reject  bool   `json:"reject,omitempty"`
	Accept  bool   `json:"accept,omitempty"`
	// SessionDuration (nanoseconds) ends sessions after that long; 0 = no limit.
	SessionDuration time.Duration `json:"sessionDuration,omitempty"`

	AllowAgentForwarding      bool `json:"allowAgentForwarding,omitempty"`
	AllowLocalPortForwarding  bool `json:"allowLocalPortForwarding,omitempty"`
	AllowRemotePortForwarding bool `json:"allowRemotePortForwarding,omitempty"`

	// HoldAndDelegate is a URL on the control server that decides later (re-authentication in
	// check mode); Recorders are session recorders that must receive the session. Skein
	// supports neither and refuses what needs them. Recorders stay strings so that one bad
	// entry cannot make a whole map response unreadable.
	HoldAndDelegate    string          `json:"holdAndDelegate,omitempty"`
	Recorders          []string        `json:"recorders,omitempty"`
	OnRecordingFailure json.RawMessage `json:"onRecordingFailure,omitempty"`
}
