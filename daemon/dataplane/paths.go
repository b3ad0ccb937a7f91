package dataplane

import (
	"github.com/skeinvpn/skein/daemon/wire"
)

// The data plane's view of paths and of the network, for the control session and the IPC:
// callers ask here and never reach into the transport.

// NetInfo describes our network for control: home region, UDP, IPv6, the NAT's mapping and
// the region latencies of the last netcheck.
func (d *Dataplane) NetInfo() *wire.NetInfo { return d.conn.NetInfo() }
