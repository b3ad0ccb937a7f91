package ts2021

import (
	"bytes"
	"errors"
	"github.com/skeinvpn/skein/daemon/control/ts2021/ts2021test"
	"github.com/skeinvpn/skein/daemon/key"
	"io"
	"net"
	"testing"
	"testing/iotest"
)

func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{4, 0, 3, 'a', 'b', 'c', 4, 0, 0})
	f.Add(append([]byte{2, 0, 48}, make([]byte, 48)...))
	f.Add([]byte{3, 0, 5, 'o', 'o', 'p', 's', '!'})
	f.Add([]byte{4, 0x0f, 0xfe, 0})
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{4, 0, 9, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Same frames whether the bytes come at once or one at a time.
		a := &frameReader{r: bytes.NewReader(data)}
		b := &frameReader{r: iotest.OneByteReader(bytes.NewReader(data))}
		consumed := 0
		for {
			ta, pa, ea := a.next()
			tb, pb, eb := b.next()
			if (ea == nil) != (eb == nil) || ta != tb || !bytes.Equal(pa, pb) {
				t.Fatalf("readers disagree: %d %x %v / %d %x %v", ta, pa, ea, tb, pb, eb)
			}
			if ea != nil {
				if !errors.Is(ea, io.EOF) && !errors.Is(ea, io.ErrUnexpectedEOF) &&
					!errors.Is(ea, errFrameTooLarge) && !errors.Is(ea, errUnknownFrameTyp) {
					t.Fatalf("unexpected error %v", ea)
				}
				if errors.Is(ea, io.EOF) && consumed != len(data) {
					t.Fatalf("clean EOF with %d of %d bytes consumed", consumed, len(data))
				}
				return
			}
			if ta != msgTypeResponse && ta != msgTypeError && ta != msgTypeRecord {
				t.Fatalf("accepted type %d", ta)
			}
			if headerLen+len(pa) > maxFrameSize {
				t.Fatalf("accepted a %d-byte frame", headerLen+len(pa))
			}
			consumed += headerLen + len(pa)
		}
	})
}

func FuzzEarlyPayload(f *testing.F) {
	f.Add([]byte("\xff\xff\xffTS\x00\x00\x00\x02{}"))
	f.Add(earlyPayloadBytes(f, mustChallenge(f)))
	f.Add([]byte("\x00\x00\x06\x04\x00\x00\x00\x00\x00"))
	f.Add([]byte("\xff\xff\xffTS\xff\xff\xff\xff"))
	f.Add([]byte("\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var hdr [earlyHeaderLen]byte
		r := bytes.NewReader(data)
		e, replay, err := readEarlyPayload(r, &hdr)
		switch {
		case err != nil:
			if e != nil || replay != nil {
				t.Fatal("results alongside an error")
			}
		case e == nil:
			if !bytes.Equal(replay, data[:earlyHeaderLen]) || r.Len() != len(data)-earlyHeaderLen {
				t.Fatalf("replay %x does not match input", replay)
			}
		default:
			if replay != nil || !bytes.HasPrefix(data, []byte(earlyMagic)) {
				t.Fatal("early payload without magic, or with replay")
			}
		}
	})
}

// fakeConn is a net.Conn that discards writes, for counting allocations.
type fakeConn struct{ net.Conn }

func (fakeConn) Write(p []byte) (int, error) { return len(p), nil }

func TestNoAllocsPerRecord(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	var k1, k2 [32]byte
	k2[0] = 1
	tx, rx := newAEAD(k1), newAEAD(k2)
	c := newConn(fakeConn{}, nil, tx, rx, CapabilityVersion)
	msg := make([]byte, 20000)
	if n := testing.AllocsPerRun(50, func() { c.Write(msg) }); n != 0 {
		t.Errorf("Write allocates %v times", n)
	}

	// Read side: a stream of 200 records of 4077 bytes from the peer's view.
	peer := ts2021test.NewConn(nil, nil, nil, rx, key.Raw{}, 0)
	var stream []byte
	for range 200 {
		stream = append(stream, peer.Record(msg[:maxPlaintext])...)
	}
	src := bytes.NewReader(stream)
	rc := newConn(fakeConn{}, src, tx, rx, CapabilityVersion)
	buf := make([]byte, maxPlaintext)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Read allocates %v times per record", n)
	}
}
