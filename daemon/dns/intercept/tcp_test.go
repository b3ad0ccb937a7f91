package intercept

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// finish does the client-initiated close: client FIN, server ACK + FIN,
// client ACK; the connection must be gone afterwards.
func (c *tcpClient) finish() {
	c.h.t.Helper()
	c.send(flagFIN|flagACK, nil)
	for {
		p := c.expect()
		if p.has(flagRST) {
			c.h.t.Fatalf("RST while closing")
		}
		if p.has(flagFIN) {
			if p.ack != c.sndNxt {
				c.h.t.Fatalf("server FIN acks %d, want %d", p.ack, c.sndNxt)
			}
			c.rcvNxt = p.seq + 1
			break
		}
	}
	c.send(flagACK, nil)
	waitFor(c.h.t, "connection removed", func() bool { return c.h.d.Stats().TCPOpen == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestTCPQuery(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cli, svc netip.Addr
		mss      uint16
	}{{"v4", client4, svc4, 1240}, {"v6", client6, svc6, 1220}} {
		t.Run(tc.name, func(t *testing.T) {
			var sawTCP atomic.Bool
			h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
				sawTCP.Store(tcp)
				return echoHandler(ctx, q, tcp)
			}, defaultTuning())
			c := h.client(tc.cli, tc.svc)
			syn := c.connect(1460)
			if syn.mss != tc.mss {
				t.Errorf("SYN-ACK MSS %d, want %d", syn.mss, tc.mss)
			}

			// One message split across segments, even inside its length prefix.
			msg := frame([]byte("first query"))
			c.send(flagACK, msg[:1])
			if p := c.expect(); p.ack != c.sndNxt || len(p.payload) != 0 {
				t.Fatalf("want ACK of 1 byte, got %+v", p)
			}
			c.send(flagACK|flagPSH, msg[1:5])
			c.expect()
			c.send(flagACK|flagPSH, msg[5:])
			got := c.read(2 + len("ans:first query"))
			if want := frame([]byte("ans:first query")); !bytes.Equal(got, want) {
				t.Fatalf("got %q want %q", got, want)
			}
			if !sawTCP.Load() {
				t.Error("handler not told tcp=true")
			}

			// Pipelined queries in one segment; answers may come in any order.
			c.send(flagACK|flagPSH, frame([]byte("a"), []byte("bb"), []byte("ccc")))
			ans := messages(t, c.read(3*6+1+2+3))
			var strs []string
			for _, a := range ans {
				strs = append(strs, string(a))
			}
			slices.Sort(strs)
			if !slices.Equal(strs, []string{"ans:a", "ans:bb", "ans:ccc"}) {
				t.Fatalf("pipelined answers %q", strs)
			}

			// A large answer spans several segments of at most the MSS.
			c.send(flagACK|flagPSH, frame([]byte("big:9000")))
			big := messages(t, c.read(2+9000))
			if !bytes.Equal(big[0], bigAnswer(9000)) {
				t.Fatal("large answer mangled")
			}
			c.finish()
			s := h.d.Stats()
			if s.TCPQueries != 5 || s.TCPAnswers != 5 || s.TCPAccepted != 1 || s.Resets != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestTCPPeerMSS(t *testing.T) {
	h := newHarness(t, echoHandler, defaultTuning())
	c := h.client(client4, svc4)
	c.connect(100)
	c.mss = 100 // read() checks segment sizes against it
	c.send(flagACK|flagPSH, frame([]byte("big:1000")))
	if m := messages(t, c.read(1002)); !bytes.Equal(m[0], bigAnswer(1000)) {
		t.Fatal("answer mangled")
	}
	// Without an MSS option the IPv4 default of 536 applies.
	c2 := h.client(client4, svc4)
	c2.connect(0)
	c2.mss = 536
	c2.send(flagACK|flagPSH, frame([]byte("big:1500")))
	c2.read(1502)
}

func TestTCPOutOfOrderAndDuplicates(t *testing.T) {
	h := newHarness(t, echoHandler, defaultTuning())
	c := h.client(client4, svc4)
	c.connect(1460)
	msg := frame([]byte("query"))
	// The second part arrives first: dropped, duplicate ACK.
	h.f.inject(c.packet(flagACK, c.sndNxt+3, msg[3:], nil))
	if p := c.expect(); p.ack != c.sndNxt || len(p.payload) != 0 {
		t.Fatalf("want duplicate ACK for %d, got %+v", c.sndNxt, p)
	}
	c.send(flagACK, msg[:3])
	if p := c.expect(); p.ack != c.sndNxt {
		t.Fatalf("ACK %d, want %d", p.ack, c.sndNxt)
	}
	// A retransmission of what was already received is ACKed again.
	h.f.inject(c.packet(flagACK, c.sndNxt-3, msg[:3], nil))
	if p := c.expect(); p.ack != c.sndNxt {
		t.Fatalf("re-ACK %d, want %d", p.ack, c.sndNxt)
	}
	// Overlapping old and new data: only the new part counts.
	h.f.inject(c.packet(flagACK|flagPSH, c.sndNxt-2, msg[1:], nil))
	c.sndNxt += uint32(len(msg) - 3)
	got := c.read(2 + len("ans:query"))
	if !bytes.Equal(got, frame([]byte("ans:query"))) {
		t.Fatalf("got %q", got)
	}
	c.finish()
}

func TestTCPRetransmission(t *testing.T) {
	h := newHarness(t, echoHandler, fastTuning())
	c := h.client(client4, svc4)

	// Lost SYN-ACK: it comes again.
	h.f.inject(c.packet(flagSYN, c.sndNxt, nil, nil))
	c.sndNxt++
	first := c.expect()
	again := c.expect()
	if !again.has(flagSYN|flagACK) || again.seq != first.seq {
		t.Fatalf("want retransmitted SYN-ACK, got %+v", again)
	}
	// A duplicate SYN is answered with the same SYN-ACK.
	h.f.inject(c.packet(flagSYN, c.sndNxt-1, nil, nil))
	if p := c.expect(); !p.has(flagSYN|flagACK) || p.seq != first.seq {
		t.Fatalf("want SYN-ACK for duplicate SYN, got %+v", p)
	}
	c.rcvNxt = first.seq + 1
	c.send(flagACK, nil)

	// Lost answer: the same bytes come again until acknowledged.
	c.send(flagACK|flagPSH, frame([]byte("big:3000")))
	var segs []decoded // 536 bytes each: no MSS option in the SYN
	for total := 0; total < 3002; {
		if p := c.expect(); len(p.payload) > 0 {
			if len(p.payload) > 536 {
				t.Fatalf("segment of %d bytes", len(p.payload))
			}
			segs = append(segs, p)
			total += len(p.payload)
		}
	}
	var re decoded
	for {
		re = c.expect()
		if len(re.payload) > 0 {
			break
		}
	}
	if re.seq != segs[0].seq || !bytes.Equal(re.payload, segs[0].payload) {
		t.Fatalf("retransmission seq %d, want %d", re.seq, segs[0].seq)
	}
	if h.d.Stats().Retransmits < 2 {
		t.Errorf("Retransmits = %d", h.d.Stats().Retransmits)
	}
	// Drain whatever more was resent, then acknowledge the first segment
	// only: the rest is resent from there.
	c.rcvNxt = segs[0].seq + uint32(len(segs[0].payload))
	c.send(flagACK, nil)
	var rest []byte
	next := c.rcvNxt
	for next != segs[0].seq+3002 {
		p := c.expect()
		if len(p.payload) == 0 || p.seq != next {
			continue // older retransmissions still in the queue
		}
		rest = append(rest, p.payload...)
		next += uint32(len(p.payload))
	}
	c.rcvNxt = next
	c.send(flagACK, nil)
	all := append(bytes.Clone(segs[0].payload), rest...)
	if !bytes.Equal(all, frame(bigAnswer(3000))) {
		t.Fatal("reassembled answer differs")
	}
	// Fully acknowledged: nothing more is sent.
	time.Sleep(20 * time.Millisecond)
	for len(h.f.out) > 0 {
		<-h.f.out
	}
	h.none(300 * time.Millisecond)
	c.finish()
}

func TestTCPTimeouts(t *testing.T) {
	cfg := fastTuning()
	cfg.handshake = 150 * time.Millisecond
	cfg.idle = 150 * time.Millisecond
	cfg.closing = time.Second
	h := newHarness(t, echoHandler, cfg)

	// Handshake never completes: RST after the handshake timeout.
	c := h.client(client4, svc4)
	h.f.inject(c.packet(flagSYN, c.sndNxt, nil, nil))
	c.sndNxt++
	start := time.Now()
	synAck := c.expect()
	for {
		p := c.expect()
		if p.has(flagRST) {
			if p.seq != synAck.seq+1 || p.ack != c.sndNxt {
				t.Errorf("RST seq/ack %d/%d, want %d/%d", p.seq, p.ack, synAck.seq+1, c.sndNxt)
			}
			break
		}
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Errorf("reset after %v", el)
	}
	waitFor(t, "half-open connection gone", func() bool { return h.d.Stats().TCPOpen == 0 })

	// Idle: the server closes with FIN; the client completes the close.
	c = h.client(client6, svc6)
	c.connect(1460)
	c.send(flagACK|flagPSH, frame([]byte("x")))
	c.read(7)
	p := c.expect()
	if !p.has(flagFIN) || p.seq != c.rcvNxt {
		t.Fatalf("want FIN after idle timeout, got %+v", p)
	}
	c.rcvNxt++
	c.send(flagACK, nil)
	waitFor(t, "FIN-WAIT-2", func() bool {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		for _, cc := range h.d.conns {
			return cc.state == stFinWait2
		}
		return false
	})
	// Data in FIN-WAIT-2 is acknowledged and ignored.
	c.send(flagACK|flagPSH, frame([]byte("late")))
	if p := c.expect(); p.ack != c.sndNxt || len(p.payload) != 0 {
		t.Fatalf("want ACK, got %+v", p)
	}
	c.send(flagFIN|flagACK, nil)
	if p := c.expect(); p.ack != c.sndNxt {
		t.Fatalf("FIN not acknowledged: %+v", p)
	}
	waitFor(t, "closed connection gone", func() bool { return h.d.Stats().TCPOpen == 0 })

	// Idle, and the client never answers the FIN: reset after the closing
	// timeout.
	c = h.client(client4, svc4)
	c.connect(1460)
	for {
		p := c.expect()
		if p.has(flagRST) {
			break
		}
	}
	waitFor(t, "connection gone", func() bool { return h.d.Stats().TCPOpen == 0 })
	h.none(300 * time.Millisecond)
}

func TestTCPResets(t *testing.T) {
	cfg := defaultTuning()
	cfg.maxConns = 2
	h := newHarness(t, echoHandler, cfg)

	// Other port: RST|ACK acknowledging the SYN.
	c := h.client(client4, svc4)
	c.srv = netip.AddrPortFrom(svc4, 80)
	h.f.inject(c.packet(flagSYN, 5000, nil, nil))
	if p := c.expect(); !p.has(flagRST|flagACK) || p.ack != 5001 || p.seq != 0 {
		t.Fatalf("want RST|ACK, got %+v", p)
	}
	// An ACK for no connection: RST with seq = its ack.
	c = h.client(client6, svc6)
	c.rcvNxt = 777
	h.f.inject(c.packet(flagACK, 1, []byte("data"), nil))
	if p := c.expect(); !p.has(flagRST) || p.has(flagACK) || p.seq != 777 {
		t.Fatalf("want RST, got %+v", p)
	}
	// A RST for no connection is ignored.
	h.f.inject(c.packet(flagRST, 1, nil, nil))
	h.none(50 * time.Millisecond)

	// Message length above 4096: RST.
	c = h.client(client4, svc4)
	c.connect(1460)
	c.send(flagACK, []byte{0x10, 0x01})
	for {
		p := c.expect()
		if p.has(flagRST) {
			break
		}
	}
	// Zero-length message: RST.
	c = h.client(client4, svc4)
	c.connect(1460)
	c.send(flagACK, []byte{0, 0, 0, 1, 'x'})
	for {
		p := c.expect()
		if p.has(flagRST) {
			break
		}
	}
	waitFor(t, "connections gone", func() bool { return h.d.Stats().TCPOpen == 0 })

	// The client resets: the connection is forgotten.
	c = h.client(client4, svc4)
	c.connect(1460)
	h.f.inject(c.packet(flagRST, c.sndNxt, nil, nil))
	waitFor(t, "reset connection gone", func() bool { return h.d.Stats().TCPOpen == 0 })

	// Table full: the third SYN is refused.
	a, b, x := h.client(client4, svc4), h.client(client4, svc4), h.client(client4, svc4)
	a.connect(1460)
	b.connect(1460)
	h.f.inject(x.packet(flagSYN, 9, nil, nil))
	if p := x.expect(); !p.has(flagRST|flagACK) || p.ack != 10 {
		t.Fatalf("want RST for full table, got %+v", p)
	}
	// A SYN on an established connection gets a challenge ACK.
	h.f.inject(a.packet(flagSYN, 12345, nil, nil))
	if p := a.expect(); p.has(flagRST) || p.has(flagSYN) || p.ack != a.sndNxt {
		t.Fatalf("want challenge ACK, got %+v", p)
	}
	a.finish2()
	b.finish()
}

func TestTCPHalfCloseAnswersFirst(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
		<-release
		return echoHandler(ctx, q, tcp)
	}, defaultTuning())
	c := h.client(client4, svc4)
	c.connect(1460)
	// Two queries and the FIN in one segment.
	c.send(flagACK|flagPSH|flagFIN, frame([]byte("one"), []byte("two")))
	if p := c.expect(); p.ack != c.sndNxt || p.has(flagFIN) {
		t.Fatalf("want ACK of data+FIN, got %+v", p)
	}
	close(release)
	var data []byte
	for {
		p := c.expect()
		if len(p.payload) > 0 {
			if p.seq != c.rcvNxt {
				t.Fatalf("seq %d want %d", p.seq, c.rcvNxt)
			}
			data = append(data, p.payload...)
			c.rcvNxt += uint32(len(p.payload))
		}
		if p.has(flagFIN) {
			if p.seq != c.rcvNxt {
				t.Fatalf("FIN seq %d want %d", p.seq, c.rcvNxt)
			}
			c.rcvNxt++
			break
		}
	}
	if len(messages(t, data)) != 2 {
		t.Fatalf("answers %q", data)
	}
	c.send(flagACK, nil)
	waitFor(t, "connection gone", func() bool { return h.d.Stats().TCPOpen == 0 })
}

func TestTCPZeroWindow(t *testing.T) {
	h := newHarness(t, echoHandler, fastTuning())
	c := h.client(client4, svc4)
	c.connect(1460)
	c.wnd = 0
	c.send(flagACK|flagPSH, frame([]byte("big:2000")))
	// Only the ACK of the query, then window probes of one byte.
	for probes := 0; probes < 2; {
		p := c.expect()
		if len(p.payload) > 1 {
			t.Fatalf("sent %d bytes into a zero window", len(p.payload))
		}
		if len(p.payload) == 1 {
			if p.seq != c.rcvNxt {
				t.Fatalf("probe seq %d want %d", p.seq, c.rcvNxt)
			}
			probes++
			c.send(flagACK, nil) // window still zero, probe not accepted
		}
	}
	c.wnd = 65535
	c.send(flagACK, nil) // window opens
	var got []byte
	for len(got) < 2002 {
		p := c.expect()
		if len(p.payload) == 0 || p.seq != c.rcvNxt {
			continue
		}
		got = append(got, p.payload...)
		c.rcvNxt += uint32(len(p.payload))
		c.send(flagACK, nil)
	}
	if !bytes.Equal(got, frame(bigAnswer(2000))) {
		t.Fatal("answer mangled")
	}
}

// TestTCPFlowControl: while queries wait for handler slots the receive
// window shrinks; the peer must wait for a window update.
func TestTCPFlowControl(t *testing.T) {
	cfg := defaultTuning()
	cfg.maxConnInFlight = 1
	release := make(chan struct{})
	var calls atomic.Int32
	h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
		calls.Add(1)
		<-release
		return append([]byte("ans:"), q[:4]...)
	}, cfg)
	c := h.client(client4, svc4)
	c.connect(1460)
	var stream []byte
	for i := range 4 {
		stream = append(stream, frame(bytes.Repeat([]byte{byte('A' + i)}, 4000))...)
	}
	// Send segment by segment; whatever the window cut off is sent again
	// once a handler returned and the window reopened.
	base := c.sndNxt
	for off := 0; off < len(stream); {
		n := min(int(c.mss), len(stream)-off)
		h.f.inject(c.packet(flagACK, base+uint32(off), stream[off:off+n], nil))
		p := c.pureACK()
		if acked := int(p.ack - base); acked < off || acked > off+n {
			t.Fatalf("ACK %d for a segment at %d+%d", acked, off, n)
		} else {
			off = acked
		}
		for p.wnd == 0 {
			select {
			case release <- struct{}{}:
			case <-time.After(5 * time.Second):
				t.Fatal("handler never called")
			}
			p = c.pureACK()
			if int(p.ack-base) != off {
				t.Fatalf("window update acks %d, want %d", p.ack-base, off)
			}
		}
	}
	c.sndNxt = base + uint32(len(stream))
	go func() {
		for {
			select {
			case release <- struct{}{}:
			case <-time.After(2 * time.Second):
				return
			}
		}
	}()
	// Answers come in order (one handler call at a time).
	var got []byte
	for len(got) < 4*10 {
		p := c.expect()
		if len(p.payload) == 0 || p.seq != c.rcvNxt {
			continue
		}
		got = append(got, p.payload...)
		c.rcvNxt += uint32(len(p.payload))
		c.send(flagACK, nil)
	}
	want := frame([]byte("ans:AAAA"), []byte("ans:BBBB"), []byte("ans:CCCC"), []byte("ans:DDDD"))
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if calls.Load() != 4 {
		t.Errorf("%d handler calls", calls.Load())
	}
}

// pureACK returns the next segment without data (answer data the test does
// not want yet is skipped: it is retransmitted later).
func (c *tcpClient) pureACK() decoded {
	c.h.t.Helper()
	for {
		if p := c.expect(); len(p.payload) == 0 {
			return p
		}
	}
}

// TestTCPGlobalLimit: more pipelined messages than handler slots; those
// waiting are served as slots free up.
func TestTCPGlobalLimit(t *testing.T) {
	cfg := defaultTuning()
	cfg.maxInFlight = 2
	var running, peak atomic.Int32
	h := newHarness(t, func(ctx context.Context, q []byte, tcp bool) []byte {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		return append([]byte("ans:"), q...)
	}, cfg)
	var clients []*tcpClient
	for range 3 {
		c := h.client(client4, svc4)
		c.connect(1460)
		clients = append(clients, c)
	}
	var want int
	for i, c := range clients {
		var msgs [][]byte
		for j := range 10 {
			msgs = append(msgs, fmt.Appendf(nil, "c%dq%02d", i, j))
		}
		want = len(frame(msgs...)) + 10*4
		c.send(flagACK|flagPSH, frame(msgs...))
	}
	got := map[*tcpClient]int{}
	for total := 0; total < 3*want; {
		p := h.next()
		for _, c := range clients {
			if p.dport == c.cli.Port() && len(p.payload) > 0 && p.seq == c.rcvNxt {
				c.rcvNxt += uint32(len(p.payload))
				got[c] += len(p.payload)
				total += len(p.payload)
				c.send(flagACK, nil)
			}
		}
	}
	if peak.Load() > 2 {
		t.Errorf("peak concurrency %d > 2", peak.Load())
	}
	if h.d.Stats().Busy == 0 {
		t.Error("no message ever waited for a slot")
	}
	for _, c := range clients {
		c.finish2()
	}
}

// finish2 closes without asserting the table is empty (other connections
// may still be open).
func (c *tcpClient) finish2() {
	c.h.t.Helper()
	c.send(flagFIN|flagACK, nil)
	for {
		p := c.expect()
		if p.has(flagFIN) {
			c.rcvNxt = p.seq + 1
			break
		}
	}
	c.send(flagACK, nil)
}

func TestTCPCloseResetsConnections(t *testing.T) {
	f := newFakeTUN()
	d := wrap(f, Options{Addrs: []netip.Addr{svc4}, Handler: echoHandler}, defaultTuning())
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		for {
			if _, err := d.Read(bufs, sizes, 16); err != nil {
				return
			}
		}
	}()
	h := &harness{t: t, f: f, d: d}
	c := h.client(client4, svc4)
	c.connect(1460)
	d.Close()
	if p := c.expect(); !p.has(flagRST) {
		t.Fatalf("want RST on Close, got %+v", p)
	}
}
