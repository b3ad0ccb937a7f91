package session

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
)

// Backoff for reconnects: jittered, capped low enough that a returning server is seen within
// a few seconds.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 5 * time.Second
	// registerTimeout bounds one registration request.
	registerTimeout = 30 * time.Second
)

func nextBackoff(d time.Duration) time.Duration { return min(2*d, backoffMax) }

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// statusCoder is an error that carries the HTTP status control answered with.
type statusCoder interface{ HTTPStatus() int }

// Run starts the map session of a registered node key on server, replacing whatever ran,
// and returns its generation. It returns at once; updates follow.
func (s *Session) Run(server string, node key.NodePrivate) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.gen
	}
	gen, ctx, done := s.beginLocked()
	c, err := s.clientLocked(server)
	if err != nil {
		close(done)
		go s.emit(gen, func(u *Update) { *u = Update{Phase: Idle, Err: err} })
		return gen
	}
	s.cur = Update{Gen: gen, Phase: Connecting}
	go func() {
		defer close(done)
		s.runMap(ctx, gen, c, node)
	}()
	return gen
}

// runMap keeps the node registered and the map poll running until ctx ends.
func (s *Session) runMap(ctx context.Context, gen uint64, c Control, node key.NodePrivate) {
	rep := newReporter(func(ctx context.Context) error {
		return c.SendUpdate(ctx, s.opts.MapRequest(node.Public()))
	}, s.logf)
	rep.start()
	s.rep.Store(rep)
	defer func() {
		s.rep.CompareAndSwap(rep, nil)
		rep.close()
	}()
	s.emit(gen, func(u *Update) { u.Phase = Connecting })
	backoff := backoffMin
	needRefresh := true
	for ctx.Err() == nil {
		if needRefresh {
			err := s.refreshRegistration(ctx, c, node)
			var ee *ExpiredError
			switch {
			case ctx.Err() != nil:
				return
			case errors.As(err, &ee):
				s.emit(gen, func(u *Update) { *u = Update{Phase: Idle, Err: err, Expired: true} })
				return
			case err != nil:
				s.logf("control: %v", err)
				s.emit(gen, func(u *Update) { u.Err = err })
				if !sleepCtx(ctx, jitter(backoff)) {
					return
				}
				backoff = nextBackoff(backoff)
				continue
			}
			needRefresh = false
		}
		gotMap := false
		err := s.poll(ctx, gen, c, node, func() { gotMap = true; backoff = backoffMin })
		if ctx.Err() != nil {
			return
		}
		var ee *ExpiredError
		if errors.As(err, &ee) {
			s.emit(gen, func(u *Update) { *u = Update{Phase: Idle, Netmap: u.Netmap, Err: err, Expired: true} })
			return
		}
		s.logf("map poll ended: %v", err)
		var sc statusCoder
		if errors.As(err, &sc) {
			switch sc.HTTPStatus() {
			case 401, 403, 404:
				needRefresh = true // the server no longer knows our node key
			}
		}
		s.emit(gen, func(u *Update) {
			u.Connected = false
			if !gotMap {
				u.Err = err
			}
		})
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// refreshRegistration re-sends the current node key as tailscaled does on start; an
// *ExpiredError says control wants a new login (key expired or node unknown).
func (s *Session) refreshRegistration(ctx context.Context, c Control, node key.NodePrivate) error {
	req := &wire.RegisterRequest{NodeKey: node.Public()}
	if mr := s.opts.MapRequest(node.Public()); mr != nil {
		req.Hostinfo = mr.Hostinfo
	}
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	resp, err := c.Register(rctx, req)
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return &LoginError{Msg: "control server: " + resp.Error}
	}
	if resp.NodeKeyExpired || resp.AuthURL != "" || !resp.MachineAuthorized {
		s.logf("control: node key no longer valid (expired=%v); login needed", resp.NodeKeyExpired)
		return &ExpiredError{Msg: "the node key has expired or the node was removed; log in again"}
	}
	return nil
}

// poll runs one map long-poll until it breaks. Every map that changes something a user could
// see is handed out as a new immutable snapshot.
func (s *Session) poll(ctx context.Context, gen uint64, c Control, node key.NodePrivate, onMap func()) error {
	req := s.opts.MapRequest(node.Public())
	if req == nil {
		req = &wire.MapRequest{}
	}
	req.NodeKey = node.Public()
	var nm *netmap.NetworkMap
	return c.PollMap(ctx, req, func(mr *wire.MapResponse) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		received := time.Now()
		first := nm == nil
		if first {
			if mr.KeepAlive {
				return nil
			}
			if mr.Node == nil {
				return errors.New("control: first map response has no self node")
			}
			// A new poll starts from a clean map: its first response is a full one.
			nm = netmap.New()
			onMap()
		}
		changed := nm.Apply(mr, time.Now())
		if nm.Self != nil && nm.Expired(nm.Self, time.Now()) {
			return &ExpiredError{Msg: "this node's key has expired; log in again"}
		}
		if !changed && !first {
			return nil
		}
		snap := nm.Clone()
		s.emit(gen, func(u *Update) {
			u.Phase, u.Connected, u.Err = Running, true, nil
			u.Netmap, u.NetmapChanged, u.Received = snap, true, received
		})
		return nil
	})
}
