package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/ingress"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/serve"
	"github.com/skeinvpn/skein/daemon/sessionhelper"
	"github.com/skeinvpn/skein/internal/atomicfile"
	"github.com/skeinvpn/skein/internal/fileserve"
	"github.com/skeinvpn/skein/internal/unixmsg"
	"github.com/skeinvpn/skein/ipc"
)

// serveFile is where background serve entries are kept across restarts.
const serveFile = "serve.json"

// serveState is `skein serve` in skeind: the background config (persisted) and the running
// foreground sessions, the server that answers their ports, an ingress listener per port, and
// the file servers of background shares. Fields are under Backend.mu; host I/O outside it.
type serveState struct {
	loaded bool
	bg     ipc.ServeConfig
	// owners are the uids that asked for each background path (its file server runs as the
	// path's owner, who must be that uid or whom root asked for).
	owners map[string]uint32
	fg     map[string]*fgSession
	nextFG int

	srv    *serve.Server
	svcs   map[uint16]*ingress.Service
	files  map[string]*unixmsg.Conn // background path → its file server
	helper *sessionhelper.Client    // for the background file servers
}

// fgSession is one running `skein serve` command: its config and its stream (which carries
// the connections of its path handlers to the command, which serves them as its user).
type fgSession struct {
	cfg  *ipc.ServeConfig
	conn *unixmsg.Conn
}

type servePersisted struct {
	Config ipc.ServeConfig   `json:"config"`
	Owners map[string]uint32 `json:"owners,omitempty"`
}

// loadServeLocked reads the background entries once.
func (b *Backend) loadServeLocked() {
	st := &b.tun.serve
	if st.loaded {
		return
	}
	st.loaded = true
	st.fg = map[string]*fgSession{}
	st.files = map[string]*unixmsg.Conn{}
	st.svcs = map[uint16]*ingress.Service{}
	raw, err := os.ReadFile(filepath.Join(b.opts.Store.Dir(), serveFile))
	if err != nil {
		return
	}
	var p servePersisted
	if err := json.Unmarshal(raw, &p); err != nil {
		b.logf("serve: ignoring %s: %v", serveFile, err)
		return
	}
	st.bg, st.owners = p.Config, p.Owners
}

func (b *Backend) saveServeLocked(cfg ipc.ServeConfig, owners map[string]uint32) error {
	raw, err := json.MarshalIndent(servePersisted{Config: cfg, Owners: owners}, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(b.opts.Store.Dir(), serveFile)
	if cfg.IsEmpty() {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.Write(path, append(raw, '\n'), 0o600)
}

func cloneServe(c ipc.ServeConfig) ipc.ServeConfig {
	var out ipc.ServeConfig
	b, _ := json.Marshal(c)
	json.Unmarshal(b, &out)
	return out
}

// ServeConfig is what is served: the background entries, and each running foreground
// session's under Foreground.
func (b *Backend) ServeConfig() ipc.ServeConfig {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.loadServeLocked()
	out := cloneServe(b.tun.serve.bg)
	for id, s := range b.tun.serve.fg {
		if out.Foreground == nil {
			out.Foreground = map[string]*ipc.ServeConfig{}
		}
		c := cloneServe(*s.cfg)
		out.Foreground[id] = &c
	}
	return out
}

// serveSelfLocked is this node's FQDN for serve, or why there is none.
func (b *Backend) serveSelfLocked() (string, error) {
	if b.nm == nil || b.nm.Self == nil || b.nm.Self.Name == "" {
		return "", &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected: serve needs this machine's tailnet name", Fix: "skein up"}
	}
	return strings.TrimSuffix(b.nm.Self.Name, "."), nil
}

func (b *Backend) serveCallerLocked(uid uint32) serve.Caller {
	c := serve.Caller{Root: uid == 0}
	if b.nm != nil && b.nm.DNSConfig != nil && len(b.nm.DNSConfig.CertDomains) > 0 {
		c.CertDomains = true
	}
	return c
}

// othersLocked are the configs that own ports besides the one being changed (skip).
func (b *Backend) othersLocked(skip *ipc.ServeConfig) []*ipc.ServeConfig {
	var out []*ipc.ServeConfig
	if &b.tun.serve.bg != skip {
		out = append(out, &b.tun.serve.bg)
	}
	for _, s := range b.tun.serve.fg {
		if s.cfg != skip {
			out = append(out, s.cfg)
		}
	}
	return out
}

func portTaken(err error) error {
	return &ipc.Error{Code: ipc.ErrBadRequest, Message: err.Error()}
}

// SetServe applies a background entry or turns one off. A new path is shared only once its
// file server runs (as the path's owner, through the session helper).
func (b *Backend) SetServe(ctx context.Context, uid uint32, req ipc.ServeRequest) (ipc.ServeConfig, error) {
	if !req.Background && !req.Off {
		return ipc.ServeConfig{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "a foreground serve runs on its own stream (skein serve without --bg)"}
	}
	b.mu.Lock()
	b.loadServeLocked()
	st := &b.tun.serve
	fqdn, err := b.serveSelfLocked()
	if err != nil {
		b.mu.Unlock()
		return ipc.ServeConfig{}, err
	}
	for _, s := range st.fg {
		if s.cfg.TCP[req.Port] != nil {
			b.mu.Unlock()
			msg := fmt.Sprintf("port %d is served by a running skein serve in the foreground; stop it there (Ctrl+C)", req.Port)
			if !req.Off {
				msg = fmt.Sprintf("port %d is already served by a running skein serve in the foreground", req.Port)
			}
			return ipc.ServeConfig{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: msg}
		}
	}
	next := cloneServe(st.bg)
	if err := serve.Apply(&next, fqdn, req, b.serveCallerLocked(uid)); err != nil {
		b.mu.Unlock()
		return ipc.ServeConfig{}, err
	}
	owners := map[string]uint32{}
	for p, u := range st.owners {
		owners[p] = u
	}
	newPaths := newPathsLocked(st.bg, next)
	b.mu.Unlock()

	// New paths: their file servers first, as the path's owner; a refusal changes nothing.
	started := map[string]*unixmsg.Conn{}
	for _, p := range newPaths {
		c, err := b.startFileServer(uid, p)
		if err != nil {
			for _, c := range started {
				c.Close()
			}
			return ipc.ServeConfig{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: err.Error()}
		}
		started[p] = c
		owners[p] = uid
	}
	b.mu.Lock()
	for p := range owners {
		if !slices.Contains(pathsOf(next), p) {
			delete(owners, p)
		}
	}
	if err := b.saveServeLocked(next, owners); err != nil {
		b.mu.Unlock()
		for _, c := range started {
			c.Close()
		}
		return ipc.ServeConfig{}, &ipc.Error{Code: ipc.ErrInternal, Message: "cannot save the serve config: " + err.Error()}
	}
	st.bg, st.owners = next, owners
	var stale []*unixmsg.Conn
	for p, c := range st.files {
		if !slices.Contains(pathsOf(next), p) {
			stale = append(stale, c)
			delete(st.files, p)
		}
	}
	for p, c := range started {
		st.files[p] = c
	}
	gen := b.tun.want()
	b.mu.Unlock()
	for _, c := range stale {
		c.Close()
	}
	b.waitApplied(ctx, gen)
	return b.ServeConfig(), nil
}

// ResetServe stops everything: background entries, their file servers, foreground sessions.
func (b *Backend) ResetServe(ctx context.Context) (ipc.ServeConfig, error) {
	b.mu.Lock()
	b.loadServeLocked()
	st := &b.tun.serve
	if err := b.saveServeLocked(ipc.ServeConfig{}, nil); err != nil {
		b.mu.Unlock()
		return ipc.ServeConfig{}, &ipc.Error{Code: ipc.ErrInternal, Message: err.Error()}
	}
	st.bg, st.owners = ipc.ServeConfig{}, nil
	var closing []*unixmsg.Conn
	for p, c := range st.files {
		closing = append(closing, c)
		delete(st.files, p)
	}
	for id, s := range st.fg {
		closing = append(closing, s.conn) // its command sees the stream end and exits
		delete(st.fg, id)
	}
	gen := b.tun.want()
	b.mu.Unlock()
	for _, c := range closing {
		c.Close()
	}
	b.waitApplied(ctx, gen)
	return b.ServeConfig(), nil
}

// ServeForeground serves req for as long as the command's stream lasts.
func (b *Backend) ServeForeground(ctx context.Context, uid uint32, req ipc.ServeRequest, c *unixmsg.Conn) error {
	if req.Off || req.Background {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "not a foreground serve"}
	}
	b.mu.Lock()
	b.loadServeLocked()
	st := &b.tun.serve
	fqdn, err := b.serveSelfLocked()
	if err != nil {
		b.mu.Unlock()
		return err
	}
	cfg := &ipc.ServeConfig{}
	if err := serve.PortFree(b.othersLocked(cfg), req.Port); err != nil {
		b.mu.Unlock()
		return portTaken(err)
	}
	if err := serve.Apply(cfg, fqdn, req, b.serveCallerLocked(uid)); err != nil {
		b.mu.Unlock()
		return err
	}
	st.nextFG++
	id := "fg-" + strconv.Itoa(st.nextFG)
	st.fg[id] = &fgSession{cfg: cfg, conn: c}
	gen := b.tun.want()
	b.mu.Unlock()
	b.waitApplied(ctx, gen)
	b.logf("serve: foreground %s on port %d for uid %d", id, req.Port, uid)
	c.Send(ipc.ServeReady{Header: unixmsg.Header{Type: ipc.ServeStreamReady}, Config: *cfg})
	<-ctx.Done()
	b.mu.Lock()
	delete(st.fg, id)
	gen = b.tun.want()
	b.mu.Unlock()
	b.logf("serve: foreground %s ended", id)
	wctx, cancel := context.WithTimeout(context.Background(), applyWaitLimit)
	defer cancel()
	b.waitApplied(wctx, gen)
	return nil
}

// applyWaitLimit bounds how long a finished foreground serve waits for its port to close.
const applyWaitLimit = 10 * time.Second

// pathsOf lists the path handlers of a config.
func pathsOf(c ipc.ServeConfig) []string {
	var out []string
	for _, w := range c.Web {
		for _, h := range w.Handlers {
			if h.Path != "" && !slices.Contains(out, h.Path) {
				out = append(out, h.Path)
			}
		}
	}
	return out
}

func newPathsLocked(old, next ipc.ServeConfig) []string {
	var out []string
	have := pathsOf(old)
	for _, p := range pathsOf(next) {
		if !slices.Contains(have, p) {
			out = append(out, p)
		}
	}
	return out
}

// startFileServer gets a file server for a background path through the session helper.
func (b *Backend) startFileServer(uid uint32, path string) (*unixmsg.Conn, error) {
	b.mu.Lock()
	h := b.tun.serve.helper
	b.mu.Unlock()
	if h != nil {
		select {
		case <-h.Done():
			h = nil
		default:
		}
	}
	if h == nil {
		nh, err := sessionhelper.Connect(b.opts.SessionHelperSocket, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("sharing a folder in the background needs the session helper: %v (fix: sudo systemctl enable --now skein-session-helper.socket)", err)
		}
		b.mu.Lock()
		if old := b.tun.serve.helper; old != nil {
			go old.Close()
		}
		b.tun.serve.helper = nh
		b.mu.Unlock()
		h = nh
	}
	return h.StartFileServer(uid, path)
}

// syncServe makes the ports answer what is served, on the map the tunnel carries; nil stops
// them all (the tunnel is down). Background file servers that are missing (after a restart)
// are started again.
func (b *Backend) syncServe(nm *netmap.NetworkMap) error {
	b.mu.Lock()
	b.loadServeLocked()
	st := &b.tun.serve
	addrs := selfAddrs(nm)
	var want []uint16
	if nm != nil && len(addrs) > 0 {
		want = serve.Ports(serve.Merge(&st.bg, b.fgConfigsLocked()))
	}
	var missing []string
	if len(want) > 0 {
		for _, p := range pathsOf(st.bg) {
			if st.files[p] == nil {
				missing = append(missing, p)
			}
		}
	}
	if st.srv == nil && len(want) > 0 {
		st.srv = serve.New(serve.Options{
			Config: b.serveEffective,
			Self:   b.serveSelf,
			Whois:  b.serveWhois,
			Files:  b.serveFiles,
			Logf:   b.logf,
		})
	}
	var closing []*ingress.Service
	var closedPorts []uint16
	for p, s := range st.svcs {
		if !slices.Contains(want, p) {
			closing = append(closing, s)
			closedPorts = append(closedPorts, p)
			delete(st.svcs, p)
		}
	}
	var opening []uint16
	for _, p := range want {
		if st.svcs[p] == nil {
			opening = append(opening, p)
		}
	}
	srv := st.srv
	owners := st.owners
	b.mu.Unlock()

	var errs []error
	for _, p := range missing {
		c, err := b.startFileServer(owners[p], p)
		if err != nil {
			errs = append(errs, fmt.Errorf("serve %s: %w", p, err))
			continue
		}
		b.mu.Lock()
		if st.files[p] == nil && slices.Contains(pathsOf(st.bg), p) {
			st.files[p] = c
			c = nil
		}
		b.mu.Unlock()
		if c != nil {
			c.Close()
		}
	}
	for _, s := range closing {
		s.Close()
	}
	for _, p := range closedPorts {
		if srv != nil {
			srv.ClosePort(p)
		}
	}
	for _, p := range opening {
		port := p
		s, err := ingress.Listen(ingress.Options{
			Tun: b.opts.TunName, Port: port,
			Self: b.isSelfAddr, Peer: b.isPeerAddr,
			Handle: func(c ingress.Conn) { srv.HandleConn(c.TCPConn, c.Src, port) },
			Logf:   b.logf,
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.mu.Lock()
		st.svcs[port] = s
		b.mu.Unlock()
		b.logf("serve: answering port %d", port)
	}
	if err := b.applyIngress(addrs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (b *Backend) fgConfigsLocked() map[string]*ipc.ServeConfig {
	m := map[string]*ipc.ServeConfig{}
	for id, s := range b.tun.serve.fg {
		m[id] = s.cfg
	}
	return m
}

// serveEffective is what the ports answer now.
func (b *Backend) serveEffective() ipc.ServeConfig {
	b.mu.Lock()
	defer b.mu.Unlock()
	return serve.Merge(&b.tun.serve.bg, b.fgConfigsLocked())
}

func (b *Backend) serveSelf() serve.Self {
	b.mu.Lock()
	defer b.mu.Unlock()
	nm := b.tun.shown
	if nm == nil || nm.Self == nil {
		return serve.Self{}
	}
	fqdn := strings.TrimSuffix(nm.Self.Name, ".")
	short, _, _ := strings.Cut(fqdn, ".")
	return serve.Self{FQDN: fqdn, Short: short, Addrs: selfAddrs(nm)}
}

func (b *Backend) serveWhois(a netip.Addr) serve.Who {
	b.mu.Lock()
	defer b.mu.Unlock()
	nm := b.tun.shown
	if nm == nil {
		return serve.Who{}
	}
	p := nm.PeerByAddr(a)
	if p == nil {
		return serve.Who{}
	}
	w := serve.Who{Known: true, Tagged: len(p.Tags) > 0}
	if u, ok := nm.UserProfiles[p.User]; ok {
		w.Login, w.Name, w.ProfilePic = u.LoginName, u.DisplayName, u.ProfilePicURL
	}
	return w
}

// serveFiles is the file server of the path handler at port and mount: the foreground
// command's own stream, or the background share's file server.
func (b *Backend) serveFiles(port uint16, mount string) (serve.FileDialer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.tun.serve
	find := func(c *ipc.ServeConfig) string {
		for hp, w := range c.Web {
			if !strings.HasSuffix(hp, ":"+strconv.Itoa(int(port))) {
				continue
			}
			if h := w.Handlers[mount]; h != nil {
				return h.Path
			}
		}
		return ""
	}
	for _, s := range st.fg {
		if s.cfg.TCP[port] != nil {
			if find(s.cfg) == "" {
				return nil, false
			}
			c := s.conn
			return func(context.Context) (net.Conn, error) { return fileserve.Dial(c) }, true
		}
	}
	p := find(&st.bg)
	c := st.files[p]
	if p == "" || c == nil {
		return nil, false
	}
	return func(context.Context) (net.Conn, error) { return fileserve.Dial(c) }, true
}

// stopServe ends everything that runs for serve (skeind is closing).
func (b *Backend) stopServe() {
	b.mu.Lock()
	st := &b.tun.serve
	var conns []*unixmsg.Conn
	for p, c := range st.files {
		conns = append(conns, c)
		delete(st.files, p)
	}
	srv, helper := st.srv, st.helper
	st.srv, st.helper = nil, nil
	b.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if srv != nil {
		srv.Close()
	}
	if helper != nil {
		helper.Close()
	}
}
