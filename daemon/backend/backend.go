// Package backend is skeind's IPC façade: it keeps the persisted state and prefs, follows the
// control session (daemon/session), serves the ipc.Backend interface the CLI and the desktop
// app use, and hands the newest network map and prefs to one apply loop that drives the tunnel
// (daemon/dataplane), the peer API and the system's DNS without holding the state lock — so a
// status request never waits behind host I/O.
package backend

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/router"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/sessionhelper"
	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/daemon/taildrop"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// Options configure a Backend.
type Options struct {
	Store   *state.Store
	Version string
	Logf    func(format string, args ...any)
	// TLSConfig for the control server; nil trusts the system store and SSL_CERT_FILE.
	TLSConfig *tls.Config
	// OSHostname overrides os.Hostname (tests).
	OSHostname func() (string, error)
	// TunName and Port configure the data plane.
	TunName string
	Port    uint16
	Verbose bool
	// Dial makes a control client (tests pass a fake); nil = daemon/control over ts2021.
	Dial func(server string, machineKey key.MachinePrivate) (session.Control, error)
	// NewDataplane starts the tunnel (tests pass a fake); nil = daemon/dataplane.
	NewDataplane func(dataplane.Options) (Dataplane, error)
	// LookupUser validates an operator's user name; nil = os/user.
	LookupUser func(name string) error
	// HostnamePoll is how often the OS host name is read for a change (0 = 30 s): Linux has
	// no event for it, and a renamed machine should not need a restart to show its new name.
	HostnamePoll time.Duration
	// ListenPeerAPI opens the peer API's listener on one of our tailnet addresses (tests
	// listen on loopback); nil = taildrop.Listen.
	ListenPeerAPI func(ctx context.Context, addr netip.Addr) (net.Listener, error)
	// SessionHelperSocket is where the session helper (Tailscale SSH's sessions) listens;
	// "" = sessionhelper.DefaultSocket.
	SessionHelperSocket string
}

// Backend implements ipc.Backend.
type Backend struct {
	opts     Options
	logf     func(string, ...any)
	discoKey key.DiscoPrivate
	logID    string
	sess     *session.Session

	mu sync.Mutex
	// data is the current profile; profiles every profile as last saved.
	data     state.Data
	profiles state.Profiles
	started  bool
	closed   bool
	// What the control session last said (updates of older activities are dropped).
	sessGen   uint64
	phase     session.Phase
	nm        *netmap.NetworkMap // immutable; nil when there is none
	nmArrived time.Time          // when nm's response arrived from control
	connected bool
	authURL   string
	// pending is the login waiting for the user's approval in a browser.
	pending *pendingLogin
	lastErr *ipc.Error
	// state is the last state watchers were told.
	state    ipc.State
	changed  chan struct{} // closed and replaced on every change
	watchers map[*watcher]struct{}

	tun          tunnel // the apply loop's side: what runs, and what it has applied
	engine       engineStats
	stopHostname chan struct{} // ends watchHostname and probeLoop
	exits        exitProbes    // the automatic exit node's measurements
	expiryTimer  *time.Timer   // fires at the next key expiry threshold
	inbox        *taildrop.Inbox
	// inboxErr: the Taildrop inbox could not be opened (receiving is off).
	inboxErr error
}

// pendingLogin is what becomes the stored state once an interactive login is approved.
type pendingLogin struct {
	prefs ipc.Prefs
	// profile is the new profile the login is for (nil: the current one).
	profile *state.Data
}

// New loads the state and returns a backend; Start begins work.
func New(opts Options) (*Backend, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.OSHostname == nil {
		opts.OSHostname = os.Hostname
	}
	if opts.NewDataplane == nil {
		opts.NewDataplane = startDataplane
	}
	if opts.ListenPeerAPI == nil {
		opts.ListenPeerAPI = taildrop.Listen
	}
	if opts.SessionHelperSocket == "" {
		opts.SessionHelperSocket = sessionhelper.DefaultSocket
	}
	if opts.Dial == nil {
		opts.Dial = func(server string, mk key.MachinePrivate) (session.Control, error) {
			return control.New(control.Options{
				ServerURL:  server,
				MachineKey: mk,
				TLSConfig:  opts.TLSConfig,
				Logf:       opts.Logf,
				// Marked so that control traffic bypasses the tunnel's routes (e.g. an exit node).
				DialContext: (&net.Dialer{KeepAlive: 30 * time.Second, Control: markControl}).DialContext,
			})
		}
	}
	ps, err := opts.Store.LoadProfiles()
	if err != nil {
		return nil, err
	}
	d := ps.CurrentData()
	var id [16]byte
	rand.Read(id[:])
	b := &Backend{
		opts:     opts,
		logf:     opts.Logf,
		discoKey: key.NewDisco(),
		logID:    hex.EncodeToString(id[:]),
		data:     d,
		profiles: ps,
		state:    ipc.StateNoState,
		changed:  make(chan struct{}),
		watchers: map[*watcher]struct{}{},
	}
	b.tun.init()
	b.stopHostname = make(chan struct{})
	// The machine key is this host's for good (logout keeps it); the session's Dial may run
	// under b.mu, so it must not take it.
	mk := d.MachineKey
	b.sess = session.New(session.Options{
		Dial: func(server string) (session.Control, error) {
			c, err := opts.Dial(server, mk)
			if err != nil {
				return nil, &ipc.Error{Code: ipc.ErrBadRequest, Message: err.Error()}
			}
			return c, nil
		},
		MapRequest: b.mapRequest,
		OnUpdate:   b.onSessionUpdate,
		Logf:       b.logf,
	})
	go b.applyLoop()
	return b, nil
}

// Start resumes what the stored prefs ask for: a running session when logged in and wanted.
func (b *Backend) Start() {
	b.mu.Lock()
	b.started = true
	run := b.data.LoggedIn && b.data.Prefs.WantRunning
	server, node := b.data.Prefs.LoginServer, b.data.NodeKey
	if run {
		b.phase = session.Connecting
		b.sessGen = b.sess.Run(server, node)
	}
	b.refreshLocked(ipc.EventState, nil)
	b.mu.Unlock()
	go b.watchHostname()
	go b.probeLoop(b.stopHostname, probeEvery, probeAllEvery)
}

// watchHostname tells control when the OS host name changes, unless a name was set (then the
// OS name is not what control sees).
func (b *Backend) watchHostname() {
	every := b.opts.HostnamePoll
	if every <= 0 {
		every = 30 * time.Second
	}
	last, _ := b.opts.OSHostname()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stopHostname:
			return
		case <-t.C:
		}
		name, err := b.opts.OSHostname()
		if err != nil || name == last {
			continue
		}
		b.mu.Lock()
		explicit := b.data.Prefs.Hostname != ""
		b.mu.Unlock()
		b.logf("host name changed: %q -> %q%s", last, name, map[bool]string{true: " (not used: a name was set with --hostname)"}[explicit])
		last = name
		if !explicit {
			b.sess.ReportChanged()
		}
	}
}

// Close stops the session and the tunnel; the node stays registered.
func (b *Backend) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.stopHostname)
	if b.expiryTimer != nil {
		b.expiryTimer.Stop()
	}
	for w := range b.watchers {
		w.close()
	}
	b.watchers = nil
	b.mu.Unlock()
	b.sess.Close()
	b.tun.shutdown()
	b.stopServe()
}

// markControl sets the bypass mark when we may (root); without CAP_NET_ADMIN it does nothing,
// which is right for a helper that has no tunnel to bypass.
func markControl(network, address string, c syscall.RawConn) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return router.ControlBypass(network, address, c)
}

// onSessionUpdate follows the control session. It runs on the session's goroutine, one update
// at a time.
func (b *Backend) onSessionUpdate(u session.Update) {
	var run *session.LoginResult
	b.mu.Lock()
	if u.Gen < b.sessGen || b.closed {
		b.mu.Unlock()
		return
	}
	b.sessGen = u.Gen
	phaseChanged := b.phase != u.Phase
	b.phase, b.connected = u.Phase, u.Connected
	prefsChanged := false
	if u.NetmapChanged {
		b.nm, b.nmArrived = u.Netmap, u.Received
		b.noteTailnetLocked()
		b.scheduleExpiryLocked()
		old := b.data
		if b.chooseAutoExitLocked() {
			if b.saveLocked() == nil {
				prefsChanged = true
			} else {
				b.data = old
			}
		}
	}
	if u.Phase == session.LoginWait {
		b.authURL = u.AuthURL
	}
	if u.Err != nil {
		b.lastErr = asIPCError(u.Err)
	} else if u.Phase == session.Running {
		b.lastErr = nil
	}
	kind := ipc.EventState
	if u.NetmapChanged {
		kind = ipc.EventNetmap
	}
	switch {
	case u.Expired:
		b.data.LoggedIn = false
		b.saveLocked()
		if b.phase == session.Idle && u.Netmap == nil {
			b.nm = nil
		}
		fix := "skein up"
		if u.Netmap != nil {
			fix = "skein up --force-reauth"
		}
		b.lastErr = &ipc.Error{Code: ipc.ErrNeedsLogin, Message: u.Err.Error(), Fix: fix}
		kind = ipc.EventState
	case u.Login != nil && b.pending != nil:
		if err := b.completeLoginLocked(u.Login.NodeKey, b.pending.prefs, u.Login.LoginName, b.pending.profile); err != nil {
			b.lastErr = asIPCError(err)
		} else {
			run = u.Login
		}
	case u.Phase == session.Idle && u.Err != nil && b.pending != nil:
		// The interactive login failed for good: back to the old login, if there was one.
		b.pending, b.authURL = nil, ""
		if b.data.LoggedIn && b.data.Prefs.WantRunning {
			run = &session.LoginResult{Server: b.data.Prefs.LoginServer, NodeKey: b.data.NodeKey}
		}
	}
	if run != nil {
		b.phase = session.Connecting
		b.sessGen = b.sess.Run(run.Server, run.NodeKey)
	}
	if u.NetmapChanged || phaseChanged || u.Expired || run != nil {
		b.tun.want()
	}
	if prefsChanged {
		b.notifyLocked(ipc.EventPrefs, nil)
		go b.sess.ReportChanged()
	}
	if kind == ipc.EventNetmap && b.stateLocked() == b.state {
		// Watchers hear of a new map once the tunnel carries it (the apply loop tells them);
		// callers waiting for a state are woken now.
		b.signalLocked()
	} else {
		b.refreshLocked(kind, b.lastErr)
	}
	b.mu.Unlock()
}

// stateLocked is the state front ends see.
func (b *Backend) stateLocked() ipc.State {
	switch {
	case !b.started:
		return ipc.StateNoState
	case b.authURL != "", !b.data.LoggedIn:
		return ipc.StateNeedsLogin
	case !b.data.Prefs.WantRunning:
		return ipc.StateStopped
	case b.phase == session.Running && b.tun.showing():
		// Running means the tunnel carries this map, not only that control sent it.
		return ipc.StateRunning
	case b.phase == session.Idle && b.lastErr != nil && b.lastErr.Code == ipc.ErrNeedsLogin:
		return ipc.StateNeedsLogin
	}
	return ipc.StateStarting
}

// refreshLocked tells watchers about a change: a state event when the state moved, else one
// of kind (a netmap, prefs or path change).
func (b *Backend) refreshLocked(kind ipc.EventKind, errv *ipc.Error) {
	st := b.stateLocked()
	if st != b.state {
		b.logf("state: %s -> %s", b.state, st)
		b.state = st
		if st == ipc.StateRunning {
			b.authURL, b.lastErr = "", nil
		}
		kind = ipc.EventState
	}
	b.notifyLocked(kind, errv)
}

// signalLocked wakes callers waiting for a change (Up, Down, SetPrefs).
func (b *Backend) signalLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Backend) notifyLocked(kind ipc.EventKind, errv *ipc.Error) {
	b.signalLocked()
	if len(b.watchers) == 0 {
		return
	}
	st := b.statusLocked()
	ev := ipc.Event{Kind: kind, Status: &st, Error: errv}
	if kind == ipc.EventPrefs {
		p := b.data.Prefs
		ev.Prefs = &p
	}
	for w := range b.watchers {
		w.send(ev)
	}
}

// saveLocked persists b.data as the current profile; a failure is logged and reported, never
// silently dropped, and leaves the stored profiles as they were.
func (b *Backend) saveLocked() error {
	return b.saveProfilesLocked(b.profiles.With(b.data))
}

// saveProfilesLocked persists ps and makes it the backend's record of the stored profiles.
func (b *Backend) saveProfilesLocked(ps state.Profiles) error {
	if err := b.opts.Store.SaveProfiles(ps); err != nil {
		b.logf("saving state: %v", err)
		return &ipc.Error{Code: ipc.ErrInternal, Message: "cannot save state: " + err.Error()}
	}
	b.profiles = ps
	return nil
}

// hostinfoLocked is what this node tells control about itself.
func (b *Backend) hostinfoLocked() *wire.Hostinfo { return b.hostinfoForLocked(b.data.Prefs) }

// hostinfoForLocked is the Hostinfo of a node with prefs p.
func (b *Backend) hostinfoForLocked(p ipc.Prefs) *wire.Hostinfo {
	name := p.Hostname
	if name == "" {
		if h, err := b.opts.OSHostname(); err == nil {
			name = h
		}
	}
	hi := &wire.Hostinfo{
		IPNVersion:   "skein-" + b.opts.Version,
		BackendLogID: b.logID,
		OS:           "linux",
		OSVersion:    kernelRelease(),
		Hostname:     name,
		GoArch:       runtime.GOARCH,
		GoVersion:    runtime.Version(),
		ExitNodeID:   p.ExitNodeID,
		Services:     b.tun.peerAPIServices(),
		SSH_HostKeys: b.tun.ssh.advertised,
		ShieldsUp:    p.ShieldsUp,
	}
	hi.RoutableIPs = append(hi.RoutableIPs, p.AdvertiseRoutes...)
	if p.AdvertiseExitNode {
		hi.RoutableIPs = append(hi.RoutableIPs, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	}
	return hi
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
