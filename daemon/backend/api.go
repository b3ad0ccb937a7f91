package backend

import (
	"context"
	"net/url"
	"os/user"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// Status returns a snapshot for front ends.
func (b *Backend) Status() ipc.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.statusLocked()
}

func (b *Backend) statusLocked() ipc.Status {
	st := ipc.Status{
		Version:          b.opts.Version,
		State:            b.state,
		AuthURL:          b.authURL,
		LoginServer:      b.data.Prefs.LoginServer,
		Peers:            []ipc.Peer{},
		ControlConnected: b.connected,
	}
	if b.lastErr != nil {
		st.Health = append(st.Health, ipc.Issue{Code: string(b.lastErr.Code), Message: b.lastErr.Message})
	}
	nm := b.nm
	if nm.Self == nil || (b.state != ipc.StateRunning && b.state != ipc.StateStarting) {
		return st
	}
	now := time.Now()
	self := b.peerLocked(nm.Self, now)
	self.Online = b.connected
	if b.dp != nil {
		self.Relay = b.regionCodeLocked(b.dp.Conn().HomeDERP())
	}
	st.Self = &self
	for _, p := range nm.SortedPeers() {
		ps := b.peerLocked(p, now)
		b.addPathLocked(&ps, p, now)
		st.Peers = append(st.Peers, ps)
	}
	for _, u := range nm.UserProfiles {
		st.Users = append(st.Users, ipc.User{ID: int64(u.ID), LoginName: u.LoginName, DisplayName: u.DisplayName})
	}
	slices.SortFunc(st.Users, func(a, b ipc.User) int { return int(a.ID - b.ID) })
	st.MagicDNS = magicDNSSuffix(nm.Self.Name, nm.Domain)
	b.addRoutingStatusLocked(&st)
	b.addDNSStatusLocked(&st)
	return st
}

// magicDNSSuffix is the FQDN minus the host label, without the trailing dot.
func magicDNSSuffix(fqdn, domain string) string {
	fqdn = strings.TrimSuffix(fqdn, ".")
	if i := strings.IndexByte(fqdn, '.'); i >= 0 {
		return fqdn[i+1:]
	}
	return domain
}

func (b *Backend) peerLocked(n *wire.Node, now time.Time) ipc.Peer {
	p := ipc.Peer{
		ID:       int64(n.ID),
		StableID: n.StableID,
		NodeKey:  n.Key.String(),
		DNSName:  n.Name,
		UserID:   int64(n.User),
		Online:   n.Online != nil && *n.Online,
		LastSeen: n.LastSeen,
		Expired:  b.nm.Expired(n, now),
		Tags:     n.Tags,
	}
	if n.Hostinfo != nil {
		p.HostName = n.Hostinfo.Hostname
		p.OS = n.Hostinfo.OS
		if l := n.Hostinfo.Location; l != nil {
			p.Location = strings.Trim(l.City+", "+l.Country, ", ")
		}
	}
	p.ExitNodeOption = dataplane.OffersExit(n)
	p.ExitNode = p.ExitNodeOption && n.StableID != "" && n.StableID == b.data.Prefs.ExitNodeID
	for _, r := range n.PrimaryRoutes {
		if r.Bits() != 0 {
			p.PrimaryRoutes = append(p.PrimaryRoutes, r)
		}
	}
	if !n.KeyExpiry.IsZero() {
		t := n.KeyExpiry
		p.KeyExpiry = &t
	}
	for _, a := range n.Addresses {
		if a.IsSingleIP() {
			p.Addresses = append(p.Addresses, a.Addr())
		}
	}
	return p
}

// Prefs returns the stored prefs.
func (b *Backend) Prefs() ipc.Prefs {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data.Prefs
}

// SetPrefs changes prefs that need no new login.
func (b *Backend) SetPrefs(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Operator != nil {
		if name := *p.Operator; name != "" {
			if _, err := user.Lookup(name); err != nil {
				return b.data.Prefs, &ipc.Error{Code: ipc.ErrBadRequest, Message: "unknown user " + quote(name)}
			}
		}
	}
	if p.Hostname != nil {
		if err := validHostname(*p.Hostname); err != nil {
			return b.data.Prefs, err
		}
	}
	nextPrefs, err := b.data.Prefs.ApplyPatch(p, b.resolveExitNodeLocked)
	if err != nil {
		return b.data.Prefs, err
	}
	old := b.data
	next := b.data
	next.Prefs = nextPrefs
	b.data = next
	if err := b.saveLocked(); err != nil {
		b.data = old
		return old.Prefs, err
	}
	b.notifyLocked(ipc.EventPrefs, nil)
	b.applyDataplaneLocked()
	if !reflect.DeepEqual(b.hostinfoOf(old.Prefs), b.hostinfoOf(next.Prefs)) {
		b.sendHostinfoLocked()
	}
	if b.dp != nil {
		b.notifyLocked(ipc.EventNetmap, nil)
	}
	return b.data.Prefs, nil
}

// hostinfoOf is what of the prefs reaches control in Hostinfo, to tell whether a change must be sent.
func (b *Backend) hostinfoOf(p ipc.Prefs) [4]any {
	return [4]any{p.Hostname, p.ExitNodeID, p.AdvertiseExitNode, slices.Clone(p.AdvertiseRoutes)}
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
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "invalid login server " + quote(s) + ": want https://host[:port]"}
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
	if server == "" {
		server = b.data.Prefs.LoginServer
	}
	if server == "" {
		b.mu.Unlock()
		return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "no login server configured", Fix: "skein up --login-server https://your-headscale"}
	}
	sameServer := server == b.data.Prefs.LoginServer
	hostnameChanged := req.Hostname != "" && req.Hostname != b.data.Prefs.Hostname
	if b.data.LoggedIn && sameServer && !req.ForceReauth {
		// Already registered: just (re)start. Like the official client, an auth key is only
		// used when a login is needed (or forced).
		b.data.Prefs.WantRunning = true
		if req.Hostname != "" {
			b.data.Prefs.Hostname = req.Hostname
		}
		if err := b.saveLocked(); err != nil {
			b.mu.Unlock()
			return ipc.UpResponse{}, err
		}
		if b.state != ipc.StateRunning || hostnameChanged {
			b.startSessionLocked()
		}
		b.mu.Unlock()
		return b.waitRunning(ctx)
	}
	// A login is needed: stop what runs, and register a new node key.
	b.stopSessionLocked()
	c, err := b.clientFor(server)
	if err != nil {
		b.mu.Unlock()
		return ipc.UpResponse{}, err
	}
	oldNodeKey := key.NodePublic{}
	if b.data.LoggedIn && sameServer {
		oldNodeKey = b.data.NodeKey.Public()
	}
	newNode := key.NewNode()
	prefs := b.data.Prefs
	prefs.LoginServer = server
	prefs.WantRunning = true
	if req.Hostname != "" {
		prefs.Hostname = req.Hostname
	}
	hi := b.hostinfoLocked()
	if req.Hostname != "" {
		hi.Hostname = req.Hostname
	}
	b.authURL = ""
	b.mu.Unlock()

	rreq := &wire.RegisterRequest{NodeKey: newNode.Public(), OldNodeKey: oldNodeKey, Hostinfo: hi}
	if req.AuthKey != "" {
		rreq.Auth = &wire.AuthInfo{AuthKey: req.AuthKey}
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := c.Register(rctx, rreq)
	cancel()
	if err != nil {
		return ipc.UpResponse{}, b.loginFailed(asIPCError(err))
	}
	if resp.Error != "" {
		return ipc.UpResponse{}, b.loginFailed(&ipc.Error{Code: ipc.ErrLoginFailed, Message: "login failed: " + resp.Error})
	}
	if resp.AuthURL != "" {
		if req.AuthKey != "" {
			return ipc.UpResponse{}, b.loginFailed(&ipc.Error{Code: ipc.ErrLoginFailed, Message: "login failed: the server asked for interactive login despite the auth key"})
		}
		return b.startInteractive(c, rreq, resp.AuthURL, newNode, prefs)
	}
	if !resp.MachineAuthorized {
		return ipc.UpResponse{}, b.loginFailed(&ipc.Error{Code: ipc.ErrLoginFailed, Message: "login failed: the server did not authorize this machine"})
	}
	b.mu.Lock()
	if err := b.completeLoginLocked(newNode, prefs, resp); err != nil {
		b.mu.Unlock()
		return ipc.UpResponse{}, err
	}
	b.mu.Unlock()
	return b.waitRunning(ctx)
}

// loginFailed reports a failed login without touching the stored state, and resumes the old
// session if there was one.
func (b *Backend) loginFailed(e *ipc.Error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastErr = e
	if b.data.LoggedIn && b.data.Prefs.WantRunning {
		b.startSessionLocked()
	} else if b.data.LoggedIn {
		b.setStateLocked(ipc.StateStopped)
	} else {
		b.setStateLocked(ipc.StateNeedsLogin)
	}
	b.notifyLocked(ipc.EventState, e)
	return e
}

func (b *Backend) completeLoginLocked(node key.NodePrivate, prefs ipc.Prefs, resp *wire.RegisterResponse) error {
	next := b.data
	next.NodeKey = node
	next.LoggedIn = true
	next.Prefs = prefs
	next.LoginName = resp.Login.LoginName
	if next.LoginName == "" {
		next.LoginName = resp.User.LoginName
	}
	old := b.data
	b.data = next
	if err := b.saveLocked(); err != nil {
		b.data = old
		return err
	}
	b.authURL = ""
	b.lastErr = nil
	b.notifyLocked(ipc.EventPrefs, nil)
	b.startSessionLocked()
	return nil
}

// startInteractive shows the AuthURL and waits in the background for the user's approval.
func (b *Backend) startInteractive(c interface {
	Register(context.Context, *wire.RegisterRequest) (*wire.RegisterResponse, error)
}, rreq *wire.RegisterRequest, authURL string, node key.NodePrivate, prefs ipc.Prefs) (ipc.UpResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopSessionLocked()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.sessionCancel, b.sessionDone = cancel, done
	b.authURL = authURL
	b.state = "" // force the notification below
	b.setStateLocked(ipc.StateNeedsLogin)
	go func() {
		defer close(done)
		url := authURL
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
				b.noteSessionError(ctx, err)
				if !sleepCtx(ctx, jitter(backoff)) {
					return
				}
				backoff = nextBackoff(backoff)
				continue
			case resp.Error != "":
				b.mu.Lock()
				b.lastErr = &ipc.Error{Code: ipc.ErrLoginFailed, Message: "login failed: " + resp.Error}
				b.authURL = ""
				b.notifyLocked(ipc.EventState, b.lastErr)
				b.mu.Unlock()
				return
			case resp.AuthURL != "":
				// Expired or unknown registration: the server hands out a new URL.
				b.mu.Lock()
				url = resp.AuthURL
				b.authURL = url
				b.notifyLocked(ipc.EventState, nil)
				b.mu.Unlock()
				if !sleepCtx(ctx, time.Second) {
					return
				}
				continue
			}
			b.mu.Lock()
			if ctx.Err() == nil {
				// The session slot is ours; completeLogin replaces it with the map session.
				b.sessionCancel, b.sessionDone = nil, nil
				if err := b.completeLoginLocked(node, prefs, resp); err != nil {
					b.lastErr = asIPCError(err)
					b.notifyLocked(ipc.EventState, b.lastErr)
				}
			}
			b.mu.Unlock()
			return
		}
	}()
	return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: authURL}, nil
}

// waitRunning waits until the session is Running (or fails to get there).
func (b *Backend) waitRunning(ctx context.Context) (ipc.UpResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, upWait)
	defer cancel()
	for {
		b.mu.Lock()
		st, ch, authURL := b.state, b.changed, b.authURL
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

// Down stops the session and remembers not to start it again.
func (b *Backend) Down(ctx context.Context) error {
	b.mu.Lock()
	b.data.Prefs.WantRunning = false
	if err := b.saveLocked(); err != nil {
		b.mu.Unlock()
		return err
	}
	done := b.stopSessionLocked()
	b.connected = false
	b.authURL = ""
	if b.data.LoggedIn {
		b.setStateLocked(ipc.StateStopped)
	} else {
		b.setStateLocked(ipc.StateNeedsLogin)
	}
	b.notifyLocked(ipc.EventPrefs, nil)
	b.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// Logout expires the node key on the server and forgets it locally.
func (b *Backend) Logout(ctx context.Context) error {
	b.mu.Lock()
	done := b.stopSessionLocked()
	wasLoggedIn := b.data.LoggedIn
	node := b.data.NodeKey
	server := b.data.Prefs.LoginServer
	b.mu.Unlock()
	<-done

	var serverErr error
	if wasLoggedIn && server != "" {
		b.mu.Lock()
		c, err := b.clientFor(server)
		hi := b.hostinfoLocked()
		b.mu.Unlock()
		if err == nil {
			lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err = c.Register(lctx, &wire.RegisterRequest{NodeKey: node.Public(), Expiry: wire.LogoutExpiry, Hostinfo: hi})
			cancel()
		}
		serverErr = err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data.NodeKey = key.NodePrivate{}
	b.data.LoggedIn = false
	b.data.LoginName = ""
	b.data.Prefs.WantRunning = false
	if err := b.saveLocked(); err != nil {
		return err
	}
	b.connected = false
	b.authURL = ""
	b.nm.Self = nil
	clear(b.nm.Peers)
	b.setStateLocked(ipc.StateNeedsLogin)
	b.notifyLocked(ipc.EventNetmap, nil)
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
