package backend

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/internal/userdb"
	"github.com/skeinvpn/skein/ipc"
)

// Prefs returns the stored prefs.
func (b *Backend) Prefs() ipc.Prefs {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data.Prefs
}

func (b *Backend) lookupUser(name string) error {
	if b.opts.LookupUser != nil {
		return b.opts.LookupUser(name)
	}
	_, err := userdb.LookupName(name)
	return err
}

// SetPrefs changes prefs that need no new login. It returns once the tunnel applies them.
func (b *Backend) SetPrefs(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
	if p.Operator != nil {
		if name := *p.Operator; name != "" {
			if err := b.lookupUser(name); err != nil {
				return b.Prefs(), &ipc.Error{Code: ipc.ErrBadRequest, Message: "unknown user " + quote(name)}
			}
		}
	}
	if p.Hostname != nil {
		if err := validHostname(*p.Hostname); err != nil {
			return b.Prefs(), err
		}
	}
	b.mu.Lock()
	if err := b.checkSSHPrefLocked(p); err != nil {
		b.mu.Unlock()
		return b.Prefs(), err
	}
	nextPrefs, err := b.data.Prefs.ApplyPatch(p, b.resolveExitNodeLocked)
	if err != nil {
		defer b.mu.Unlock()
		return b.data.Prefs, err
	}
	old := b.data
	b.data.Prefs = nextPrefs
	b.chooseAutoExitLocked()
	if err := b.saveLocked(); err != nil {
		b.data = old
		b.mu.Unlock()
		return old.Prefs, err
	}
	b.notifyLocked(ipc.EventPrefs, nil)
	gen := b.tun.want()
	report := !reflect.DeepEqual(hostinfoOf(old.Prefs), hostinfoOf(b.data.Prefs))
	prefs := b.data.Prefs
	b.mu.Unlock()
	if report {
		b.sess.ReportChanged()
	}
	b.waitApplied(ctx, gen)
	return prefs, nil
}

// hostinfoOf is what of the prefs reaches control in Hostinfo, to tell whether a change must be sent.
func hostinfoOf(p ipc.Prefs) [5]any {
	return [5]any{p.Hostname, p.ExitNodeID, p.AdvertiseExitNode, slices.Clone(p.AdvertiseRoutes), p.ShieldsUp}
}

func quote(s string) string { return "\"" + s + "\"" }

// validHostname accepts what a DNS label can hold; empty means "use the OS hostname".
func validHostname(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 63 {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "hostname is longer than 63 characters"}
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return &ipc.Error{Code: ipc.ErrBadRequest, Message: "hostname " + quote(h) + " may only hold letters, digits and '-'"}
		}
	}
	if h[0] == '-' || h[len(h)-1] == '-' {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "hostname may not start or end with '-'"}
	}
	return nil
}

func validLoginServer(s string) error {
	if _, err := control.CheckServerURL(s); err != nil {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: err.Error(), Fix: "skein up --login-server https://your-headscale"}
	}
	return nil
}

// upWait bounds how long Up waits for the first netmap after a successful registration.
const upWait = 30 * time.Second

// Up connects, registering first when needed. It returns when the node is Running, as soon as
// an interactive login has an AuthURL, or with a typed error that leaves the stored state as it
// was before the call.
func (b *Backend) Up(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
	server := strings.TrimRight(req.LoginServer, "/")
	if server != "" {
		if err := validLoginServer(server); err != nil {
			return ipc.UpResponse{}, err
		}
	}
	if err := validHostname(req.Hostname); err != nil {
		return ipc.UpResponse{}, err
	}

	b.mu.Lock()
	target, err := b.newProfileLocked(req)
	if err != nil {
		b.mu.Unlock()
		return ipc.UpResponse{}, err
	}
	if server == "" {
		server = b.data.Prefs.LoginServer
	}
	if server == "" {
		b.mu.Unlock()
		return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "no login server configured", Fix: "skein up --login-server https://your-headscale"}
	}
	sameServer := server == b.data.Prefs.LoginServer
	if b.data.LoggedIn && !sameServer && !req.ForceReauth {
		// As the official client: a new server replaces this machine's login there, which the
		// user must mean (a typo, or a URL pasted from elsewhere, would move the machine).
		old := b.data.Prefs.LoginServer
		b.mu.Unlock()
		return ipc.UpResponse{}, &ipc.Error{
			Code:    ipc.ErrNeedsConfirmation,
			Message: fmt.Sprintf("this machine is logged in to %s; logging in to %s replaces that login", old, server),
			Fix:     "skein up --login-server=" + server + " --force-reauth",
		}
	}
	hostnameChanged := req.Hostname != "" && req.Hostname != b.data.Prefs.Hostname
	if target == nil && b.data.LoggedIn && sameServer && !req.ForceReauth {
		// Already registered: just (re)start. Like the official client, an auth key is only
		// used when a login is needed (or forced).
		old := b.data
		b.data.Prefs.WantRunning = true
		if req.Hostname != "" {
			b.data.Prefs.Hostname = req.Hostname
		}
		if err := b.saveLocked(); err != nil {
			b.data = old
			b.mu.Unlock()
			return ipc.UpResponse{}, err
		}
		if b.phase == session.Idle || hostnameChanged {
			b.pending, b.authURL = nil, ""
			b.phase = session.Connecting
			b.sessGen = b.sess.Run(server, b.data.NodeKey)
		}
		b.tun.want()
		b.refreshLocked(ipc.EventPrefs, nil)
		b.mu.Unlock()
		return b.waitRunning(ctx)
	}
	// A login is needed: register a new node key (the session stops what runs). A new profile
	// starts from default prefs; the current one keeps its own.
	oldNodeKey := key.NodePublic{}
	prefs := b.data.Prefs
	if target != nil && target.ProfileID != b.data.ProfileID {
		prefs = target.Prefs
	} else if b.data.LoggedIn && sameServer {
		oldNodeKey = b.data.NodeKey.Public()
	}
	prefs.LoginServer = server
	prefs.WantRunning = true
	if req.Hostname != "" {
		prefs.Hostname = req.Hostname
	}
	hi := b.hostinfoForLocked(prefs)
	b.authURL, b.pending = "", nil
	b.mu.Unlock()

	newNode := key.NewNode()
	res, err := b.sess.Login(ctx, session.LoginRequest{Server: server, NodeKey: newNode, OldNodeKey: oldNodeKey, AuthKey: req.AuthKey, Hostinfo: hi})
	b.mu.Lock()
	b.sessGen = max(b.sessGen, res.Gen)
	if err != nil {
		defer b.mu.Unlock()
		return ipc.UpResponse{}, b.loginFailedLocked(asIPCError(err))
	}
	if res.AuthURL != "" {
		defer b.mu.Unlock()
		b.phase = session.LoginWait
		b.authURL, b.pending = res.AuthURL, &pendingLogin{prefs: prefs, profile: target}
		b.tun.want() // the tunnel of an old login, if any, goes
		b.refreshLocked(ipc.EventState, nil)
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: res.AuthURL}, nil
	}
	if err := b.completeLoginLocked(newNode, prefs, res.LoginName, target); err != nil {
		b.mu.Unlock()
		return ipc.UpResponse{}, err
	}
	b.phase = session.Connecting
	b.sessGen = b.sess.Run(server, newNode)
	b.tun.want()
	b.refreshLocked(ipc.EventState, nil)
	b.mu.Unlock()
	return b.waitRunning(ctx)
}

// loginFailedLocked reports a failed login without touching the stored state, and resumes the
// old session if there was one.
func (b *Backend) loginFailedLocked(e *ipc.Error) error {
	b.lastErr = e
	b.phase = session.Idle
	if b.data.LoggedIn && b.data.Prefs.WantRunning {
		b.phase = session.Connecting
		b.sessGen = b.sess.Run(b.data.Prefs.LoginServer, b.data.NodeKey)
	}
	b.tun.want()
	b.refreshLocked(ipc.EventState, e)
	return e
}

// completeLoginLocked stores a registered node key with the prefs of its login, in the current
// profile (target nil) or in target, which becomes the current profile.
func (b *Backend) completeLoginLocked(node key.NodePrivate, prefs ipc.Prefs, loginName string, target *state.Data) error {
	next := b.data
	if target != nil {
		next = *target
	}
	next.NodeKey = node
	next.LoggedIn = true
	next.Prefs = prefs
	next.LoginName = loginName
	next.Tailnet = ""
	ps := b.profiles.With(b.data).With(next)
	ps.Current = next.ProfileID
	if err := b.saveProfilesLocked(ps); err != nil {
		return err
	}
	if next.ProfileID != b.data.ProfileID {
		b.logf("profile: logged in as new profile %s", next.ProfileID)
		b.exits.reset()
	}
	b.data = next
	// A new node key is a new node for control: the old map is not ours any more.
	b.nm = nil
	b.authURL, b.pending, b.lastErr = "", nil, nil
	b.notifyLocked(ipc.EventPrefs, nil)
	return nil
}

// waitRunning waits until the session is Running (or fails to get there).
func (b *Backend) waitRunning(ctx context.Context) (ipc.UpResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, upWait)
	defer cancel()
	for {
		b.mu.Lock()
		st, ch, authURL := b.stateLocked(), b.changed, b.authURL
		lastErr := b.lastErr
		b.mu.Unlock()
		switch st {
		case ipc.StateRunning:
			return ipc.UpResponse{State: st}, nil
		case ipc.StateNeedsLogin:
			if authURL != "" {
				return ipc.UpResponse{State: st, AuthURL: authURL}, nil
			}
			if lastErr != nil {
				return ipc.UpResponse{State: st}, lastErr
			}
			return ipc.UpResponse{State: st}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "login needed", Fix: "skein up"}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if lastErr != nil {
				return ipc.UpResponse{State: st}, lastErr
			}
			return ipc.UpResponse{State: st}, nil
		}
	}
}

// Down stops the session and remembers not to start it again. It returns once the tunnel is
// down.
func (b *Backend) Down(ctx context.Context) error {
	b.mu.Lock()
	old := b.data
	b.data.Prefs.WantRunning = false
	if err := b.saveLocked(); err != nil {
		b.data = old
		b.mu.Unlock()
		return err
	}
	gen, done := b.sess.Stop()
	b.sessGen = max(b.sessGen, gen)
	b.phase, b.connected = session.Idle, false
	b.authURL, b.pending = "", nil
	tgen := b.tun.want()
	b.refreshLocked(ipc.EventPrefs, nil)
	b.mu.Unlock()
	b.waitApplied(ctx, tgen)
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// Logout expires the node key on the server and forgets it locally.
func (b *Backend) Logout(ctx context.Context) error {
	b.mu.Lock()
	wasLoggedIn := b.data.LoggedIn
	node := b.data.NodeKey
	server := b.data.Prefs.LoginServer
	hi := b.hostinfoLocked()
	b.mu.Unlock()

	var gen uint64
	var serverErr error
	if wasLoggedIn && server != "" {
		gen, serverErr = b.sess.Logout(ctx, server, node, hi)
	} else {
		var done <-chan struct{}
		gen, done = b.sess.Stop()
		<-done
	}
	b.mu.Lock()
	b.sessGen = max(b.sessGen, gen)
	old := b.data
	b.data.NodeKey = key.NodePrivate{}
	b.data.LoggedIn = false
	b.data.LoginName = ""
	b.data.Prefs.WantRunning = false
	if err := b.saveLocked(); err != nil {
		b.data = old
		b.mu.Unlock()
		return err
	}
	b.phase, b.connected = session.Idle, false
	b.authURL, b.pending = "", nil
	b.nm = nil
	tgen := b.tun.want()
	b.refreshLocked(ipc.EventNetmap, nil)
	b.mu.Unlock()
	b.waitApplied(ctx, tgen)
	if serverErr != nil {
		b.logf("logout: server not told: %v", serverErr)
		return &ipc.Error{Code: ipc.ErrServerUnreachable, Message: "logged out locally, but the server could not be told: " + oneLine(serverErr.Error())}
	}
	return nil
}

// Watch subscribes to events; the first one carries a full status.
func (b *Backend) Watch() (<-chan ipc.Event, func()) {
	w := &watcher{ch: make(chan ipc.Event, 16)}
	b.mu.Lock()
	st := b.statusLocked()
	p := b.data.Prefs
	w.send(ipc.Event{Kind: ipc.EventState, Status: &st, Prefs: &p})
	if b.closed {
		w.close()
	} else {
		b.watchers[w] = struct{}{}
	}
	b.mu.Unlock()
	return w.ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.watchers[w]; ok {
			delete(b.watchers, w)
			w.close()
		}
	}
}

// watcher is one subscriber. Every event carries a full status, so when a slow subscriber's
// buffer is full the oldest event is dropped rather than blocking the helper.
type watcher struct {
	ch     chan ipc.Event
	closed bool
}

func (w *watcher) send(ev ipc.Event) {
	if w.closed {
		return
	}
	for {
		select {
		case w.ch <- ev:
			return
		default:
		}
		select {
		case <-w.ch:
		default:
		}
	}
}

func (w *watcher) close() {
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}
