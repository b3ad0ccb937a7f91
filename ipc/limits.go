package ipc

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Any local user may connect to the socket, so what one of them may hold open is bounded: a
// user who is neither root, skeind's own uid nor the operator gets at most MaxConnsPerUser
// connections and MaxWatchesPerUser event streams; everyone but root and skeind's uid shares
// MaxConns and MaxWatches. Root is never counted, so root (and `sudo skein …`) is served
// however many connections others hold. Refused connections get a typed 429 answer.
const (
	DefaultMaxConnsPerUser   = 16
	DefaultMaxConns          = 256
	DefaultMaxWatchesPerUser = 8
	DefaultMaxWatches        = 64

	// maxRefusing bounds the goroutines that answer refused connections; beyond it they are
	// closed without an answer.
	maxRefusing = 32
	// refuseTimeout bounds reading a refused connection's request and writing the answer.
	refuseTimeout = time.Second
)

// slots counts what each uid holds.
type slots struct {
	mu     sync.Mutex
	total  int
	perUID map[uint32]int
}

// acquire takes a slot for uid unless that would pass a limit. Exempt callers (root, skeind's
// uid) are not counted; the operator counts only towards the total (isOperator is asked only
// for a uid at its own limit).
func (sl *slots) acquire(what string, uid uint32, exempt bool, isOperator func() bool, perUser, total int) (release func(), err *Error) {
	if exempt {
		return func() {}, nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.perUID == nil {
		sl.perUID = map[uint32]int{}
	}
	if sl.perUID[uid] >= perUser && !isOperator() {
		return nil, &Error{Code: ErrBusy, Message: fmt.Sprintf("uid %d already has %d open %s to skeind (the limit for users other than root and the operator)", uid, perUser, what)}
	}
	if sl.total >= total {
		return nil, &Error{Code: ErrBusy, Message: fmt.Sprintf("skeind is serving its limit of %d %s from users other than root; try again later", total, what)}
	}
	sl.total++
	sl.perUID[uid]++
	var once sync.Once
	return func() {
		once.Do(func() {
			sl.mu.Lock()
			defer sl.mu.Unlock()
			sl.total--
			if sl.perUID[uid]--; sl.perUID[uid] <= 0 {
				delete(sl.perUID, uid)
			}
		})
	}, nil
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// limitListener admits connections within the limits; refused ones are answered (429) and
// closed without reaching the HTTP server.
type limitListener struct {
	net.Listener
	s        *Server
	refusing chan struct{}
}

// credConn is an admitted connection with its caller's credentials.
type credConn struct {
	net.Conn
	cred    PeerCred
	release func()
}

func (c *credConn) Close() error {
	c.release()
	return c.Conn.Close()
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return c, nil // not ours to count (no credentials to go by)
		}
		cred, err := getPeerCred(uc)
		if err != nil {
			c.Close()
			continue
		}
		s := l.s
		exempt := cred.UID == 0 || cred.UID == s.opts.OwnUID
		// Never waits for a user look-up: root must be served while a flood runs.
		isOp := func() bool { return s.isOperatorNow(cred.UID) }
		release, e := s.conns.acquire("connections", cred.UID, exempt, isOp,
			orDefault(s.opts.MaxConnsPerUser, DefaultMaxConnsPerUser), orDefault(s.opts.MaxConns, DefaultMaxConns))
		if e != nil {
			l.refuse(c, e)
			continue
		}
		return &credConn{Conn: c, cred: cred, release: release}, nil
	}
}

// refuse answers a refused connection with a typed error, after reading its request so that the
// client sees the answer rather than a broken pipe.
func (l *limitListener) refuse(c net.Conn, e *Error) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(refuseTimeout))
		readHeader(c)
		body, _ := json.Marshal(e)
		fmt.Fprintf(c, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n", len(body)+1, body)
	}()
}

// readHeader reads until the end of an HTTP header (or 64 KiB, or an error).
func readHeader(r io.Reader) {
	buf := make([]byte, 4096)
	var tail [4]byte
	for n := 0; n < 64<<10; {
		m, err := r.Read(buf)
		for _, b := range buf[:m] {
			copy(tail[:], tail[1:])
			tail[3] = b
			if tail == [4]byte{'\r', '\n', '\r', '\n'} {
				return
			}
		}
		n += m
		if err != nil {
			return
		}
	}
}
