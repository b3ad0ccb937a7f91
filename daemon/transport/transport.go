// Package transport is Skein's "magicsock": a wireguard-go conn.Bind that carries WireGuard and
// disco over one UDP socket per address family and over DERP relays, and picks for every peer
// the best path (a verified direct ip:port, else the peer's home DERP region).
//
// This file is the package's contract; the rest implements it.
//
//   - *Conn is a conn.Bind. wireguard-go opens and closes it; the data plane feeds it the
//     tailnet (SetPrivateKey, SetDERPMap, SetPeers) and reads it back (Endpoints, NetInfo,
//     PeerPath, Diagnose, Ping, Netcheck).
//   - The conn.Endpoint wireguard-go gets for a peer is the peer itself (ParseEndpoint takes the
//     node key): the transport changes a peer's path without wireguard-go seeing a roam.
//   - WireGuard packets are accepted only from an address disco verified for a peer, or over
//     DERP from the peer's node key. Disco and STUN never reach wireguard-go.
//   - Our own endpoints, home region and network facts change underneath: OnEndpointsChanged
//     says so, and the caller reports them to control.
//   - When the network changes (NetworkChanged from the host's netlink watcher, a direct path
//     that stops answering while traffic flows, a peer that sees us at a new address), the
//     transport re-learns its public address at once, falls back to DERP for the peers whose
//     direct path went quiet, and tells active peers its new endpoints (CallMeMaybe).
//   - A PortMapper, when given, asks the router for a mapping of our port; the mapped address
//     is advertised first.
package transport

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netcheck"
)

var (
	_ conn.Bind     = (*Conn)(nil)
	_ conn.Endpoint = (*peerEndpoint)(nil)
)

// PeerConfig is what the transport needs to know of one peer, from the netmap.
type PeerConfig struct {
	NodeKey   key.NodePublic
	DiscoKey  key.DiscoPublic
	Endpoints []netip.AddrPort
	HomeDERP  int
	Name      string
}

// Options configure a Conn.
type Options struct {
	Port     uint16 // 0 = random
	Mark     uint32 // SO_MARK for our sockets so they bypass the tunnel's routes
	DiscoKey key.DiscoPrivate
	Logf     func(format string, args ...any)
	// OnEndpointsChanged is called (from a transport goroutine) when our own endpoints, home
	// DERP or netcheck report change, so control can be told.
	OnEndpointsChanged func()
	// OnHandshake is called, before wireguard-go sees the packet, for each WireGuard handshake
	// initiation a known peer sends us, so that a peer configured in WireGuard only on demand
	// can be configured in time to answer it. It runs on the receive path: keep it short.
	OnHandshake func(key.NodePublic)
	// DERPDialContext overrides how DERP TCP connections are made (tests); nil = default.
	DERPDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// PortMapper, when set, maps our UDP port on the router; nil = no port mapping.
	PortMapper PortMapper
}

// PortMapper asks the local router for a mapping of our UDP port (UPnP IGD, NAT-PMP, PCP), so
// that peers reach us through a NAT that would otherwise map per destination. The transport
// sets the port when its socket opens and calls Close when it shuts down; the mapper calls
// Conn.PortMapChanged whenever the mapping appears, moves or goes.
type PortMapper interface {
	// SetLocalPort sets the local UDP port to map; 0 releases the mapping.
	SetLocalPort(port uint16)
	// Mapping returns the external address of the mapping held now (ok false while none is:
	// the mapper keeps trying in the background).
	Mapping() (external netip.AddrPort, ok bool)
	// Probe reports which protocols the router answers, for netcheck.
	Probe(ctx context.Context) (PortMapProbe, error)
	// Close releases the mapping on the router.
	Close() error
}

// ErrPortMapOff is what PortMapper.Probe returns while port mapping is turned off: netcheck
// then says "not checked".
var ErrPortMapOff = errors.New("port mapping is turned off")

// PortMapProbe is what the router offers.
type PortMapProbe struct {
	UPnP, PMP, PCP bool
}

// Endpoint is one of our own candidate addresses, with its type as control wants it.
type Endpoint struct {
	Addr netip.AddrPort
	Type EndpointType
}

// EndpointType is how we learnt an endpoint (the values control uses).
type EndpointType int

const (
	EndpointLocal          EndpointType = 1 // an address of one of our interfaces
	EndpointSTUN           EndpointType = 2 // what a STUN server saw
	EndpointPortmapped     EndpointType = 3 // a mapping the router gave us
	EndpointSTUN4LocalPort EndpointType = 4 // the STUN address with our local port: a manual port forward
)

// Report is what a netcheck learnt about our network.
type Report = netcheck.Report

// PathInfo is the current path to a peer, for status.
type PathInfo struct {
	Direct     netip.AddrPort // valid when a direct path is trusted
	DERPRegion int            // region used when not direct
	Latency    time.Duration
	LastSend   time.Time
	LastRecv   time.Time
	TxBytes    uint64
	RxBytes    uint64
	// Active: tunnel traffic was sent to the peer in the last 45 s, the official client's rule.
	// It is the window in which heartbeats keep the direct path alive, so an active peer is never
	// shown relayed merely because its direct path was left to lapse.
	Active bool
	// LastDirect / LastDERPRegion: the path of the latest traffic (one of them set), kept after
	// the session ends; both zero when nothing was sent since the peer was added.
	LastDirect     netip.AddrPort
	LastDERPRegion int
}

// PingResult is the answer to one disco ping.
type PingResult struct {
	Endpoint   netip.AddrPort // the direct address that answered
	DERPRegion int            // the region that answered, when via DERP
	Latency    time.Duration
	Err        string
}
