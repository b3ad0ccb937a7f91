package intercept

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// staticTUN returns the same batch from every Read without allocating.
type staticTUN struct {
	*fakeTUN
	batch [][]byte
}

func (s *staticTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && n < len(s.batch) {
		sizes[n] = copy(bufs[n][offset:], s.batch[n])
		n++
	}
	return n, nil
}

func TestPassthroughDoesNotAllocate(t *testing.T) {
	ap := func(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }
	st := &staticTUN{fakeTUN: newFakeTUN(), batch: [][]byte{
		mkUDP(ap(client4, 5000), ap(peer4, 53), []byte("not for us")),
		mkTCP(ap(client6, 5000), ap(netip.MustParseAddr("fd7a:115c:a1e0::99"), 53), 1, 2, flagACK, 100, nil, []byte("x")),
		mkEcho(client4, netip.MustParseAddr("100.100.100.101"), 1, 1, nil),
		{0x45}, // runt: passes through untouched
	}}
	d := wrap(st, Options{Addrs: []netip.Addr{svc4, svc6}, Handler: echoHandler}, defaultTuning())
	defer d.Close()
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	allocs := testing.AllocsPerRun(1000, func() {
		n, err := d.Read(bufs, sizes, 16)
		if n != 4 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("passthrough Read allocates %.1f times per call", allocs)
	}
	for i, p := range st.batch {
		if !bytes.Equal(bufs[i][16:16+sizes[i]], p) {
			t.Errorf("packet %d altered", i)
		}
	}
	if s := d.Stats(); s.Intercepted != 0 {
		t.Errorf("Intercepted = %d", s.Intercepted)
	}
}

func TestReadCompaction(t *testing.T) {
	h := newHarness(t, echoHandler, defaultTuning())
	ap := netip.AddrPortFrom
	a := mkUDP(ap(client4, 1111), ap(peer4, 53), []byte("A"))
	b := mkUDP(ap(client4, 1112), ap(peer4, 53), []byte("B-longer-packet"))
	c := mkUDP(ap(client4, 1113), ap(peer4, 53), []byte("C"))
	q1 := mkUDP(ap(client4, 2001), ap(svc4, 53), []byte("q1"))
	q2 := mkEcho(client6, svc6, 7, 1, []byte("ping"))
	q3 := mkUDP(ap(client4, 2002), ap(svc4, 53), []byte("q3"))
	h.f.inject(q1, a, q2, q3, b, c)
	for _, want := range [][]byte{a, b, c} {
		select {
		case got := <-h.pass:
			if !bytes.Equal(got, want) {
				t.Fatalf("passed packet % x, want % x", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("timeout")
		}
	}
	// A batch made only of intercepted packets must not surface as a
	// zero-packet Read: the next passthrough packet is what comes out.
	h.f.inject(mkUDP(ap(client4, 2003), ap(svc4, 53), []byte("q4")))
	h.f.inject(a)
	if got := <-h.pass; !bytes.Equal(got, a) {
		t.Fatal("wrong packet after an all-intercepted batch")
	}
	replies := map[string]bool{}
	for range 4 {
		p := h.next()
		replies[string(p.payload)] = true
	}
	for _, w := range []string{"ans:q1", "ans:q3", "ans:q4"} {
		if !replies[w] {
			t.Errorf("missing reply %q in %v", w, replies)
		}
	}
	select {
	case p := <-h.pass:
		t.Fatalf("extra passthrough packet % x", p)
	default:
	}
}

// TestReadKeepsBuffers checks that compaction moves bytes, not the caller's
// buffer slices.
func TestReadKeepsBuffers(t *testing.T) {
	ap := netip.AddrPortFrom
	st := &staticTUN{fakeTUN: newFakeTUN(), batch: [][]byte{
		mkEcho(client4, svc4, 1, 1, nil),
		mkUDP(ap(client4, 1), ap(peer4, 53), []byte("keep")),
	}}
	d := wrap(st, Options{Addrs: []netip.Addr{svc4}}, defaultTuning())
	defer d.Close()
	bufs := [][]byte{make([]byte, 100), make([]byte, 100)}
	orig := []*byte{&bufs[0][0], &bufs[1][0]}
	sizes := make([]int, 2)
	n, err := d.Read(bufs, sizes, 16)
	if n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if &bufs[0][0] != orig[0] || &bufs[1][0] != orig[1] {
		t.Error("Read swapped the caller's buffers")
	}
	if !bytes.Equal(bufs[0][16:16+sizes[0]], st.batch[1]) {
		t.Error("passthrough packet not moved to the front")
	}
}

func TestUDP(t *testing.T) {
	var gotTCP atomic.Bool
	h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
		gotTCP.Store(tcp)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("handler context without deadline")
		}
		return echoHandler(ctx, q, tcp)
	}, defaultTuning())
	for _, tc := range []struct{ cli, svc netip.Addr }{{client4, svc4}, {client6, svc6}} {
		cli := netip.AddrPortFrom(tc.cli, 33333)
		h.f.inject(mkUDP(cli, netip.AddrPortFrom(tc.svc, 53), []byte("hello")))
		p := h.next()
		if p.proto != 17 || p.src != tc.svc || p.dst != tc.cli || p.sport != 53 || p.dport != 33333 {
			t.Fatalf("bad reply %+v", p)
		}
		if string(p.payload) != "ans:hello" {
			t.Fatalf("payload %q", p.payload)
		}
		if gotTCP.Load() {
			t.Error("handler told tcp=true for UDP")
		}
	}
	// A reply needing an odd-length checksum and a large one.
	h.f.inject(mkUDP(netip.AddrPortFrom(client6, 1), netip.AddrPortFrom(svc6, 53), []byte("big:3001")))
	if p := h.next(); !bytes.Equal(p.payload, bigAnswer(3001)) {
		t.Fatal("large UDP answer mangled")
	}
	s := h.d.Stats()
	if s.UDPQueries != 3 || s.UDPAnswers != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestDropped(t *testing.T) {
	h := newHarness(t, echoHandler, defaultTuning())
	ap := netip.AddrPortFrom
	good := mkUDP(ap(client4, 1), ap(svc4, 53), []byte("x"))
	badSum := bytes.Clone(good)
	badSum[len(badSum)-1] ^= 0xff
	frag := bytes.Clone(good)
	frag[6] = 0x20 // more fragments
	frag[10], frag[11] = 0, 0
	copy(frag[10:], []byte{byte(csum(frag[:20]) >> 8), byte(csum(frag[:20]))})
	short := good[:25]
	other := mkUDP(ap(client4, 1), ap(svc4, 54), []byte("x"))
	igmp := mkIP(client4, svc4, 2, []byte{0x11, 0, 0, 0, 0, 0, 0, 0})
	echoReply := mkEcho(client4, svc4, 1, 1, nil)
	echoReply[20] = 0 // echo reply, not request
	fromSvc := mkUDP(ap(svc4, 1), ap(svc4, 53), []byte("loop"))
	h.f.inject(badSum, frag, short, other, igmp, echoReply, fromSvc)
	h.f.inject(mkUDP(ap(client4, 2), ap(peer4, 53), nil)) // marks the end
	<-h.pass
	h.none(100 * time.Millisecond)
	if s := h.d.Stats(); s.Dropped != 7 || s.Intercepted != 7 {
		t.Errorf("stats %+v", s)
	}
}

func TestEcho(t *testing.T) {
	h := newHarness(t, nil, defaultTuning())
	for _, tc := range []struct{ cli, svc netip.Addr }{{client4, svc4}, {client6, svc6}} {
		data := []byte("0123456789abcdefX") // odd length
		h.f.inject(mkEcho(tc.cli, tc.svc, 0x4242, 9, data))
		p := h.next()
		want := byte(0)
		if tc.cli.Is6() {
			want = 129
		}
		if p.src != tc.svc || p.dst != tc.cli || p.payload[0] != want || p.payload[1] != 0 {
			t.Fatalf("bad echo reply %+v", p)
		}
		if !bytes.Equal(p.payload[4:8], []byte{0x42, 0x42, 0, 9}) || !bytes.Equal(p.payload[8:], data) {
			t.Fatalf("echo id/seq/data not preserved: % x", p.payload)
		}
	}
	if s := h.d.Stats(); s.EchoReplies != 2 {
		t.Errorf("EchoReplies = %d", s.EchoReplies)
	}
}

func TestUDPConcurrencyBound(t *testing.T) {
	cfg := defaultTuning()
	cfg.maxInFlight = 4
	release := make(chan struct{})
	var running, peak atomic.Int32
	h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		return append([]byte("ans:"), q...)
	}, cfg)
	var pkts [][]byte
	for i := range 10 {
		pkts = append(pkts, mkUDP(netip.AddrPortFrom(client4, uint16(3000+i)), netip.AddrPortFrom(svc4, 53), []byte{'q', byte('0' + i)}))
	}
	h.f.inject(pkts...)
	h.f.inject(mkUDP(netip.AddrPortFrom(client4, 2), netip.AddrPortFrom(peer4, 53), nil))
	<-h.pass
	if s := h.d.Stats(); s.Busy != 6 || s.InFlight != 4 {
		t.Errorf("stats %+v", s)
	}
	for deadline := time.Now().Add(5 * time.Second); running.Load() < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d handlers running", running.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range 4 {
		h.next()
	}
	h.none(50 * time.Millisecond)
	if peak.Load() != 4 {
		t.Errorf("peak concurrency %d", peak.Load())
	}
}

func TestHandlerTimeoutAndClose(t *testing.T) {
	cfg := defaultTuning()
	cfg.handlerTimeout = 50 * time.Millisecond
	started := make(chan struct{}, 10)
	h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
		started <- struct{}{}
		<-ctx.Done()
		if string(q) == "late" {
			return []byte("late answer")
		}
		return nil
	}, cfg)
	h.f.inject(mkUDP(netip.AddrPortFrom(client4, 1), netip.AddrPortFrom(svc4, 53), []byte("late")))
	<-started
	if p := h.next(); string(p.payload) != "late answer" {
		t.Fatalf("got %q", p.payload)
	}
	if s := h.d.Stats(); s.HandlerTimeouts != 1 {
		t.Errorf("HandlerTimeouts = %d", s.HandlerTimeouts)
	}

	// Close cancels running handlers, waits for them, then closes dev.
	cfg.handlerTimeout = time.Hour
	f := newFakeTUN()
	var finished atomic.Bool
	d := wrap(f, Options{Addrs: []netip.Addr{svc4}, Handler: func(ctx context.Context, q []byte, tcp bool) []byte {
		started <- struct{}{}
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond)
		finished.Store(true)
		return nil
	}}, cfg)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		for {
			if _, err := d.Read(bufs, sizes, 16); err != nil {
				return
			}
		}
	}()
	f.inject(mkUDP(netip.AddrPortFrom(client4, 1), netip.AddrPortFrom(svc4, 53), []byte("q")))
	<-started
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Error("Close returned before the handler goroutine ended")
	}
	if !f.isClosed() {
		t.Error("Close did not close the wrapped device")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestConcurrentWrites has handler goroutines write replies while another
// goroutine writes through the Device like wireguard-go does.
func TestConcurrentWrites(t *testing.T) {
	h := newHarness(t, echoHandler, defaultTuning())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 16+40)
		copy(buf[16:], mkUDP(netip.AddrPortFrom(peer4, 1), netip.AddrPortFrom(client4, 2), []byte("from a peer")))
		for range 2000 {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.d.Write([][]byte{buf[:16+20+8+11]}, 16); err != nil {
				t.Error(err)
				return
			}
			runtime.Gosched()
		}
	}()
	const n = 200
	for i := range n {
		h.f.inject(mkUDP(netip.AddrPortFrom(client4, uint16(10000+i)), netip.AddrPortFrom(svc4, 53), []byte("q")))
	}
	got := 0
	deadline := time.After(10 * time.Second)
	for got < n {
		select {
		case p := <-h.f.out:
			if d := decode(t, p); d.src == svc4 {
				got++
			}
		case <-deadline:
			t.Fatalf("got %d of %d answers", got, n)
		}
	}
	close(stop)
	wg.Wait()
	if n := h.f.dropped.Load(); n != 0 {
		t.Errorf("fake device dropped %d writes", n)
	}
	t.Logf("max concurrent Write calls: %d", h.f.maxConc.Load())
}

func TestCloseWithBlockedRead(t *testing.T) {
	f := newFakeTUN()
	d := Wrap(f, Options{Addrs: []netip.Addr{svc4}})
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read([][]byte{make([]byte, 100)}, []int{0}, 16)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if err != os.ErrClosed {
			t.Errorf("Read error %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}
