package serve

import (
	"context"
	"crypto/tls"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/skeinvpn/skein/internal/chanlisten"
	"github.com/skeinvpn/skein/ipc"
)

// Who is the peer a request comes from, as the network map knows its address.
type Who struct {
	Known      bool // a peer's own address (false: this machine, or unknown)
	Tagged     bool
	Login      string
	Name       string
	ProfilePic string
}

// Self are this node's names: the FQDN (no trailing dot), its first label, its addresses.
type Self struct {
	FQDN  string
	Short string
	Addrs []netip.Addr
}

// FileDialer connects to the file server of a path handler.
type FileDialer func(ctx context.Context) (net.Conn, error)

// Options configure a Server. Every func is called per connection or request, so changes
// (a new map, a new config) apply at once.
type Options struct {
	Config func() ipc.ServeConfig
	Self   func() Self
	Whois  func(netip.Addr) Who
	// Files finds the file server for the path handler at port and mount.
	Files func(port uint16, mount string) (FileDialer, bool)
	Logf  func(string, ...any)
}

// Server answers connections on served ports.
type Server struct {
	opts Options

	mu    sync.Mutex
	ports map[uint16]*chanlisten.Listener
	hs    map[uint16]*http.Server
	proxy map[string]*http.Transport // by proxy target
}

// New returns a server; Close stops it.
func New(o Options) *Server {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return &Server{opts: o, ports: map[uint16]*chanlisten.Listener{}, hs: map[uint16]*http.Server{}, proxy: map[string]*http.Transport{}}
}

// connKey carries a connection's peer into its requests.
type connKey struct{}

type peerConn struct {
	net.Conn
	src netip.AddrPort
}

// HandleConn serves one connection to port from src, by the port's current handler.
func (s *Server) HandleConn(c net.Conn, src netip.AddrPort, port uint16) {
	h := s.opts.Config().TCP[port]
	switch {
	case h == nil:
		c.Close()
	case h.TCPForward != "":
		s.forward(c, h.TCPForward)
	case h.HTTP:
		s.listener(port).Put(&peerConn{Conn: c, src: src})
	default:
		c.Close()
	}
}

func (s *Server) listener(port uint16) *chanlisten.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln := s.ports[port]; ln != nil {
		return ln
	}
	ln := chanlisten.New(&net.TCPAddr{Port: int(port)})
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveHTTP(w, r, port) }),
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return context.WithValue(ctx, connKey{}, pc.src)
			}
			return ctx
		},
		ErrorLog: nil,
	}
	s.ports[port], s.hs[port] = ln, hs
	go hs.Serve(ln)
	return ln
}

// ClosePort stops answering port (its entry is gone).
func (s *Server) ClosePort(port uint16) {
	s.mu.Lock()
	hs := s.hs[port]
	delete(s.ports, port)
	delete(s.hs, port)
	s.mu.Unlock()
	if hs != nil {
		hs.Close()
	}
}

// Close stops every port.
func (s *Server) Close() {
	s.mu.Lock()
	ports := make([]uint16, 0, len(s.hs))
	for p := range s.hs {
		ports = append(ports, p)
	}
	s.mu.Unlock()
	for _, p := range ports {
		s.ClosePort(p)
	}
}

// forward copies a TCP connection to target on this machine (no mark: the route any local
// program would take).
func (s *Server) forward(c net.Conn, target string) {
	defer c.Close()
	host, _, err := net.SplitHostPort(target)
	if err != nil || !IsLoopback(host) {
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	t, err := d.Dial("tcp", target)
	if err != nil {
		s.opts.Logf("serve: tcp forward to %s: %v", target, err)
		return
	}
	defer t.Close()
	done := make(chan struct{}, 2)
	half := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go half(t, c)
	go half(c, t)
	<-done
	<-done
}

// hostOK: the request names this node by its FQDN, its short name or one of its addresses
// (with or without the port); anything else is not ours to answer.
func hostOK(host string, self Self) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if host == strings.ToLower(self.FQDN) || (self.Short != "" && host == strings.ToLower(self.Short)) {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		for _, s := range self.Addrs {
			if s == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// handlerFor finds the handler for a request path: an exact mount, else the longest mount
// that is a prefix at a "/" boundary.
func handlerFor(w *ipc.WebServerConfig, p string) (*ipc.HTTPHandler, string, bool) {
	if w == nil {
		return nil, "", false
	}
	if h, ok := w.Handlers[p]; ok {
		return h, p, true
	}
	pth := path.Clean("/" + p)
	for {
		if h, ok := w.Handlers[pth+"/"]; ok && pth != "/" {
			return h, pth + "/", true
		}
		if h, ok := w.Handlers[pth]; ok {
			return h, pth, true
		}
		if pth == "/" {
			return nil, "", false
		}
		pth = path.Dir(pth)
	}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request, port uint16) {
	self := s.opts.Self()
	if !hostOK(r.Host, self) {
		http.NotFound(w, r)
		return
	}
	cfg := s.opts.Config()
	web := cfg.Web[net.JoinHostPort(self.FQDN, strconv.Itoa(int(port)))]
	h, mount, ok := handlerFor(web, r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	src, _ := r.Context().Value(connKey{}).(netip.AddrPort)
	switch {
	case h.Text != "":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, h.Text)
	case h.Proxy != "":
		u, err := url.Parse(h.Proxy)
		if err != nil || !IsLoopback(u.Hostname()) {
			http.Error(w, "bad proxy target", http.StatusInternalServerError)
			return
		}
		insecure := u.Scheme == "https+insecure"
		if insecure {
			// A local HTTPS server with a self-signed certificate, as the official client allows.
			uc := *u
			uc.Scheme = "https"
			u = &uc
		}
		s.proxyTo(w, r, u, s.transport(h.Proxy, insecure), mount, src)
	case h.Path != "":
		dial, ok := s.opts.Files(port, mount)
		if !ok {
			http.Error(w, "the files are not available", http.StatusServiceUnavailable)
			return
		}
		u := &url.URL{Scheme: "http", Host: "files"}
		// A new connection per request: the file server gets each one over a socket pass.
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		s.proxyTo(w, r, u, tr, mount, src)
	default:
		http.Error(w, "empty handler", http.StatusInternalServerError)
	}
}

// transport is the shared transport of a proxy target: plain loopback dials (insecure: the
// target's certificate is not checked).
func (s *Server) transport(target string, insecure bool) *http.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.proxy[target]; t != nil {
		return t
	}
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: insecure},
		MaxIdleConns:          32,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	s.proxy[target] = t
	return t
}

// proxyTo sends the request on to u with the mount point taken off the path, the Host kept,
// X-Forwarded-Host and X-Forwarded-For (replaced: the peer's tailnet address) set, and the
// identity headers replaced: whatever the client sent is dropped, and only a known, untagged
// peer's user is named.
func (s *Server) proxyTo(w http.ResponseWriter, r *http.Request, u *url.URL, tr http.RoundTripper, mount string, src netip.AddrPort) {
	who := Who{}
	if src.IsValid() {
		who = s.opts.Whois(src.Addr())
	}
	p := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			old := pr.Out.URL.Path
			pr.SetURL(u)
			if old == "" && u.Path != "" {
				pr.Out.URL.Path, pr.Out.URL.RawPath = u.Path, u.RawPath
			}
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
			if src.IsValid() {
				pr.Out.Header.Set("X-Forwarded-For", src.Addr().String())
			}
			for _, h := range []string{"Tailscale-User-Login", "Tailscale-User-Name", "Tailscale-User-Profile-Pic", "Tailscale-Headers-Info", "Tailscale-Funnel-Request"} {
				pr.Out.Header.Del(h)
			}
			if who.Known && !who.Tagged {
				pr.Out.Header.Set("Tailscale-User-Login", headerValue(who.Login))
				pr.Out.Header.Set("Tailscale-User-Name", headerValue(who.Name))
				pr.Out.Header.Set("Tailscale-User-Profile-Pic", who.ProfilePic)
				pr.Out.Header.Set("Tailscale-Headers-Info", "https://tailscale.com/s/serve-headers")
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.opts.Logf("serve: %s%s: %v", r.Host, r.URL.Path, err)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}
	var h http.Handler = p
	if r.URL.Path != "/" {
		h = http.StripPrefix(strings.TrimSuffix(mount, "/"), h)
	}
	h.ServeHTTP(w, r)
}

// headerValue makes a user's name fit in a header: ASCII as is, other UTF-8 Q-encoded, invalid
// UTF-8 dropped (as the official client does).
func headerValue(v string) string {
	if !utf8.ValidString(v) {
		return ""
	}
	return mime.QEncoding.Encode("utf-8", v)
}
