package ipc

import (
	"context"
	"sync"
	"time"
)

// What every local user may read, and what only the privileged (root, skeind's uid, the
// operator) see: a pending login URL lets whoever opens it first put this machine into their
// tailnet, and received files (names, senders) are the desktop user's business. Both are left
// out of /status and /watch for everyone else.

// redactStatus removes what only privileged callers may see from st.
func redactStatus(st *Status) {
	if st.AuthURL != "" {
		st.AuthURL = ""
		st.AuthURLHidden = true
	}
}

// redactEvent returns ev as an unprivileged caller may see it; ok is false when the event is
// not for them at all.
func redactEvent(ev Event) (Event, bool) {
	if ev.Kind == EventFile || ev.File != nil {
		return Event{}, false
	}
	if ev.Status != nil && ev.Status.AuthURL != "" {
		st := *ev.Status
		redactStatus(&st)
		ev.Status = &st
	}
	return ev, true
}

// privileged tells whether the caller of a request may see everything.
func (s *Server) privileged(ctx context.Context) bool {
	uid, ok := peerUID(ctx)
	return ok && s.isPrivileged(uid)
}

// isPrivileged is authorizeWrite's decision for reads, with the operator's uid cached for a
// moment: it is asked for every watch event and every accepted connection, and a user known
// only to NSS costs a getent run. A change of operator is seen at once (the cache is keyed by
// the operator's name); a change in the user database within operatorCacheFor.
func (s *Server) isPrivileged(uid uint32) bool {
	if uid == 0 || uid == s.opts.OwnUID {
		return true
	}
	return s.isOperator(uid)
}

const operatorCacheFor = 2 * time.Second

type operatorCache struct {
	mu         sync.Mutex
	name       string
	uid        uint32
	ok         bool
	at         time.Time
	refreshing bool
}

// isOperator tells whether uid is the operator, looking the operator up when the cached answer
// is stale.
func (s *Server) isOperator(uid uint32) bool {
	return s.isNamedOperator(uid, s.b.Prefs().Operator)
}

// isNamedOperator tells whether uid is the user called name (the operator at some moment).
func (s *Server) isNamedOperator(uid uint32, name string) bool {
	if name == "" {
		return false
	}
	c := &s.opCache
	c.mu.Lock()
	fresh := c.name == name && time.Since(c.at) <= operatorCacheFor
	c.mu.Unlock()
	if !fresh {
		s.refreshOperator(name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name == name && c.ok && c.uid == uid
}

// isOperatorNow is isOperator without waiting: a stale or missing answer is refreshed in the
// background and the cached one (or false) used meanwhile. The accept loop uses it, so that a
// slow NSS source never holds up root's connections.
func (s *Server) isOperatorNow(uid uint32) bool {
	name := s.b.Prefs().Operator
	if name == "" {
		return false
	}
	c := &s.opCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if (c.name != name || time.Since(c.at) > operatorCacheFor) && !c.refreshing {
		c.refreshing = true
		go func() {
			s.refreshOperator(name)
			c.mu.Lock()
			c.refreshing = false
			c.mu.Unlock()
		}()
	}
	return c.name == name && c.ok && c.uid == uid
}

func (s *Server) refreshOperator(name string) {
	opUID, err := s.opts.LookupUID(name)
	c := &s.opCache
	c.mu.Lock()
	c.name, c.uid, c.ok, c.at = name, opUID, err == nil, time.Now()
	c.mu.Unlock()
}
