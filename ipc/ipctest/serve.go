package ipctest

import (
	"context"
	"net"
	"strconv"
	"sync"

	"github.com/skeinvpn/skein/internal/unixmsg"
	"github.com/skeinvpn/skein/ipc"
)

// serveState is the fake's `skein serve`: background entries only, kept as given.
type serveState struct {
	mu  sync.Mutex
	cfg ipc.ServeConfig
	log []ipc.ServeRequest
}

var serves sync.Map // *Backend → *serveState (the Backend struct stays as it is)

func (b *Backend) serve() *serveState {
	s, _ := serves.LoadOrStore(b, &serveState{})
	return s.(*serveState)
}

// ServeConfig implements ipc.ServeBackend.
func (b *Backend) ServeConfig() ipc.ServeConfig {
	s := b.serve()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// ServeRequests are the SetServe requests the fake got.
func (b *Backend) ServeRequests() []ipc.ServeRequest {
	s := b.serve()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ipc.ServeRequest(nil), s.log...)
}

// SetServeConfig replaces what the fake serves.
func (b *Backend) SetServeConfig(c ipc.ServeConfig) {
	s := b.serve()
	s.mu.Lock()
	s.cfg = c
	s.mu.Unlock()
}

// SetServe implements ipc.ServeBackend: HTTP paths and proxies on "self.test", and off.
func (b *Backend) SetServe(ctx context.Context, uid uint32, req ipc.ServeRequest) (ipc.ServeConfig, error) {
	s := b.serve()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, req)
	hp := net.JoinHostPort("self.test", strconv.Itoa(int(req.Port)))
	if req.Off {
		delete(s.cfg.TCP, req.Port)
		delete(s.cfg.Web, hp)
		return s.cfg, nil
	}
	if s.cfg.TCP == nil {
		s.cfg.TCP, s.cfg.Web = map[uint16]*ipc.TCPPortHandler{}, map[string]*ipc.WebServerConfig{}
	}
	s.cfg.TCP[req.Port] = &ipc.TCPPortHandler{HTTP: true}
	h := &ipc.HTTPHandler{Proxy: req.Target}
	if len(req.Target) > 0 && req.Target[0] == '/' {
		h = &ipc.HTTPHandler{Path: req.Target}
	}
	s.cfg.Web[hp] = &ipc.WebServerConfig{Handlers: map[string]*ipc.HTTPHandler{"/": h}}
	return s.cfg, nil
}

// ResetServe implements ipc.ServeBackend.
func (b *Backend) ResetServe(ctx context.Context) (ipc.ServeConfig, error) {
	b.SetServeConfig(ipc.ServeConfig{})
	return ipc.ServeConfig{}, nil
}

// ServeForeground implements ipc.ServeBackend: it refuses (the fake has no tunnel).
func (b *Backend) ServeForeground(ctx context.Context, uid uint32, req ipc.ServeRequest, c *unixmsg.Conn) error {
	return &ipc.Error{Code: ipc.ErrBadRequest, Message: "the test backend serves nothing in the foreground"}
}
