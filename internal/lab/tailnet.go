package lab

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Tailnet is a ready-made tailnet: the control server, one user, a reusable
// pre-auth key and official tailscaled peers logged in with it.
type Tailnet struct {
	Control *Control
	User    string
	UserID  uint64
	AuthKey string // reusable, not ephemeral; valid 24h
	Peers   []*Tailscaled
}

// StartTailnet starts the control server (unless already started), creates
// user, a reusable pre-auth key, and for each hostname a host of that name
// running the official tailscaled (kernel TUN) logged in with the key. It
// returns when every peer sees every other one.
func (l *Lab) StartTailnet(user string, hostnames ...string) (*Tailnet, error) {
	l.mu.Lock()
	c := l.control
	l.mu.Unlock()
	if c == nil {
		var err error
		if c, err = l.StartControl(); err != nil {
			return nil, err
		}
	}
	tn := &Tailnet{Control: c, User: user}
	var err error
	if tn.UserID, err = c.CreateUser(user); err != nil {
		return nil, err
	}
	if tn.AuthKey, err = c.PreAuthKey(user, true, false); err != nil {
		return nil, err
	}
	tn.Peers = make([]*Tailscaled, len(hostnames))
	errs := make([]error, len(hostnames))
	var wg sync.WaitGroup
	for i, name := range hostnames {
		wg.Go(func() {
			h, err := l.AddHost(name)
			if err != nil {
				errs[i] = err
				return
			}
			ts, err := h.StartTailscaled(name)
			if err != nil {
				errs[i] = err
				return
			}
			if err := ts.Up(c.URL(), tn.AuthKey); err != nil {
				errs[i] = fmt.Errorf("%s: %w", name, err)
				return
			}
			tn.Peers[i] = ts
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, ts := range tn.Peers {
		others := append(append([]string(nil), hostnames[:i]...), hostnames[i+1:]...)
		if err := ts.WaitPeers(60*time.Second, others...); err != nil {
			return nil, err
		}
	}
	return tn, nil
}

// Peer returns the peer with the given hostname, or nil.
func (tn *Tailnet) Peer(hostname string) *Tailscaled {
	for _, p := range tn.Peers {
		if p.Hostname() == hostname {
			return p
		}
	}
	return nil
}
