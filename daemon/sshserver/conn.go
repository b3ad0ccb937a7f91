package sshserver

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/daemon/sshchild"
	"github.com/skeinvpn/skein/daemon/sshpolicy"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/userdb"
)

// Version is the server's SSH identification string.
const Version = "SSH-2.0-Skein"

// authTimeout bounds the handshake and authentication of a connection.
const authTimeout = time.Minute

// Banners, as the official server words them (clients and scripts match on them).
const (
	bannerNotPermitted     = "tailscale: tailnet policy does not permit you to SSH to this node\n"
	bannerUserNotPermitted = "tailscale: tailnet policy does not permit you to SSH as user %q\n"
	bannerDenied           = "tailscale: access denied"
)

// errTerminal ends authentication at once: an empty partial success offers no further method.
var errTerminal = &ssh.PartialSuccessError{}

// conn is one SSH connection.
type conn struct {
	s    *Server
	id   Identity
	spac ssh.ServerPreAuthConn

	// Set by a successful authentication, then fixed.
	sshUser string
	user    userdb.User
	child   sshchild.Identity
	action  *wire.SSHAction

	sc *ssh.ServerConn

	mu       sync.Mutex
	sessions map[*session]struct{}
	ending   string // why the connection is being ended, for sessions that start now
	sockets  *sshchild.User
	agentLn  net.Listener
	agent    string // the agent socket's path, once made
	forwards map[string]net.Listener
	done     bool
}

func (c *conn) String() string {
	return fmt.Sprintf("%v (%s, %s) as %q", c.id.Src, c.id.NodeName, c.id.UserLogin, c.sshUser)
}

func (c *conn) peer() sshpolicy.Peer {
	return sshpolicy.Peer{Addr: c.id.Src.Addr(), StableID: c.id.StableID, UserLogin: c.id.UserLogin}
}

// HandleConn serves one connection until it ends. nc is closed when it returns.
func (s *Server) HandleConn(nc net.Conn, id Identity) {
	c := &conn{s: s, id: id, sessions: map[*session]struct{}{}, forwards: map[string]net.Listener{}}
	cfg := &ssh.ServerConfig{
		ServerVersion:        Version,
		NoClientAuth:         true,
		PreAuthConnCallback:  func(p ssh.ServerPreAuthConn) { c.spac = p },
		NoClientAuthCallback: c.auth,
		// Clients that offer a password or a key straight away get the same decision: the
		// tailnet identity is what counts, whatever they send.
		PasswordCallback:  func(cm ssh.ConnMetadata, _ []byte) (*ssh.Permissions, error) { return c.auth(cm) },
		PublicKeyCallback: func(cm ssh.ConnMetadata, _ ssh.PublicKey) (*ssh.Permissions, error) { return c.auth(cm) },
	}
	for _, k := range s.opts.HostKeys {
		cfg.AddHostKey(k)
	}
	nc.SetDeadline(time.Now().Add(authTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		s.opts.Logf("ssh: %v (%s): %v", id.Src, id.NodeName, err)
		nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	c.sc = sc
	if !s.add(c) {
		sc.Close()
		return
	}
	defer s.remove(c)
	// The policy may have changed while the client authenticated.
	if !c.stillAllowed() {
		s.opts.Logf("ssh: %v: policy changed during authentication; closing", c)
		sc.Close()
		return
	}
	s.opts.Logf("ssh: %v: logged in as %s (uid %d)", c, c.user.Name, c.user.UID)
	go c.globalRequests(reqs)
	var wg sync.WaitGroup
	for nch := range chans {
		switch nch.ChannelType() {
		case "session":
			wg.Go(func() { c.session(nch) })
		case "direct-tcpip":
			wg.Go(func() { c.directTCPIP(nch) })
		default:
			// Unix sockets, X11 and anything else: not offered.
			nch.Reject(ssh.Prohibited, "not allowed on this server")
		}
	}
	c.cleanup()
	wg.Wait()
}

// auth decides a login by the tailnet policy alone. Any refusal ends the connection with a
// banner that says why; nothing is started for a refused login.
func (c *conn) auth(cm ssh.ConnMetadata) (*ssh.Permissions, error) {
	name := cm.User()
	deny := func(banner, why string) error {
		c.s.opts.Logf("ssh: %v (%s) as %q: refused: %s", c.id.Src, c.id.NodeName, name, why)
		if c.spac != nil && banner != "" {
			c.spac.SendAuthBanner(banner)
		}
		return errTerminal
	}
	if err := userdb.ValidLoginName(name); err != nil {
		return nil, deny(fmt.Sprintf("tailscale: %q is not a valid user name\n", name), err.Error())
	}
	d := sshpolicy.Evaluate(c.s.currentPolicy(), c.peer(), name, c.s.opts.Now())
	switch d.Result {
	case sshpolicy.NoPolicy, sshpolicy.Rejected:
		return nil, deny(bannerNotPermitted, d.Result.String())
	case sshpolicy.RejectedUser:
		return nil, deny(fmt.Sprintf(bannerUserNotPermitted, name), d.Result.String())
	}
	a := d.Action
	switch {
	case a.Reject:
		msg := a.Message
		if msg == "" {
			msg = bannerDenied
		}
		return nil, deny(msg, fmt.Sprintf("rule %d rejects", d.Rule))
	case !a.Accept:
		if what := sshpolicy.Unsupported(a); what != "" {
			return nil, deny(fmt.Sprintf("tailscale: the tailnet policy requires %s, which this node does not support\n", what), what)
		}
		return nil, deny(bannerDenied+"\n", fmt.Sprintf("rule %d has no action Skein understands", d.Rule))
	}
	if what := sshpolicy.Unsupported(a); what != "" {
		return nil, deny(fmt.Sprintf("tailscale: the tailnet policy requires %s, which this node does not support\n", what), what)
	}
	u, err := c.s.opts.LookupUser(d.LocalUser)
	if err != nil {
		return nil, deny(fmt.Sprintf("tailscale: failed to look up local user %q\n", d.LocalUser), err.Error())
	}
	groups, err := c.s.opts.Groups(u)
	if err != nil {
		return nil, deny("tailscale: failed to look up local user's group IDs\n", err.Error())
	}
	if a.Message != "" && c.spac != nil {
		c.spac.SendAuthBanner(a.Message)
	}
	c.sshUser, c.user, c.action = name, u, a
	c.child = sshchild.Identity{UID: u.UID, GID: u.GID, Groups: groups, Home: u.Home}
	return &ssh.Permissions{}, nil
}

// stillAllowed re-evaluates the connection under the current policy.
func (c *conn) stillAllowed() bool {
	return sshpolicy.StillAllows(c.s.currentPolicy(), c.peer(), c.sshUser, c.user.Name, c.s.opts.Now())
}

// terminate ends every session with msg (on its stderr), then the connection. It returns
// once the sessions are gone.
func (c *conn) terminate(msg string) {
	c.mu.Lock()
	if c.ending == "" {
		c.ending = msg
	}
	sessions := make([]*session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Go(func() { s.end(msg) })
	}
	wg.Wait()
	c.sc.Close()
}

// endingReason is set once the connection is being ended.
func (c *conn) endingReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ending
}

func (c *conn) addSession(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ending != "" || c.done {
		return false
	}
	c.sessions[s] = struct{}{}
	return true
}

func (c *conn) removeSession(s *session) {
	c.mu.Lock()
	delete(c.sessions, s)
	c.mu.Unlock()
}

// userSockets is the user's socket process, started on first use.
func (c *conn) userSockets() (*sshchild.User, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil, errors.New("connection closed")
	}
	if c.sockets == nil {
		u, err := sshchild.StartUser(c.child)
		if err != nil {
			return nil, err
		}
		c.sockets = u
	}
	return c.sockets, nil
}

// cleanup closes what the connection opened for the user once it has ended.
func (c *conn) cleanup() {
	c.mu.Lock()
	c.done = true
	sessions := make([]*session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	fwds := c.forwards
	c.forwards = map[string]net.Listener{}
	agent, sockets := c.agentLn, c.sockets
	c.mu.Unlock()
	for _, s := range sessions {
		s.end("")
	}
	for _, ln := range fwds {
		ln.Close()
	}
	if agent != nil {
		agent.Close()
	}
	if sockets != nil {
		sockets.Close()
	}
	c.s.opts.Logf("ssh: %v: connection closed", c)
}
