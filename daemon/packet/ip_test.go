package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func v4(proto byte, flagsFrag uint16, payload int) []byte {
	b := make([]byte, 20+payload)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], flagsFrag)
	b[8], b[9] = 64, proto
	copy(b[12:], []byte{100, 64, 0, 1})
	copy(b[16:], []byte{100, 64, 0, 2})
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(s))
	return b
}

func v6(next byte, ext []byte, payload int) []byte {
	b := make([]byte, 40+len(ext)+payload)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(ext)+payload))
	b[6] = next
	b[8], b[23] = 0xfd, 1
	b[24], b[39] = 0xfd, 2
	copy(b[40:], ext)
	return b
}

func TestParse(t *testing.T) {
	var p IP
	b := v4(UDP, 0, 8)
	b = append(b, 0xee, 0xee) // trailing bytes beyond the IP length are not part of it
	if r := Parse(b, &p); r != OK || p.V6 || p.Proto != UDP || len(p.L4()) != 8 || p.Fragmented() {
		t.Fatalf("v4: %v %+v", r, p)
	}
	if p.SrcAddr() != netip.MustParseAddr("100.64.0.1") || p.DstAddr() != netip.MustParseAddr("100.64.0.2") || !p.IPv4HeaderChecksumOK() {
		t.Errorf("v4 addresses/checksum: %v %v", p.SrcAddr(), p.DstAddr())
	}
	b[12] ^= 1
	Parse(b, &p)
	if p.IPv4HeaderChecksumOK() {
		t.Error("bad checksum accepted")
	}
	// Fragments: a first one has a transport header, a later one none; overlap is malformed.
	if Parse(v4(TCP, 0x2000, 20), &p) != OK || !p.MoreFrag || p.L4() == nil {
		t.Errorf("first fragment: %+v", p)
	}
	if Parse(v4(TCP, MinFragOffset, 20), &p) != OK || !p.Later || p.L4() != nil {
		t.Errorf("later fragment: %+v", p)
	}
	if r := Parse(v4(TCP, 1, 20), &p); r != Malformed {
		t.Errorf("overlapping fragment: %v", r)
	}
	// IPv6 with a hop-by-hop header, then UDP.
	if r := Parse(v6(extHopByHop, []byte{UDP, 0, 0, 0, 0, 0, 0, 0}, 8), &p); r != OK || !p.V6 || p.Proto != UDP || len(p.L4()) != 8 {
		t.Errorf("v6 ext: %v %+v", r, p)
	}
	// Nine chained extension headers are too many.
	var ext []byte
	for range 9 {
		ext = append(ext, extDestOpts, 0, 0, 0, 0, 0, 0, 0)
	}
	if r := Parse(v6(extDestOpts, ext, 0), &p); r != Malformed {
		t.Errorf("too many extension headers: %v", r)
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x60, 0, 0}, make([]byte, 40)} {
		if Parse(bad, &p) == OK {
			t.Errorf("accepted % x", bad)
		}
	}
	short := v4(UDP, 0, 8)
	binary.BigEndian.PutUint16(short[2:], 100) // claims more than it has
	if Parse(short, &p) != Malformed {
		t.Error("length beyond the buffer accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(v4(UDP, 0, 8))
	f.Add(v6(extFragment, []byte{TCP, 0, 0, 0, 0, 0, 0, 0}, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p IP
		if Parse(b, &p) != OK {
			return
		}
		// Everything points inside b, and the transport part is inside the IP length.
		src, dst, l4 := p.Src(), p.Dst(), p.L4()
		if len(src) != len(dst) || (len(src) != 4 && len(src) != 16) {
			t.Fatalf("addresses %d/%d bytes", len(src), len(dst))
		}
		if p.Later && l4 != nil {
			t.Fatalf("a later fragment with %d bytes of transport header", len(l4))
		}
		if len(l4) > len(b) {
			t.Fatal("L4 longer than the packet")
		}
		p.SrcAddr()
		p.IPv4HeaderChecksumOK()
	})
}

func BenchmarkParse(b *testing.B) {
	pkt := v4(TCP, 0, 1200)
	var p IP
	b.ReportAllocs()
	for b.Loop() {
		Parse(pkt, &p)
	}
}
