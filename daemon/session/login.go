package session

import (
	"context"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// Login stops whatever runs and registers a new node key. With an auth key (or a server that
// needs no approval) it returns the registered key; otherwise it returns the AuthURL at once
// and waits for the approval in the background (Phase LoginWait), ending with an update that
// carries Login. The caller keeps the new key and then calls Run. A failed login leaves the
// session Idle.
func (s *Session) Login(ctx context.Context, req LoginRequest) (LoginResult, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return LoginResult{}, errClosed
	}
	gen, actx, done := s.beginLocked()
	c, err := s.clientLocked(req.Server)
	if err != nil {
		close(done)
		s.mu.Unlock()
		return LoginResult{Gen: gen}, err
	}
	s.cur = Update{Gen: gen, Phase: Connecting}
	s.mu.Unlock()

	rreq := &wire.RegisterRequest{NodeKey: req.NodeKey.Public(), OldNodeKey: req.OldNodeKey, Hostinfo: req.Hostinfo}
	if req.AuthKey != "" {
		rreq.Auth = &wire.AuthInfo{AuthKey: req.AuthKey}
	}
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	resp, err := c.Register(rctx, rreq)
	cancel()
	res := LoginResult{Gen: gen, Server: c.ServerURL(), NodeKey: req.NodeKey}
	switch {
	case err != nil:
	case resp.Error != "":
		err = &LoginError{Msg: "login failed: " + resp.Error}
	case resp.AuthURL != "" && req.AuthKey != "":
		err = &LoginError{Msg: "login failed: the server asked for interactive login despite the auth key"}
	case resp.AuthURL != "":
		res.AuthURL = resp.AuthURL
		s.mu.Lock()
		if gen == s.gen {
			s.cur = Update{Gen: gen, Phase: LoginWait, AuthURL: resp.AuthURL}
		}
		s.mu.Unlock()
		go func() {
			defer close(done)
			s.followUp(actx, gen, c, rreq, res)
		}()
		return res, nil
	case !resp.MachineAuthorized:
		err = &LoginError{Msg: "login failed: the server did not authorize this machine"}
	}
	close(done)
	if err != nil {
		s.mu.Lock()
		if gen == s.gen {
			s.cur = Update{Gen: gen, Phase: Idle, Err: err}
		}
		s.mu.Unlock()
		return LoginResult{Gen: gen}, err
	}
	res.LoginName = loginName(resp)
	s.mu.Lock()
	if gen == s.gen {
		s.cur = Update{Gen: gen, Phase: Idle}
	}
	s.mu.Unlock()
	return res, nil
}

func loginName(resp *wire.RegisterResponse) string {
	if resp.Login.LoginName != "" {
		return resp.Login.LoginName
	}
	return resp.User.LoginName
}

// followUp asks control, as a long poll, whether the user has approved the login; a new URL
// from control (the old registration expired) replaces the old one.
func (s *Session) followUp(ctx context.Context, gen uint64, c Control, rreq *wire.RegisterRequest, res LoginResult) {
	url := res.AuthURL
	backoff := backoffMin
	for ctx.Err() == nil {
		req := *rreq
		req.Auth = nil
		req.Followup = url
		resp, err := c.Register(ctx, &req)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			s.logf("control: login follow-up: %v", err)
			s.emit(gen, func(u *Update) { u.Err = err })
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			backoff = nextBackoff(backoff)
			continue
		case resp.Error != "":
			s.emit(gen, func(u *Update) { *u = Update{Phase: Idle, Err: &LoginError{Msg: "login failed: " + resp.Error}} })
			return
		case resp.AuthURL != "":
			url = resp.AuthURL
			s.emit(gen, func(u *Update) { u.AuthURL = url })
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		done := res
		done.AuthURL = ""
		done.LoginName = loginName(resp)
		s.emit(gen, func(u *Update) { *u = Update{Phase: Idle, Login: &done} })
		return
	}
}

// Logout stops whatever runs (returning the new generation) and asks control to expire the
// node key (LogoutExpiry).
func (s *Session) Logout(ctx context.Context, server string, node key.NodePrivate, hi *wire.Hostinfo) (uint64, error) {
	s.mu.Lock()
	done := s.stopLocked()
	gen := s.gen
	var c Control
	var err error
	if !s.closed {
		c, err = s.clientLocked(server)
	}
	s.mu.Unlock()
	<-done
	if c == nil {
		return gen, err
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err = c.Register(lctx, &wire.RegisterRequest{NodeKey: node.Public(), Expiry: wire.LogoutExpiry, Hostinfo: hi})
	return gen, err
}
