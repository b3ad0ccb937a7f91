// Package sshserver is Tailscale SSH as the session helper runs it: an SSH server on
// connections skeind hands over (already checked to come through the tunnel from a peer), that
// lets a peer in by the tailnet's SSH policy — no keys, no passwords — as the local user the
// policy names, and ends sessions the moment a new policy no longer allows them.
//
// It runs as root, but never as the user: every program of a session, SFTP, the agent socket
// and the sockets of forwarded ports are made by children that have already dropped to the
// user (daemon/sshchild). The server itself only speaks SSH and moves bytes.
package sshserver

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/userdb"
)

// Identity is who is on the other end of a connection, as skeind established it from the
// tunnel: the source address is WireGuard-authenticated and the rest comes from the network
// map entry of that address. Nothing in it comes from the SSH client.
type Identity struct {
	Src       netip.AddrPort `json:"src"`
	Dst       netip.AddrPort `json:"dst"`
	NodeID    int64          `json:"nodeID"`
	StableID  string         `json:"stableID"`
	NodeName  string         `json:"nodeName"` // FQDN
	UserLogin string         `json:"userLogin,omitempty"`
	Tagged    bool           `json:"tagged,omitempty"`
}

// Options configure a Server.
type Options struct {
	HostKeys []ssh.Signer
	Logf     func(string, ...any)
	// Now is the clock for rule expiry (tests).
	Now func() time.Time
	// LookupUser finds a local account by its login name; nil = userdb.LookupLogin.
	LookupUser func(string) (userdb.User, error)
	// Groups lists an account's groups; nil = userdb.Groups.
	Groups func(userdb.User) ([]uint32, error)
}

// Server serves SSH connections under one policy at a time.
type Server struct {
	opts Options

	mu     sync.Mutex
	policy *wire.SSHPolicy
	conns  map[*conn]struct{}
	closed bool
}

// New returns a server that allows nothing until SetPolicy gives it a policy.
func New(o Options) *Server {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LookupUser == nil {
		o.LookupUser = userdb.LookupLogin
	}
	if o.Groups == nil {
		o.Groups = userdb.Groups
	}
	return &Server{opts: o, conns: map[*conn]struct{}{}}
}

// SetPolicy replaces the policy (nil: none, which denies all) and ends every open
// connection the new one no longer allows, as the same local user, with "Access revoked."
func (s *Server) SetPolicy(p *wire.SSHPolicy) {
	s.mu.Lock()
	s.policy = p
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if !c.stillAllowed() {
			s.opts.Logf("ssh: %v: no longer allowed by the tailnet policy; closing", c)
			c.terminate("Access revoked.")
		}
	}
}

func (s *Server) currentPolicy() *wire.SSHPolicy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

// Close ends every connection and refuses new ones (Tailscale SSH was switched off).
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.terminate("Tailscale SSH was turned off on this machine.") })
	}
	wg.Wait()
}

// Conns is the number of connections open now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}
