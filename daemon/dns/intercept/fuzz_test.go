package intercept

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// queueTUN returns queued packets from Read and io.EOF once they are gone.
type queueTUN struct {
	*fakeTUN
	q [][]byte
}

func (d *queueTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(d.q) == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(bufs) && len(d.q) > 0 {
		sizes[n] = copy(bufs[n][offset:], d.q[0])
		d.q = d.q[1:]
		n++
	}
	return n, nil
}

// Fuzz input: one mode byte, then packets, each with a two-byte big-endian
// length. Mode bits:
//
//	1: fix IP lengths and all checksums (so the fuzzer gets past them)
//	2: point the destination at a service address
//	4: skip checksum verification in the Device instead
const (
	fuzzFix   = 1
	fuzzToSvc = 2
	fuzzNoSum = 4
)

func fuzzPackets(data []byte) (mode byte, pkts [][]byte) {
	if len(data) == 0 {
		return 0, nil
	}
	mode, data = data[0], data[1:]
	for len(data) >= 2 && len(pkts) < 64 {
		l := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		l = min(l, len(data))
		pkts = append(pkts, bytes.Clone(data[:l]))
		data = data[l:]
	}
	for _, p := range pkts {
		if mode&fuzzToSvc != 0 {
			toService(p)
		}
		if mode&fuzzFix != 0 {
			fixPacket(p)
		}
	}
	return mode, pkts
}

func toService(p []byte) {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		copy(p[16:20], svc4.AsSlice())
	case len(p) >= 40 && p[0]>>4 == 6:
		copy(p[24:40], svc6.AsSlice())
	}
}

// fixPacket makes the IP length fields match the packet and recomputes the
// IPv4 header checksum and the transport checksum (when the transport
// header directly follows the IP header).
func fixPacket(p []byte) {
	var src, dst netip.Addr
	var proto byte
	var l4 []byte
	switch {
	case len(p) >= 20 && len(p) <= 0xffff && p[0]>>4 == 4:
		hl := int(p[0]&0xf) * 4
		if hl < 20 || hl > len(p) {
			return
		}
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], csum(p[:hl]))
		src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		proto, l4 = p[9], p[hl:]
	case len(p) >= 40 && len(p)-40 <= 0xffff && p[0]>>4 == 6:
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		proto, l4 = p[6], p[40:]
	default:
		return
	}
	switch {
	case proto == 17 && len(l4) >= 8:
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		l4[6], l4[7] = 0, 0
		binary.BigEndian.PutUint16(l4[6:], csum(pseudo(src, dst, 17, len(l4)), l4))
	case proto == 6 && len(l4) >= 20:
		l4[16], l4[17] = 0, 0
		binary.BigEndian.PutUint16(l4[16:], csum(pseudo(src, dst, 6, len(l4)), l4))
	case proto == 1 && len(l4) >= 4:
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[2:], csum(l4))
	case proto == 58 && len(l4) >= 4:
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[2:], csum(pseudo(src, dst, 58, len(l4)), l4))
	}
}

func serviceDst(p []byte) bool {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return bytes.Equal(p[16:20], svc4.AsSlice())
	case len(p) >= 40 && p[0]>>4 == 6:
		return bytes.Equal(p[24:40], svc6.AsSlice())
	}
	return false
}

func fuzzHandler(_ context.Context, q []byte, tcp bool) []byte {
	if len(q) > 0 && q[0]&1 == 1 {
		return bytes.Repeat(q, 1+int(q[0])%7)
	}
	if len(q) > 1 && q[1] == 0 {
		return nil
	}
	return q
}

func FuzzRead(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzRead (written from fuzzSeeds).
	f.Fuzz(func(t *testing.T, data []byte) {
		mode, pkts := fuzzPackets(data)
		cfg := defaultTuning()
		cfg.iss = func() uint32 { return 1000 }
		cfg.noVerify = mode&fuzzNoSum != 0
		cfg.maxConns = 8
		cfg.maxInFlight = 8
		qt := &queueTUN{fakeTUN: newFakeTUN(), q: pkts}
		d := wrap(qt, Options{Addrs: []netip.Addr{svc4, svc6}, Handler: fuzzHandler}, cfg)

		var want [][]byte
		maxLen := 1
		for _, p := range pkts {
			if len(p) == 0 || !serviceDst(p) {
				want = append(want, p)
			}
			maxLen = max(maxLen, len(p))
		}
		bufs := make([][]byte, 3)
		for i := range bufs {
			bufs[i] = make([]byte, 16+maxLen)
		}
		sizes := make([]int, len(bufs))
		var got [][]byte
		for {
			n, err := d.Read(bufs, sizes, 16)
			if n < 0 || n > len(bufs) {
				t.Fatalf("Read returned %d", n)
			}
			for i := range n {
				got = append(got, bytes.Clone(bufs[i][16:16+sizes[i]]))
			}
			if err != nil {
				break
			}
			if n == 0 {
				t.Fatal("Read returned no packets and no error")
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d packets passed, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("passed packet %d differs", i)
			}
		}
		// Let the handler calls finish so their answers go out (and go
		// through segmentation) before Close.
		for {
			d.mu.Lock()
			active := d.active
			d.mu.Unlock()
			if active == 0 {
				break
			}
			runtime.Gosched()
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if len(d.conns) != 0 || d.sendBytes != 0 || d.active != 0 {
			t.Fatalf("state left after Close: %d conns, %d bytes, %d active", len(d.conns), d.sendBytes, d.active)
		}
		for len(qt.out) > 0 {
			p := <-qt.out
			if len(p) < 20 || len(p) > 0xffff || !(p[0] == 0x45 || p[0]>>4 == 6) {
				t.Fatalf("odd packet written: % x", p)
			}
		}
	})
}

// fuzzSeeds are the inputs of testdata/fuzz/FuzzRead, regenerated with
// INTERCEPT_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus.
func fuzzSeeds() [][]byte {
	ap := netip.AddrPortFrom
	c4, s4 := ap(client4, 40000), ap(svc4, 53)
	c6, s6 := ap(client6, 40001), ap(svc6, 53)
	enc := func(mode byte, pkts ...[]byte) []byte {
		b := []byte{mode}
		for _, p := range pkts {
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		return b
	}
	mss := []byte{2, 4, 0x04, 0xd8}
	tcpSession := func(c, s netip.AddrPort) [][]byte {
		return [][]byte{
			mkTCP(c, s, 5000, 0, flagSYN, 65535, mss, nil),
			mkTCP(c, s, 5001, 1001, flagACK, 65535, nil, nil),
			mkTCP(c, s, 5001, 1001, flagACK|flagPSH, 65535, nil, frame([]byte("\x00q1"), []byte("\x01q2"))),
			mkTCP(c, s, 5011, 1001, flagACK|flagPSH, 65535, nil, []byte{0, 3, 'a'}),
			mkTCP(c, s, 5014, 1001, flagACK|flagPSH, 65535, nil, []byte{'b', 'c'}),
			mkTCP(c, s, 5016, 1001, flagACK|flagFIN, 65535, nil, nil),
		}
	}
	frag := mkUDP(c4, s4, []byte("fragment"))
	frag[6] = 0x20
	hbh := mkIP(client6, svc6, 0, append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, mkUDP(c6, s6, []byte("q"))[40:]...))
	return [][]byte{
		enc(0, mkUDP(c4, s4, []byte("\x12\x34query"))),
		enc(0, mkUDP(c6, s6, []byte("\x13\x34query"))),
		enc(0, mkEcho(client4, svc4, 1, 2, []byte("ping")), mkEcho(client6, svc6, 3, 4, []byte("ping6"))),
		enc(0, tcpSession(c4, s4)...),
		enc(fuzzFix, tcpSession(c6, s6)...),
		enc(0, mkTCP(c4, ap(svc4, 80), 1, 0, flagSYN, 100, nil, nil), mkTCP(c6, s6, 1, 99, flagACK, 100, nil, []byte("x"))),
		enc(0, frag, hbh, mkUDP(c4, s4, nil)[:20], []byte{0x60}, nil),
		enc(fuzzToSvc|fuzzFix, mkUDP(c4, ap(peer4, 53), []byte("redirected")), mkUDP(c4, ap(peer4, 53), []byte("x"))),
		enc(0, mkUDP(c4, ap(peer4, 53), []byte("pass")), mkUDP(c4, s4, []byte("q")), mkUDP(c4, ap(peer4, 53), []byte("pass2"))),
		enc(fuzzNoSum, mkTCP(c4, s4, 7, 0, flagSYN, 0, nil, nil), mkTCP(c4, s4, 8, 1001, flagACK, 0, nil, []byte{0x10, 0x01, 0})),
	}
}

func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("INTERCEPT_WRITE_CORPUS") == "" {
		t.Skip("set INTERCEPT_WRITE_CORPUS=1 to regenerate testdata/fuzz/FuzzRead")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRead")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
