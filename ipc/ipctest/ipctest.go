// Package ipctest provides a fake ipc.Backend and an in-process server on a real Unix socket,
// for tests of front ends (CLI, desktop app) and of the ipc package itself.
package ipctest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

// Backend is a scriptable ipc.Backend. Without hooks, Up reports Running, Down Stopped and
// Logout NeedsLogin, each also emitting a state event.
type Backend struct {
	mu       sync.Mutex // guards everything below; hooks are set while serving
	upFunc   func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error)
	downFunc func(ctx context.Context) error
	logout   func(ctx context.Context) error
	setPrefs func(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error)
	onPing   func(ctx context.Context, peer string) (ipc.PingResult, error)
	onDNS    func(ctx context.Context, name, qtype string) (ipc.DNSQueryResult, error)
	onNC     func(ctx context.Context) (ipc.NetcheckReport, error)
	onWhy    func(ctx context.Context, peer string) (ipc.WhyReport, error)
	status   ipc.Status
	prefs    ipc.Prefs
	watchers map[chan ipc.Event]struct{}
	fs       *files
	upReqs   []ipc.UpRequest
	onSwitch func(ctx context.Context, id string) error
	switches []string
}

// NewBackend returns a Backend that starts with st and p.
func NewBackend(st ipc.Status, p ipc.Prefs) *Backend {
	return &Backend{status: st, prefs: p, watchers: map[chan ipc.Event]struct{}{}}
}

// OnUp replaces Up's behaviour; nil restores the default.
func (b *Backend) OnUp(f func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.upFunc = f
}

// OnDown replaces Down's behaviour; nil restores the default.
func (b *Backend) OnDown(f func(ctx context.Context) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.downFunc = f
}

// OnLogout replaces Logout's behaviour; nil restores the default.
func (b *Backend) OnLogout(f func(ctx context.Context) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.logout = f
}

// OnSetPrefs replaces SetPrefs's behaviour; nil restores the default.
func (b *Backend) OnSetPrefs(f func(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setPrefs = f
}

// Status implements ipc.Backend.
func (b *Backend) Status() ipc.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

// Prefs implements ipc.Backend.
func (b *Backend) Prefs() ipc.Prefs {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.prefs
}

// Up implements ipc.Backend.
func (b *Backend) Up(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
	b.mu.Lock()
	b.upReqs = append(b.upReqs, req)
	f := b.upFunc
	b.mu.Unlock()
	if f != nil {
		return f(ctx, req)
	}
	b.SetState(ipc.StateRunning, "")
	return ipc.UpResponse{State: ipc.StateRunning}, nil
}

// UpRequests returns the requests Up has received so far.
func (b *Backend) UpRequests() []ipc.UpRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]ipc.UpRequest(nil), b.upReqs...)
}

// Down implements ipc.Backend.
func (b *Backend) Down(ctx context.Context) error {
	b.mu.Lock()
	f := b.downFunc
	b.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	b.SetState(ipc.StateStopped, "")
	return nil
}

// Logout implements ipc.Backend.
func (b *Backend) Logout(ctx context.Context) error {
	b.mu.Lock()
	f := b.logout
	b.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	b.SetState(ipc.StateNeedsLogin, "")
	return nil
}

// SetPrefs implements ipc.Backend.
func (b *Backend) SetPrefs(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
	b.mu.Lock()
	if f := b.setPrefs; f != nil {
		b.mu.Unlock()
		return f(ctx, p)
	}
	next, err := b.prefs.ApplyPatch(p, b.resolveExitNodeLocked)
	if err != nil {
		b.mu.Unlock()
		return b.prefs, err
	}
	b.prefs = next
	prefs := b.prefs
	b.mu.Unlock()
	b.Emit(ipc.Event{Kind: ipc.EventPrefs, Prefs: &prefs})
	return prefs, nil
}

// resolveExitNodeLocked finds an exit node among the status's peers by short name, FQDN, first
// address or StableID, like the helper does.
func (b *Backend) resolveExitNodeLocked(q string) (string, error) {
	for _, p := range b.status.Peers {
		if q == p.StableID || q == p.ShortName() || q == strings.TrimSuffix(p.DNSName, ".") || q == p.FirstIP() {
			if !p.ExitNodeOption {
				return "", &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%s does not offer to be an exit node", p.ShortName())}
			}
			return p.StableID, nil
		}
	}
	return "", &ipc.Error{Code: ipc.ErrNotFound, Message: fmt.Sprintf("no peer named %q", q)}
}

// Ping implements ipc.Backend: it answers from the hook set with OnPing, else "unknown peer".
func (b *Backend) Ping(ctx context.Context, peer string) (ipc.PingResult, error) {
	b.mu.Lock()
	f := b.onPing
	b.mu.Unlock()
	if f != nil {
		return f(ctx, peer)
	}
	return ipc.PingResult{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "unknown peer " + peer}
}

// OnPing sets how Ping answers.
func (b *Backend) OnPing(f func(ctx context.Context, peer string) (ipc.PingResult, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onPing = f
}

// OnDNSQuery sets how DNSQuery answers.
func (b *Backend) OnDNSQuery(f func(ctx context.Context, name, qtype string) (ipc.DNSQueryResult, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onDNS = f
}

// DNSQuery implements ipc.Backend: it answers from the hook set with OnDNSQuery, else NXDOMAIN.
func (b *Backend) DNSQuery(ctx context.Context, name, qtype string) (ipc.DNSQueryResult, error) {
	b.mu.Lock()
	f := b.onDNS
	b.mu.Unlock()
	if f != nil {
		return f(ctx, name, qtype)
	}
	return ipc.DNSQueryResult{Name: name, Type: qtype, Rcode: "NXDOMAIN", Via: "local"}, nil
}

// Netcheck implements ipc.Backend: it answers from the hook set with OnNetcheck, else with an
// empty report.
func (b *Backend) Netcheck(ctx context.Context) (ipc.NetcheckReport, error) {
	b.mu.Lock()
	f := b.onNC
	b.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	return ipc.NetcheckReport{RegionLatency: map[int]float64{}, RegionCodes: map[int]string{}}, nil
}

// OnNetcheck sets how Netcheck answers (ipc.CallerMayChange(ctx) tells who asks).
func (b *Backend) OnNetcheck(f func(ctx context.Context) (ipc.NetcheckReport, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onNC = f
}

// Why implements ipc.Diagnoser: it answers from the hook set with OnWhy, else "unknown peer".
func (b *Backend) Why(ctx context.Context, peer string) (ipc.WhyReport, error) {
	b.mu.Lock()
	f := b.onWhy
	b.mu.Unlock()
	if f != nil {
		return f(ctx, peer)
	}
	return ipc.WhyReport{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "unknown peer " + peer}
}

// OnWhy sets how Why answers.
func (b *Backend) OnWhy(f func(ctx context.Context, peer string) (ipc.WhyReport, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onWhy = f
}

// Watch implements ipc.Backend.
func (b *Backend) Watch() (<-chan ipc.Event, func()) {
	ch := make(chan ipc.Event, 64)
	b.mu.Lock()
	st := b.status
	ch <- ipc.Event{Kind: ipc.EventState, Status: &st}
	b.watchers[ch] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.watchers, ch)
			b.mu.Unlock()
		})
	}
}

// Watchers is the number of open watches; tests use it to see a stream end.
func (b *Backend) Watchers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.watchers)
}

// Emit sends ev to every open watch (dropping it for a watcher whose buffer is full).
func (b *Backend) Emit(ev ipc.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.watchers {
		select {
		case ch <- ev:
		default:
		}
	}
}

// SetStatus replaces the status and emits it as a netmap event.
func (b *Backend) SetStatus(st ipc.Status) {
	b.mu.Lock()
	b.status = st
	b.mu.Unlock()
	b.Emit(ipc.Event{Kind: ipc.EventNetmap, Status: &st})
}

// SetState changes the state and AuthURL and emits a state event.
func (b *Backend) SetState(s ipc.State, authURL string) {
	b.mu.Lock()
	b.status.State = s
	b.status.AuthURL = authURL
	st := b.status
	b.mu.Unlock()
	b.Emit(ipc.Event{Kind: ipc.EventState, Status: &st})
}

// Serve runs an ipc server for b on a Unix socket in a fresh temporary directory and returns
// the socket path; the server stops when the test ends.
func Serve(t testing.TB, b ipc.Backend, opts ipc.ServerOptions) (socketPath string, srv *ipc.Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "skeind.sock")
	return path, ServeAt(t, path, b, opts)
}

// ServeAt is Serve on a given socket path.
func ServeAt(t testing.TB, path string, b ipc.Backend, opts ipc.ServerOptions) *ipc.Server {
	t.Helper()
	l, err := ipc.Listen(path)
	if err != nil {
		t.Fatalf("ipc.Listen: %v", err)
	}
	srv := ipc.NewServer(b, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}
