package taildrop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Peer is the netmap peer a request comes from.
type Peer struct {
	StableID string
	Name     string // short name, shown to the user
	UserID   int64
	Tagged   bool
}

// Defaults of the Handler's limits.
const (
	DefaultReserve       = 64 << 20
	DefaultMinBodyRate   = 16 << 10
	DefaultRateWindow    = 30 * time.Second
	DefaultHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
	DefaultMaxConns      = 256
	DefaultMaxTransfers  = 16
	// One peer's share of the connections and transfers, so that one node (a same-user node
	// gone rogue) cannot hold them all.
	DefaultMaxConnsPerPeer     = 32
	DefaultMaxTransfersPerPeer = 4
	maxHeaderBytes             = 16 << 10
)

// Handler is the peer API as far as Taildrop needs it. The zero values of the limits mean
// their defaults.
type Handler struct {
	Inbox *Inbox // nil: Taildrop disabled (403)
	// Lookup returns the netmap peer owning the TCP source address; requests (and, with
	// NewServer, connections) from other addresses are refused.
	Lookup func(remote netip.Addr) (Peer, bool)
	// SelfAddrs returns our tailnet addresses, for the Host header check.
	SelfAddrs func() []netip.Addr
	// Allow authorises a peer to send files (same user and untagged, and our node has the
	// file-sharing capability): nil allows; otherwise 403 with the error's text. A nil Allow
	// refuses everyone.
	Allow func(p Peer) error
	// Reserve is the free space, in bytes, to keep on the inbox's file system (default
	// 64 MiB; negative for none).
	Reserve int64
	Logf    func(string, ...any)

	// MinBodyRate (bytes/s) is the average rate a request body must keep up over each
	// RateWindow; slower senders are cut off (default 16 KiB/s over 30 s). A body that stalls
	// completely is cut off when the window ends.
	MinBodyRate int64
	RateWindow  time.Duration
	// HeaderTimeout bounds the reading of request headers; IdleTimeout the wait for the next
	// request on a kept-alive connection (used by NewServer).
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	// MaxConns bounds open connections (NewServer); MaxTransfers concurrent PUTs (503 beyond);
	// the PerPeer ones what one peer may hold of them.
	MaxConns            int
	MaxTransfers        int
	MaxConnsPerPeer     int
	MaxTransfersPerPeer int

	conns     atomic.Int64
	transfers atomic.Int64

	refused atomic.Int64 // connections from peers Allow refuses, waiting for their 403

	mu            sync.Mutex
	peerConns     map[string]int      // by StableID
	connPeer      map[net.Conn]string // counted connections ("" = refused)
	peerTransfers map[string]int
}

// maxRefused bounds the connections from refused peers that are answered with a 403.
const maxRefused = 16

// refusedKey marks the context of a connection whose peer may not send files.
type refusedKey struct{}

var errDisabled = errors.New("Taildrop disabled; no storage directory")

func (h *Handler) track(c net.Conn, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.connPeer == nil {
		h.connPeer = map[net.Conn]string{}
	}
	h.connPeer[c] = id
}

func (h *Handler) tracked(c net.Conn) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id, ok := h.connPeer[c]
	return id, ok
}

func (h *Handler) untrack(c net.Conn) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id, ok := h.connPeer[c]
	delete(h.connPeer, c)
	return id, ok
}

// take counts one more for key in m, up to limit.
func (h *Handler) take(m *map[string]int, key string, limit int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if *m == nil {
		*m = map[string]int{}
	}
	if (*m)[key] >= limit {
		return false
	}
	(*m)[key]++
	return true
}

func (h *Handler) give(m *map[string]int, key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if (*m)[key]--; (*m)[key] <= 0 {
		delete(*m, key)
	}
}

func (h *Handler) logf(format string, args ...any) {
	if h.Logf != nil {
		h.Logf(format, args...)
	}
}

func (h *Handler) reserve() int64 {
	switch {
	case h.Reserve == 0:
		return DefaultReserve
	case h.Reserve < 0:
		return 0
	}
	return h.Reserve
}

func orDefault[T int | int64 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// NewServer returns an HTTP/1.1 server (no h2c) for h with the peer API's defences against
// slow and abusive clients: a header timeout, an idle timeout, a 16 KiB header limit, a
// connection limit, and connections from addresses Lookup does not know closed at once. The
// body rate is enforced by the handler (see Handler.MinBodyRate); there is no whole-request
// timeout, so that large files can take as long as they need at a reasonable rate.
func NewServer(h *Handler) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protos,
		ReadHeaderTimeout: orDefault(h.HeaderTimeout, DefaultHeaderTimeout),
		IdleTimeout:       orDefault(h.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(logWriter{h}, "taildrop: peerapi: ", 0),
		// A connection counts against the limits only when it comes from a peer that may send
		// files: another user's node or a tagged server gets its 403 on a connection of its
		// own (at most maxRefused at a time, beyond that closed at once), so it can never hold
		// the slots. An allowed peer holds at most its share of them.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, ok := h.peerOf(c.RemoteAddr().String())
			if !ok {
				h.logf("taildrop: peerapi: closing connection from unknown address %v", c.RemoteAddr())
				c.Close()
				return ctx
			}
			var why error
			switch {
			case h.Inbox == nil || h.Allow == nil:
				why = errDisabled
			default:
				why = h.Allow(p)
			}
			if why != nil {
				if h.refused.Add(1) > maxRefused {
					h.refused.Add(-1)
					c.Close()
					return ctx
				}
				h.track(c, "")
				return context.WithValue(ctx, refusedKey{}, why)
			}
			if !h.take(&h.peerConns, p.StableID, orDefault(h.MaxConnsPerPeer, DefaultMaxConnsPerPeer)) {
				h.logf("taildrop: peerapi: closing connection from %v (%s): it has %d open", c.RemoteAddr(), p.Name, orDefault(h.MaxConnsPerPeer, DefaultMaxConnsPerPeer))
				c.Close()
				return ctx
			}
			h.track(c, p.StableID)
			return ctx
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				if id, ok := h.tracked(c); ok && id != "" && h.conns.Add(1) > int64(orDefault(h.MaxConns, DefaultMaxConns)) {
					c.Close()
				}
			case http.StateClosed, http.StateHijacked:
				id, ok := h.untrack(c)
				switch {
				case !ok:
				case id == "":
					h.refused.Add(-1)
				default:
					h.conns.Add(-1)
					h.give(&h.peerConns, id)
				}
			}
		}}
}

type logWriter struct{ h *Handler }

func (l logWriter) Write(p []byte) (int, error) {
	l.h.logf("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (h *Handler) peerOf(remoteAddr string) (Peer, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil || h.Lookup == nil {
		return Peer{}, false
	}
	return h.Lookup(ap.Addr().Unmap())
}

// ServeHTTP serves the peer API paths Taildrop uses:
//
//	PUT /v0/put/<name>   receive a file (Range: bytes=<offset>- resumes)
//	GET /v0/put/         the sender's partial files, as a JSON array
//	GET /v0/put/<name>   SHA-256 per 64 KiB block of the sender's partial file, one JSON per line
//
// Other methods on /v0/put/ get 405, other paths 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	rc := http.NewResponseController(w)
	window := orDefault(h.RateWindow, DefaultRateWindow)
	// Deadlines outlive a request on a kept-alive connection: replace the previous one's.
	// Writes before the answer (such as "100 Continue") get one window.
	rc.SetWriteDeadline(time.Now().Add(window))
	if r.ContentLength != 0 {
		// Until a handler says otherwise, the body (including what the server discards after
		// an early answer) must arrive within one rate window.
		rc.SetReadDeadline(time.Now().Add(window))
	}

	peer, ok := h.peerOf(r.RemoteAddr)
	if !ok {
		h.logf("taildrop: peerapi: request from unknown address %s", r.RemoteAddr)
		h.fail(w, r, http.StatusForbidden, "unknown peer")
		return
	}
	if err := h.validate(r); err != nil {
		h.logf("taildrop: peerapi: invalid request from %s (%s): %v", r.RemoteAddr, peer.Name, err)
		h.fail(w, r, http.StatusForbidden, "invalid peerapi request")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v0/put/")
	if !ok {
		h.fail(w, r, http.StatusNotFound, "unsupported peerapi path")
		return
	}
	if why, ok := r.Context().Value(refusedKey{}).(error); ok {
		// Refused when the connection came: answered, and the connection closed.
		h.logf("taildrop: peerapi: refusing %s (%s): %v", r.RemoteAddr, peer.Name, why)
		w.Header().Set("Connection", "close")
		h.fail(w, r, http.StatusForbidden, why.Error())
		return
	}
	if h.Inbox == nil || h.Allow == nil {
		h.fail(w, r, http.StatusForbidden, errDisabled.Error())
		return
	}
	if err := h.Allow(peer); err != nil {
		h.logf("taildrop: peerapi: refusing %s (%s): %v", r.RemoteAddr, peer.Name, err)
		h.fail(w, r, http.StatusForbidden, err.Error())
		return
	}
	name, err := url.PathUnescape(rest)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, ErrInvalidName.Error())
		return
	}
	switch r.Method {
	case http.MethodGet:
		if rest == "" {
			h.serveList(w, r, peer)
		} else {
			h.serveHashes(w, r, peer, name)
		}
	case http.MethodPut:
		h.servePut(w, r, peer, name)
	default:
		hdr.Set("Allow", "GET, PUT")
		h.fail(w, r, http.StatusMethodNotAllowed, "expected method GET or PUT")
	}
}

// validate refuses requests a browser could have been tricked into sending (DNS rebinding,
// cross-site): the Host must be "peer" or one of our addresses with a port, and there may be no
// Origin or Referer.
func (h *Handler) validate(r *http.Request) error {
	if r.Header.Get("Referer") != "" {
		return errors.New("unexpected Referer")
	}
	if r.Header.Get("Origin") != "" {
		return errors.New("unexpected Origin")
	}
	if r.Host == "peer" {
		return nil
	}
	ap, err := netip.ParseAddrPort(r.Host)
	if err != nil {
		return fmt.Errorf("bad Host %q", r.Host)
	}
	if h.SelfAddrs != nil {
		for _, a := range h.SelfAddrs() {
			if a.Unmap() == ap.Addr().Unmap() {
				return nil
			}
		}
	}
	return fmt.Errorf("Host %q is not one of our addresses", r.Host)
}

// fail answers with a plain-text error. The rest of a request body is not read: the
// connection is closed after the answer instead.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(orDefault(h.RateWindow, DefaultRateWindow)))
	http.Error(w, msg, code)
}

func (h *Handler) serveList(w http.ResponseWriter, r *http.Request, p Peer) {
	names := h.Inbox.partials(clientID(p.StableID))
	b, _ := json.Marshal(names) // null when there are none, as the official receiver answers
	w.Header().Set("Content-Type", "application/json")
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(orDefault(h.RateWindow, DefaultRateWindow)))
	w.Write(append(b, '\n'))
}

func (h *Handler) serveHashes(w http.ResponseWriter, r *http.Request, p Peer, name string) {
	if err := ValidateName(name); err != nil {
		h.fail(w, r, http.StatusBadRequest, ErrInvalidName.Error())
		return
	}
	f, err := h.Inbox.openPartial(name, clientID(p.StableID))
	if err != nil {
		h.logf("taildrop: peerapi: hashing partial %q for %s: %v", name, p.Name, err)
		h.fail(w, r, http.StatusInternalServerError, "cannot read the partial file")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if f == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	defer f.Close()
	rc := http.NewResponseController(w)
	window := orDefault(h.RateWindow, DefaultRateWindow)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	block := (*bp)[:hashBlockSize]
	line := make([]byte, 0, 128)
	for {
		n, err := io.ReadFull(f, block)
		if n > 0 {
			sum := sha256.Sum256(block[:n])
			line = append(line[:0], `{"checksum":"`...)
			line = hex.AppendEncode(line, sum[:])
			line = append(line, `","algo":"sha256","size":`...)
			line = strconv.AppendInt(line, int64(n), 10)
			line = append(line, "}\n"...)
			rc.SetWriteDeadline(time.Now().Add(window))
			if _, werr := w.Write(line); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				h.logf("taildrop: peerapi: hashing partial %q: %v", name, err)
			}
			return
		}
	}
}

func (h *Handler) servePut(w http.ResponseWriter, r *http.Request, p Peer, name string) {
	t0 := time.Now()
	if err := ValidateName(name); err != nil {
		h.logf("taildrop: peerapi: refusing name %q from %s: %v", name, p.Name, err)
		h.fail(w, r, http.StatusBadRequest, ErrInvalidName.Error())
		return
	}
	var offset int64
	if rh := r.Header.Values("Range"); len(rh) > 0 {
		var err error
		if offset, err = ParseRange(rh[0]); err != nil || len(rh) > 1 {
			h.fail(w, r, http.StatusBadRequest, "invalid Range header")
			return
		}
	}
	if h.transfers.Add(1) > int64(orDefault(h.MaxTransfers, DefaultMaxTransfers)) {
		h.transfers.Add(-1)
		h.fail(w, r, http.StatusServiceUnavailable, "too many transfers in progress; try again later")
		return
	}
	defer h.transfers.Add(-1)
	if !h.take(&h.peerTransfers, p.StableID, orDefault(h.MaxTransfersPerPeer, DefaultMaxTransfersPerPeer)) {
		h.fail(w, r, http.StatusServiceUnavailable, "too many transfers from this node in progress; try again later")
		return
	}
	defer h.give(&h.peerTransfers, p.StableID)

	body := newRateReader(r.Body, http.NewResponseController(w),
		orDefault(h.MinBodyRate, DefaultMinBodyRate), orDefault(h.RateWindow, DefaultRateWindow))
	res, err := h.Inbox.receive(p, name, offset, r.ContentLength, body, h.reserve())
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrInvalidName):
			code = http.StatusBadRequest
		case errors.Is(err, errInProgress):
			code = http.StatusConflict
		case errors.Is(err, errNoSpace):
			code = http.StatusInsufficientStorage
		case errors.Is(err, errBadOffset):
			code = http.StatusRequestedRangeNotSatisfiable
		case errors.Is(err, errTooSlow):
			code = http.StatusRequestTimeout
		}
		h.logf("taildrop: peerapi: put %q from %s (%s) at offset %d: %v", name, p.Name, r.RemoteAddr, offset, err)
		h.fail(w, r, code, err.Error())
		return
	}
	d := time.Since(t0)
	h.logf("taildrop: received %q as %q (%d bytes, %d resumed) from %s in %v (%.1f MB/s)%s",
		name, res.Name, res.Size, res.Size-res.Written, p.Name, d.Round(time.Millisecond),
		float64(res.Written)/1e6/max(d.Seconds(), 1e-9), map[bool]string{true: "; identical to a waiting file"}[res.Duplicate])
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(orDefault(h.RateWindow, DefaultRateWindow)))
	io.WriteString(w, "{}\n")
}

// rateReader cuts off a request body that is slower than minRate on average over a window.
// Windows start when a read returns after the previous one ended; a window that ends with
// fewer than minRate × window bytes ends the body. The connection's read deadline enforces
// this while no data comes: it is the end of the current window, or of the next one once the
// current window has its bytes, so it moves forward only while the rate holds.
type rateReader struct {
	r        io.Reader
	rc       *http.ResponseController
	need     int64 // bytes per window
	window   time.Duration
	winStart time.Time
	winBytes int64
	deadline time.Time
	err      error
}

func newRateReader(r io.Reader, rc *http.ResponseController, minRate int64, window time.Duration) *rateReader {
	rr := &rateReader{r: r, rc: rc, window: window, winStart: time.Now()}
	rr.need = int64(float64(minRate) * window.Seconds())
	rr.setDeadline()
	return rr
}

func (rr *rateReader) setDeadline() {
	d := rr.winStart.Add(rr.window)
	if rr.winBytes >= rr.need {
		d = d.Add(rr.window)
	}
	if !d.Equal(rr.deadline) {
		rr.deadline = d
		rr.rc.SetReadDeadline(d)
	}
}

func (rr *rateReader) Read(p []byte) (int, error) {
	if rr.err != nil {
		return 0, rr.err
	}
	n, err := rr.r.Read(p)
	rr.winBytes += int64(n)
	if err == io.EOF {
		// Complete: no deadline while the file is synced and renamed (the server's own
		// background read must not time out meanwhile).
		rr.rc.SetReadDeadline(time.Time{})
		return n, err
	}
	now := time.Now()
	tooSlow := func() error {
		rr.err = fmt.Errorf("%w: %d bytes in %v, want at least %d", errTooSlow,
			rr.winBytes, now.Sub(rr.winStart).Round(time.Millisecond), rr.need)
		return rr.err
	}
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		// Only reached when a whole window passed without enough bytes.
		return n, tooSlow()
	}
	if now.Sub(rr.winStart) >= rr.window {
		if rr.winBytes < rr.need {
			return n, tooSlow()
		}
		rr.winStart, rr.winBytes = now, 0
	}
	rr.setDeadline()
	return n, err
}

// Listen opens the peer API listener for one of our tailnet addresses the way the official
// client does: the preferred ports PeerAPIPort(addr, 0..4), then any free port. The port to
// advertise (Hostinfo.Services peerapi4/peerapi6) is the listener's.
func Listen(ctx context.Context, addr netip.Addr) (net.Listener, error) {
	network := "tcp4"
	if addr.Is6() && !addr.Is4In6() {
		network = "tcp6"
	}
	// FREEBIND: the address is on our TUN, but an IPv6 one may still be in duplicate address
	// detection when the tunnel has just come up.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			if network == "tcp4" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			}
		})
		return serr
	}}
	var err error
	for try := range 5 {
		var ln net.Listener
		ln, err = lc.Listen(ctx, network, netip.AddrPortFrom(addr.Unmap(), PeerAPIPort(addr, try)).String())
		if err == nil {
			return ln, nil
		}
	}
	ln, err2 := lc.Listen(ctx, network, netip.AddrPortFrom(addr.Unmap(), 0).String())
	if err2 != nil {
		return nil, fmt.Errorf("taildrop: peer API listener on %v: %w (preferred ports: %v)", addr, err2, err)
	}
	return ln, nil
}
