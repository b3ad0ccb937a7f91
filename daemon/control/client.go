// Package control is Skein's client of the Tailscale control protocol: it fetches the server's
// Noise key, keeps one ts2021 connection with HTTP/2 on top, registers the node and streams the
// network map.
package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/skeinvpn/skein/daemon/control/ts2021"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/safetext"
)

// CapabilityVersion is the protocol version Skein claims (that of tailscale v1.86.5).
const CapabilityVersion = ts2021.CapabilityVersion

// WatchdogTimeout ends a map poll that has been silent this long; servers send keep-alives
// about once a minute.
const WatchdogTimeout = 120 * time.Second

// Options configure a Client.
type Options struct {
	ServerURL  string
	MachineKey key.MachinePrivate
	// TLSConfig is used for /key and the ts2021 upgrade; nil trusts the system store
	// (and SSL_CERT_FILE).
	TLSConfig *tls.Config
	// DialContext dials TCP; nil uses net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Logf        func(format string, args ...any)
}

// Client talks to one control server. Its methods are safe for concurrent use.
type Client struct {
	opts   Options
	host   string
	keyHC  *http.Client
	h2     *http2.Transport
	dialMu sync.Mutex // one dial at a time

	mu        sync.Mutex
	serverKey key.MachinePublic
	cc        *http2.ClientConn
	nc        *ts2021.Conn
	closed    bool
}

// CheckServerURL tells whether s may be used as a login server: https://host[:port], or
// http:// to this machine only (plainHTTP is then true, for a warning). Over plain HTTP the
// server's Noise key from /key can be swapped by anyone on the path, who then is the control
// server: that is acceptable only where the path is this machine's loopback.
func CheckServerURL(s string) (plainHTTP bool, err error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Hostname() == "" {
		return false, fmt.Errorf("invalid login server %q: want https://host[:port]", s)
	}
	if u.Scheme == "https" {
		return false, nil
	}
	if !isLoopbackHost(u.Hostname()) {
		return false, fmt.Errorf("login server %q uses plain http:// to another machine: anyone on the way could impersonate it; use https:// (http:// is accepted only for a server on this machine)", s)
	}
	return true, nil
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// New validates the server URL and returns a client; nothing is dialled yet.
func New(opts Options) (*Client, error) {
	if _, err := CheckServerURL(opts.ServerURL); err != nil {
		return nil, err
	}
	u, _ := url.Parse(opts.ServerURL)
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.DialContext == nil {
		opts.DialContext = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	opts.ServerURL = strings.TrimRight(opts.ServerURL, "/")
	tr := &http.Transport{
		DialContext:     opts.DialContext,
		TLSClientConfig: opts.TLSConfig,
		Proxy:           nil,
	}
	return &Client{
		opts:  opts,
		host:  u.Host,
		keyHC: &http.Client{Transport: tr, Timeout: 15 * time.Second},
		h2: &http2.Transport{
			// Detect a dead connection without waiting for the map watchdog.
			ReadIdleTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}, nil
}

// ServerURL returns the URL this client talks to.
func (c *Client) ServerURL() string { return c.opts.ServerURL }

// Close drops the connection; in-flight calls fail.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.dropLocked()
}

func (c *Client) dropLocked() {
	if c.cc != nil {
		c.cc.Close()
		c.cc = nil
	}
	if c.nc != nil {
		c.nc.Close()
		c.nc = nil
	}
}

// ServerKey returns the server's Noise key, fetching it once.
func (c *Client) ServerKey(ctx context.Context) (key.MachinePublic, error) {
	c.mu.Lock()
	k := c.serverKey
	c.mu.Unlock()
	if !k.IsZero() {
		return k, nil
	}
	k, err := ts2021.FetchServerKey(ctx, c.keyHC, c.opts.ServerURL)
	if err != nil {
		return k, err
	}
	c.mu.Lock()
	c.serverKey = k
	c.mu.Unlock()
	return k, nil
}

// conn returns a live HTTP/2 connection over ts2021, dialling when needed.
func (c *Client) conn(ctx context.Context) (*http2.ClientConn, error) {
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("control client closed")
	}
	if c.cc != nil && c.cc.CanTakeNewRequest() {
		cc := c.cc
		c.mu.Unlock()
		return cc, nil
	}
	c.dropLocked()
	c.mu.Unlock()

	sk, err := c.ServerKey(ctx)
	if err != nil {
		return nil, err
	}
	nc, err := ts2021.Dial(ctx, ts2021.DialOptions{
		ServerURL:   c.opts.ServerURL,
		MachineKey:  c.opts.MachineKey,
		ServerKey:   sk,
		TLSConfig:   c.opts.TLSConfig,
		DialContext: c.opts.DialContext,
	})
	if err != nil {
		return nil, err
	}
	cc, err := c.h2.NewClientConn(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("control: HTTP/2 over ts2021: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cc.Close()
		nc.Close()
		return nil, errors.New("control client closed")
	}
	c.cc, c.nc = cc, nc
	return cc, nil
}

// HTTPError is a non-200 answer from the control server.
type HTTPError struct {
	Path   string
	Status int
	Body   string
}

// HTTPStatus is the status code control answered with.
func (e *HTTPError) HTTPStatus() int { return e.Status }

func (e *HTTPError) Error() string {
	return fmt.Sprintf("control %s: HTTP %d: %s", e.Path, e.Status, e.Body)
}

func (c *Client) post(ctx context.Context, path string, body any, nodeKeys ...key.NodePublic) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	cc, err := c.conn(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", "https://"+c.host+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	for _, k := range nodeKeys {
		if !k.IsZero() {
			req.Header.Add("Ts-Lb", k.String()) // load-balancer hint only
		}
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		// The connection may be dead; the next call dials anew. A request its caller gave up
		// on says nothing about the connection, which other calls (a login, the map poll) share.
		if ctx.Err() == nil {
			c.mu.Lock()
			if c.cc == cc {
				c.dropLocked()
			}
			c.mu.Unlock()
		}
		return nil, fmt.Errorf("control %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		resp.Body.Close()
		return nil, &HTTPError{Path: path, Status: resp.StatusCode, Body: safetext.Clean(strings.TrimSpace(string(msg)), 200)}
	}
	return resp, nil
}

// Register sends one RegisterRequest. A Followup request blocks until the user approves the
// login or the server hands out a new URL.
func (c *Client) Register(ctx context.Context, req *wire.RegisterRequest) (*wire.RegisterResponse, error) {
	req.Version = CapabilityVersion
	resp, err := c.post(ctx, "/machine/register", req, req.OldNodeKey, req.NodeKey)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rr wire.RegisterResponse
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("control register: %w", err)
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		return nil, fmt.Errorf("control register: bad response: %w", err)
	}
	if err := cleanRegisterResponse(&rr); err != nil {
		return nil, fmt.Errorf("control register: %w", err)
	}
	return &rr, nil
}

// cleanRegisterResponse makes what control says at login safe to show: its text loses control
// characters, and a login URL must be a plain http(s) URL, since front ends print it and offer
// to open it.
func cleanRegisterResponse(rr *wire.RegisterResponse) error {
	rr.Error = safetext.Clean(rr.Error, 512)
	rr.Login.LoginName = safetext.Clean(rr.Login.LoginName, 256)
	rr.Login.DisplayName = safetext.Clean(rr.Login.DisplayName, 256)
	rr.User.LoginName = safetext.Clean(rr.User.LoginName, 256)
	rr.User.DisplayName = safetext.Clean(rr.User.DisplayName, 256)
	rr.User.ProfilePicURL = safetext.Clean(rr.User.ProfilePicURL, 1024)
	if rr.AuthURL == "" {
		return nil
	}
	u, err := url.Parse(rr.AuthURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		len(rr.AuthURL) > 2048 || safetext.Clean(rr.AuthURL, 0) != rr.AuthURL || strings.ContainsAny(rr.AuthURL, " \"'<>`\\") {
		return fmt.Errorf("the server sent an unusable login URL %q", safetext.Clean(rr.AuthURL, 200))
	}
	return nil
}

// PollMap runs a streaming map request and calls fn for every response (keep-alives included)
// until ctx ends, the stream breaks, the watchdog fires or fn returns an error.
func (c *Client) PollMap(ctx context.Context, req *wire.MapRequest, fn func(*wire.MapResponse) error) error {
	req.Version = CapabilityVersion
	req.Stream = true
	req.KeepAlive = true
	req.Compress = "zstd"
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.post(ctx, "/machine/map", req, req.NodeKey)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	watchdog := time.AfterFunc(WatchdogTimeout, cancel)
	defer watchdog.Stop()
	dec, err := newMapDecoder(resp.Body, true)
	if err != nil {
		return err
	}
	defer dec.Close()
	for {
		mr, err := dec.Next()
		if err != nil {
			if ctx.Err() != nil && !watchdog.Stop() {
				return errors.New("control map poll: no message for 120s")
			}
			if errors.Is(err, io.EOF) {
				return errors.New("control map poll: server closed the stream")
			}
			return err
		}
		watchdog.Reset(WatchdogTimeout)
		if err := fn(mr); err != nil {
			return err
		}
	}
}

// SendUpdate pushes Hostinfo/endpoint changes without a netmap ("lite" map request).
func (c *Client) SendUpdate(ctx context.Context, req *wire.MapRequest) error {
	req.Version = CapabilityVersion
	req.Stream = false
	req.OmitPeers = true
	req.KeepAlive = false
	req.Compress = ""
	resp, err := c.post(ctx, "/machine/map", req, req.NodeKey)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return nil
}
