// Package intercept answers the MagicDNS service addresses on the TUN packet
// path.
//
// Wrap puts a tun.Device in front of the kernel TUN that wireguard-go reads
// from. Packets the kernel routes into the TUN towards one of the service
// addresses (100.100.100.100, fd7a:115c:a1e0::53) never reach WireGuard: Read
// takes them out of the batch and answers them itself by writing reply
// packets back into the TUN. No socket is bound on the host.
//
// What is answered:
//
//   - UDP port 53: every datagram is one DNS query for the Handler; its answer
//     goes back as one datagram.
//   - TCP port 53: a small TCP responder (see tcp.go) accepts connections,
//     splits the byte stream into two-byte length-prefixed DNS messages and
//     sends the answers back on the same connection.
//   - ICMP / ICMPv6 echo requests: echo replies.
//   - TCP to any other port: RST. Everything else addressed to the service
//     addresses (other UDP ports, other ICMP types, other protocols, IP
//     fragments, malformed packets) is dropped.
//
// All other packets pass through Read untouched and without allocation.
package intercept

import (
	"context"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// Handler answers one DNS message (the wire bytes without the TCP length
// prefix). tcp tells over which transport the query came. A nil result means
// no answer. The handler must return promptly once ctx is done; Close waits
// for running handlers.
type Handler func(ctx context.Context, query []byte, tcp bool) []byte

// Options configures Wrap.
type Options struct {
	// Addrs are the service addresses, e.g. 100.100.100.100 and
	// fd7a:115c:a1e0::53. IPv4-mapped IPv6 addresses count as IPv4.
	Addrs []netip.Addr
	// Handler answers the DNS queries. With a nil Handler queries get no
	// answer (echo and TCP handshakes still work).
	Handler Handler
	// Logf, if set, receives diagnostics (rate limited).
	Logf func(string, ...any)

	// HandlerTimeout bounds one Handler call through its context
	// (default 10 s).
	HandlerTimeout time.Duration
	// MaxInFlight bounds concurrent Handler calls over UDP and TCP
	// together (default 256). UDP queries arriving when all slots are busy
	// are dropped (the client retries); TCP messages wait in their
	// connection's receive buffer.
	MaxInFlight int
	// MaxConns bounds the TCP connection table (default 1024). A SYN that
	// finds it full is answered with RST.
	MaxConns int
}

// WriteOffset is the headroom in front of every reply packet passed to the
// wrapped device's Write (Write(bufs, WriteOffset)). wireguard-go's Linux TUN
// with offloads (IFF_VNET_HDR) builds its 10-byte virtio-net header in the
// bytes just before the packet and rejects an offset smaller than that; 16 is
// the headroom wireguard-go itself leaves in its own Write calls (the size of
// a WireGuard transport message header), so reply packets look exactly like
// the ones the device already writes.
const WriteOffset = 16

// Defaults and fixed limits.
const (
	defaultHandlerTimeout = 10 * time.Second
	defaultMaxInFlight    = 256
	defaultMaxConns       = 1024
)

// Stats are cumulative counters, except TCPOpen and InFlight which are
// current values.
type Stats struct {
	Intercepted uint64 // packets taken out of the read path
	Dropped     uint64 // intercepted packets discarded (malformed, bad checksum, unsupported, fragments)

	UDPQueries uint64 // UDP queries handed to the Handler
	UDPAnswers uint64 // UDP answers written

	TCPAccepted uint64 // TCP handshakes started (SYN answered)
	TCPOpen     uint64 // TCP connections in the table now
	TCPQueries  uint64 // TCP messages handed to the Handler
	TCPAnswers  uint64 // TCP answers queued on their connection
	Resets      uint64 // RST segments sent
	Retransmits uint64 // retransmission timer expiries that resent something

	EchoReplies uint64 // ICMP/ICMPv6 echo replies written

	Busy            uint64 // UDP queries dropped / TCP messages deferred for lack of a handler slot
	HandlerTimeouts uint64 // Handler calls that returned after their deadline
	InFlight        uint64 // Handler calls running now
	WriteErrors     uint64 // failed writes to the wrapped device
}

type counters struct {
	intercepted, dropped                        atomic.Uint64
	udpQueries, udpAnswers                      atomic.Uint64
	tcpAccepted, tcpQueries, tcpAnswers, resets atomic.Uint64
	retransmits, echoReplies                    atomic.Uint64
	busy, handlerTimeouts, writeErrors          atomic.Uint64
}

// tuning holds the knobs tests shrink. Wrap uses defaultTuning.
type tuning struct {
	handlerTimeout  time.Duration
	maxInFlight     int
	maxConns        int
	maxConnInFlight int           // concurrent Handler calls per TCP connection
	handshake       time.Duration // SYN received → handshake must complete
	idle            time.Duration // established connection without traffic
	closing         time.Duration // bound on the FIN exchange states
	rtoInitial      time.Duration
	rtoMax          time.Duration
	maxRetries      int
	sendSoftCap     int // stop reading queries while this much answer data is unacknowledged
	maxSendTotal    int // all connections' unacknowledged answer bytes together
	iss             func() uint32
	noVerify        bool // skip checksum verification of incoming packets
}

func defaultTuning() tuning {
	return tuning{
		handlerTimeout:  defaultHandlerTimeout,
		maxInFlight:     defaultMaxInFlight,
		maxConns:        defaultMaxConns,
		maxConnInFlight: 8,
		handshake:       10 * time.Second,
		idle:            45 * time.Second,
		closing:         10 * time.Second,
		rtoInitial:      250 * time.Millisecond,
		rtoMax:          5 * time.Second,
		maxRetries:      8,
		sendSoftCap:     64 << 10,
		maxSendTotal:    16 << 20,
	}
}

// Device is a tun.Device that answers the service addresses itself. See the
// package documentation.
type Device struct {
	dev  tun.Device
	h    Handler
	logf func(string, ...any)
	cfg  tuning
	v4   [][4]byte
	v6   [][16]byte

	ctx    context.Context // parent of handler contexts; cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed by Close; stops the timer goroutine
	kick   chan struct{} // wakes the timer goroutine for an earlier deadline
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	conns     map[connKey]*conn
	active    int       // Handler calls running
	waitq     []*conn   // connections with messages waiting for a handler slot
	sendBytes int       // sum of len(c.sbuf) over conns
	nextWake  time.Time // when the timer goroutine plans to run next

	// wmu keeps TCP segments in the order they were built: it is taken
	// before mu is released and held across the device write.
	wmu sync.Mutex

	ipID    atomic.Uint32
	st      counters
	lastLog atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

var _ tun.Device = (*Device)(nil)

// Wrap returns a Device in front of dev. Reading from the Device reads from
// dev and withholds (and answers) the packets addressed to opts.Addrs; writes
// go to dev unchanged. Close the Device, not dev.
func Wrap(dev tun.Device, opts Options) *Device {
	cfg := defaultTuning()
	if opts.HandlerTimeout > 0 {
		cfg.handlerTimeout = opts.HandlerTimeout
	}
	if opts.MaxInFlight > 0 {
		cfg.maxInFlight = opts.MaxInFlight
	}
	if opts.MaxConns > 0 {
		cfg.maxConns = opts.MaxConns
	}
	return wrap(dev, opts, cfg)
}

func wrap(dev tun.Device, opts Options, cfg tuning) *Device {
	d := &Device{
		dev:   dev,
		h:     opts.Handler,
		logf:  opts.Logf,
		cfg:   cfg,
		done:  make(chan struct{}),
		kick:  make(chan struct{}, 1),
		conns: make(map[connKey]*conn),
	}
	if d.logf == nil {
		d.logf = func(string, ...any) {}
	}
	for _, a := range opts.Addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			d.v4 = append(d.v4, a.As4())
		case a.Is6():
			d.v6 = append(d.v6, a.As16())
		}
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.timerLoop()
	return d
}

// Read reads a batch from the wrapped device, answers and removes the packets
// addressed to the service addresses, and returns the rest compacted to the
// front: the first n entries of bufs/sizes hold the remaining packets in their
// original order. If a whole batch was intercepted it reads again instead of
// returning zero packets.
//
// Compaction copies packet bytes between the caller's buffers instead of
// swapping the slices in bufs: callers such as wireguard-go tie bufs[i] to
// other per-index state and expect the buffers to stay where they put them.
// Only when a buffer is too short for the packet to move into (never the case
// with wireguard-go, whose buffers are all the same size) are the two slices
// swapped.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := d.dev.Read(bufs, sizes, offset)
		n = min(n, len(bufs), len(sizes))
		if n <= 0 {
			return 0, err
		}
		w := 0
		for i := range n {
			sz := sizes[i]
			if sz > 0 && offset >= 0 && sz <= len(bufs[i])-offset {
				if pkt := bufs[i][offset : offset+sz]; d.isService(pkt) {
					d.intercept(pkt)
					continue
				}
			}
			if w != i {
				if offset >= 0 && sz >= 0 && offset+sz <= len(bufs[w]) && offset+sz <= len(bufs[i]) {
					copy(bufs[w][offset:offset+sz], bufs[i][offset:offset+sz])
				} else {
					bufs[w], bufs[i] = bufs[i], bufs[w]
				}
				sizes[w] = sz
			}
			w++
		}
		if w > 0 || err != nil {
			return w, err
		}
	}
}

// isService reports whether pkt is an IP packet whose destination is one of
// the service addresses. It must not allocate: it runs on every packet.
func (d *Device) isService(pkt []byte) bool {
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return false
		}
		dst := [4]byte(pkt[16:20])
		for _, a := range d.v4 {
			if a == dst {
				return true
			}
		}
	case 6:
		if len(pkt) < 40 {
			return false
		}
		dst := [16]byte(pkt[24:40])
		for _, a := range d.v6 {
			if a == dst {
				return true
			}
		}
	}
	return false
}

func (d *Device) isServiceAddr(a netip.Addr) bool {
	if a.Is4() {
		for _, s := range d.v4 {
			if s == a.As4() {
				return true
			}
		}
		return false
	}
	for _, s := range d.v6 {
		if s == a.As16() {
			return true
		}
	}
	return false
}

// intercept answers one packet addressed to a service address. pkt belongs
// to the caller's buffer and is overwritten after intercept returns, so
// anything kept must be copied.
func (d *Device) intercept(pkt []byte) {
	d.st.intercepted.Add(1)
	ip, ok := parseIP(pkt, !d.cfg.noVerify)
	if !ok || !d.replyable(ip.src) {
		d.st.dropped.Add(1)
		return
	}
	switch ip.proto {
	case protoICMP, protoICMPv6:
		if !d.echo(ip) {
			d.st.dropped.Add(1)
		}
	case protoUDP:
		if !d.udp(ip) {
			d.st.dropped.Add(1)
		}
	case protoTCP:
		if !d.tcp(ip) {
			d.st.dropped.Add(1)
		}
	default:
		d.st.dropped.Add(1)
	}
}

// replyable reports whether src is an address a reply can go to.
func (d *Device) replyable(src netip.Addr) bool {
	if src.IsUnspecified() || src.IsMulticast() || src.IsLoopback() || d.isServiceAddr(src) {
		return false
	}
	if src.Is4() && src.As4() == [4]byte{255, 255, 255, 255} {
		return false
	}
	return true
}

// echo answers an ICMP or ICMPv6 echo request.
func (d *Device) echo(ip ipPacket) bool {
	m := ip.payload
	if len(m) < 8 {
		return false
	}
	var reply byte
	switch {
	case ip.proto == protoICMP && !ip.v6 && m[0] == 8 && m[1] == 0:
		if !d.cfg.noVerify && fold(sum(m, 0)) != 0xffff {
			return false
		}
		reply = 0
	case ip.proto == protoICMPv6 && ip.v6 && m[0] == 128 && m[1] == 0:
		if !d.cfg.noVerify && !transportSumOK(ip, m) {
			return false
		}
		reply = 129
	default:
		return false
	}
	buf, out := d.newPacket(ip.dst, ip.src, ip.proto, len(m), false)
	copy(out, m)
	out[0] = reply
	out[2], out[3] = 0, 0
	if ip.v6 {
		put16(out[2:], ^fold(sum(out, pseudoSum(ip.dst, ip.src, protoICMPv6, len(out)))))
	} else {
		put16(out[2:], ^fold(sum(out, 0)))
	}
	d.st.echoReplies.Add(1)
	d.write([][]byte{buf})
	return true
}

// udp answers a UDP datagram to port 53 through the Handler.
func (d *Device) udp(ip ipPacket) bool {
	u := ip.payload
	if len(u) < 8 {
		return false
	}
	ulen := int(be16(u[4:]))
	if ulen < 8 || ulen > len(u) {
		return false
	}
	u = u[:ulen]
	if !d.cfg.noVerify && (ip.v6 || be16(u[6:]) != 0) && !transportSumOK(ip, u) {
		return false
	}
	sport, dport := be16(u[0:]), be16(u[2:])
	if dport != 53 || sport == 0 || len(u) == 8 {
		return false
	}
	d.mu.Lock()
	if d.closed || d.active >= d.cfg.maxInFlight {
		d.mu.Unlock()
		d.st.busy.Add(1)
		return true
	}
	d.active++
	d.wg.Add(1)
	d.mu.Unlock()
	d.st.udpQueries.Add(1)

	client := netip.AddrPortFrom(ip.src, sport)
	server := netip.AddrPortFrom(ip.dst, dport)
	q := append([]byte(nil), u[8:]...)
	go d.udpQuery(server, client, q)
	return true
}

func (d *Device) udpQuery(server, client netip.AddrPort, q []byte) {
	defer d.wg.Done()
	resp := d.call(q, false)

	d.mu.Lock()
	d.active--
	closed := d.closed
	var out [][]byte
	d.serviceWaitq(time.Now(), &out)
	d.unlockAndWrite(out)

	maxLen := 0xffff - 20 - 8
	if server.Addr().Is6() {
		maxLen = 0xffff - 8
	}
	if closed || len(resp) == 0 || len(resp) > maxLen {
		return
	}
	buf, u := d.newPacket(server.Addr(), client.Addr(), protoUDP, 8+len(resp), false)
	put16(u[0:], server.Port())
	put16(u[2:], client.Port())
	put16(u[4:], uint16(8+len(resp)))
	copy(u[8:], resp)
	c := ^fold(sum(u, pseudoSum(server.Addr(), client.Addr(), protoUDP, len(u))))
	if c == 0 {
		c = 0xffff
	}
	put16(u[6:], c)
	d.st.udpAnswers.Add(1)
	d.write([][]byte{buf})
}

// call runs the Handler with the configured timeout.
func (d *Device) call(q []byte, tcp bool) []byte {
	if d.h == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.handlerTimeout)
	defer cancel()
	resp := d.h(ctx, q, tcp)
	if ctx.Err() == context.DeadlineExceeded {
		d.st.handlerTimeouts.Add(1)
	}
	return resp
}

// newPacket allocates a reply packet with WriteOffset bytes of headroom and
// a filled-in IP header from src to dst (TTL / hop limit 64) for l4len bytes
// of protocol proto. It returns the whole buffer, as handed to Write, and the
// part after the IP header for the caller to fill in. The caller keeps the
// total within 65535 bytes.
func (d *Device) newPacket(src, dst netip.Addr, proto uint8, l4len int, df bool) (buf, l4 []byte) {
	if src.Is4() {
		buf = make([]byte, WriteOffset+20+l4len)
		h := buf[WriteOffset:]
		h[0] = 0x45
		put16(h[2:], uint16(20+l4len))
		put16(h[4:], uint16(d.ipID.Add(1)))
		if df {
			h[6] = 0x40
		}
		h[8] = 64
		h[9] = proto
		s, t := src.As4(), dst.As4()
		copy(h[12:16], s[:])
		copy(h[16:20], t[:])
		put16(h[10:], ^fold(sum(h[:20], 0)))
		return buf, h[20:]
	}
	buf = make([]byte, WriteOffset+40+l4len)
	h := buf[WriteOffset:]
	h[0] = 0x60
	put16(h[4:], uint16(l4len))
	h[6] = proto
	h[7] = 64
	s, t := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], t[:])
	return buf, h[40:]
}

// write hands reply packets to the wrapped device. wireguard-go's NativeTun
// serializes Write calls with its own lock, so this may run concurrently with
// wireguard-go's writes of decrypted packets.
func (d *Device) write(pkts [][]byte) {
	if len(pkts) == 0 {
		return
	}
	if _, err := d.dev.Write(pkts, WriteOffset); err != nil {
		d.st.writeErrors.Add(1)
		d.logRateLimited("dns intercept: write reply: %v", err)
	}
}

// unlockAndWrite releases d.mu and writes pkts, keeping them ordered against
// packets built by other goroutines under d.mu.
func (d *Device) unlockAndWrite(pkts [][]byte) {
	if len(pkts) == 0 {
		d.mu.Unlock()
		return
	}
	d.wmu.Lock()
	d.mu.Unlock()
	d.write(pkts)
	d.wmu.Unlock()
}

func (d *Device) logRateLimited(format string, args ...any) {
	now := time.Now().UnixNano()
	last := d.lastLog.Load()
	if now-last < int64(10*time.Second) || !d.lastLog.CompareAndSwap(last, now) {
		return
	}
	d.logf(format, args...)
}

// Stats returns a snapshot of the counters.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	open, inflight := len(d.conns), d.active
	d.mu.Unlock()
	return Stats{
		Intercepted:     d.st.intercepted.Load(),
		Dropped:         d.st.dropped.Load(),
		UDPQueries:      d.st.udpQueries.Load(),
		UDPAnswers:      d.st.udpAnswers.Load(),
		TCPAccepted:     d.st.tcpAccepted.Load(),
		TCPOpen:         uint64(open),
		TCPQueries:      d.st.tcpQueries.Load(),
		TCPAnswers:      d.st.tcpAnswers.Load(),
		Resets:          d.st.resets.Load(),
		Retransmits:     d.st.retransmits.Load(),
		EchoReplies:     d.st.echoReplies.Load(),
		Busy:            d.st.busy.Load(),
		HandlerTimeouts: d.st.handlerTimeouts.Load(),
		InFlight:        uint64(inflight),
		WriteErrors:     d.st.writeErrors.Load(),
	}
}

// Close resets the open TCP connections, cancels running Handler calls,
// waits for the package's goroutines to end and then closes the wrapped
// device. A Read blocked in the wrapped device returns its error.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		var out [][]byte
		for _, c := range d.conns {
			d.abort(c, &out)
		}
		d.waitq = nil
		d.unlockAndWrite(out)
		close(d.done)
		d.cancel()
		d.wg.Wait()
		d.closeErr = d.dev.Close()
	})
	return d.closeErr
}

// Write passes packets to the wrapped device unchanged.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) { return d.dev.Write(bufs, offset) }

// File returns the wrapped device's file.
func (d *Device) File() *os.File { return d.dev.File() }

// MTU returns the wrapped device's MTU.
func (d *Device) MTU() (int, error) { return d.dev.MTU() }

// Name returns the wrapped device's name.
func (d *Device) Name() (string, error) { return d.dev.Name() }

// Events returns the wrapped device's event channel.
func (d *Device) Events() <-chan tun.Event { return d.dev.Events() }

// BatchSize returns the wrapped device's batch size.
func (d *Device) BatchSize() int { return d.dev.BatchSize() }
