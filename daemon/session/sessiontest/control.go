// Package sessiontest is a fake control server for tests of the session and of its owners: it
// registers node keys (pre-auth keys or interactive logins a test approves), serves map polls
// whose responses the test sends, records lite updates, and fails on request.
package sessiontest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/wire"
)

// HTTPError is a non-200 answer (it has the HTTPStatus method the session looks for).
type HTTPError struct{ Status int }

func (e *HTTPError) Error() string   { return fmt.Sprintf("control: HTTP %d", e.Status) }
func (e *HTTPError) HTTPStatus() int { return e.Status }

// ErrUnreachable is what a stopped server answers, as the network stack reports it.
var ErrUnreachable error = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

// Server is one fake control server; Dial gives clients of it.
type Server struct {
	mu sync.Mutex
	// AuthKeys are the pre-auth keys it accepts (and whose user they register); an empty key
	// means an interactive login.
	authKeys  map[string]keyUser
	nodes     map[key.NodePublic]*Node
	pending   map[string]chan *wire.RegisterResponse // AuthURL → the follow-up waiting for it
	down      bool
	nextID    wire.NodeID
	nextURL   int
	polls     chan *Poll
	updates   []*wire.MapRequest
	registers []*wire.RegisterRequest
	// UpdateHook, when set, decides the answer to a lite update.
	updateHook func(*wire.MapRequest) error
	changed    chan struct{}
}

// keyUser is the user a pre-auth key registers nodes for.
type keyUser struct {
	id    wire.UserID
	login string
}

// Node is a registered node.
type Node struct {
	ID      wire.NodeID
	Key     key.NodePublic
	Expired bool
	User    wire.UserID
	Login   string
	Addr    netip.Addr
}

// NewServer returns a server that accepts the given pre-auth keys.
func NewServer(authKeys ...string) *Server {
	s := &Server{authKeys: map[string]keyUser{}, nodes: map[key.NodePublic]*Node{}, pending: map[string]chan *wire.RegisterResponse{},
		polls: make(chan *Poll, 16), changed: make(chan struct{}), nextID: 1}
	for _, k := range authKeys {
		s.authKeys[k] = keyUser{1, "alice@example"}
	}
	return s
}

// AddAuthKey accepts another pre-auth key, which registers nodes of the given user.
func (s *Server) AddAuthKey(authKey string, user wire.UserID, loginName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authKeys[authKey] = keyUser{user, loginName}
}

func (s *Server) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Dial returns a client of this server (the server URL is only recorded).
func (s *Server) Dial(server string) (session.Control, error) {
	return &client{s: s, url: server}, nil
}

// SetDown makes every request fail as if the server were unreachable; open polls break.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.signalLocked()
	s.mu.Unlock()
}

// Expire marks a node's key as expired: its next registration refresh says so.
func (s *Server) Expire(k key.NodePublic) {
	s.mu.Lock()
	if n := s.nodes[k]; n != nil {
		n.Expired = true
	}
	s.mu.Unlock()
}

// Remove forgets a node (as `headscale nodes delete`).
func (s *Server) Remove(k key.NodePublic) {
	s.mu.Lock()
	delete(s.nodes, k)
	s.mu.Unlock()
}

// AddNode registers a node key as if it had logged in before (e.g. for a state file a test
// writes).
func (s *Server) AddNode(k key.NodePublic, user wire.UserID, loginName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addNodeLocked(k, keyUser{user, loginName})
}

// Node returns the registered node of a key, or nil.
func (s *Server) Node(k key.NodePublic) *Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[k]; n != nil {
		c := *n
		return &c
	}
	return nil
}

// Approve completes the interactive login waiting at authURL.
func (s *Server) Approve(authURL string) error {
	s.mu.Lock()
	ch := s.pending[authURL]
	s.mu.Unlock()
	if ch == nil {
		return fmt.Errorf("no login pending at %s", authURL)
	}
	ch <- nil
	return nil
}

// Updates returns the lite updates received so far.
func (s *Server) Updates() []*wire.MapRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wire.MapRequest(nil), s.updates...)
}

// Registers returns the registration requests received so far.
func (s *Server) Registers() []*wire.RegisterRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wire.RegisterRequest(nil), s.registers...)
}

// SetUpdateHook decides the answer to lite updates (nil: accept).
func (s *Server) SetUpdateHook(f func(*wire.MapRequest) error) {
	s.mu.Lock()
	s.updateHook = f
	s.mu.Unlock()
}

// NextPoll waits for the next map poll a client opens.
func (s *Server) NextPoll(ctx context.Context) (*Poll, error) {
	select {
	case p := <-s.polls:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// SelfNode is the wire form of a registered node, as its first map response carries it.
func (n *Node) SelfNode() *wire.Node {
	return &wire.Node{
		ID: n.ID, StableID: fmt.Sprintf("n%d", n.ID), Name: fmt.Sprintf("node%d.tail.example.", n.ID),
		User: n.User, Key: n.Key, Addresses: []netip.Prefix{netip.PrefixFrom(n.Addr, 32)},
		Hostinfo: &wire.Hostinfo{Hostname: fmt.Sprintf("node%d", n.ID), OS: "linux"},
	}
}

func (s *Server) register(ctx context.Context, req *wire.RegisterRequest) (*wire.RegisterResponse, error) {
	s.mu.Lock()
	s.registers = append(s.registers, req)
	if s.down {
		s.mu.Unlock()
		return nil, ErrUnreachable
	}
	resp := &wire.RegisterResponse{MachineAuthorized: true, Login: wire.Login{LoginName: "alice@example"}}
	switch {
	case !req.Expiry.IsZero() && req.Expiry.Before(time.Now()):
		// Logout.
		delete(s.nodes, req.NodeKey)
		s.mu.Unlock()
		return resp, nil
	case req.Followup != "":
		ch := s.pending[req.Followup]
		s.mu.Unlock()
		if ch == nil {
			return &wire.RegisterResponse{Error: "unknown login"}, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		delete(s.pending, req.Followup)
		s.addNodeLocked(req.NodeKey, keyUser{1, "alice@example"})
		s.mu.Unlock()
		return resp, nil
	}
	if n := s.nodes[req.NodeKey]; n != nil {
		// A refresh of a known key.
		if n.Expired {
			resp.NodeKeyExpired = true
		}
		s.mu.Unlock()
		return resp, nil
	}
	if req.Auth != nil && req.Auth.AuthKey != "" {
		ku, ok := s.authKeys[req.Auth.AuthKey]
		if !ok {
			s.mu.Unlock()
			return &wire.RegisterResponse{Error: "invalid authkey"}, nil
		}
		if !req.OldNodeKey.IsZero() {
			delete(s.nodes, req.OldNodeKey)
		}
		s.addNodeLocked(req.NodeKey, ku)
		s.mu.Unlock()
		resp.Login.LoginName = ku.login
		return resp, nil
	}
	// No auth key: an interactive login the test approves.
	s.nextURL++
	url := fmt.Sprintf("https://control.example/register/%d", s.nextURL)
	s.pending[url] = make(chan *wire.RegisterResponse, 1)
	s.mu.Unlock()
	return &wire.RegisterResponse{AuthURL: url}, nil
}

func (s *Server) addNodeLocked(k key.NodePublic, ku keyUser) {
	id := s.nextID
	s.nextID++
	s.nodes[k] = &Node{ID: id, Key: k, User: ku.id, Login: ku.login, Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(id)})}
}

// Poll is one open map long-poll.
type Poll struct {
	Req  *wire.MapRequest
	Node *Node
	send chan *wire.MapResponse
	brk  chan error
	done chan struct{}
}

// Send delivers one map response (it waits until the client has taken it).
func (p *Poll) Send(mr *wire.MapResponse) error {
	select {
	case p.send <- mr:
		return nil
	case <-p.done:
		return errors.New("poll closed")
	}
}

// Break ends the poll with err (as a dropped connection).
func (p *Poll) Break(err error) {
	select {
	case p.brk <- err:
	case <-p.done:
	}
}

// Done is closed when the client has left the poll.
func (p *Poll) Done() <-chan struct{} { return p.done }

type client struct {
	s   *Server
	url string
}

func (c *client) ServerURL() string { return c.url }
func (c *client) Close()            {}

func (c *client) Register(ctx context.Context, req *wire.RegisterRequest) (*wire.RegisterResponse, error) {
	return c.s.register(ctx, req)
}

func (c *client) PollMap(ctx context.Context, req *wire.MapRequest, fn func(*wire.MapResponse) error) error {
	s := c.s
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return ErrUnreachable
	}
	n := s.nodes[req.NodeKey]
	changed := s.changed
	s.mu.Unlock()
	if n == nil {
		return &HTTPError{Status: 401}
	}
	nc := *n
	p := &Poll{Req: req, Node: &nc, send: make(chan *wire.MapResponse), brk: make(chan error), done: make(chan struct{})}
	defer close(p.done)
	select {
	case s.polls <- p:
	default:
		return errors.New("sessiontest: too many polls nobody took")
	}
	for {
		select {
		case mr := <-p.send:
			if err := fn(mr); err != nil {
				return err
			}
		case err := <-p.brk:
			return err
		case <-changed:
			s.mu.Lock()
			down := s.down
			changed = s.changed
			s.mu.Unlock()
			if down {
				return ErrUnreachable
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *client) SendUpdate(ctx context.Context, req *wire.MapRequest) error {
	s := c.s
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return ErrUnreachable
	}
	r := *req
	s.updates = append(s.updates, &r)
	hook := s.updateHook
	s.mu.Unlock()
	if hook != nil {
		return hook(&r)
	}
	return nil
}
