package disco

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"

	"github.com/skeinvpn/skein/daemon/key"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func raw(t testing.TB, s string) key.Raw { return key.Raw(mustHex(t, s)) }

// Vectors produced by tailscale.com@v1.86.5 disco (AppendMarshal, and DiscoShared.Seal
// from a random key A to the fixed key B). The pong vector is also the example in the
// protocol doc, section 6.2.
const (
	vecPrivB       = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	vecPubB        = "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a"
	vecPubA        = "4bb5f87aff7dd34f20cd7245f5e7a34e40e2ab3d1b7edfd38a60422d2a036e45"
	vecPingPlain   = "01000102030405060708090a0b0ca0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	vecPaddedPing  = "0100090000000000000000000000a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf0000000000000000000000000000000000000000"
	vecCMMPlain    = "030000000000000000000000ffff01020304a2a920010db80000000000000000000000010005"
	vecPongPlain   = "020001000000000000000000000000000000000000000000ffff010203040005"
	vecPong6Plain  = "02000102030405060708090a0b0c20010db8000000000000000000000002a2a9"
	vecBindPlain   = "0400000000070000000900000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	vecPingPacket  = "5453f09f92ac4bb5f87aff7dd34f20cd7245f5e7a34e40e2ab3d1b7edfd38a60422d2a036e4541ccd57c59e9f2c7eff0c41f85fb55c20976c5ff6a2ca63fcaf18a21175b311884add48dca732112c6c843de85fd7fcd1f29b3e5423c216b11007bb4a8b2d35b9f5832e192656e37ef96fa31b319bb68b110147b01a7"
	vecCMMPacket   = "5453f09f92ac4bb5f87aff7dd34f20cd7245f5e7a34e40e2ab3d1b7edfd38a60422d2a036e4508aa88a80869a28fc7e8eaed912bf0271b46daf330fad6a770e33d103ac91c779deed81334b78621d04141c006541dd4e4eb17abc9533a1fcddea8ff3001fe4bb6e598a8a3ec06329e920257a5bc"
	vecNodeKeyBase = 0xa0
)

func vecNodeKey() key.NodePublic {
	var r key.Raw
	for i := range r {
		r[i] = byte(vecNodeKeyBase + i)
	}
	return key.NodePublicFromRaw(r)
}

var seqTx = [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// vecShared is B's view of the A–B key. key.DiscoPrivate cannot be built from raw bytes
// outside package key, so box.Precompute is called directly.
func vecShared(t testing.TB) *SharedKey {
	pubA, privB := [32]byte(raw(t, vecPubA)), [32]byte(raw(t, vecPrivB))
	s := new(SharedKey)
	box.Precompute(&s.k, &pubA, &privB)
	return s
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestPlainVectors(t *testing.T) {
	bind := make([]byte, 72)
	bind[3], bind[7] = 7, 9 // VNI 7, generation 9
	for _, tc := range []struct {
		name string
		hex  string
		m    Message
	}{
		{"ping", vecPingPlain, &Ping{TxID: seqTx, NodeKey: vecNodeKey()}},
		{"padded ping", vecPaddedPing, &Ping{TxID: [12]byte{9}, NodeKey: vecNodeKey(), Padding: 20}},
		{"pong doc example", vecPongPlain, &Pong{TxID: [12]byte{1}, Src: ap("1.2.3.4:5")}},
		{"pong ipv6", vecPong6Plain, &Pong{TxID: seqTx, Src: ap("[2001:db8::2]:41641")}},
		{"call-me-maybe", vecCMMPlain, &CallMeMaybe{MyNumber: []netip.AddrPort{ap("1.2.3.4:41641"), ap("[2001:db8::1]:5")}}},
		{"bind relay", vecBindPlain, &RelayMessage{Kind: TypeBindUDPRelayEndpoint, Body: bind}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustHex(t, tc.hex)
			got, err := Parse(b)
			if err != nil || !reflect.DeepEqual(got, tc.m) {
				t.Fatalf("Parse = %#v, %v; want %#v", got, err, tc.m)
			}
			if enc := AppendMarshal(nil, tc.m); !bytes.Equal(enc, b) {
				t.Fatalf("AppendMarshal:\n got %x\nwant %x", enc, b)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	nk := key.NewNode().Public()
	msgs := []Message{
		&Ping{TxID: seqTx, NodeKey: nk},
		&Ping{TxID: seqTx},
		&Ping{TxID: seqTx, NodeKey: nk, Padding: 1},
		&Ping{TxID: seqTx, NodeKey: nk, Padding: 1400},
		&Pong{TxID: seqTx, Src: ap("100.64.0.1:41641")},
		&Pong{TxID: seqTx, Src: ap("[fd7a:115c:a1e0::1]:65535")},
		&Pong{Src: ap("127.3.3.40:999")},
		&CallMeMaybe{},
		&CallMeMaybe{MyNumber: []netip.AddrPort{ap("192.0.2.1:1")}},
		&CallMeMaybe{MyNumber: []netip.AddrPort{ap("[2001:db8::7]:41641")}},
		&CallMeMaybe{MyNumber: []netip.AddrPort{ap("192.0.2.1:1"), ap("[2001:db8::7]:41641"), ap("10.0.0.2:0")}},
	}
	for typ := TypeBindUDPRelayEndpoint; typ <= TypeAllocateUDPRelayEndpointResponse; typ++ {
		msgs = append(msgs, &RelayMessage{Kind: typ, Body: []byte{1, 2, 3}})
	}
	msgs = append(msgs, &RelayMessage{Kind: TypeCallMeMaybeVia, Version: 1})
	for _, m := range msgs {
		b := AppendMarshal([]byte("prefix"), m)
		if string(b[:6]) != "prefix" || MessageType(b[6]) != m.Type() {
			t.Fatalf("%#v: bad header %x", m, b)
		}
		got, err := Parse(b[6:])
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("round trip %#v: got %#v, %v", m, got, err)
		}
	}
}

func TestPingSize(t *testing.T) {
	p := &Ping{NodeKey: key.NewNode().Public()}
	if n := len(AppendMarshal(nil, p)); n != MessageHeaderLen+PingLen {
		t.Fatalf("ping plaintext %d bytes", n)
	}
	a, b := key.NewDisco(), key.NewDisco()
	pkt := Seal(nil, a.Public(), Precompute(b.Public(), a), p)
	if len(pkt) != PingPacketLen || PingPacketLen != 124 {
		t.Fatalf("ping packet %d bytes, PingPacketLen %d", len(pkt), PingPacketLen)
	}
	p.Padding = 1280 - PingPacketLen
	if n := len(Seal(nil, a.Public(), Precompute(b.Public(), a), p)); n != 1280 {
		t.Fatalf("padded ping packet %d bytes", n)
	}
}

func TestParseLax(t *testing.T) {
	nk := vecNodeKey()
	nkRaw := nk.Raw()
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		b    []byte
		want Message
	}{
		{"ping without key", cat([]byte{1, 0}, seqTx[:]), &Ping{TxID: seqTx}},
		{"ping short of a key is padding", cat([]byte{1, 0}, seqTx[:], make([]byte, 31)), &Ping{TxID: seqTx, Padding: 31}},
		{"ping nonzero padding", cat([]byte{1, 0}, seqTx[:], nkRaw[:], []byte{0xff, 0xee}), &Ping{TxID: seqTx, NodeKey: nk, Padding: 2}},
		{"ping future version", cat([]byte{1, 7}, seqTx[:], nkRaw[:]), &Ping{TxID: seqTx, NodeKey: nk}},
		{"pong trailing bytes", cat(mustHex(t, vecPongPlain), []byte{9, 9, 9}), &Pong{TxID: [12]byte{1}, Src: ap("1.2.3.4:5")}},
		{"pong raw ipv4 in v6 field", cat([]byte{2, 0}, seqTx[:], netip.MustParseAddr("::1.2.3.4").AsSlice(), []byte{0, 80}), &Pong{TxID: seqTx, Src: ap("[::102:304]:80")}},
		{"call-me-maybe empty", []byte{3, 0}, &CallMeMaybe{}},
		{"call-me-maybe version 1", cat([]byte{3, 1}, mustHex(t, vecCMMPlain)[2:]), &CallMeMaybe{}},
		{"call-me-maybe ragged", cat(mustHex(t, vecCMMPlain), []byte{0}), &CallMeMaybe{}},
		{"relay short body", []byte{byte(TypeBindUDPRelayEndpointAnswer), 0, 1}, &RelayMessage{Kind: TypeBindUDPRelayEndpointAnswer, Body: []byte{1}}},
	}
	for _, tc := range tests {
		got, err := Parse(tc.b)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Parse(%x) = %#v, %v; want %#v", tc.name, tc.b, got, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		err  error
	}{
		{"nil", nil, ErrShort},
		{"type only", []byte{1}, ErrShort},
		{"ping short txid", append([]byte{1, 0}, make([]byte, 11)...), ErrShort},
		{"pong short", mustHex(t, vecPongPlain)[:31], ErrShort},
		{"pong header only", []byte{2, 0}, ErrShort},
		{"type 0", []byte{0, 0, 1, 2, 3}, ErrUnknownType},
		{"type 0x0a", []byte{0x0a, 0}, ErrUnknownType},
		{"type 0xff", append([]byte{0xff, 0}, make([]byte, 100)...), ErrUnknownType},
	} {
		m, err := Parse(tc.b)
		if !errors.Is(err, tc.err) || m != nil {
			t.Errorf("%s: Parse = %#v, %v; want %v", tc.name, m, err, tc.err)
		}
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	b := []byte{byte(TypeCallMeMaybeVia), 0, 1, 2, 3}
	m, _ := Parse(b)
	b[2] = 9
	if m.(*RelayMessage).Body[0] != 1 {
		t.Fatal("RelayMessage.Body aliases its input")
	}
}

func TestSealOpen(t *testing.T) {
	a, b := key.NewDisco(), key.NewDisco()
	ab := Precompute(b.Public(), a) // a's view
	ba := Precompute(a.Public(), b) // b's view
	if ab == nil || ba == nil || *ab != *ba {
		t.Fatal("Precompute not symmetric")
	}
	privA := [32]byte(a.Raw())
	var want [32]byte
	pubB := [32]byte(b.Public().Raw())
	box.Precompute(&want, &pubB, &privA)
	if ab.k != want {
		t.Fatal("Precompute differs from box.Precompute")
	}

	msgs := []Message{
		&Ping{TxID: seqTx, NodeKey: key.NewNode().Public(), Padding: 100},
		&Pong{TxID: seqTx, Src: ap("[2001:db8::1]:41641")},
		&CallMeMaybe{MyNumber: []netip.AddrPort{ap("198.51.100.1:41641"), ap("[2001:db8::9]:41641")}},
		&CallMeMaybe{},
	}
	for _, m := range msgs {
		pkt := Seal([]byte("dst"), a.Public(), ab, m)
		if string(pkt[:3]) != "dst" {
			t.Fatal("Seal dropped dst")
		}
		pkt = pkt[3:]
		if !LooksLikeDisco(pkt) {
			t.Fatal("sealed packet does not look like disco")
		}
		if want := HeaderLen + Overhead + len(AppendMarshal(nil, m)); len(pkt) != want {
			t.Fatalf("packet %d bytes, want %d", len(pkt), want)
		}
		src, ok := Source(pkt)
		if !ok || src != a.Public() {
			t.Fatalf("Source = %v, %v", src, ok)
		}
		got, err := Open(pkt, ba)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("Open = %#v, %v; want %#v", got, err, m)
		}
	}
	p1 := Seal(nil, a.Public(), ab, msgs[1])
	p2 := Seal(nil, a.Public(), ab, msgs[1])
	if bytes.Equal(p1[MagicLen+KeyLen:HeaderLen], p2[MagicLen+KeyLen:HeaderLen]) {
		t.Fatal("nonce reused")
	}
}

func TestOpenRejects(t *testing.T) {
	a, b, c := key.NewDisco(), key.NewDisco(), key.NewDisco()
	ab, ba := Precompute(b.Public(), a), Precompute(a.Public(), b)
	pkt := Seal(nil, a.Public(), ab, &Ping{TxID: seqTx, NodeKey: key.NewNode().Public()})

	// Every bit of the nonce, tag and ciphertext is authenticated.
	for i := MagicLen + KeyLen; i < len(pkt); i++ {
		bad := bytes.Clone(pkt)
		bad[i] ^= 0x01
		if m, err := Open(bad, ba); err != ErrDecrypt || m != nil {
			t.Fatalf("byte %d flipped: %#v, %v", i, m, err)
		}
	}
	bad := bytes.Clone(pkt)
	bad[0] = 'X'
	if _, err := Open(bad, ba); err != ErrNotDisco {
		t.Fatalf("bad magic: %v", err)
	}
	// Wrong key: c (a third party) and a key for the wrong pair.
	for _, k := range []*SharedKey{Precompute(a.Public(), c), Precompute(c.Public(), b), nil} {
		if m, err := Open(pkt, k); err != ErrDecrypt || m != nil {
			t.Fatalf("wrong key opened: %#v, %v", m, err)
		}
	}
	// Extra or missing bytes break the tag too.
	if _, err := Open(append(bytes.Clone(pkt), 0), ba); err != ErrDecrypt {
		t.Fatalf("appended byte: %v", err)
	}
	for n := range len(pkt) {
		if m, err := Open(pkt[:n], ba); err == nil || m != nil {
			t.Fatalf("prefix %d opened", n)
		}
	}
}

func TestOpenUnknownTypeInValidBox(t *testing.T) {
	a, b := key.NewDisco(), key.NewDisco()
	m := &RelayMessage{Kind: 0x42, Body: []byte("future")}
	_, err := Open(Seal(nil, a.Public(), Precompute(b.Public(), a), m), Precompute(a.Public(), b))
	if !errors.Is(err, ErrUnknownType) {
		t.Fatalf("err = %v", err)
	}
	// Box holding less than a message header.
	var nonce [24]byte
	pkt := append([]byte(Magic), make([]byte, KeyLen+NonceLen)...)
	pkt = box.SealAfterPrecomputation(pkt, []byte{1}, &nonce, &Precompute(b.Public(), a).k)
	if _, err := Open(pkt, Precompute(a.Public(), b)); err != ErrShort {
		t.Fatalf("1-byte plaintext: %v", err)
	}
}

func TestPacketVectors(t *testing.T) {
	s := vecShared(t)
	for _, tc := range []struct {
		hex string
		m   Message
	}{
		{vecPingPacket, &Ping{TxID: seqTx, NodeKey: vecNodeKey()}},
		{vecCMMPacket, &CallMeMaybe{MyNumber: []netip.AddrPort{ap("1.2.3.4:41641"), ap("[2001:db8::1]:5")}}},
	} {
		pkt := mustHex(t, tc.hex)
		src, ok := Source(pkt)
		if !ok || src != key.DiscoPublicFromRaw(raw(t, vecPubA)) {
			t.Fatalf("Source = %v, %v", src, ok)
		}
		m, err := Open(pkt, s)
		if err != nil || !reflect.DeepEqual(m, tc.m) {
			t.Fatalf("Open = %#v, %v; want %#v", m, err, tc.m)
		}
	}
	if n := len(mustHex(t, vecPingPacket)); n != PingPacketLen {
		t.Fatalf("Tailscale ping packet is %d bytes, PingPacketLen %d", n, PingPacketLen)
	}
	// B's public key must match its private key, or the vector proves nothing about Precompute.
	if got := publicOf(raw(t, vecPrivB)); got != raw(t, vecPubB) {
		t.Fatalf("pubB %x", got)
	}
}

func publicOf(priv key.Raw) key.Raw {
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		panic(err)
	}
	return key.Raw(pub)
}

func TestPrecomputeLowOrder(t *testing.T) {
	a := key.NewDisco()
	// Zero and other small-order points give a constant key; refuse them.
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	} {
		if s := Precompute(key.DiscoPublicFromRaw(raw(t, h)), a); s != nil {
			t.Errorf("Precompute(%s) = %x, want nil", h, s.k)
		}
	}
	if got := Seal([]byte("x"), a.Public(), nil, &Ping{}); string(got) != "x" {
		t.Fatalf("Seal with nil key = %q", got)
	}
}

func TestLooksLikeDisco(t *testing.T) {
	good := append([]byte(Magic), make([]byte, HeaderLen-MagicLen)...)
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"header", good, true},
		{"one short", good[:HeaderLen-1], false},
		{"nil", nil, false},
		{"magic only", []byte(Magic), false},
		{"wrong magic", append([]byte("TS\xf0\x9f\x92\xad"), good[MagicLen:]...), false},
		{"wireguard", append([]byte{4, 0, 0, 0}, make([]byte, 100)...), false},
		{"stun", append([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 100)...), false},
	} {
		if got := LooksLikeDisco(tc.b); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
		if _, ok := Source(tc.b); ok != tc.want {
			t.Errorf("%s: Source ok=%v", tc.name, ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { LooksLikeDisco(good) }); n != 0 {
		t.Fatalf("LooksLikeDisco allocates %v", n)
	}
	if n := testing.AllocsPerRun(100, func() { Source(good) }); n != 0 {
		t.Fatalf("Source allocates %v", n)
	}
}
