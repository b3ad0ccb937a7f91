package ipc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/skeinvpn/skein/internal/userdb"
)

// MaxRequestBody bounds every POST body; real requests are a few hundred bytes.
const MaxRequestBody = 1 << 20

// HTTPHost is the Host header the client sends. The server refuses any other (except empty and
// "skeind"), and any request with Origin or Referer: a DNS-rebinding or cross-site page reaches
// a forwarded socket only with its own host name and an Origin, so it is shut out even if the
// API is ever exposed over TCP.
const HTTPHost = "local"

const (
	bodyReadTimeout   = 10 * time.Second
	watchWriteTimeout = 10 * time.Second
)

// Backend is what the daemon implements for the server to expose.
type Backend interface {
	Status() Status
	Prefs() Prefs
	// Up returns once the state is Running, or as soon as an interactive login has an AuthURL.
	Up(ctx context.Context, req UpRequest) (UpResponse, error)
	Down(ctx context.Context) error
	Logout(ctx context.Context) error
	SetPrefs(ctx context.Context, p PrefsPatch) (Prefs, error)
	// Ping sends one disco ping to the peer named by name, DNS name or address.
	Ping(ctx context.Context, peer string) (PingResult, error)
	// Netcheck runs a netcheck now.
	Netcheck(ctx context.Context) (NetcheckReport, error)
	// DNSQuery asks the helper's MagicDNS resolver (name, record type such as "A").
	DNSQuery(ctx context.Context, name, qtype string) (DNSQueryResult, error)
	// Watch returns a channel of events, starting with one carrying a full Status, and a
	// cancel func. The channel may be closed by the backend (e.g. at shutdown).
	Watch() (<-chan Event, func())
}

// ServerOptions tunes a Server. The zero value is fine for the daemon.
type ServerOptions struct {
	// OwnUID is the daemon's own uid, which may always change state (it owns the daemon's
	// state anyway). Zero means os.Getuid(); root is allowed regardless.
	OwnUID uint32
	// LookupUID resolves the operator's user name; nil means userdb.LookupName (/etc/passwd,
	// then NSS through getent). Tests replace it.
	LookupUID func(name string) (uint32, error)
	// Logf logs request failures worth an administrator's eye; nil means log.Printf.
	Logf func(format string, args ...any)
	// Limits on what users other than root may hold open (limits.go); 0 means the default.
	MaxConnsPerUser, MaxConns     int
	MaxWatchesPerUser, MaxWatches int
}

// Server serves the ipc API for a Backend.
type Server struct {
	b      Backend
	opts   ServerOptions
	hs     *http.Server
	done   chan struct{} // closed by Close, ends watch streams
	closed sync.Once

	conns, watches slots
	opCache        operatorCache

	// authMu makes a permission check and the action it allows one step (issue 14, S4): a
	// privileged call holds it shared from its check to its end; a change of operator holds it
	// alone, so that nobody acts on a right it takes away.
	authMu sync.RWMutex
}

// NewServer returns a Server for b; call Serve to start it.
func NewServer(b Backend, opts ServerOptions) *Server {
	if opts.OwnUID == 0 {
		opts.OwnUID = uint32(os.Getuid())
	}
	if opts.LookupUID == nil {
		opts.LookupUID = lookupUID
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	s := &Server{b: b, opts: opts, done: make(chan struct{})}
	s.hs = &http.Server{
		Handler:     s,
		ConnContext: connContext,
		// No ReadTimeout/WriteTimeout: watch streams and Up calls are long-lived. Bodies get
		// their own deadline in decodeBody.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(logfWriter(opts.Logf), "ipc: ", 0),
	}
	return s
}

// Serve accepts connections on l until Close; it returns nil after Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.hs.Serve(&limitListener{Listener: l, s: s, refusing: make(chan struct{}, maxRefusing)})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server: listeners and connections are closed and watch streams end.
func (s *Server) Close() {
	s.closed.Do(func() {
		close(s.done)
		s.hs.Close()
	})
}

// Listen opens the daemon's Unix socket at path: it creates the parent directory, replaces a
// stale socket left by a dead daemon, and refuses to steal the socket of a live one.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		path = DefaultSocket
	}
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; not removing it", path)
		}
		c, err := net.DialTimeout("unix", path, 2*time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another skeind is already running on %s", path)
		}
		if !isStaleSocketErr(err) {
			return nil, fmt.Errorf("checking existing socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Everyone may connect: who may do what is decided per request from SO_PEERCRED.
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			if i == 0 {
				return "/"
			}
			return path[:i]
		}
	}
	return "."
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e := checkRequestOrigin(r); e != nil {
		writeError(w, http.StatusForbidden, e)
		return
	}
	s.dispatch(w, r)
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request, _ string) {
	st := s.b.Status()
	if !s.privileged(r.Context()) {
		redactStatus(&st)
	}
	if r.Header.Get("Accept") == MediaStatusBinary {
		h := w.Header()
		h.Set("Content-Type", MediaStatusBinary)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		writeStatusBinary(w, st) // a failure here is the client's closed socket
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) serveGetPrefs(w http.ResponseWriter, r *http.Request, _ string) {
	writeJSON(w, http.StatusOK, s.b.Prefs())
}

func (s *Server) serveUp(w http.ResponseWriter, r *http.Request, _ string) {
	var req UpRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.b.Up(r.Context(), req)
	s.reply(w, resp, err)
}

func (s *Server) serveDown(w http.ResponseWriter, r *http.Request, _ string) {
	if !s.decode(w, r, &struct{}{}) {
		return
	}
	s.replyStatus(w, r, s.b.Down(r.Context()))
}

func (s *Server) serveLogout(w http.ResponseWriter, r *http.Request, _ string) {
	if !s.decode(w, r, &struct{}{}) {
		return
	}
	s.replyStatus(w, r, s.b.Logout(r.Context()))
}

func (s *Server) servePing(w http.ResponseWriter, r *http.Request, _ string) {
	peer := r.URL.Query().Get("peer")
	if peer == "" {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "ping: missing peer"})
		return
	}
	res, err := s.b.Ping(r.Context(), peer)
	s.reply(w, res, err)
}

func (s *Server) serveNetcheck(w http.ResponseWriter, r *http.Request, _ string) {
	// Anyone may read the last report; only who may change state starts a new run.
	rep, err := s.b.Netcheck(s.withCaller(r))
	s.reply(w, rep, err)
}

func (s *Server) serveDNSQuery(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	name, qtype := q.Get("name"), q.Get("type")
	if name == "" || len(name) > 255 || len(qtype) > 16 {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "dns query: want a name (at most 255 bytes) and an optional record type"})
		return
	}
	if qtype == "" {
		qtype = "A"
	}
	res, err := s.b.DNSQuery(r.Context(), name, qtype)
	s.reply(w, res, err)
}

func (s *Server) servePostPrefs(w http.ResponseWriter, r *http.Request, _ string) {
	var p PrefsPatch
	if !s.decode(w, r, &p) {
		return
	}
	setsOperator := p.Operator != nil
	if setsOperator {
		s.authMu.Lock()
		defer s.authMu.Unlock()
	} else {
		s.authMu.RLock()
		defer s.authMu.RUnlock()
	}
	// Checked again under the lock: the operator may have changed since dispatch looked.
	uid, _ := peerUID(r.Context())
	if e := s.authorizeWrite(uid, setsOperator); e != nil {
		writeError(w, http.StatusForbidden, e)
		return
	}
	if setsOperator {
		if name := *p.Operator; name != "" {
			if _, err := s.opts.LookupUID(name); err != nil {
				writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: fmt.Sprintf("operator %q: no such local user", name)})
				return
			}
		}
	}
	prefs, err := s.b.SetPrefs(r.Context(), p)
	s.reply(w, prefs, err)
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, &Error{
		Code:    ErrBadRequest,
		Message: fmt.Sprintf("method %s not allowed on %s (use %s)", r.Method, r.URL.Path, allow),
	})
}

// checkRequestOrigin rejects anything a browser could have sent: browsers always add Origin or
// Referer to cross-site POSTs, and a rebinding attack arrives with a foreign Host.
func checkRequestOrigin(r *http.Request) *Error {
	if r.Header.Get("Origin") != "" || r.Header.Get("Referer") != "" {
		return &Error{Code: ErrNeedsOperator, Message: "permission denied: requests from web pages are not accepted"}
	}
	switch r.Host {
	case HTTPHost, "", "skeind":
		return nil
	}
	return &Error{Code: ErrNeedsOperator, Message: fmt.Sprintf("permission denied: unexpected Host %q", r.Host)}
}

// decode decodes the JSON body into v; it answers the request itself and returns false when
// that fails. (Authorization comes first, from the route table.)
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if e := decodeBody(w, r, v); e != nil {
		writeError(w, http.StatusBadRequest, e)
		return false
	}
	return true
}

// authorizeWrite decides whether uid may change state (or, with setsOperator, change who the
// operator is). The operator is resolved on every call so that a change of operator, or of the
// user database, takes effect at once.
func (s *Server) authorizeWrite(uid uint32, setsOperator bool) *Error {
	if uid == 0 || uid == s.opts.OwnUID {
		return nil
	}
	if setsOperator {
		return &Error{
			Code:    ErrNeedsRoot,
			Message: "permission denied: only root can change the operator",
			Fix:     "sudo skein set --operator=$USER",
		}
	}
	if op := s.b.Prefs().Operator; op != "" {
		if opUID, err := s.opts.LookupUID(op); err == nil && opUID == uid {
			return nil
		}
	}
	return &Error{
		Code:    ErrNeedsOperator,
		Message: fmt.Sprintf("permission denied: uid %d is neither root nor skeind's operator", uid),
		Fix:     "sudo skein set --operator=$USER",
	}
}

func lookupUID(name string) (uint32, error) {
	u, err := userdb.LookupName(name)
	return u.UID, err
}

// decodeBody strictly decodes exactly one JSON value of at most MaxRequestBody bytes into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *Error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &Error{Code: ErrBadRequest, Message: "Content-Type must be application/json"}
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	// Clear the deadline: the server's background read that notices a vanished client runs
	// under it, and would cancel a long Up when it fired.
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &Error{Code: ErrBadRequest, Message: fmt.Sprintf("request body too large (limit %d bytes)", MaxRequestBody)}
		}
		return &Error{Code: ErrBadRequest, Message: "reading request body: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return &Error{Code: ErrBadRequest, Message: "a JSON request body is required (use {} for none)"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &Error{Code: ErrBadRequest, Message: "invalid JSON body: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Code: ErrBadRequest, Message: "invalid JSON body: trailing data after the object"}
	}
	return nil
}

func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.writeBackendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) replyStatus(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		s.writeBackendError(w, err)
		return
	}
	s.serveStatus(w, r, "")
}

func (s *Server) writeBackendError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) || e == nil {
		s.opts.Logf("ipc: internal error: %v", err)
		e = &Error{Code: ErrInternal, Message: err.Error()}
	}
	writeError(w, HTTPStatus(e.Code), e)
}

// HTTPStatus is the HTTP status the server answers with for an error code.
func HTTPStatus(c ErrorCode) int {
	switch c {
	case ErrBadRequest:
		return http.StatusBadRequest
	case ErrNeedsLogin:
		return http.StatusConflict
	case ErrLoginFailed:
		return http.StatusUnauthorized
	case ErrNeedsOperator, ErrNeedsRoot:
		return http.StatusForbidden
	case ErrNotFound:
		return http.StatusNotFound
	case ErrBusy:
		return http.StatusTooManyRequests
	case ErrNeedsConfirmation:
		return http.StatusConflict
	case ErrServerUnreachable, ErrCertUntrusted, ErrHelperUnreachable:
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, _ string) {
	uid, ok := peerUID(r.Context())
	exempt := ok && (uid == 0 || uid == s.opts.OwnUID)
	release, e := s.watches.acquire("event streams", uid, exempt, func() bool { return ok && s.isOperator(uid) },
		orDefault(s.opts.MaxWatchesPerUser, DefaultMaxWatchesPerUser), orDefault(s.opts.MaxWatches, DefaultMaxWatches))
	if e != nil {
		writeError(w, http.StatusTooManyRequests, e)
		return
	}
	defer release()
	events, cancel := s.b.Watch()
	defer cancel()
	// Whether an event may be shown unredacted is judged by who was the operator when it was
	// made, and by who is now: events wait in the channel, and one made before a change of
	// operator must not reach the new operator's predecessor. The stream's operator follows
	// the prefs events, and is the current one whenever the channel is empty (everything made
	// before has been read). Read after subscribing: a change in between is then on our side.
	streamOp := s.b.Prefs().Operator
	privileged := func(ev Event) bool {
		if ev.Prefs != nil {
			streamOp = ev.Prefs.Operator
		}
		if !ok || uid == 0 || uid == s.opts.OwnUID {
			return ok
		}
		return s.isNamedOperator(uid, streamOp) && s.isOperator(uid)
	}

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w) // Encode appends the newline that delimits events.
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if !privileged(ev) {
				var keep bool
				if ev, keep = redactEvent(ev); !keep {
					continue
				}
			}
			if len(events) == 0 {
				streamOp = s.b.Prefs().Operator
			}
			// A client that stops reading must not pin the backend's event fan-out forever.
			_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
			if err := enc.Encode(ev); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(&Error{Code: ErrInternal, Message: "encoding response: " + err.Error()})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, e *Error) {
	writeJSON(w, code, e)
}

type logfWriter func(format string, args ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	f("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
