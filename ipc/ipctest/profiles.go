package ipctest

import (
	"context"

	"github.com/skeinvpn/skein/ipc"
)

// Profiles: the fake keeps them in its status (Status.Profiles, Status.Profile). A switch makes
// another one current and calls the hook set with OnSwitch (which may change the status as the
// other login would show it); removal drops a profile that is not current.

// OnSwitch sets what happens after a switch to profile id (nil: nothing more).
func (b *Backend) OnSwitch(f func(ctx context.Context, id string) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onSwitch = f
}

// Switches returns the IDs switched to so far.
func (b *Backend) Switches() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.switches...)
}

// SwitchProfile implements ipc.ProfileBackend.
func (b *Backend) SwitchProfile(ctx context.Context, name string) error {
	b.mu.Lock()
	p, err := ipc.LookupProfile(name, b.status.Profiles)
	if err != nil || p.Current {
		b.mu.Unlock()
		return err
	}
	b.switches = append(b.switches, p.ID)
	b.setCurrentLocked(p.ID)
	f := b.onSwitch
	st := b.status
	b.mu.Unlock()
	b.Emit(ipc.Event{Kind: ipc.EventState, Status: &st})
	if f != nil {
		return f(ctx, p.ID)
	}
	return nil
}

// setCurrentLocked marks profile id as the one in use.
func (b *Backend) setCurrentLocked(id string) {
	ps := append([]ipc.Profile(nil), b.status.Profiles...)
	b.status.Profile = nil
	for i := range ps {
		ps[i].Current = ps[i].ID == id
		if ps[i].Current {
			b.status.Profile = &ps[i]
		}
	}
	b.status.Profiles = ps
}

// RemoveProfile implements ipc.ProfileBackend.
func (b *Backend) RemoveProfile(ctx context.Context, name string) error {
	b.mu.Lock()
	p, err := ipc.LookupProfile(name, b.status.Profiles)
	if err == nil && p.Current {
		err = &ipc.Error{Code: ipc.ErrBadRequest, Message: "cannot remove the profile in use"}
	}
	if err != nil {
		b.mu.Unlock()
		return err
	}
	var keep []ipc.Profile
	for _, q := range b.status.Profiles {
		if q.ID != p.ID {
			keep = append(keep, q)
		}
	}
	b.status.Profiles = keep
	cur := ""
	if b.status.Profile != nil {
		cur = b.status.Profile.ID
	}
	b.setCurrentLocked(cur)
	st := b.status
	b.mu.Unlock()
	b.Emit(ipc.Event{Kind: ipc.EventNetmap, Status: &st})
	return nil
}

// SuggestExitNode implements ipc.ProfileBackend: the status's suggestion.
func (b *Backend) SuggestExitNode(ctx context.Context) (ipc.ExitNodeSuggestion, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.status.SuggestedExitNode; s != nil {
		return *s, nil
	}
	return ipc.ExitNodeSuggestion{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "no peer that is online offers to be an exit node"}
}
