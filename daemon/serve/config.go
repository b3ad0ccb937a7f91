// Package serve is `skein serve` inside skeind: the configuration in the official client's
// shape (what a request changes, which targets are allowed), and the servers that answer a
// port: HTTP by host and mount point (proxy to a local server, files from a file server that
// runs as the user, text) and raw TCP forwarding.
package serve

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/skeinvpn/skein/ipc"
)

// ErrNoCerts is the answer to HTTPS while the control server issues no certificates.
var ErrNoCerts = &ipc.Error{Code: ipc.ErrBadRequest, Message: "this control server issues no certificates; use --http PORT", Fix: "skein serve --http 80 TARGET"}

// ErrCertsLater is the answer to HTTPS when control does offer certificates (Tailscale's
// service): getting one is not built yet.
var ErrCertsLater = &ipc.Error{Code: ipc.ErrBadRequest, Message: "HTTPS needs a certificate from the control server, which Skein does not obtain yet; use --http PORT", Fix: "skein serve --http 80 TARGET"}

func badRequest(format string, a ...any) error {
	return &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf(format, a...)}
}

// Caller says who asks and what control offers, for the checks only skeind can make.
type Caller struct {
	// Root: the request comes from root (text handlers and other users' paths are root's).
	Root bool
	// CertDomains: control issues certificates for these names (Tailscale's service).
	CertDomains bool
}

// Apply changes cfg (one config: the background one, or a foreground session's) as req says.
// fqdn is this node's MagicDNS name without the trailing dot. On error cfg is unchanged.
func Apply(cfg *ipc.ServeConfig, fqdn string, req ipc.ServeRequest, c Caller) error {
	if req.Port == 0 {
		return badRequest("a port is required (--http PORT or --tcp PORT)")
	}
	mount, err := CleanMount(req.Mount)
	if err != nil {
		return err
	}
	hp := net.JoinHostPort(fqdn, strconv.Itoa(int(req.Port)))
	switch req.Mode {
	case "https", "tls-terminated-tcp":
		if req.Off {
			break
		}
		if c.CertDomains {
			return ErrCertsLater
		}
		return ErrNoCerts
	case "http", "tcp":
	default:
		return badRequest("unknown serve type %q (http, https, tcp or tls-terminated-tcp)", req.Mode)
	}
	if req.Off {
		return remove(cfg, hp, req, mount)
	}
	if req.Mode == "tcp" {
		if req.Mount != "" {
			return badRequest("cannot mount a path for TCP serve")
		}
		target, err := tcpTarget(req.Target)
		if err != nil {
			return err
		}
		if h := cfg.TCP[req.Port]; h != nil && (h.HTTP || h.HTTPS) {
			return badRequest("cannot serve TCP; already serving web on %d", req.Port)
		}
		if cfg.TCP == nil {
			cfg.TCP = map[uint16]*ipc.TCPPortHandler{}
		}
		cfg.TCP[req.Port] = &ipc.TCPPortHandler{TCPForward: target}
		return nil
	}
	h, err := webHandler(req.Target, c)
	if err != nil {
		return err
	}
	if h.Path != "" && !strings.HasSuffix(mount, "/") && req.Target != "" && isDirHint(req.Target) {
		mount += "/"
	}
	if t := cfg.TCP[req.Port]; t != nil && t.TCPForward != "" {
		return badRequest("cannot serve web; already serving TCP on %d", req.Port)
	}
	if cfg.TCP == nil {
		cfg.TCP = map[uint16]*ipc.TCPPortHandler{}
	}
	if cfg.Web == nil {
		cfg.Web = map[string]*ipc.WebServerConfig{}
	}
	cfg.TCP[req.Port] = &ipc.TCPPortHandler{HTTP: true}
	w := cfg.Web[hp]
	if w == nil {
		w = &ipc.WebServerConfig{}
		cfg.Web[hp] = w
	}
	if w.Handlers == nil {
		w.Handlers = map[string]*ipc.HTTPHandler{}
	}
	// "/a" and "/a/" are one mount: the newer wins.
	for m := range w.Handlers {
		if strings.TrimSuffix(m, "/") == strings.TrimSuffix(mount, "/") {
			delete(w.Handlers, m)
		}
	}
	w.Handlers[mount] = h
	return nil
}

// isDirHint: a path target that names a folder gets a mount ending in "/" (so relative links
// work); the CLI sends folders with a trailing slash.
func isDirHint(target string) bool { return strings.HasSuffix(target, "/") }

func remove(cfg *ipc.ServeConfig, hp string, req ipc.ServeRequest, mount string) error {
	h := cfg.TCP[req.Port]
	if h == nil {
		return badRequest("nothing is served on port %d", req.Port)
	}
	switch {
	case req.Mode == "tcp" || req.Mode == "tls-terminated-tcp":
		if h.TCPForward == "" {
			return badRequest("port %d serves web, not TCP", req.Port)
		}
		delete(cfg.TCP, req.Port)
	default:
		if h.TCPForward != "" {
			return badRequest("port %d serves TCP, not web", req.Port)
		}
		w := cfg.Web[hp]
		if req.Mount == "" || w == nil {
			delete(cfg.Web, hp)
			delete(cfg.TCP, req.Port)
			break
		}
		found := false
		for m := range w.Handlers {
			if strings.TrimSuffix(m, "/") == strings.TrimSuffix(mount, "/") {
				delete(w.Handlers, m)
				found = true
			}
		}
		if !found {
			return badRequest("nothing is served at %s on port %d", mount, req.Port)
		}
		if len(w.Handlers) == 0 {
			delete(cfg.Web, hp)
			delete(cfg.TCP, req.Port)
		}
	}
	if len(cfg.TCP) == 0 {
		cfg.TCP = nil
	}
	if len(cfg.Web) == 0 {
		cfg.Web = nil
	}
	return nil
}

// CleanMount is a mount point as the official client cleans it: absolute, no "..", no
// double slashes, a trailing slash kept.
func CleanMount(m string) (string, error) {
	if m == "" {
		return "/", nil
	}
	if !strings.HasPrefix(m, "/") {
		m = "/" + m
	}
	if strings.ContainsAny(m, "?#\x00") {
		return "", badRequest("invalid mount point %q", m)
	}
	c := path.Clean(m)
	if strings.HasSuffix(m, "/") && c != "/" {
		c += "/"
	}
	if c != m && c+"/" != m {
		return "", badRequest("invalid mount point %q (try %q)", m, c)
	}
	return c, nil
}

// webHandler is the handler a web target names. Proxies and TCP forwards go to this
// machine's loopback only, never through a Unix socket; text is root's (it is for tests).
func webHandler(target string, c Caller) (*ipc.HTTPHandler, error) {
	switch {
	case target == "":
		return nil, badRequest("nothing to serve: give a port, a URL on this machine or an absolute path")
	case strings.HasPrefix(target, "text:"):
		if !c.Root {
			return nil, badRequest("text: targets are for root only (they are for testing)")
		}
		if strings.TrimPrefix(target, "text:") == "" {
			return nil, badRequest("unable to serve; text cannot be an empty string")
		}
		return &ipc.HTTPHandler{Text: strings.TrimPrefix(target, "text:")}, nil
	case strings.HasPrefix(target, "unix:"):
		return nil, badRequest("unix: targets are not supported: a Unix socket would be reached with skeind's rights, not yours")
	case strings.HasPrefix(target, "/"):
		p := path.Clean(target)
		if p != strings.TrimSuffix(target, "/") && p != target {
			return nil, badRequest("invalid path %q", target)
		}
		return &ipc.HTTPHandler{Path: p}, nil
	}
	u, err := proxyTarget(target, []string{"http", "https+insecure", "https"}, "http")
	if err != nil {
		return nil, err
	}
	return &ipc.HTTPHandler{Proxy: u}, nil
}

func tcpTarget(target string) (string, error) {
	if strings.HasPrefix(target, "unix:") {
		return "", badRequest("unix: targets are not supported")
	}
	u, err := proxyTarget(target, []string{"tcp"}, "tcp")
	if err != nil {
		return "", err
	}
	pu, _ := url.Parse(u)
	return pu.Host, nil
}

// proxyTarget expands a port, host:port or URL to a URL on this machine's loopback.
func proxyTarget(target string, schemes []string, def string) (string, error) {
	if p, err := strconv.ParseUint(target, 10, 16); err == nil {
		if p == 0 {
			return "", badRequest("invalid port 0")
		}
		return fmt.Sprintf("%s://127.0.0.1:%d", def, p), nil
	}
	if !strings.Contains(target, "://") {
		target = def + "://" + target
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return "", badRequest("invalid target %q: %v", target, err)
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return "", badRequest("target %q: the scheme must be one of %s", target, strings.Join(schemes, ", "))
	}
	if u.User != nil {
		return "", badRequest("target %q: no user information in the URL", target)
	}
	if !IsLoopback(u.Hostname()) {
		return "", badRequest("target %q: only this machine's loopback (localhost, 127.0.0.1, ::1) may be proxied to", target)
	}
	p, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || p == 0 {
		return "", badRequest("target %q: invalid port %q", target, u.Port())
	}
	u.Host = net.JoinHostPort(u.Hostname(), strconv.FormatUint(p, 10))
	return u.String(), nil
}

// IsLoopback: the only hosts a target may name.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Merge is the effective config: the background one plus every foreground session's, keyed
// as they are (a port is in at most one of them).
func Merge(bg *ipc.ServeConfig, fg map[string]*ipc.ServeConfig) ipc.ServeConfig {
	out := ipc.ServeConfig{}
	add := func(c *ipc.ServeConfig) {
		for p, h := range c.TCP {
			if out.TCP == nil {
				out.TCP = map[uint16]*ipc.TCPPortHandler{}
			}
			out.TCP[p] = h
		}
		for hp, w := range c.Web {
			if out.Web == nil {
				out.Web = map[string]*ipc.WebServerConfig{}
			}
			out.Web[hp] = w
		}
	}
	if bg != nil {
		add(bg)
	}
	for _, c := range fg {
		add(c)
	}
	return out
}

// Ports lists the ports a config serves.
func Ports(c ipc.ServeConfig) []uint16 {
	var ps []uint16
	for p := range c.TCP {
		ps = append(ps, p)
	}
	return ps
}

var errPortTaken = errors.New("port taken")

// PortFree reports an error when port is already served by another config (a foreground
// session or the background), which one request must not take over.
func PortFree(others []*ipc.ServeConfig, port uint16) error {
	for _, o := range others {
		if o != nil && o.TCP[port] != nil {
			return fmt.Errorf("%w: port %d is already served (skein serve status)", errPortTaken, port)
		}
	}
	return nil
}
