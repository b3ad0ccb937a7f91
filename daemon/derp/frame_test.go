package derp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

func frameBytes(t byte, payload ...[]byte) []byte {
	var b []byte
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	b = append(b, t)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

func testKey(b byte) key.NodePublic {
	var r key.Raw
	for i := range r {
		r[i] = b
	}
	return key.NodePublicFromRaw(r)
}

func readerOf(b []byte) *frameReader {
	return newFrameReader(bufio.NewReaderSize(bytes.NewReader(b), 64))
}

// readMessages reads frames until the stream ends, as Recv would (minus ServerInfo).
func readMessages(b []byte) ([]Message, error) {
	fr := readerOf(b)
	var out []Message
	for {
		t, p, err := fr.next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
		var pkt ReceivedPacket
		m, err := parseFrame(t, p, &pkt)
		if err != nil || m == nil {
			continue
		}
		if rp, ok := m.(*ReceivedPacket); ok { // detach from the reused buffer
			m = &ReceivedPacket{Source: rp.Source, Data: bytes.Clone(rp.Data)}
		}
		out = append(out, m)
	}
}

func TestFrameCodec(t *testing.T) {
	k1 := testKey(1)
	r1 := k1.Raw()
	big := bytes.Repeat([]byte{0xab}, 5000)
	restart := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1500), 60000)
	tests := []struct {
		name    string
		in      []byte
		want    []Message
		wantErr error
	}{
		{name: "empty", in: nil},
		{name: "recv packet", in: frameBytes(0x05, r1[:], []byte("hello")),
			want: []Message{&ReceivedPacket{Source: k1, Data: []byte("hello")}}},
		{name: "recv empty packet", in: frameBytes(0x05, r1[:]),
			want: []Message{&ReceivedPacket{Source: k1, Data: []byte{}}}},
		{name: "recv large packet (beyond bufio size)", in: frameBytes(0x05, r1[:], big),
			want: []Message{&ReceivedPacket{Source: k1, Data: big}}},
		{name: "short recv packet dropped", in: frameBytes(0x05, r1[:31])},
		{name: "keepalive", in: frameBytes(0x06), want: []Message{KeepAliveMessage{}}},
		{name: "peer gone not here", in: frameBytes(0x08, r1[:], []byte{1}),
			want: []Message{PeerGone{Peer: k1, Reason: PeerGoneNotHere}}},
		{name: "peer gone without reason", in: frameBytes(0x08, r1[:]),
			want: []Message{PeerGone{Peer: k1, Reason: PeerGoneDisconnected}}},
		{name: "ping with extra bytes", in: frameBytes(0x12, []byte("12345678xyz")),
			want: []Message{PingMessage([]byte("12345678"))}},
		{name: "short ping dropped", in: frameBytes(0x12, []byte("1234567"))},
		{name: "pong", in: frameBytes(0x13, []byte("abcdefgh")), want: []Message{PongMessage([]byte("abcdefgh"))}},
		{name: "health", in: frameBytes(0x14, []byte("overloaded")), want: []Message{HealthMessage{"overloaded"}}},
		{name: "healthy", in: frameBytes(0x14), want: []Message{HealthMessage{}}},
		{name: "restarting", in: frameBytes(0x15, restart),
			want: []Message{ServerRestartingMessage{ReconnectIn: 1500 * time.Millisecond, TryFor: time.Minute}}},
		{name: "unknown and mesh types skipped", in: concat(
			frameBytes(0x7f, []byte("future")),
			frameBytes(0x09, r1[:]),
			frameBytes(0x0a, r1[:], r1[:]),
			frameBytes(0x01, []byte(magic), r1[:]),
			frameBytes(0x06)),
			want: []Message{KeepAliveMessage{}}},
		{name: "max size frame accepted", in: concat(frameBytes(0x7f, make([]byte, maxFrameSize)), frameBytes(0x06)),
			want: []Message{KeepAliveMessage{}}},
		{name: "oversized", in: concat(frameBytes(0x06), []byte{0x05, 0, 0x10, 0, 1}),
			want: []Message{KeepAliveMessage{}}, wantErr: ErrFrameTooLarge},
		{name: "oversized huge", in: []byte{0x05, 0xff, 0xff, 0xff, 0xff}, wantErr: ErrFrameTooLarge},
		{name: "truncated header", in: []byte{0x05, 0, 0}, wantErr: io.ErrUnexpectedEOF},
		{name: "truncated payload", in: frameBytes(0x05, r1[:], []byte("hello"))[:20], wantErr: io.ErrUnexpectedEOF},
		{name: "truncated empty payload", in: []byte{0x06, 0, 0, 0, 1}, wantErr: io.ErrUnexpectedEOF},
		{name: "truncated big payload", in: frameBytes(0x05, r1[:], big)[:3000], wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readMessages(tt.in)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestParseServerKey(t *testing.T) {
	k := testKey(7)
	r := k.Raw()
	for _, tt := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"exact", concat([]byte(magic), r[:]), true},
		{"extra bytes", concat([]byte(magic), r[:], []byte("more")), true},
		{"short", concat([]byte(magic), r[:31]), false},
		{"bad magic", concat([]byte("DERP!!!!"), r[:]), false},
		{"empty", nil, false},
	} {
		got, err := parseServerKey(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != k) {
			t.Errorf("%s: got %v, %v", tt.name, got, err)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	got := appendFrame([]byte("x"), frameSendPacket, []byte("ab"), nil, []byte("c"))
	want := []byte{'x', 0x04, 0, 0, 0, 3, 'a', 'b', 'c'}
	if !bytes.Equal(got, want) {
		t.Errorf("got % x, want % x", got, want)
	}
}

// A reader that repeats one frame forever, for allocation tests.
type repeatReader struct {
	frame []byte
	off   int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.frame[r.off:])
		n += c
		r.off = (r.off + c) % len(r.frame)
	}
	return n, nil
}

func TestRecvPathDoesNotAllocate(t *testing.T) {
	k := testKey(3)
	r := k.Raw()
	fr := newFrameReader(bufio.NewReaderSize(&repeatReader{frame: frameBytes(0x05, r[:], make([]byte, 1200))}, readBufSize))
	var pkt ReceivedPacket
	allocs := testing.AllocsPerRun(1000, func() {
		ft, b, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := parseFrame(ft, b, &pkt)
		if rp, ok := m.(*ReceivedPacket); !ok || len(rp.Data) != 1200 || rp.Source != k {
			t.Fatalf("bad message %T", m)
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per received packet", allocs)
	}
}

// FuzzFrameReader feeds arbitrary server output to the frame reader and parser (and the
// server-info opener); nothing may panic and every payload must respect the limits.
func FuzzFrameReader(f *testing.F) {
	r := testKey(1).Raw()
	f.Add(frameBytes(0x05, r[:], []byte("hello")))
	f.Add(concat(frameBytes(0x06), frameBytes(0x08, r[:], []byte{1}), frameBytes(0x12, []byte("12345678"))))
	f.Add(concat(frameBytes(0x14, []byte("sick")), frameBytes(0x15, make([]byte, 8)), frameBytes(0x13, []byte("pongpong"))))
	f.Add(frameBytes(0x01, []byte(magic), r[:]))
	f.Add(frameBytes(0x03, make([]byte, 60)))
	f.Add([]byte{0x05, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x05, 0, 0x10, 0, 0, 1, 2, 3})
	f.Add([]byte{0x08, 0, 0, 0, 3, 1, 2, 3})
	priv := key.NewNode()
	server := testKey(9)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bufio.NewReaderSize(bytes.NewReader(data), 16))
		var pkt ReceivedPacket
		for {
			ft, b, err := fr.next()
			if err != nil {
				return
			}
			if len(b) > maxFrameSize {
				t.Fatalf("payload of %d bytes", len(b))
			}
			switch ft {
			case frameServerKey:
				parseServerKey(b)
			case frameServerInfo:
				openServerInfo(priv, server, b)
			}
			m, err := parseFrame(ft, b, &pkt)
			if rp, ok := m.(*ReceivedPacket); ok && len(rp.Data) != len(b)-keyLen {
				t.Fatalf("packet data %d bytes from %d-byte frame", len(rp.Data), len(b))
			}
			if err != nil && m != nil {
				t.Fatalf("message %T with error %v", m, err)
			}
		}
	})
}
