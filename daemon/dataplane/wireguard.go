package dataplane

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// WireGuard is the part of the data plane that outlives a session: wireguard-go's device and
// its packet buffers. Each Start plugs its own TUN stack and transport into it and Close takes
// them out again, so the TUN device, routes and sockets still come and go with every up/down.
//
// Why: a device allocates 4 × 128 × 64 KiB of buffers as soon as it runs (one vector per receive
// function and one for the TUN reader) and keeps them in sync.Pools of its own, which stay
// reachable (and hold the device, its TUN and GRO tables) for two more collections after the
// device is closed. A new device per `up` made every down/up cycle cost 32 MiB that the heap
// goal, and so RSS, kept: 20 MB grew to 295 MB in 100 cycles (issue 21).
type WireGuard struct {
	mu     sync.Mutex
	dev    *device.Device
	tun    *tunSlot
	bind   *bindSlot
	inUse  bool
	closed bool

	// spoofedInner counts decrypted packets whose inner source is not one of the sending
	// peer's addresses (cryptokey routing drops them: issue 14, S15). wireguard-go has no
	// counter of its own; it logs each one, which the logger given to the device counts.
	spoofedInner atomic.Uint64
}

// SpoofedInner is the number of packets dropped because their inner source was not the
// sending peer's, since the device was made.
func (w *WireGuard) SpoofedInner() uint64 { return w.spoofedInner.Load() }

// countingLogger wraps log so that the drops of spoofed inner sources are counted: the device
// keeps the logger of its first session for its whole life.
func (w *WireGuard) countingLogger(log *device.Logger) *device.Logger {
	verbose := log.Verbosef
	return &device.Logger{
		Errorf: log.Errorf,
		Verbosef: func(format string, args ...any) {
			if strings.Contains(format, "packet with disallowed source address") {
				w.spoofedInner.Add(1)
			}
			verbose(format, args...)
		},
	}
}

// NewWireGuard returns an empty WireGuard; the device is made on first use.
func NewWireGuard() *WireGuard { return &WireGuard{} }

var errWireGuardClosed = errors.New("dataplane: WireGuard device closed")

// attach plugs a session's TUN stack and transport into the device (made now if needed) and
// returns the device, still down. One session at a time.
func (w *WireGuard) attach(t tun.Device, b conn.Bind, log *device.Logger) (*device.Device, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errWireGuardClosed
	}
	if w.inUse {
		return nil, errors.New("dataplane: WireGuard device already in use by another session")
	}
	if w.dev != nil {
		select {
		case <-w.dev.Wait(): // closed by itself; start over
			w.tun.close()
			w.dev = nil
		default:
		}
	}
	if w.dev == nil {
		w.tun = newTUNSlot(MTU)
		w.bind = &bindSlot{}
		w.dev = device.NewDevice(w.tun, w.bind, w.countingLogger(log))
		// The endpoint we give each peer is the peer itself and the transport picks the path;
		// wireguard-go must not replace it with whatever endpoint a packet came in on.
		w.dev.DisableSomeRoamingForBrokenMobileSemantics()
	}
	w.bind.set(b)
	w.tun.attach(t)
	w.inUse = true
	return w.dev, nil
}

// detach takes the session out: the device goes down (the transport's receive functions end
// and their buffers go back to the device's pools), its peers and key are dropped, and neither
// t nor b is used any more when it returns. The caller closes both.
func (w *WireGuard) detach() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.inUse {
		return
	}
	w.inUse = false
	w.dev.Down()
	w.dev.RemoveAllPeers()
	w.dev.SetPrivateKey(device.NoisePrivateKey{})
	w.bind.set(nil)
	w.tun.detach()
}

// Close ends the device for good (skeind is stopping); a session still attached is detached.
// Close the last session's TUN stack first: wireguard-go waits for its TUN reader, which may
// still be in a read on that stack.
func (w *WireGuard) Close() {
	w.detach()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	if w.dev != nil {
		w.dev.Close() // closes the TUN slot; the bind slot is empty
	}
}

// tunSlot is the tun.Device the WireGuard device keeps: reads and writes go to the TUN stack
// of the session attached, if any. Without one, reads wait and writes are dropped. It never
// reports an error to wireguard-go (which closes the device on one) until it is closed itself.
type tunSlot struct {
	mtu    int
	events chan tun.Event // stays open until close: the device's event reader ranges over it
	// cur is the attached stack, nil without one; a new attachment per attach, so a read can
	// tell whether the stack it used is still the one attached. Atomic: it is on the packet path.
	cur atomic.Pointer[attachedTUN]

	mu      sync.Mutex    // serializes attach, detach and close
	changed chan struct{} // closed and replaced on every attach, detach and close
	closed  bool
}

type attachedTUN struct{ tun.Device }

func newTUNSlot(mtu int) *tunSlot {
	return &tunSlot{mtu: mtu, events: make(chan tun.Event), changed: make(chan struct{})}
}

func (s *tunSlot) setLocked(a *attachedTUN) {
	s.cur.Store(a)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *tunSlot) attach(t tun.Device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(&attachedTUN{t})
	// Nobody else reads the stack's events, and the TUN's link watcher blocks until someone
	// does; its channel closes with the TUN. Up and down are the session's to decide.
	go func() {
		for range t.Events() {
		}
	}()
}

func (s *tunSlot) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(nil)
}

// drop detaches a, if it is still the stack attached.
func (s *tunSlot) drop(a *attachedTUN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Load() == a {
		s.setLocked(nil)
	}
}

func (s *tunSlot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.setLocked(nil)
	close(s.events)
}

// current waits for an attached stack (or close).
func (s *tunSlot) current() (*attachedTUN, error) {
	for {
		if a := s.cur.Load(); a != nil {
			return a, nil
		}
		s.mu.Lock()
		a, closed, changed := s.cur.Load(), s.closed, s.changed
		s.mu.Unlock()
		switch {
		case closed:
			return nil, os.ErrClosed
		case a != nil:
			return a, nil
		}
		<-changed
	}
}

func (s *tunSlot) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		a, err := s.current()
		if err != nil {
			return 0, err
		}
		n, err := a.Read(bufs, sizes, offset)
		if err == nil || errors.Is(err, tun.ErrTooManySegments) {
			return n, err
		}
		if n > 0 {
			return n, nil // the error comes back on the next read
		}
		// Detached (its session closed it), or the TUN failed under the session (e.g. the link
		// was deleted): stop reading it and wait for the next session's.
		s.drop(a)
	}
}

func (s *tunSlot) Write(bufs [][]byte, offset int) (int, error) {
	a := s.cur.Load()
	if a == nil {
		return len(bufs), nil // no tunnel: the packets have nowhere to go
	}
	n, err := a.Write(bufs, offset)
	if err != nil && s.cur.Load() != a {
		return len(bufs), nil // detached meanwhile: as if it had not been there
	}
	return n, err
}

func (s *tunSlot) File() *os.File {
	if a := s.cur.Load(); a != nil {
		return a.File()
	}
	return nil
}

func (s *tunSlot) MTU() (int, error) { return s.mtu, nil }

func (s *tunSlot) Name() (string, error) {
	if a := s.cur.Load(); a != nil {
		return a.Name()
	}
	return "", errors.New("dataplane: no TUN attached")
}

func (s *tunSlot) Events() <-chan tun.Event { return s.events }

// BatchSize is fixed for the device's life; TUNs are made the same way every time.
func (s *tunSlot) BatchSize() int { return conn.IdealBatchSize }

func (s *tunSlot) Close() error { s.close(); return nil }

// bindSlot is the conn.Bind the WireGuard device keeps; it hands every call to the transport
// of the session attached. Atomic: Send is on the packet path.
type bindSlot struct {
	cur atomic.Pointer[attachedBind]
}

type attachedBind struct{ conn.Bind }

func (b *bindSlot) set(c conn.Bind) {
	if c == nil {
		b.cur.Store(nil)
		return
	}
	b.cur.Store(&attachedBind{c})
}

func (b *bindSlot) get() conn.Bind {
	if a := b.cur.Load(); a != nil {
		return a.Bind
	}
	return nil
}

var errNoTransport = errors.New("dataplane: no transport attached")

func (b *bindSlot) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	c := b.get()
	if c == nil {
		return nil, 0, errNoTransport
	}
	return c.Open(port)
}

func (b *bindSlot) Close() error {
	if c := b.get(); c != nil {
		return c.Close()
	}
	return nil
}

func (b *bindSlot) SetMark(mark uint32) error {
	if c := b.get(); c != nil {
		return c.SetMark(mark)
	}
	return nil
}

func (b *bindSlot) Send(bufs [][]byte, ep conn.Endpoint) error {
	c := b.get()
	if c == nil {
		return net.ErrClosed
	}
	return c.Send(bufs, ep)
}

func (b *bindSlot) ParseEndpoint(s string) (conn.Endpoint, error) {
	c := b.get()
	if c == nil {
		return nil, errNoTransport
	}
	return c.ParseEndpoint(s)
}

// BatchSize is fixed for the device's life: it sizes the receive vectors. The transport's is
// the same constant.
func (b *bindSlot) BatchSize() int { return conn.IdealBatchSize }
