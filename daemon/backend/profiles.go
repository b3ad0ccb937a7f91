package backend

import (
	"context"
	"unicode"

	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/ipc"
)

// Profiles: several logins kept side by side, one in use. Switching stops the session, lets
// the apply loop take the old tunnel down (routes, DNS, firewall) as for `skein down`, and
// only then starts the other profile's session, so the host never carries both.

// profileListLocked lists every profile as front ends see it.
func (b *Backend) profileListLocked() []ipc.Profile {
	all := b.profiles.With(b.data)
	out := make([]ipc.Profile, 0, len(all.Profiles))
	for i := range all.Profiles {
		p := &all.Profiles[i]
		out = append(out, ipc.Profile{
			ID: p.ID, Name: p.DisplayName(), LoginServer: p.Prefs.LoginServer, LoginName: p.LoginName,
			Tailnet: p.Tailnet, LoggedIn: p.LoggedIn, Current: p.ID == b.data.ProfileID,
		})
	}
	return out
}

// SwitchProfile makes another profile the one in use. It returns once the old profile's
// tunnel is down and the new one runs (or needs a login, or ctx ends).
func (b *Backend) SwitchProfile(ctx context.Context, q string) error {
	b.mu.Lock()
	p, err := ipc.LookupProfile(q, b.profileListLocked())
	if err != nil || p.ID == b.data.ProfileID {
		b.mu.Unlock()
		return err
	}
	next := b.profiles.With(b.data)
	next.Current = p.ID
	if err := b.saveProfilesLocked(next); err != nil {
		b.mu.Unlock()
		return err
	}
	b.logf("profile: switching to %s (%s)", p.ID, p.Name)
	gen, done := b.sess.Stop()
	b.sessGen = max(b.sessGen, gen)
	b.data = next.CurrentData()
	b.phase, b.connected = session.Idle, false
	b.authURL, b.pending, b.lastErr = "", nil, nil
	b.nm = nil
	b.exits.reset()
	tgen := b.tun.want()
	b.refreshLocked(ipc.EventPrefs, nil)
	b.mu.Unlock()

	b.waitApplied(ctx, tgen)
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	if b.data.ProfileID != p.ID || b.phase != session.Idle {
		b.mu.Unlock() // another call took over meanwhile
		return nil
	}
	run := b.data.LoggedIn && b.data.Prefs.WantRunning
	if run {
		b.phase = session.Connecting
		b.sessGen = b.sess.Run(b.data.Prefs.LoginServer, b.data.NodeKey)
	}
	b.tun.want()
	b.refreshLocked(ipc.EventState, nil)
	b.mu.Unlock()
	if !run {
		return nil // logged out or down: the state says so
	}
	_, err = b.waitRunning(ctx)
	if e, ok := err.(*ipc.Error); ok && e.Code == ipc.ErrNeedsLogin {
		return nil // the profile's login expired: the state says so
	}
	return err
}

// RemoveProfile forgets a profile that is not in use: its node key and prefs are deleted
// from this machine (the node stays known to its control server until it expires there).
func (b *Backend) RemoveProfile(ctx context.Context, q string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := ipc.LookupProfile(q, b.profileListLocked())
	if err != nil {
		return err
	}
	if p.ID == b.data.ProfileID {
		e := &ipc.Error{Code: ipc.ErrBadRequest, Message: "cannot remove the profile in use (" + p.Name + "): switch to another one first"}
		if len(b.profiles.Profiles) > 1 {
			e.Fix = "skein switch --list"
		} else {
			e.Message = "cannot remove the only profile; log out instead"
			e.Fix = "skein logout"
		}
		return e
	}
	if err := b.saveProfilesLocked(b.profiles.With(b.data).Without(p.ID)); err != nil {
		return err
	}
	b.logf("profile: removed %s (%s)", p.ID, p.Name)
	b.refreshLocked(ipc.EventPrefs, nil)
	return nil
}

// newProfileLocked is the profile a login with req starts: nil for the current one, else a
// new profile (named by req.Nickname). A fresh machine's empty first profile is reused.
func (b *Backend) newProfileLocked(req ipc.UpRequest) (*state.Data, error) {
	if !req.NewProfile && req.Nickname == "" {
		return nil, nil
	}
	if err := validNickname(req.Nickname); err != nil {
		return nil, err
	}
	if req.Nickname != "" {
		for _, p := range b.profileListLocked() {
			if p.Name == req.Nickname && !(p.Current && b.currentEmptyLocked()) {
				return nil, &ipc.Error{Code: ipc.ErrBadRequest, Message: "a profile named " + quote(req.Nickname) + " exists already",
					Fix: "skein switch " + req.Nickname + " && skein up --force-reauth"}
			}
		}
	}
	if b.currentEmptyLocked() {
		d := b.data
		d.ProfileName = req.Nickname
		return &d, nil
	}
	d := b.profiles.NewProfileData(req.Nickname)
	d.Prefs.Operator = b.data.Prefs.Operator
	return &d, nil
}

func (b *Backend) currentEmptyLocked() bool {
	p := state.Profile{NodeKey: b.data.NodeKey, LoggedIn: b.data.LoggedIn, LoginName: b.data.LoginName, Prefs: b.data.Prefs}
	return p.Empty()
}

// validNickname accepts up to 64 printable characters without surrounding spaces.
func validNickname(n string) error {
	if len(n) > 64 {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "nickname is longer than 64 bytes"}
	}
	for _, r := range n {
		if !unicode.IsPrint(r) {
			return &ipc.Error{Code: ipc.ErrBadRequest, Message: "nickname may only hold printable characters"}
		}
	}
	if n != "" && (unicode.IsSpace(rune(n[0])) || unicode.IsSpace(rune(n[len(n)-1]))) {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "nickname may not start or end with a space"}
	}
	return nil
}

// noteTailnetLocked remembers the tailnet's name for profile lists when it changes.
func (b *Backend) noteTailnetLocked() {
	if b.nm == nil || b.nm.Self == nil {
		return
	}
	t := magicDNSSuffix(b.nm.Self.Name, b.nm.Domain)
	if t == "" || t == b.data.Tailnet {
		return
	}
	old := b.data
	b.data.Tailnet = t
	if err := b.saveLocked(); err != nil {
		b.data = old
	}
}
