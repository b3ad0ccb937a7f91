package disco

import (
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/skeinvpn/skein/daemon/key"
)

func FuzzParse(f *testing.F) {
	for _, h := range []string{vecPingPlain, vecPaddedPing, vecPongPlain, vecPong6Plain, vecCMMPlain, vecBindPlain} {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{3, 0})
	f.Add([]byte{0x0a, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if m != nil {
				t.Fatal("message with error")
			}
			return
		}
		if p, ok := m.(*Ping); ok && p.Padding < 0 {
			t.Fatalf("negative padding %d", p.Padding)
		}
		// Re-encoding what we parsed must parse to the same message.
		m2, err := Parse(AppendMarshal(nil, m))
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip of %x: %#v -> %#v, %v", b, m, m2, err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	shared := vecShared(f)
	for _, h := range []string{vecPingPacket, vecCMMPacket} {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Add([]byte(Magic))
	f.Add(make([]byte, MinPacketLen))
	self := key.DiscoPublicFromRaw(raw(f, vecPubA))
	f.Add(Seal(nil, self, shared, &Pong{TxID: seqTx, Src: ap("[2001:db8::1]:41641")}))
	f.Add(Seal(nil, self, shared, &RelayMessage{Kind: TypeCallMeMaybeVia, Body: make([]byte, 190)}))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		m, err := Open(pkt, shared)
		if err != nil {
			if m != nil {
				t.Fatal("message with error")
			}
			return
		}
		if !LooksLikeDisco(pkt) {
			t.Fatal("opened a packet without the disco header")
		}
		src, _ := Source(pkt)
		m2, err := Open(Seal(nil, src, shared, m), shared)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("reseal of %#v: %#v, %v", m, m2, err)
		}
	})
}
