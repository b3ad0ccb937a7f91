// Package session is skeind's control session: it keeps one node registered with its control
// server, runs the map long-poll with backoff, builds the network map from the responses and
// reports this node's network facts back. It knows nothing of the IPC, the stored prefs or the
// tunnel: it emits typed updates, and its owner (daemon/backend) decides what they mean.
package session

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
)

// Control is the control server as a session uses it; *control.Client implements it.
type Control interface {
	ServerURL() string
	Register(ctx context.Context, req *wire.RegisterRequest) (*wire.RegisterResponse, error)
	PollMap(ctx context.Context, req *wire.MapRequest, fn func(*wire.MapResponse) error) error
	SendUpdate(ctx context.Context, req *wire.MapRequest) error
	Close()
}

// Options configure a Session.
type Options struct {
	// Dial returns a control client for a login server.
	Dial func(server string) (Control, error)
	// MapRequest fills what this node tells control in every map request (Hostinfo, NetInfo,
	// endpoints, disco key) for the given node key. It is called with no session lock held.
	MapRequest func(node key.NodePublic) *wire.MapRequest
	// OnUpdate receives every change, one call at a time and in order. It may call the
	// session's methods, but must not wait for a session to end (Stop's channel).
	OnUpdate func(Update)
	Logf     func(format string, args ...any)
}

// Phase is what the session is doing.
type Phase int

const (
	// Idle: nothing runs (logged out, down, or a login ended without success).
	Idle Phase = iota
	// Connecting: registering the node key again, or waiting for the first map response.
	Connecting
	// Running: the map poll delivers network maps (Connected says whether it is up right now).
	Running
	// LoginWait: an interactive login waits for the user to open AuthURL.
	LoginWait
)

func (p Phase) String() string {
	return [...]string{"Idle", "Connecting", "Running", "LoginWait"}[p]
}

// Update is the session's state after a change. Netmap is immutable: the session never
// changes a map it has handed out.
type Update struct {
	// Gen is the activity (Run, Login, Stop) the update belongs to; generations only grow, so
	// an owner can drop updates older than the activity it last started.
	Gen   uint64
	Phase Phase
	// Netmap is the newest network map of the running session (nil before the first one).
	Netmap *netmap.NetworkMap
	// NetmapChanged says this update carries a map that differs from the previous update's.
	NetmapChanged bool
	// Received is when the response that made Netmap arrived (for the owner's latency figures).
	Received time.Time
	// Connected: the map long-poll is open.
	Connected bool
	// AuthURL is where the user approves an interactive login (LoginWait only).
	AuthURL string
	// Err is the newest failure (cleared when a map arrives or a login completes).
	Err error
	// Expired is set once when control no longer accepts the node key (expired, or the node
	// was removed): the session is Idle and a new login is needed.
	Expired bool
	// Login is set once when an interactive login has been approved; the session is Idle and
	// the owner starts it with Run after keeping the new key.
	Login *LoginResult
}

// LoginRequest registers a new node key.
type LoginRequest struct {
	Server     string
	NodeKey    key.NodePrivate
	OldNodeKey key.NodePublic // the key this one replaces (rotation), zero for none
	AuthKey    string         // empty: interactive login
	Hostinfo   *wire.Hostinfo
}

// LoginResult is a registered node key, or a pending interactive login (AuthURL set).
type LoginResult struct {
	Gen       uint64 // the login's generation (see Update.Gen)
	Server    string
	NodeKey   key.NodePrivate
	LoginName string
	AuthURL   string
}

// LoginError is control's refusal of a login (as opposed to a failure to reach it).
type LoginError struct{ Msg string }

func (e *LoginError) Error() string { return e.Msg }

// ExpiredError says control no longer accepts the node key.
type ExpiredError struct {
	// Removed: the node is unknown to control (deleted) rather than expired by time.
	Msg string
}

func (e *ExpiredError) Error() string { return e.Msg }

// Session is one node's conversation with its control server.
type Session struct {
	opts Options
	logf func(string, ...any)

	mu     sync.Mutex
	ctl    Control // for server; replaced when the server changes
	server string
	gen    uint64 // bumped by every Run, Login and Stop: a stale activity's updates are dropped
	cancel context.CancelFunc
	done   chan struct{}
	cur    Update
	closed bool

	emitMu sync.Mutex
	rep    atomic.Pointer[reporter]
}

// New returns an idle session.
func New(opts Options) *Session {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.OnUpdate == nil {
		opts.OnUpdate = func(Update) {}
	}
	return &Session{opts: opts, logf: opts.Logf}
}

var errClosed = errors.New("session closed")

// client returns the control client for server, dialling a new one when the server changed.
// The caller holds s.mu.
func (s *Session) clientLocked(server string) (Control, error) {
	server = strings.TrimRight(server, "/")
	if s.ctl != nil && s.server == server {
		return s.ctl, nil
	}
	c, err := s.opts.Dial(server)
	if err != nil {
		return nil, err
	}
	if s.ctl != nil {
		s.ctl.Close()
	}
	s.ctl, s.server = c, server
	return c, nil
}

// beginLocked stops whatever runs and starts a new activity; it returns its generation,
// context and done channel.
func (s *Session) beginLocked() (uint64, context.Context, chan struct{}) {
	s.stopLocked()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	return s.gen, ctx, s.done
}

// stopLocked cancels the running activity and returns a channel closed when it has ended.
func (s *Session) stopLocked() <-chan struct{} {
	s.gen++
	done := s.done
	if s.cancel != nil {
		s.cancel()
	}
	s.cancel, s.done = nil, nil
	s.cur = Update{Gen: s.gen, Phase: Idle, Netmap: s.cur.Netmap}
	if done == nil {
		done = make(chan struct{})
		close(done)
	}
	return done
}

// Stop ends the running map session or login and returns the new generation. It does not
// wait: the returned channel closes when the activity has ended.
func (s *Session) Stop() (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.stopLocked()
	return s.gen, done
}

// Close stops the session for good and closes its control client.
func (s *Session) Close() {
	s.mu.Lock()
	s.closed = true
	done := s.stopLocked()
	c := s.ctl
	s.ctl = nil
	s.mu.Unlock()
	<-done
	if c != nil {
		c.Close()
	}
}

// Current returns the session's state as of its last update.
func (s *Session) Current() Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// ReportChanged says this node's facts (endpoints, home DERP, NetInfo, Hostinfo) changed, so
// the running session tells control. It never blocks and takes no lock: the transport calls
// it from anywhere.
func (s *Session) ReportChanged() {
	if r := s.rep.Load(); r != nil {
		r.changed()
	}
}

// emit applies change to the current state of activity gen and hands the result to OnUpdate;
// updates of a stopped activity are dropped. Emits are serialized, so OnUpdate sees them in
// order.
func (s *Session) emit(gen uint64, change func(u *Update)) bool {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	if gen != s.gen || s.closed {
		s.mu.Unlock()
		return false
	}
	u := s.cur
	u.NetmapChanged, u.Expired, u.Login = false, false, nil
	change(&u)
	u.Gen = gen
	s.cur = u
	s.cur.NetmapChanged, s.cur.Expired, s.cur.Login = false, false, nil
	s.mu.Unlock()
	s.opts.OnUpdate(u)
	return true
}
