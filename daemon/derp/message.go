package derp

import (
	"fmt"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// Message is something received from a DERP server: *ReceivedPacket, PeerGone, PingMessage,
// PongMessage, KeepAliveMessage, ServerInfoMessage, HealthMessage or ServerRestartingMessage.
type Message interface{ derpMessage() }

// ReceivedPacket is a packet relayed from Source. It is always delivered as a *ReceivedPacket
// owned by the Client: the struct and Data are reused and valid only until the next Recv
// (for a RegionClient: until the callback returns). Copy what you keep.
type ReceivedPacket struct {
	Source key.NodePublic
	Data   []byte
}

// PeerGoneReason says why the server sent PeerGone.
type PeerGoneReason byte

const (
	// PeerGoneDisconnected: a peer that sent us packets has disconnected from this server.
	PeerGoneDisconnected PeerGoneReason = 0x00
	// PeerGoneNotHere: we sent to a key not connected to this server. Servers send it only for
	// disco-looking packets, rate-limited, so its absence proves nothing.
	PeerGoneNotHere PeerGoneReason = 0x01
)

func (r PeerGoneReason) String() string {
	switch r {
	case PeerGoneDisconnected:
		return "disconnected"
	case PeerGoneNotHere:
		return "not-here"
	}
	return fmt.Sprintf("reason-%#02x", byte(r))
}

// PeerGone reports that Peer is not (or no longer) reachable through this server.
type PeerGone struct {
	Peer   key.NodePublic
	Reason PeerGoneReason
}

// PingMessage is a ping from the server. The Client has already answered it with a Pong.
type PingMessage [8]byte

// PongMessage answers a ping sent with SendPing or Ping.
type PongMessage [8]byte

// KeepAliveMessage is the server's periodic (~60 s) no-op frame.
type KeepAliveMessage struct{}

// ServerInfoMessage is the server's answer to the handshake. It is the first message Recv
// returns on every connection. Non-zero token-bucket values make the client drop sends
// beyond that rate.
type ServerInfoMessage struct {
	TokenBucketBytesPerSecond int
	TokenBucketBytesBurst     int
}

// HealthMessage carries the server's view of its own health; an empty Problem means healthy.
type HealthMessage struct{ Problem string }

// ServerRestartingMessage announces a server restart: reconnect after ReconnectIn and keep
// trying for TryFor.
type ServerRestartingMessage struct {
	ReconnectIn time.Duration
	TryFor      time.Duration
}

// The pointer receiver makes `case derp.ReceivedPacket:` a compile error instead of a case
// that silently never matches.
func (*ReceivedPacket) derpMessage()         {}
func (PeerGone) derpMessage()                {}
func (PingMessage) derpMessage()             {}
func (PongMessage) derpMessage()             {}
func (KeepAliveMessage) derpMessage()        {}
func (ServerInfoMessage) derpMessage()       {}
func (HealthMessage) derpMessage()           {}
func (ServerRestartingMessage) derpMessage() {}
