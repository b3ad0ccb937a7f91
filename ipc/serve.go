package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/skeinvpn/skein/internal/unixmsg"
)

// `skein serve`: share a local port, file or folder with the tailnet. The configuration has
// the official client's JSON shape (`tailscale serve status --json`), so scripts read both.
const (
	// PathServe: GET → ServeConfig (anyone may read); POST ServeRequest → ServeConfig, for a
	// background entry or to turn one off (root or the operator).
	PathServe = "/" + APIVersion + "/serve"
	// PathServeReset: POST {} → ServeConfig (empty): everything stops.
	PathServeReset = "/" + APIVersion + "/serve/reset"
	// PathServeForeground: POST ServeRequest with "Connection: Upgrade" and "Upgrade:
	// skein-serve". On 101 the connection carries unixmsg frames (ServeStream*) for as long as
	// the foreground serve lasts; it ends when either side closes it.
	PathServeForeground = "/" + APIVersion + "/serve/foreground"
	// ServeUpgrade is the Upgrade protocol of PathServeForeground.
	ServeUpgrade = "skein-serve"
)

// Frames on a foreground stream, from skeind to the CLI.
const (
	// ServeStreamReady: the serve is in place (ServeReady; its Config is the session's).
	ServeStreamReady = "ready"
	// ServeStreamConn: one connection (attached) to answer with HTTP from the shared files.
	ServeStreamConn = "conn"
)

// ServeReady is the first frame of a foreground stream.
type ServeReady struct {
	unixmsg.Header
	Config ServeConfig `json:"config"`
}

// ServeConfig is what is served: TCP ports and their handlers, and the web handlers of each
// "fqdn:port" by mount point. Foreground holds the entries of running `skein serve`
// commands by session; the rest is background and survives restarts.
type ServeConfig struct {
	TCP         map[uint16]*TCPPortHandler  `json:",omitempty"`
	Web         map[string]*WebServerConfig `json:",omitempty"`
	AllowFunnel map[string]bool             `json:",omitempty"`
	Foreground  map[string]*ServeConfig     `json:",omitempty"`
}

// TCPPortHandler is what a port does: HTTP(S) by the web handlers, or raw TCP to TCPForward.
type TCPPortHandler struct {
	HTTPS        bool   `json:",omitempty"`
	HTTP         bool   `json:",omitempty"`
	TCPForward   string `json:",omitempty"`
	TerminateTLS string `json:",omitempty"`
}

// WebServerConfig are the handlers of one host:port by mount point.
type WebServerConfig struct {
	Handlers map[string]*HTTPHandler
}

// HTTPHandler serves a file or folder (Path), proxies to a local server (Proxy), or answers
// with Text.
type HTTPHandler struct {
	Path  string `json:",omitempty"`
	Proxy string `json:",omitempty"`
	Text  string `json:",omitempty"`
}

// ServeRequest is one change, as the CLI's flags and argument say it.
type ServeRequest struct {
	// Mode is "http", "https", "tcp" or "tls-terminated-tcp".
	Mode string `json:"mode"`
	Port uint16 `json:"port"`
	// Mount is --set-path ("" = "/").
	Mount string `json:"mount,omitempty"`
	// Target is what to serve: a port, a URL or host:port on this machine, an absolute path,
	// or text:TEXT.
	Target     string `json:"target,omitempty"`
	Background bool   `json:"background,omitempty"`
	// Off removes the entry of Mode and Port (and Mount).
	Off bool `json:"off,omitempty"`
}

// IsEmpty reports whether nothing is served.
func (c *ServeConfig) IsEmpty() bool {
	return c == nil || (len(c.TCP) == 0 && len(c.Web) == 0 && len(c.Foreground) == 0)
}

// ServeBackend is what the helper implements for `skein serve`.
type ServeBackend interface {
	ServeConfig() ServeConfig
	// SetServe applies a background entry or an "off" for the user uid.
	SetServe(ctx context.Context, uid uint32, req ServeRequest) (ServeConfig, error)
	ResetServe(ctx context.Context) (ServeConfig, error)
	// ServeForeground validates req, then (ready is called with the session's config before
	// anything is served) serves it until c closes or ctx ends, and removes it.
	ServeForeground(ctx context.Context, uid uint32, req ServeRequest, c *unixmsg.Conn) error
}

// serveBackend is the backend's serve side, or a 404 when this skeind does not serve.
func (s *Server) serveBackend(w http.ResponseWriter) (ServeBackend, bool) {
	sb, ok := s.b.(ServeBackend)
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Code: ErrNotFound, Message: "this skeind does not serve"})
	}
	return sb, ok
}

func (s *Server) serveGetServe(w http.ResponseWriter, r *http.Request, _ string) {
	if sb, ok := s.serveBackend(w); ok {
		writeJSON(w, http.StatusOK, sb.ServeConfig())
	}
}

func (s *Server) servePostServe(w http.ResponseWriter, r *http.Request, _ string) {
	sb, ok := s.serveBackend(w)
	if !ok {
		return
	}
	var req ServeRequest
	if !s.decode(w, r, &req) {
		return
	}
	uid, _ := peerUID(r.Context())
	cfg, err := sb.SetServe(r.Context(), uid, req)
	s.reply(w, cfg, err)
}

func (s *Server) serveServeReset(w http.ResponseWriter, r *http.Request, _ string) {
	sb, ok := s.serveBackend(w)
	if !ok {
		return
	}
	if !s.decode(w, r, &struct{}{}) {
		return
	}
	cfg, err := sb.ResetServe(r.Context())
	s.reply(w, cfg, err)
}

func (s *Server) serveServeForeground(w http.ResponseWriter, r *http.Request, _ string) {
	if sb, ok := s.serveBackend(w); ok {
		s.serveForeground(w, r, sb)
	}
}

// serveForeground takes the connection over for the foreground serve: it ends with it.
func (s *Server) serveForeground(w http.ResponseWriter, r *http.Request, sb ServeBackend) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), ServeUpgrade) {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "a foreground serve needs Upgrade: " + ServeUpgrade})
		return
	}
	var req ServeRequest
	if !s.decode(w, r, &req) {
		return
	}
	uid, _ := peerUID(r.Context())
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, &Error{Code: ErrInternal, Message: "cannot take over the connection"})
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	// The listener wraps each connection to count it against the caps: the Unix socket (for
	// passing descriptors) is inside, and closing the wrapper gives the slot back.
	raw := nc
	if cc, isCred := nc.(*credConn); isCred {
		raw = cc.Conn
	}
	uc, ok := raw.(*net.UnixConn)
	if !ok || brw.Reader.Buffered() > 0 {
		nc.Close()
		return
	}
	defer nc.Close()
	fmt.Fprintf(uc, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", ServeUpgrade)
	c := unixmsg.New(uc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// The CLI sends nothing: a read returns when it hangs up (or the server closes).
		for {
			if _, _, files, err := c.Recv(); err != nil {
				cancel()
				return
			} else {
				for _, f := range files {
					f.Close()
				}
			}
		}
	}()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := sb.ServeForeground(ctx, uid, req, c); err != nil {
		// After the 101 the error goes as a frame the CLI shows.
		c.Send(serveErrorFrame{Header: unixmsg.Header{Type: "error"}, Error: toError(err)})
	}
}

type serveErrorFrame struct {
	unixmsg.Header
	Error *Error `json:"error"`
}

func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: ErrInternal, Message: err.Error()}
}

// ServeConfig returns what is served.
func (c *Client) ServeConfig(ctx context.Context) (ServeConfig, error) {
	var cfg ServeConfig
	err := c.do(ctx, http.MethodGet, PathServe, nil, &cfg)
	return cfg, err
}

// SetServe applies a background entry or an "off".
func (c *Client) SetServe(ctx context.Context, req ServeRequest) (ServeConfig, error) {
	var cfg ServeConfig
	err := c.do(ctx, http.MethodPost, PathServe, req, &cfg)
	return cfg, err
}

// ResetServe stops everything.
func (c *Client) ResetServe(ctx context.Context) (ServeConfig, error) {
	var cfg ServeConfig
	err := c.do(ctx, http.MethodPost, PathServeReset, struct{}{}, &cfg)
	return cfg, err
}

// ServeForeground starts a foreground serve. It returns the stream once skeind says ready,
// with the session's config; the serve lasts while the stream is open.
func (c *Client) ServeForeground(ctx context.Context, req ServeRequest) (*unixmsg.Conn, ServeConfig, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, ServeConfig{}, c.transportError(err)
	}
	fail := func(err error) (*unixmsg.Conn, ServeConfig, error) {
		nc.Close()
		return nil, ServeConfig{}, err
	}
	body, _ := json.Marshal(req)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", PathServeForeground, HTTPHost, ServeUpgrade, len(body))
	buf.Write(body)
	if _, err := nc.Write(buf.Bytes()); err != nil {
		return fail(c.transportError(err))
	}
	// Read the response head byte by byte: nothing after it may be taken from the socket,
	// since the frames that follow carry descriptors.
	br := bufio.NewReaderSize(oneByteReader{nc}, 16)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(&Error{Code: ErrInternal, Message: "bad response from skeind: " + err.Error()})
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return fail(decodeError(resp))
	}
	mc := unixmsg.New(nc.(*net.UnixConn))
	h, b, files, err := mc.Recv()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return fail(&Error{Code: ErrInternal, Message: "skeind closed the serve: " + err.Error()})
	}
	switch h.Type {
	case ServeStreamReady:
		var r ServeReady
		if err := unixmsg.Decode(b, &r); err != nil {
			return fail(err)
		}
		return mc, r.Config, nil
	case "error":
		var f serveErrorFrame
		if unixmsg.Decode(b, &f) == nil && f.Error != nil {
			return fail(f.Error)
		}
	}
	return fail(&Error{Code: ErrInternal, Message: fmt.Sprintf("unexpected %q from skeind", h.Type)})
}

// oneByteReader reads at most one byte at a time.
type oneByteReader struct{ c net.Conn }

func (r oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return r.c.Read(p)
}
