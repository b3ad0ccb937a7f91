// Package backend is skeind's core: it owns the persisted state, drives the control client
// through login, map polling and logout, keeps the network map, and serves the IPC Backend
// interface that the CLI and the desktop app use.
package backend

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/router"
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
	// TunName and Port configure the data plane; NoDataplane leaves it off (control-only tests).
	TunName     string
	Port        uint16
	NoDataplane bool
	Verbose     bool
}

// Backend implements ipc.Backend.
type Backend struct {
	opts     Options
	logf     func(string, ...any)
	discoKey key.DiscoPrivate
	logID    string

	mu        sync.Mutex
	data      state.Data
	state     ipc.State
	authURL   string
	lastErr   *ipc.Error
	nm        *netmap.NetworkMap
	connected bool
	client    *control.Client
	// session is the running map session or login; cancelled by down, logout, a new login.
	sessionCancel context.CancelFunc
	sessionDone   chan struct{}
	changed       chan struct{} // closed and replaced on every state change
	watchers      map[*watcher]struct{}
	closed        bool
	dp            *dataplane.Dataplane // the tunnel, while a session has a netmap
	stopPathWatch func()               // ends watchPaths
	// rep reports our network facts to control while a session runs; an atomic because the
	// transport's callback may fire under mu.
	rep      atomic.Pointer[reporter]
	inbox    *taildrop.Inbox // Taildrop inbox, opened on first use
	inboxErr error
	papi     *peerAPI // the peer API while the tunnel is up
}

// New loads the state and returns a backend; Start begins work.
func New(opts Options) (*Backend, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.OSHostname == nil {
		opts.OSHostname = os.Hostname
	}
	d, err := opts.Store.Load()
	if err != nil {
		return nil, err
	}
	var id [16]byte
	rand.Read(id[:])
	b := &Backend{
		opts:     opts,
		logf:     opts.Logf,
		discoKey: key.NewDisco(),
		logID:    hex.EncodeToString(id[:]),
		data:     d,
		state:    ipc.StateNoState,
		nm:       netmap.New(),
		changed:  make(chan struct{}),
		watchers: map[*watcher]struct{}{},
	}
	return b, nil
}

// Start resumes what the stored prefs ask for: a running session when logged in and wanted.
func (b *Backend) Start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.data.LoggedIn:
		b.setStateLocked(ipc.StateNeedsLogin)
	case !b.data.Prefs.WantRunning:
		b.setStateLocked(ipc.StateStopped)
	default:
		b.startSessionLocked()
	}
}

// Close stops every session; the node stays registered.
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	done := b.stopSessionLocked()
	for w := range b.watchers {
		w.close()
	}
	b.watchers = nil
	c := b.client
	b.mu.Unlock()
	<-done
	if c != nil {
		c.Close()
	}
}

// markControl sets the bypass mark when we may (root); without CAP_NET_ADMIN it does nothing,
// which is right for a helper that has no tunnel to bypass.
func markControl(network, address string, c syscall.RawConn) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return router.ControlBypass(network, address, c)
}

// clientLocked returns the control client for the stored (or given) login server.
func (b *Backend) clientFor(server string) (*control.Client, error) {
	if b.client != nil && b.client.ServerURL() == strings.TrimRight(server, "/") {
		return b.client, nil
	}
	c, err := control.New(control.Options{
		ServerURL:  server,
		MachineKey: b.data.MachineKey,
		TLSConfig:  b.opts.TLSConfig,
		Logf:       b.logf,
		// Marked so that control traffic bypasses the tunnel's routes (e.g. an exit node).
		DialContext: (&net.Dialer{KeepAlive: 30 * time.Second, Control: markControl}).DialContext,
	})
	if err != nil {
		return nil, &ipc.Error{Code: ipc.ErrBadRequest, Message: err.Error()}
	}
	if b.client != nil {
		b.client.Close()
	}
	b.client = c
	return c, nil
}

func (b *Backend) hostinfoLocked() *wire.Hostinfo {
	name := b.data.Prefs.Hostname
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
		ExitNodeID:   b.data.Prefs.ExitNodeID,
		Services:     b.peerAPIServicesLocked(),
	}
	hi.RoutableIPs = append(hi.RoutableIPs, b.data.Prefs.AdvertiseRoutes...)
	if b.data.Prefs.AdvertiseExitNode {
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

// setStateLocked changes the state and tells watchers.
func (b *Backend) setStateLocked(s ipc.State) {
	if b.state == s {
		return
	}
	b.logf("state: %s -> %s", b.state, s)
	b.state = s
	if s == ipc.StateRunning {
		b.authURL = ""
		b.lastErr = nil
	}
	b.notifyLocked(ipc.EventState, nil)
}

func (b *Backend) notifyLocked(kind ipc.EventKind, errv *ipc.Error) {
	close(b.changed)
	b.changed = make(chan struct{})
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

// save persists b.data; a failure is logged and reported, never silently dropped.
func (b *Backend) saveLocked() error {
	if err := b.opts.Store.Save(b.data); err != nil {
		b.logf("saving state: %v", err)
		return &ipc.Error{Code: ipc.ErrInternal, Message: "cannot save state: " + err.Error()}
	}
	return nil
}

// stopSessionLocked cancels the running session and returns a channel closed when it has ended.
func (b *Backend) stopSessionLocked() <-chan struct{} {
	done := b.sessionDone
	if b.sessionCancel != nil {
		b.sessionCancel()
	}
	b.sessionCancel, b.sessionDone = nil, nil
	if done == nil {
		done = make(chan struct{})
		close(done)
	}
	return done
}

func (b *Backend) startSessionLocked() {
	b.stopSessionLocked()
	c, err := b.clientFor(b.data.Prefs.LoginServer)
	if err != nil {
		b.lastErr = asIPCError(err)
		b.setStateLocked(ipc.StateNeedsLogin)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.sessionCancel, b.sessionDone = cancel, done
	b.setStateLocked(ipc.StateStarting)
	go func() {
		defer close(done)
		b.runSession(ctx, c)
	}()
}

// Backoff for reconnects: jittered, capped low enough that a returning server is seen within
// a few seconds.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 5 * time.Second
)

func nextBackoff(d time.Duration) time.Duration {
	d *= 2
	if d > backoffMax {
		d = backoffMax
	}
	return d
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// runSession keeps the node registered and the map poll running until ctx ends.
func (b *Backend) runSession(ctx context.Context, c *control.Client) {
	rep := newReporter(func(ctx context.Context) error { return b.sendReport(ctx, c) }, b.logf)
	rep.start()
	b.rep.Store(rep)
	defer func() {
		b.rep.CompareAndSwap(rep, nil)
		rep.close()
	}()
	defer func() {
		b.mu.Lock()
		b.stopDataplaneLocked()
		b.mu.Unlock()
	}()
	backoff := backoffMin
	needRefresh := true
	for ctx.Err() == nil {
		if needRefresh {
			ok, err := b.refreshRegistration(ctx, c)
			if err != nil {
				b.noteSessionError(ctx, err)
				if !sleepCtx(ctx, jitter(backoff)) {
					return
				}
				backoff = nextBackoff(backoff)
				continue
			}
			if !ok {
				return // needs login; state already says so
			}
			needRefresh = false
		}
		gotMap := false
		err := b.pollOnce(ctx, c, func() { gotMap = true; backoff = backoffMin })
		if ctx.Err() != nil {
			return
		}
		b.mu.Lock()
		b.connected = false
		b.notifyLocked(ipc.EventState, nil)
		b.mu.Unlock()
		b.logf("map poll ended: %v", err)
		var he *control.HTTPError
		if errors.As(err, &he) && (he.Status == 401 || he.Status == 403 || he.Status == 404) {
			needRefresh = true // the server no longer knows our node key
		}
		if !gotMap {
			b.noteSessionError(ctx, err)
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

func (b *Backend) noteSessionError(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	b.logf("control: %v", err)
	b.mu.Lock()
	b.lastErr = asIPCError(err)
	b.notifyLocked(ipc.EventState, b.lastErr)
	b.mu.Unlock()
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

// refreshRegistration re-sends the current node key as tailscaled does on start. It returns
// false when the server wants a new login (key expired or node unknown).
func (b *Backend) refreshRegistration(ctx context.Context, c *control.Client) (bool, error) {
	b.mu.Lock()
	req := &wire.RegisterRequest{
		NodeKey:  b.data.NodeKey.Public(),
		Hostinfo: b.hostinfoLocked(),
	}
	b.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.Register(rctx, req)
	if err != nil {
		return false, err
	}
	if resp.Error != "" {
		return false, &ipc.Error{Code: ipc.ErrLoginFailed, Message: "control server: " + resp.Error}
	}
	if resp.NodeKeyExpired || resp.AuthURL != "" || !resp.MachineAuthorized {
		b.mu.Lock()
		defer b.mu.Unlock()
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		b.logf("control: node key no longer valid (expired=%v); login needed", resp.NodeKeyExpired)
		b.data.LoggedIn = false
		b.saveLocked()
		b.nm = netmap.New()
		b.lastErr = &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "the node key has expired or the node was removed; log in again", Fix: "skein up"}
		b.setStateLocked(ipc.StateNeedsLogin)
		b.notifyLocked(ipc.EventNetmap, b.lastErr)
		return false, nil
	}
	return true, nil
}

// pollOnce runs one map long-poll until it breaks.
func (b *Backend) pollOnce(ctx context.Context, c *control.Client, onMap func()) error {
	b.mu.Lock()
	req := b.mapRequestLocked()
	b.mu.Unlock()
	first := true
	return c.PollMap(ctx, req, func(mr *wire.MapResponse) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if first {
			if mr.KeepAlive {
				return nil
			}
			if mr.Node == nil {
				return errors.New("control: first map response has no self node")
			}
			// A new session starts from a clean map: the first response is a full one.
			b.nm = netmap.New()
			first = false
			onMap()
			b.connected = true
			b.lastErr = nil
		}
		changed := b.nm.Apply(mr, time.Now())
		if changed || b.dp == nil {
			if err := b.startDataplaneLocked(); err != nil {
				b.lastErr = &ipc.Error{Code: ipc.ErrInternal, Message: "cannot start the tunnel: " + oneLine(err.Error())}
				b.notifyLocked(ipc.EventState, b.lastErr)
				return err
			}
			b.applyDataplaneLocked()
			b.syncPeerAPILocked()
		}
		if b.nm.Self != nil && b.nm.Expired(b.nm.Self, time.Now()) {
			b.data.LoggedIn = false
			b.saveLocked()
			b.lastErr = &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "this node's key has expired; log in again", Fix: "skein up --force-reauth"}
			b.setStateLocked(ipc.StateNeedsLogin)
			b.notifyLocked(ipc.EventState, b.lastErr)
			return errors.New("node key expired")
		}
		if b.state != ipc.StateRunning {
			b.setStateLocked(ipc.StateRunning)
		} else if changed {
			b.notifyLocked(ipc.EventNetmap, nil)
		}
		return nil
	})
}

// asIPCError classifies an error into the typed IPC error the front ends render.
func asIPCError(err error) *ipc.Error {
	var ie *ipc.Error
	if errors.As(err, &ie) {
		return ie
	}
	msg := err.Error()
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) || strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate") {
		return &ipc.Error{Code: ipc.ErrCertUntrusted, Message: "the login server's TLS certificate is not trusted: " + oneLine(msg),
			Fix: "install the server's CA in the system store, or set SSL_CERT_FILE for skeind"}
	}
	var ne net.Error
	var oe *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &dnsErr) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return &ipc.Error{Code: ipc.ErrServerUnreachable, Message: "cannot reach the login server: " + oneLine(msg)}
	}
	var he *control.HTTPError
	if errors.As(err, &he) {
		return &ipc.Error{Code: ipc.ErrServerUnreachable, Message: oneLine(msg)}
	}
	return &ipc.Error{Code: ipc.ErrInternal, Message: oneLine(msg)}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// notifyFileLocked tells watchers that a file arrived in the Taildrop inbox.
func (b *Backend) notifyFileLocked(f ipc.WaitingFile) {
	for w := range b.watchers {
		w.send(ipc.Event{Kind: ipc.EventFile, File: &f})
	}
}
