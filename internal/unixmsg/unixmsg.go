// Package unixmsg sends JSON messages with file descriptors attached over a Unix stream
// socket: how skeind hands an accepted connection to the session helper, and how the helper
// and its unprivileged children pass sockets. A frame is a 4-byte big-endian length and a JSON
// object; the descriptors a frame carries go with its first byte (SCM_RIGHTS) and its "fds"
// field says how many. Frames from the other end are bounded and parsed strictly.
package unixmsg

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxFrame bounds one frame (an SSH policy of a large tailnet fits many times over).
const MaxFrame = 8 << 20

// maxFDs bounds the descriptors one frame may carry.
const maxFDs = 4

// Header is what every frame has; messages embed it.
type Header struct {
	Type string `json:"type"`
	FDs  int    `json:"fds,omitempty"`
}

// Conn is one end. Send may be called from many goroutines; Recv from one.
type Conn struct {
	c   *net.UnixConn
	wmu sync.Mutex

	buf []byte // received bytes not yet returned as frames (Recv's alone)

	fmu sync.Mutex // fds is shared by Recv and Close
	fds []*os.File // received descriptors not yet claimed by a frame
}

// New wraps a connected Unix stream socket.
func New(c *net.UnixConn) *Conn { return &Conn{c: c} }

// FromFile makes a Conn from an inherited socket descriptor (a child's fd 3).
func FromFile(f *os.File) (*Conn, error) {
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil, fmt.Errorf("descriptor %d is not a Unix socket", f.Fd())
	}
	return New(uc), nil
}

// Pair is a connected pair of Conns and, for a child process, the file of the second end.
func Pair() (*Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	a := os.NewFile(uintptr(fds[0]), "unixmsg-parent")
	b := os.NewFile(uintptr(fds[1]), "unixmsg-child")
	fc, err := net.FileConn(a)
	a.Close()
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return New(fc.(*net.UnixConn)), b, nil
}

// Unix is the underlying socket (for SO_PEERCRED).
func (c *Conn) Unix() *net.UnixConn { return c.c }

// Close closes the socket and any descriptors received and not claimed.
func (c *Conn) Close() error {
	err := c.c.Close()
	c.fmu.Lock()
	for _, f := range c.fds {
		f.Close()
	}
	c.fds = nil
	c.fmu.Unlock()
	return err
}

// Send writes msg (a struct embedding Header, whose Type the caller set) with files attached.
func (c *Conn) Send(msg any, files ...*os.File) error {
	if len(files) > maxFDs {
		return fmt.Errorf("unixmsg: %d descriptors in one frame", len(files))
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	// The count goes into the frame itself so the receiver knows what to claim.
	var h Header
	if err := json.Unmarshal(body, &h); err != nil || h.Type == "" {
		return errors.New("unixmsg: message has no type")
	}
	if h.FDs != len(files) {
		return fmt.Errorf("unixmsg: message says %d descriptors, %d attached", h.FDs, len(files))
	}
	if len(body) > MaxFrame {
		return fmt.Errorf("unixmsg: %d-byte frame", len(body))
	}
	frame := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	frame = append(frame, body...)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, _, err := c.c.WriteMsgUnix(frame, oob, nil)
	if err != nil {
		return err
	}
	if n < len(frame) {
		_, err = c.c.Write(frame[n:])
	}
	return err
}

// Recv reads the next frame: its raw JSON (to decode into the message its Type names) and
// the descriptors it carries, which the caller now owns.
func (c *Conn) Recv() (Header, []byte, []*os.File, error) {
	for {
		h, body, files, ok, err := c.next()
		if err != nil || ok {
			return h, body, files, err
		}
		if err := c.fill(); err != nil {
			return Header{}, nil, nil, err
		}
	}
}

// next takes one complete frame from the buffer, if there is one.
func (c *Conn) next() (h Header, body []byte, files []*os.File, ok bool, err error) {
	if len(c.buf) < 4 {
		return h, nil, nil, false, nil
	}
	n := binary.BigEndian.Uint32(c.buf)
	if n > MaxFrame {
		return h, nil, nil, false, fmt.Errorf("unixmsg: %d-byte frame", n)
	}
	if uint32(len(c.buf)-4) < n {
		return h, nil, nil, false, nil
	}
	body = c.buf[4 : 4+n]
	c.buf = c.buf[4+n:]
	h, err = ParseHeader(body)
	if err != nil {
		return h, nil, nil, false, err
	}
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if h.FDs > len(c.fds) {
		return h, nil, nil, false, fmt.Errorf("unixmsg: frame %q claims %d descriptors, %d arrived", h.Type, h.FDs, len(c.fds))
	}
	files, c.fds = c.fds[:h.FDs:h.FDs], c.fds[h.FDs:]
	return h, body, files, true, nil
}

// ParseHeader checks a frame's JSON and reads its header.
func ParseHeader(body []byte) (Header, error) {
	var h Header
	if err := json.Unmarshal(body, &h); err != nil {
		return h, fmt.Errorf("unixmsg: %w", err)
	}
	if h.Type == "" || h.FDs < 0 || h.FDs > maxFDs {
		return h, fmt.Errorf("unixmsg: bad frame header (type %q, %d descriptors)", h.Type, h.FDs)
	}
	return h, nil
}

func (c *Conn) fill() error {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4)*2)
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	n, oobn = max(n, 0), max(oobn, 0)
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			fds, ferr := unix.ParseUnixRights(&m)
			if ferr != nil {
				continue
			}
			for _, fd := range fds {
				c.fds = append(c.fds, os.NewFile(uintptr(fd), "unixmsg-received"))
			}
		}
		if perr != nil && err == nil {
			err = perr
		}
	}
	if flags&unix.MSG_CTRUNC != 0 && err == nil {
		err = errors.New("unixmsg: descriptors truncated")
	}
	if len(c.fds) > 4*maxFDs && err == nil {
		err = errors.New("unixmsg: descriptors sent without frames")
	}
	c.buf = append(c.buf, buf[:n]...)
	if n == 0 && err == nil {
		err = errors.New("unixmsg: connection closed")
	}
	return err
}

// Decode reads body into v (a message struct).
func Decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("unixmsg: %w", err)
	}
	return nil
}
