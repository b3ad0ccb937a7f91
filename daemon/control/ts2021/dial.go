// Package ts2021 is the client side of Tailscale's ts2021 control transport:
// an HTTP/1.1 upgrade to /ts2021 carrying a Noise IK handshake, after which
// the connection is a Noise-encrypted byte stream (HTTP/2 runs on top).
package ts2021

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// CapabilityVersion is what we claim, in the Noise header and elsewhere.
// Headscale needs >= 90.
const CapabilityVersion = 123

// DefaultDialTimeout bounds Dial when ctx has no deadline.
const DefaultDialTimeout = 10 * time.Second

const upgradeProtocol = "tailscale-control-protocol"

// DialOptions configures Dial.
type DialOptions struct {
	ServerURL  string // http://host[:port] or https://host[:port]
	MachineKey key.MachinePrivate
	ServerKey  key.MachinePublic // from FetchServerKey
	// TLSConfig is used for https; nil means system roots. NextProtos is
	// cleared: the upgrade needs HTTP/1.1.
	TLSConfig *tls.Config
	// DialContext opens the TCP connection; nil means a plain net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Dial opens a ts2021 connection: TCP (or TLS), the HTTP upgrade carrying the
// Noise initiation, the Noise response, and the optional early payload.
func Dial(ctx context.Context, opts DialOptions) (*Conn, error) {
	u, err := url.Parse(opts.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("ts2021: bad server URL: %w", err)
	}
	var defaultPort string
	switch u.Scheme {
	case "http":
		defaultPort = "80"
	case "https":
		defaultPort = "443"
	default:
		return nil, fmt.Errorf("ts2021: server URL %q: scheme must be http or https", opts.ServerURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("ts2021: server URL %q has no host", opts.ServerURL)
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	addr := net.JoinHostPort(u.Hostname(), port)

	hs, init, err := startHandshake(opts.MachineKey, opts.ServerKey, CapabilityVersion)
	if err != nil {
		return nil, fmt.Errorf("ts2021: %w", err)
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultDialTimeout)
		defer cancel()
	}
	// fail names the step and, if ctx ended, says so too (the socket error alone is just "i/o timeout").
	fail := func(step string, err error) error {
		cause := context.Cause(ctx)
		var ne net.Error
		if cause == nil && errors.As(err, &ne) && ne.Timeout() {
			// The socket deadline is ctx's deadline and may fire before ctx.Done.
			if d, _ := ctx.Deadline(); !time.Now().Before(d) {
				cause = context.DeadlineExceeded
			}
		}
		if cause != nil && !errors.Is(err, cause) {
			return fmt.Errorf("ts2021: %s: %s: %w (%w)", addr, step, err, cause)
		}
		return fmt.Errorf("ts2021: %s: %s: %w", addr, step, err)
	}

	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fail("dialing", err)
	}
	ok := false
	defer func() {
		if !ok {
			raw.Close()
		}
	}()
	deadline, _ := ctx.Deadline()
	if err := raw.SetDeadline(deadline); err != nil {
		return nil, fail("setting deadline", err)
	}
	// Cancellation (not just the deadline) must also unblock socket I/O.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	nc := raw
	if u.Scheme == "https" {
		var cfg *tls.Config
		if opts.TLSConfig != nil {
			cfg = opts.TLSConfig.Clone()
		} else {
			cfg = &tls.Config{}
		}
		cfg.NextProtos = nil // no ALPN: HTTP/2 cannot switch protocols
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fail("TLS handshake", err)
		}
		nc = tc
	}

	req := make([]byte, 0, 512)
	req = append(req, "POST /ts2021 HTTP/1.1\r\nHost: "...)
	req = append(req, u.Host...)
	req = append(req, "\r\nUpgrade: "+upgradeProtocol+"\r\nConnection: upgrade\r\nX-Tailscale-Handshake: "...)
	req = base64.StdEncoding.AppendEncode(req, init[:])
	req = append(req, "\r\nContent-Length: 0\r\n\r\n"...)
	if _, err := nc.Write(req); err != nil {
		return nil, fail("sending upgrade request", err)
	}

	// Noise bytes may arrive in the same read as the 101, so everything after
	// it must come through this same bufio.Reader.
	br := bufio.NewReaderSize(nc, maxFrameSize)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil {
		return nil, fail("reading upgrade response", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != upgradeProtocol {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("ts2021: %s: server refused the upgrade: %q (Upgrade: %q), body %q",
			addr, resp.Proto+" "+resp.Status, resp.Header.Get("Upgrade"), body)
	}

	c := newConn(nc, br, nil, nil, CapabilityVersion)
	typ, payload, err := c.fr.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			// What a server does when it cannot decrypt the initiation.
			return nil, fail("reading handshake response (server hung up; stale server key?)", err)
		}
		return nil, fail("reading handshake response", err)
	}
	switch typ {
	case msgTypeResponse:
	case msgTypeError:
		// Unauthenticated, so only a hint; but it is all we have.
		return nil, fmt.Errorf("ts2021: %s: server error: %q", addr, payload)
	default:
		return nil, fmt.Errorf("ts2021: %s: server sent frame type 0x%02x instead of a handshake response", addr, typ)
	}
	c.tx, c.rx, err = hs.finish(payload)
	if err != nil {
		return nil, fail("handshake", err)
	}

	c.early, c.replay, err = readEarlyPayload(c, &c.replayBuf)
	if err != nil {
		return nil, fail("after handshake", err)
	}

	if !stop() {
		// ctx ended meanwhile and the past deadline is (being) set.
		return nil, fail("dial", context.Cause(ctx))
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, fail("clearing deadline", err)
	}
	ok = true
	return c, nil
}
