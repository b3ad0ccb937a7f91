// Package sessionhelper is the privileged component behind Tailscale SSH (and, later,
// sharing files as their owner): skeind itself runs with only CAP_NET_ADMIN and CAP_NET_RAW in
// a strict sandbox and can never act as another user, so it hands each accepted connection,
// with the peer's identity, to this helper over a root-only Unix socket.
//
// The helper is the same binary (`skeind --session-helper`) in another systemd unit,
// socket-activated on /run/skein-session-helper.sock (mode 0600, root); without systemd it is
// started directly, or a skeind that is fully root starts one of its own over a socket pair.
// One control connection per skeind: it carries the host keys and the SSH policy, then
// policy updates and connections (a descriptor each). When skeind hangs up — SSH was turned
// off, or skeind went away — every session it started ends with it: the policy could no
// longer be kept current.
package sessionhelper

import (
	"encoding/json"

	"github.com/skeinvpn/skein/daemon/sshserver"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/unixmsg"
)

// DefaultSocket is where the systemd socket unit listens.
const DefaultSocket = "/run/skein-session-helper.sock"

// ChildArg is the first argument of a helper that a fully privileged skeind started itself;
// it serves the socket pair on descriptor 3.
const ChildArg = "session-helper-child"

// protocolVersion changes when the messages below change incompatibly.
const protocolVersion = 1

// Message types.
const (
	typeHello  = "hello"    // skeind → helper: hello
	typeReady  = "ready"    // helper → skeind, answers hello
	typeError  = "error"    // helper → skeind, answers hello: errorMsg
	typePolicy = "policy"   // skeind → helper: policyMsg
	typeConn   = "ssh-conn" // skeind → helper with the connection: connMsg
	// typeFiles asks for a file server for `skein serve --bg PATH` (filesMsg); the helper
	// answers typeFilesReply (filesReply) with the server's socket attached, or the error.
	typeFiles      = "file-server"
	typeFilesReply = "file-server-reply"
)

type filesMsg struct {
	unixmsg.Header
	ID uint64 `json:"id"`
	// UID asked for the share (skeind read it from the requesting socket's credentials).
	UID  uint32 `json:"uid"`
	Path string `json:"path"`
}

type filesReply struct {
	unixmsg.Header
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}

type hello struct {
	unixmsg.Header
	Version  int             `json:"version"`
	HostKeys [][]byte        `json:"hostKeys"` // PEM private keys
	Policy   *wire.SSHPolicy `json:"policy,omitempty"`
}

type errorMsg struct {
	unixmsg.Header
	Error string `json:"error"`
}

type policyMsg struct {
	unixmsg.Header
	Policy *wire.SSHPolicy `json:"policy"`
}

type connMsg struct {
	unixmsg.Header
	Identity sshserver.Identity `json:"identity"`
}

// decode reads a message of the type its header names.
func decode[T any](body []byte) (T, error) {
	var v T
	err := json.Unmarshal(body, &v)
	return v, err
}
