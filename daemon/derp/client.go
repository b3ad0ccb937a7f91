// Package derp is Skein's client of DERP, the relay protocol of Tailscale-protocol networks:
// a frame codec, a single server connection (Client) and a reconnecting connection to one
// region (RegionClient). Peers are addressed by node public key.
package derp

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"

	"github.com/skeinvpn/skein/daemon/sockmark"
)

const (
	dialTimeout      = 10 * time.Second        // whole Dial when ctx has no deadline
	addrDialTimeout  = 1500 * time.Millisecond // one TCP connect
	secondFamilyWait = 200 * time.Millisecond  // head start of the preferred address
	// readTimeout: the server sends a keep-alive every 60–65 s, so 120 s of silence means
	// the connection is dead.
	readTimeout = 120 * time.Second
	// writeTimeout bounds how long a stalled TCP connection can block Send.
	writeTimeout   = 5 * time.Second
	metaCertPrefix = "derpkey"
	readBufSize    = 16 << 10
)

// ErrClosed is returned by a Client after Close.
var ErrClosed = errors.New("derp: client closed")

// DialOptions configure Dial.
type DialOptions struct {
	// Node is the server, from the DERP map. IPv4/IPv6, when set, are dialled instead of
	// resolving HostName ("none" disables a family); DERPPort 0 means 443.
	Node *wire.DERPNode
	// PrivateKey is the node key, which is also the DERP address.
	PrivateKey key.NodePrivate
	// TLSConfig supplies roots and the like; nil uses the system roots. It is cloned;
	// ServerName and NextProtos are set per node.
	TLSConfig *tls.Config
	// DialContext dials TCP; nil uses net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Mark, if non-zero, is set as SO_MARK on the socket of the default dialer (so the
	// connection bypasses the tunnel's routes). A custom DialContext must mark its own sockets.
	Mark uint32
	Logf func(format string, args ...any)
}

// Client is one DERP connection. Send, NotePreferred, SendPing, Ping and Close are safe for
// concurrent use; Recv must be called from a single goroutine.
type Client struct {
	raw       net.Conn // TCP; closed directly so Close never blocks on a TLS alert
	conn      net.Conn // TLS on raw
	fr        *frameReader
	pub       key.NodePublic
	priv      key.NodePrivate
	serverKey key.NodePublic
	logf      func(string, ...any)
	name      string // for errors and logs

	wmu     sync.Mutex
	wbuf    []byte
	werr    error
	limiter *tokenBucket

	// Reader state, owned by the Recv goroutine.
	pkt      ReceivedPacket
	rerr     error
	pendInfo *ServerInfoMessage

	pingMu sync.Mutex
	pings  map[[8]byte]chan struct{}

	closed atomic.Bool
}

// Dial connects to a DERP server and completes the handshake (server key, client info,
// server info). Without a deadline in ctx it gives up after 10 s.
func Dial(ctx context.Context, opts DialOptions) (*Client, error) {
	n := opts.Node
	if n == nil {
		return nil, errors.New("derp: Dial: no node")
	}
	if opts.PrivateKey.IsZero() {
		return nil, errors.New("derp: Dial: no private key")
	}
	if n.STUNOnly {
		return nil, fmt.Errorf("derp: node %q is STUN-only", n.Name)
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.DialContext == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		if opts.Mark != 0 {
			d.Control = sockmark.Control(opts.Mark)
		}
		opts.DialContext = d.DialContext
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		defer cancel()
	}
	name := n.HostName
	if n.Name != "" {
		name = n.Name + "/" + n.HostName
	}
	raw, err := dialNode(ctx, opts.DialContext, n)
	if err != nil {
		return nil, fmt.Errorf("derp: dial %s: %w", name, err)
	}
	c, err := handshake(ctx, raw, opts, name)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("derp: %s: %w", name, err)
	}
	return c, nil
}

func handshake(ctx context.Context, raw net.Conn, opts DialOptions, name string) (*Client, error) {
	n := opts.Node
	// ctx bounds the whole handshake, including reads that ignore contexts.
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	tc := tls.Client(raw, tlsConfigFor(opts.TLSConfig, n))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	c := &Client{
		raw:   raw,
		conn:  tc,
		pub:   opts.PrivateKey.Public(),
		priv:  opts.PrivateKey,
		logf:  opts.Logf,
		name:  name,
		pings: make(map[[8]byte]chan struct{}),
	}
	br := bufio.NewReaderSize(tc, readBufSize)
	c.fr = newFrameReader(br)

	// Fast start: a TLS 1.3 "meta cert" carries the server key, so the HTTP response and
	// the ServerKey frame need not be waited for.
	var fast bool
	if cs := tc.ConnectionState(); cs.Version >= tls.VersionTLS13 {
		if k, ok := parseMetaCert(cs.PeerCertificates); ok {
			c.serverKey, fast = k, true
		}
	}
	host := n.HostName
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	req := "GET /derp HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: skein\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
	if fast {
		req += "Derp-Fast-Start: 1\r\n"
	}
	c.wbuf = append(c.wbuf[:0], req+"\r\n"...)
	if fast {
		ci, err := c.clientInfoFrame()
		if err != nil {
			return nil, err
		}
		c.wbuf = append(c.wbuf, ci...)
	}
	if _, err := tc.Write(c.wbuf); err != nil {
		return nil, err
	}
	if !fast {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, fmt.Errorf("reading upgrade response: %w", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			return nil, fmt.Errorf("upgrade refused: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		t, b, err := c.fr.next()
		if err != nil {
			return nil, fmt.Errorf("reading server key: %w", err)
		}
		if t != frameServerKey {
			return nil, fmt.Errorf("first frame is type %#x, want server key", byte(t))
		}
		if c.serverKey, err = parseServerKey(b); err != nil {
			return nil, err
		}
		ci, err := c.clientInfoFrame()
		if err != nil {
			return nil, err
		}
		if _, err := tc.Write(ci); err != nil {
			return nil, err
		}
	}
	// The server admits or drops us, then sends ServerInfo before anything else.
	for c.pendInfo == nil {
		t, b, err := c.fr.next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w (server refused this node key?)", err)
			}
			return nil, fmt.Errorf("reading server info: %w", err)
		}
		switch t {
		case frameServerKey: // sent even on fast start
			k, err := parseServerKey(b)
			if err != nil {
				return nil, err
			}
			if k != c.serverKey {
				return nil, errors.New("server key differs from the one in its certificate")
			}
		case frameServerInfo:
			si, err := openServerInfo(c.priv, c.serverKey, b)
			if err != nil {
				return nil, err
			}
			c.setLimiter(si)
			c.pendInfo = &si
		}
	}
	if !stop() { // ctx ended and is breaking the connection
		return nil, ctx.Err()
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

// clientInfoFrame builds ClientInfo: our key, then the JSON sealed to the server key.
func (c *Client) clientInfoFrame() ([]byte, error) {
	msg, err := json.Marshal(struct {
		Version     int  `json:"version"`
		CanAckPings bool // we answer server pings in Recv
	}{ProtocolVersion, true})
	if err != nil {
		return nil, err
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	pub, priv, spub := c.pub.Raw(), c.priv.Raw(), c.serverKey.Raw()
	sealed := box.Seal(nonce[:], msg, &nonce, (*[32]byte)(&spub), (*[32]byte)(&priv))
	return appendFrame(nil, frameClientInfo, pub[:], sealed), nil
}

// openServerInfo opens the ServerInfo box (nonce ‖ box from server to us).
func openServerInfo(priv key.NodePrivate, server key.NodePublic, b []byte) (ServerInfoMessage, error) {
	var si ServerInfoMessage
	if len(b) < nonceLen+box.Overhead {
		return si, errors.New("derp: short server info")
	}
	nonce := (*[24]byte)(b[:nonceLen])
	p, s := priv.Raw(), server.Raw()
	msg, ok := box.Open(nil, b[nonceLen:], nonce, (*[32]byte)(&s), (*[32]byte)(&p))
	if !ok {
		return si, errors.New("derp: cannot open server info box")
	}
	var info struct {
		Version                   int `json:"version"`
		TokenBucketBytesPerSecond int
		TokenBucketBytesBurst     int
	}
	if err := json.Unmarshal(msg, &info); err != nil {
		return si, fmt.Errorf("derp: server info: %w", err)
	}
	si.TokenBucketBytesPerSecond = max(info.TokenBucketBytesPerSecond, 0)
	si.TokenBucketBytesBurst = max(info.TokenBucketBytesBurst, 0)
	return si, nil
}

// parseMetaCert finds the server key in a certificate whose CommonName is "derpkey<hex>" and
// whose serial number (the protocol version) is 1..255.
func parseMetaCert(certs []*x509.Certificate) (key.NodePublic, bool) {
	for _, cert := range certs {
		h, ok := strings.CutPrefix(cert.Subject.CommonName, metaCertPrefix)
		if !ok || len(h) != 64 || cert.SerialNumber == nil {
			continue
		}
		var r key.Raw
		if _, err := hex.Decode(r[:], []byte(h)); err != nil {
			continue
		}
		if cert.SerialNumber.Sign() > 0 && cert.SerialNumber.BitLen() <= 8 {
			return key.NodePublicFromRaw(r), true
		}
	}
	return key.NodePublic{}, false
}

// tlsConfigFor sends HostName as SNI and checks the certificate against CertName when set
// (a "sha256-raw:<hex>" CertName pins the leaf certificate instead). A node's InsecureForTests
// is ignored: a control server (or whoever stands between it and an http:// login) must never
// be able to switch off the relay's certificate check.
func tlsConfigFor(base *tls.Config, n *wire.DERPNode) *tls.Config {
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.ServerName = n.HostName
	cfg.NextProtos = []string{"http/1.1"} // we speak HTTP/1.1 and hijack the stream
	switch pin, isPin := strings.CutPrefix(n.CertName, "sha256-raw:"); {
	case isPin:
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = nil
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPin(cs, pin) }
	case n.CertName != "" && n.CertName != n.HostName:
		roots, name := cfg.RootCAs, n.CertName
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = nil
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return cfg
}

func verifyPin(cs tls.ConnectionState, pin string) error {
	now := time.Now()
	for _, cert := range cs.PeerCertificates {
		if strings.HasPrefix(cert.Subject.CommonName, metaCertPrefix) {
			continue
		}
		sum := sha256.Sum256(cert.Raw)
		if !strings.EqualFold(hex.EncodeToString(sum[:]), pin) {
			return errors.New("certificate does not match the pinned sha256")
		}
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return errors.New("pinned certificate not valid now")
		}
		return nil
	}
	return errors.New("no certificate")
}

type dialTarget struct{ network, addr string }

// dialTargets lists where to connect, preferred first: the map's IPv4, then IPv6, else
// HostName (resolved by the dialer).
func dialTargets(n *wire.DERPNode) ([]dialTarget, error) {
	port := n.DERPPort
	if port == 0 {
		port = 443
	}
	ps := strconv.Itoa(port)
	var ts []dialTarget
	if a, err := netip.ParseAddr(n.IPv4); err == nil && a.Unmap().Is4() {
		ts = append(ts, dialTarget{"tcp4", net.JoinHostPort(a.Unmap().String(), ps)})
	}
	if a, err := netip.ParseAddr(n.IPv6); err == nil && a.Is6() && !a.Is4In6() {
		ts = append(ts, dialTarget{"tcp6", net.JoinHostPort(a.String(), ps)})
	}
	if len(ts) > 0 {
		return ts, nil
	}
	no4, no6 := n.IPv4 == "none", n.IPv6 == "none"
	if n.HostName == "" || (no4 && no6) {
		return nil, errors.New("no usable address")
	}
	network := "tcp"
	if no4 {
		network = "tcp6"
	} else if no6 {
		network = "tcp4"
	}
	return []dialTarget{{network, net.JoinHostPort(n.HostName, ps)}}, nil
}

// dialNode connects to the first target, starting the next one if the first fails or has
// not connected within secondFamilyWait; the first connection to succeed wins.
func dialNode(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), n *wire.DERPNode) (net.Conn, error) {
	targets, err := dialTargets(n)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, len(targets))
	next, pending := 0, 0
	start := func() {
		t := targets[next]
		next++
		pending++
		go func() {
			dctx, dcancel := context.WithTimeout(ctx, addrDialTimeout)
			defer dcancel()
			c, err := dial(dctx, t.network, t.addr)
			if err != nil {
				err = fmt.Errorf("%s: %w", t.addr, err)
			}
			results <- result{c, err}
		}()
	}
	start()
	var timer <-chan time.Time
	if len(targets) > 1 {
		t := time.NewTimer(secondFamilyWait)
		defer t.Stop()
		timer = t.C
	}
	var errs []error
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				if pending > 0 { // close the losers
					go func(k int) {
						for range k {
							if r := <-results; r.c != nil {
								r.c.Close()
							}
						}
					}(pending)
				}
				return r.c, nil
			}
			errs = append(errs, r.err)
			if next < len(targets) {
				start()
			}
		case <-timer:
			timer = nil
			if next < len(targets) {
				start()
			}
		}
	}
	return nil, errors.Join(errs...)
}

// ServerPublicKey is the server's DERP key.
func (c *Client) ServerPublicKey() key.NodePublic { return c.serverKey }

// LocalAddr is the local TCP address, for logs.
func (c *Client) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// Close drops the connection; Recv and Send then fail. It does not block.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.raw.Close()
}

// Send relays pkt (at most MaxPacketSize bytes) to the node with key dst. It serialises
// with other writers and blocks at most about 5 s on a stalled connection; a write error
// breaks the connection. Packets beyond a server-imposed rate are dropped silently.
func (c *Client) Send(dst key.NodePublic, pkt []byte) error {
	if len(pkt) > MaxPacketSize {
		return fmt.Errorf("derp: packet too large (%d bytes)", len(pkt))
	}
	d := dst.Raw()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.limiter != nil && !c.limiter.allow(frameHeaderLen+keyLen+len(pkt)) {
		return nil
	}
	c.wbuf = appendFrame(c.wbuf[:0], frameSendPacket, d[:], pkt)
	return c.writeLocked()
}

// SendBatch relays pkts to dst, as few TLS writes as their size allows. Packets over
// MaxPacketSize, or over the server's rate limit, are skipped.
func (c *Client) SendBatch(dst key.NodePublic, pkts [][]byte) error {
	d := dst.Raw()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = c.wbuf[:0]
	for _, pkt := range pkts {
		if len(pkt) > MaxPacketSize {
			continue
		}
		if c.limiter != nil && !c.limiter.allow(frameHeaderLen+keyLen+len(pkt)) {
			continue
		}
		c.wbuf = appendFrame(c.wbuf, frameSendPacket, d[:], pkt)
		if len(c.wbuf) >= batchWrite {
			if err := c.writeLocked(); err != nil {
				return err
			}
			c.wbuf = c.wbuf[:0]
		}
	}
	if len(c.wbuf) == 0 {
		return nil
	}
	return c.writeLocked()
}

// batchWrite is where SendBatch writes what it has gathered (a few TLS records' worth).
const batchWrite = 32 << 10

// NotePreferred tells the server whether it is our home DERP (used for its statistics).
func (c *Client) NotePreferred(preferred bool) error {
	var b [1]byte
	if preferred {
		b[0] = 1
	}
	return c.writeFrame(frameNotePreferred, b[:])
}

// SendPing sends a ping; the server's PongMessage arrives through Recv.
func (c *Client) SendPing(data [8]byte) error { return c.writeFrame(framePing, data[:]) }

// Ping measures the round trip to the server. It needs another goroutine calling Recv; if the
// connection dies meanwhile it waits until ctx ends.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	var data [8]byte
	rand.Read(data[:])
	ch := make(chan struct{})
	c.pingMu.Lock()
	c.pings[data] = ch
	c.pingMu.Unlock()
	defer func() {
		c.pingMu.Lock()
		delete(c.pings, data)
		c.pingMu.Unlock()
	}()
	start := time.Now()
	if err := c.SendPing(data); err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (c *Client) writeFrame(t frameType, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendFrame(c.wbuf[:0], t, payload)
	return c.writeLocked()
}

func (c *Client) writeLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if c.closed.Load() {
		return ErrClosed
	}
	c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(c.wbuf); err != nil {
		// A partial TLS write leaves the stream unusable.
		c.werr = fmt.Errorf("derp: send to %s: %w", c.name, err)
		c.raw.Close()
		if c.closed.Load() {
			c.werr = ErrClosed
		}
		return c.werr
	}
	return nil
}

// Recv returns the next message; see the Message types. The first message on a connection is
// the handshake's ServerInfoMessage. Server pings are answered before the PingMessage is
// returned; unknown and malformed frames are skipped. A returned *ReceivedPacket (and its
// Data) is reused by the next call. Any error is permanent for this Client.
func (c *Client) Recv() (Message, error) {
	if si := c.pendInfo; si != nil {
		c.pendInfo = nil
		return *si, nil
	}
	for {
		if c.rerr != nil {
			return nil, c.rerr
		}
		c.conn.SetReadDeadline(time.Now().Add(readTimeout))
		t, b, err := c.fr.next()
		if err != nil {
			if c.closed.Load() {
				err = ErrClosed
			} else {
				err = fmt.Errorf("derp: recv from %s: %w", c.name, err)
			}
			c.rerr = err
			return nil, err
		}
		if t == frameServerInfo {
			si, err := openServerInfo(c.priv, c.serverKey, b)
			if err != nil {
				c.rerr = err
				return nil, err
			}
			c.setLimiter(si)
			return si, nil
		}
		m, err := parseFrame(t, b, &c.pkt)
		if err != nil {
			c.logf("derp %s: dropping frame: %v", c.name, err)
			continue
		}
		switch m := m.(type) {
		case nil:
			continue
		case PingMessage:
			if err := c.writeFrame(framePong, m[:]); err != nil {
				c.logf("derp %s: answering ping: %v", c.name, err)
			}
		case PongMessage:
			c.pingMu.Lock()
			if ch, ok := c.pings[m]; ok {
				close(ch)
				delete(c.pings, m)
			}
			c.pingMu.Unlock()
		}
		return m, nil
	}
}

func (c *Client) setLimiter(si ServerInfoMessage) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if si.TokenBucketBytesPerSecond > 0 {
		c.limiter = newTokenBucket(si.TokenBucketBytesPerSecond, si.TokenBucketBytesBurst)
	} else {
		c.limiter = nil
	}
}

// tokenBucket is the send rate limit a server may ask for in ServerInfo.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newTokenBucket(rate, burst int) *tokenBucket {
	b := float64(max(burst, 0))
	return &tokenBucket{rate: float64(rate), burst: b, tokens: b, last: time.Now()}
}

func (tb *tokenBucket) allow(n int) bool {
	now := time.Now()
	tb.tokens = min(tb.burst, tb.tokens+now.Sub(tb.last).Seconds()*tb.rate)
	tb.last = now
	if tb.tokens < float64(n) {
		return false
	}
	tb.tokens -= float64(n)
	return true
}
