package ts2021

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"
)

// writeBatch is how many records Write seals before one write to the socket,
// to save syscalls (and TLS records) on large writes.
const writeBatch = 4

var errNonceExhausted = errors.New("ts2021: nonce counter exhausted")

// Conn is a net.Conn carrying the decrypted byte stream of a ts2021 session.
// Read and Write may run concurrently; concurrent Writes are serialized.
type Conn struct {
	conn    net.Conn
	version uint16
	early   *EarlyNoise

	rmu       sync.Mutex
	fr        frameReader
	rx        cipher.AEAD
	rxCounter uint64
	rxNonce   [12]byte
	plain     []byte // decrypted bytes not yet returned; aliases fr.buf
	replay    []byte // early-payload probe bytes to return first; aliases replayBuf
	replayBuf [earlyHeaderLen]byte
	rerr      error // sticky: after it the stream is out of sync

	wmu       sync.Mutex
	tx        cipher.AEAD
	txCounter uint64
	txNonce   [12]byte
	wbuf      [writeBatch * maxFrameSize]byte
	werr      error // sticky: a partial frame may have gone out
}

func newConn(nc net.Conn, r io.Reader, tx, rx cipher.AEAD, version uint16) *Conn {
	c := &Conn{conn: nc, version: version, tx: tx, rx: rx}
	c.fr.r = r
	return c
}

// setNonce writes the transport nonce: 4 zero bytes then the counter,
// big-endian. (Little-endian would agree with it only at counter 0.)
func setNonce(n *[12]byte, counter uint64) {
	binary.BigEndian.PutUint64(n[4:], counter)
}

// Read returns decrypted bytes from the server.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.plain) == 0 { // zero-length records are legal; skip them
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.readRecord(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

func (c *Conn) readRecord() error {
	typ, payload, err := c.fr.next()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return err // frameReader kept the partial frame; a later Read resumes
		}
		if errors.Is(err, errFrameTooLarge) || errors.Is(err, errUnknownFrameTyp) {
			err = fmt.Errorf("ts2021: %w", err)
		}
		c.rerr = err
		return err
	}
	if typ != msgTypeRecord {
		c.rerr = fmt.Errorf("ts2021: unexpected frame type 0x%02x after handshake", typ)
		return c.rerr
	}
	if c.rxCounter == math.MaxUint64 { // reserved by Noise
		c.rerr = errNonceExhausted
		return c.rerr
	}
	setNonce(&c.rxNonce, c.rxCounter)
	pt, err := c.rx.Open(payload[:0], c.rxNonce[:], payload, nil)
	if err != nil {
		c.rerr = errors.New("ts2021: record failed authentication")
		return c.rerr
	}
	c.rxCounter++
	c.plain = pt
	return nil
}

// Write encrypts p into records of at most 4077 plaintext bytes.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	written := 0
	for len(p) > 0 {
		buf := c.wbuf[:0]
		batched := 0
		for i := 0; i < writeBatch && len(p) > 0; i++ {
			if c.txCounter == math.MaxUint64 {
				c.werr = errNonceExhausted
				return written, c.werr
			}
			chunk := p[:min(len(p), maxPlaintext)]
			start := len(buf)
			buf = append(buf, msgTypeRecord, 0, 0)
			binary.BigEndian.PutUint16(buf[start+1:], uint16(len(chunk)+tagLen))
			setNonce(&c.txNonce, c.txCounter)
			buf = c.tx.Seal(buf, c.txNonce[:], chunk, nil) // stays within wbuf's capacity
			c.txCounter++
			batched += len(chunk)
			p = p[len(chunk):]
		}
		if _, err := c.conn.Write(buf); err != nil {
			c.werr = err
			return written, err
		}
		written += batched
	}
	return written, nil
}

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.conn.Close() }

func (c *Conn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// EarlyPayload returns what the server sent before the byte stream, or nil if nothing.
func (c *Conn) EarlyPayload() *EarlyNoise { return c.early }

// ProtocolVersion is the version this client announced in the handshake.
func (c *Conn) ProtocolVersion() uint16 { return c.version }
