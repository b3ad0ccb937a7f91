package intercept

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

var (
	svc4    = netip.MustParseAddr("100.100.100.100")
	svc6    = netip.MustParseAddr("fd7a:115c:a1e0::53")
	client4 = netip.MustParseAddr("100.64.0.1")
	client6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	peer4   = netip.MustParseAddr("100.64.0.2")
)

// fakeTUN is an in-memory tun.Device. Batches queued with inject come out
// of Read; packets given to Write are copied (without headroom) to out.
type fakeTUN struct {
	in      chan [][]byte
	pending [][]byte // rest of a batch larger than the caller's bufs (reader only)
	out     chan []byte
	closed  chan struct{}
	once    sync.Once
	dropped atomic.Int64 // writes lost because out was full
	writing atomic.Int32 // concurrent Write calls right now
	maxConc atomic.Int32
}

func newFakeTUN() *fakeTUN {
	return &fakeTUN{
		in:     make(chan [][]byte, 1024),
		out:    make(chan []byte, 8192),
		closed: make(chan struct{}),
	}
}

func (f *fakeTUN) inject(pkts ...[]byte) { f.in <- pkts }

func (f *fakeTUN) File() *os.File { return nil }

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(f.pending) == 0 {
		select {
		case <-f.closed:
			return 0, os.ErrClosed
		case f.pending = <-f.in:
		}
	}
	n := 0
	for n < len(bufs) && len(f.pending) > 0 {
		sizes[n] = copy(bufs[n][offset:], f.pending[0])
		f.pending = f.pending[1:]
		n++
	}
	return n, nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	c := f.writing.Add(1)
	defer f.writing.Add(-1)
	for {
		m := f.maxConc.Load()
		if c <= m || f.maxConc.CompareAndSwap(m, c) {
			break
		}
	}
	select {
	case <-f.closed:
		return 0, os.ErrClosed
	default:
	}
	// Like wireguard-go's NativeTun with offloads, insist on room for the
	// virtio-net header.
	if offset < 10 {
		return 0, errors.New("fakeTUN: offset too small for virtio header")
	}
	for _, b := range bufs {
		if offset > len(b)-1 {
			return 0, errors.New("fakeTUN: invalid offset")
		}
		p := bytes.Clone(b[offset:])
		select {
		case f.out <- p:
		default:
			f.dropped.Add(1)
		}
	}
	return len(bufs), nil
}

func (f *fakeTUN) MTU() (int, error)        { return 1280, nil }
func (f *fakeTUN) Name() (string, error)    { return "fake0", nil }
func (f *fakeTUN) Events() <-chan tun.Event { return nil }
func (f *fakeTUN) BatchSize() int           { return 8 }
func (f *fakeTUN) Close() error             { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeTUN) isClosed() bool {
	select {
	case <-f.closed:
		return true
	default:
		return false
	}
}

var _ tun.Device = (*fakeTUN)(nil)

// harness runs a Device over a fakeTUN with a reader goroutine playing
// wireguard-go: packets that pass through Read land in pass.
type harness struct {
	t    *testing.T
	f    *fakeTUN
	d    *Device
	pass chan []byte
	done chan struct{}
}

// fastTuning shortens the retransmission timer for the tests about it.
func fastTuning() tuning {
	cfg := defaultTuning()
	cfg.rtoInitial = 50 * time.Millisecond
	cfg.rtoMax = 200 * time.Millisecond
	return cfg
}

func newHarness(t *testing.T, h Handler, cfg tuning) *harness {
	t.Helper()
	f := newFakeTUN()
	d := wrap(f, Options{Addrs: []netip.Addr{svc4, svc6}, Handler: h, Logf: t.Logf}, cfg)
	hs := &harness{t: t, f: f, d: d, pass: make(chan []byte, 1024), done: make(chan struct{})}
	go func() {
		defer close(hs.done)
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, 16+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := d.Read(bufs, sizes, 16)
			for i := range n {
				hs.pass <- bytes.Clone(bufs[i][16 : 16+sizes[i]])
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		<-hs.done
	})
	return hs
}

// next returns the next packet the Device wrote, decoded and checked.
func (h *harness) next() decoded {
	h.t.Helper()
	select {
	case p := <-h.f.out:
		return decode(h.t, p)
	case <-time.After(5 * time.Second):
		h.t.Fatal("timed out waiting for a reply packet")
		return decoded{}
	}
}

// none asserts that nothing is written for a while.
func (h *harness) none(wait time.Duration) {
	h.t.Helper()
	select {
	case p := <-h.f.out:
		h.t.Fatalf("unexpected packet written: %+v", decode(h.t, p))
	case <-time.After(wait):
	}
}

// --- packet building (test side, independent of the package's code) ---

func csum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
		s = (s & 0xffff) + (s >> 16)
	}
	return ^uint16(s)
}

func pseudo(src, dst netip.Addr, proto byte, n int) []byte {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	if src.Is4() {
		return append(b, 0, proto, byte(n>>8), byte(n))
	}
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto)
}

func mkIP(src, dst netip.Addr, proto byte, l4 []byte) []byte {
	if src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[4:], 0x1234)
		h[8] = 64
		h[9] = proto
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], csum(h))
		return append(h, l4...)
	}
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, l4...)
}

func mkUDP(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	c := csum(pseudo(src.Addr(), dst.Addr(), 17, len(u)), u)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return mkIP(src.Addr(), dst.Addr(), 17, u)
}

func mkTCP(src, dst netip.AddrPort, seq, ack uint32, flags byte, wnd uint16, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	t := make([]byte, hl+len(payload))
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(hl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], wnd)
	copy(t[20:], opts)
	copy(t[hl:], payload)
	binary.BigEndian.PutUint16(t[16:], csum(pseudo(src.Addr(), dst.Addr(), 6, len(t)), t))
	return mkIP(src.Addr(), dst.Addr(), 6, t)
}

func mkEcho(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	m := make([]byte, 8+len(data))
	proto := byte(1)
	m[0] = 8
	if src.Is6() {
		proto = 58
		m[0] = 128
	}
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], data)
	if proto == 1 {
		binary.BigEndian.PutUint16(m[2:], csum(m))
	} else {
		binary.BigEndian.PutUint16(m[2:], csum(pseudo(src, dst, 58, len(m)), m))
	}
	return mkIP(src, dst, proto, m)
}

// decoded is a reply packet taken apart.
type decoded struct {
	v6       bool
	src, dst netip.Addr
	ttl      byte
	proto    byte
	sport    uint16
	dport    uint16
	seq, ack uint32
	flags    byte
	wnd      uint16
	mss      uint16
	payload  []byte // UDP/TCP data; for ICMP the whole message
}

func (p decoded) has(f byte) bool { return p.flags&f == f }

// decode parses a packet the Device wrote and checks lengths and checksums.
func decode(t *testing.T, pkt []byte) decoded {
	t.Helper()
	var p decoded
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[0] != 0x45 {
			t.Fatalf("bad IPv4 header % x", pkt)
		}
		if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			t.Fatalf("IPv4 total length %d, packet %d", binary.BigEndian.Uint16(pkt[2:]), len(pkt))
		}
		if csum(pkt[:20]) != 0 {
			t.Fatalf("bad IPv4 header checksum")
		}
		p.ttl, p.proto = pkt[8], pkt[9]
		p.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		p.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = pkt[20:]
	case 6:
		if len(pkt) < 40 || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			t.Fatalf("bad IPv6 length")
		}
		p.v6 = true
		p.proto, p.ttl = pkt[6], pkt[7]
		p.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		p.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		l4 = pkt[40:]
	default:
		t.Fatalf("not IP: % x", pkt)
	}
	if p.ttl != 64 {
		t.Errorf("TTL/hop limit %d, want 64", p.ttl)
	}
	switch p.proto {
	case 1:
		if csum(l4) != 0 {
			t.Fatalf("bad ICMP checksum")
		}
		p.payload = l4
	case 58:
		if csum(pseudo(p.src, p.dst, 58, len(l4)), l4) != 0 {
			t.Fatalf("bad ICMPv6 checksum")
		}
		p.payload = l4
	case 17:
		if int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
			t.Fatalf("bad UDP length")
		}
		if binary.BigEndian.Uint16(l4[6:]) == 0 || csum(pseudo(p.src, p.dst, 17, len(l4)), l4) != 0 {
			t.Fatalf("bad UDP checksum")
		}
		p.sport, p.dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.payload = l4[8:]
	case 6:
		if csum(pseudo(p.src, p.dst, 6, len(l4)), l4) != 0 {
			t.Fatalf("bad TCP checksum")
		}
		p.sport, p.dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.seq, p.ack = binary.BigEndian.Uint32(l4[4:]), binary.BigEndian.Uint32(l4[8:])
		hl := int(l4[12]>>4) * 4
		p.flags = l4[13]
		p.wnd = binary.BigEndian.Uint16(l4[14:])
		opts := l4[20:hl]
		if len(opts) >= 4 && opts[0] == 2 && opts[1] == 4 {
			p.mss = binary.BigEndian.Uint16(opts[2:])
		}
		p.payload = l4[hl:]
	default:
		t.Fatalf("unexpected protocol %d", p.proto)
	}
	return p
}

// tcpClient drives one connection from the test side.
type tcpClient struct {
	h        *harness
	cli, srv netip.AddrPort
	sndNxt   uint32
	rcvNxt   uint32
	wnd      uint16
	mss      uint16 // server's MSS from the SYN-ACK
	srvWnd   uint16
}

var nextPort atomic.Uint32

func (h *harness) client(src, dst netip.Addr) *tcpClient {
	port := uint16(40000 + nextPort.Add(1))
	return &tcpClient{h: h, cli: netip.AddrPortFrom(src, port), srv: netip.AddrPortFrom(dst, 53), sndNxt: 1000, wnd: 65535}
}

func (c *tcpClient) packet(flags byte, seq uint32, payload []byte, opts []byte) []byte {
	return mkTCP(c.cli, c.srv, seq, c.rcvNxt, flags, c.wnd, opts, payload)
}

// send sends a segment at sndNxt and advances sndNxt.
func (c *tcpClient) send(flags byte, payload []byte) {
	c.h.f.inject(c.packet(flags, c.sndNxt, payload, nil))
	c.sndNxt += uint32(len(payload))
	if flags&(flagSYN|flagFIN) != 0 {
		c.sndNxt++
	}
}

// expect reads the next packet, which must belong to this connection.
func (c *tcpClient) expect() decoded {
	c.h.t.Helper()
	p := c.h.next()
	if p.proto != 6 || p.src != c.srv.Addr() || p.dst != c.cli.Addr() || p.sport != c.srv.Port() || p.dport != c.cli.Port() {
		c.h.t.Fatalf("packet for another flow: %+v", p)
	}
	return p
}

// connect does the three-way handshake, announcing mss (0 = no option).
func (c *tcpClient) connect(mss uint16) decoded {
	c.h.t.Helper()
	var opts []byte
	if mss > 0 {
		opts = []byte{2, 4, byte(mss >> 8), byte(mss), 1, 1, 4, 2} // MSS, NOP, NOP, SACK-permitted
	}
	c.h.f.inject(c.packet(flagSYN, c.sndNxt, nil, opts))
	c.sndNxt++
	p := c.expect()
	if !p.has(flagSYN|flagACK) || p.ack != c.sndNxt {
		c.h.t.Fatalf("want SYN-ACK, got %+v", p)
	}
	c.rcvNxt = p.seq + 1
	c.mss = p.mss
	c.send(flagACK, nil)
	return p
}

// query sends a length-prefixed message.
func frame(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, byte(len(m)>>8), byte(len(m)))
		b = append(b, m...)
	}
	return b
}

// read collects n bytes of in-order stream data, acknowledging as it goes.
func (c *tcpClient) read(n int) []byte {
	c.h.t.Helper()
	var got []byte
	for len(got) < n {
		p := c.expect()
		if p.has(flagRST) {
			c.h.t.Fatalf("connection reset after %d bytes", len(got))
		}
		if len(p.payload) == 0 {
			continue
		}
		if c.mss != 0 && len(p.payload) > int(c.mss) {
			c.h.t.Fatalf("segment of %d bytes exceeds MSS %d", len(p.payload), c.mss)
		}
		if seqLT(p.seq, c.rcvNxt) && !seqGT(p.seq+uint32(len(p.payload)), c.rcvNxt) {
			continue // a retransmission of what we already have
		}
		if p.seq != c.rcvNxt {
			c.h.t.Fatalf("segment seq %d, want %d", p.seq, c.rcvNxt)
		}
		got = append(got, p.payload...)
		c.rcvNxt += uint32(len(p.payload))
		c.srvWnd = p.wnd
		c.send(flagACK, nil)
	}
	if len(got) != n {
		c.h.t.Fatalf("read %d bytes, want %d", len(got), n)
	}
	return got
}

// messages splits length-prefixed stream data.
func messages(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("stray byte")
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			t.Fatalf("truncated message")
		}
		out = append(out, b[2:2+l])
		b = b[2+l:]
	}
	return out
}

// echoHandler answers "ans:" + query; a query "big:N" gets N bytes.
func echoHandler(_ context.Context, q []byte, tcp bool) []byte {
	if n, ok := bigSize(q); ok {
		return bigAnswer(n)
	}
	return append([]byte("ans:"), q...)
}

func bigSize(q []byte) (int, bool) {
	if !bytes.HasPrefix(q, []byte("big:")) {
		return 0, false
	}
	n := 0
	for _, c := range q[4:] {
		n = n*10 + int(c-'0')
	}
	return n, true
}

func bigAnswer(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}
