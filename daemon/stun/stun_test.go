package stun

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"net/netip"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var seqTxID = TxID{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}

// Produced by tailscale.com@v1.86.5 net/stun (Request, Response) with TxID 00..0b.
const (
	tsRequestHex   = "000100142112a442000102030405060708090a0b802200087461696c6e6f6465802800048aabad90"
	tsResponse4Hex = "0101000c2112a442000102030405060708090a0b00200008000183bb2010a746"
	tsResponse6Hex = "010100182112a442000102030405060708090a0b00200014000283bb0113a9fa000102030405060708090a0a"
)

func TestRequestVector(t *testing.T) {
	got := Request(seqTxID)
	want := mustHex(t, tsRequestHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("Request:\n got %x\nwant %x", got, want)
	}
	if len(got) != RequestLen || RequestLen != 40 {
		t.Fatalf("len %d, RequestLen %d", len(got), RequestLen)
	}
	// Cross-check the fingerprint against the RFC 5389 definition directly.
	fp := crc32.ChecksumIEEE(got[:32]) ^ 0x5354554e
	if binary.BigEndian.Uint32(got[36:]) != fp || !bytes.Equal(got[32:36], []byte{0x80, 0x28, 0, 4}) {
		t.Fatalf("fingerprint attribute %x, want crc %08x", got[32:], fp)
	}
	if !Is(got) {
		t.Fatal("Is(Request) = false")
	}
}

func TestAppendRequest(t *testing.T) {
	prefix := []byte("xyz")
	got := AppendRequest(prefix, seqTxID)
	if string(got[:3]) != "xyz" || !bytes.Equal(got[3:], mustHex(t, tsRequestHex)) {
		t.Fatalf("AppendRequest = %x", got)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for range 20 {
		tx := NewTxID()
		got, err := ParseBindingRequest(Request(tx))
		if err != nil || got != tx {
			t.Fatalf("ParseBindingRequest = %x, %v; want %x", got, err, tx)
		}
	}
	if NewTxID() == NewTxID() {
		t.Fatal("NewTxID repeats")
	}
}

func TestResponseVectors(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		addr string
	}{
		{tsResponse4Hex, "1.2.3.4:41641"},
		{tsResponse6Hex, "[2001:db8::1]:41641"},
	} {
		ap := netip.MustParseAddrPort(tc.addr)
		want := mustHex(t, tc.hex)
		if got := Response(seqTxID, ap); !bytes.Equal(got, want) {
			t.Errorf("Response(%v):\n got %x\nwant %x", ap, got, want)
		}
		tx, got, err := ParseResponse(want)
		if err != nil || tx != seqTxID || got != ap {
			t.Errorf("ParseResponse(%s) = %x, %v, %v", tc.hex, tx, got, err)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, s := range []string{
		"0.0.0.0:0", "1.2.3.4:41641", "255.255.255.255:65535", "100.64.0.1:3478",
		"[::]:1", "[2001:db8::1]:41641", "[fe80::1%eth0]:5", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
	} {
		ap := netip.MustParseAddrPort(s)
		tx := NewTxID()
		b := Response(tx, ap)
		if !Is(b) {
			t.Fatalf("Is(Response(%v)) = false", ap)
		}
		gotTx, got, err := ParseResponse(b)
		want := netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port())
		if err != nil || gotTx != tx || got != want {
			t.Errorf("%v: got %x %v %v", ap, gotTx, got, err)
		}
	}
	// A dual-stack server sees IPv4 clients as mapped addresses; the reply says IPv4.
	b := Response(seqTxID, netip.MustParseAddrPort("[::ffff:1.2.3.4]:41641"))
	if !bytes.Equal(b, mustHex(t, tsResponse4Hex)) {
		t.Errorf("mapped address response %x", b)
	}
	if Response(seqTxID, netip.AddrPort{}) != nil {
		t.Error("Response with invalid address is not nil")
	}
}

// attr encodes one attribute with padding.
func attr(typ uint16, val []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(val)))
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// msg builds a message of type typ with the given attributes and a correct length.
func msg(typ uint16, tx TxID, attrs ...[]byte) []byte {
	body := bytes.Join(attrs, nil)
	return append(appendHeader(nil, typ, len(body), tx), body...)
}

// withFingerprint appends a correct FINGERPRINT, fixing the header length first.
func withFingerprint(m []byte) []byte {
	m = bytes.Clone(m)
	binary.BigEndian.PutUint16(m[2:], uint16(len(m)-HeaderLen+fingerprintAttrLen))
	return append(m, attr(attrFingerprint, binary.BigEndian.AppendUint32(nil, fingerprint(m)))...)
}

func mapped(fam byte, port uint16, ip ...byte) []byte {
	return append([]byte{0, fam, byte(port >> 8), byte(port)}, ip...)
}

func ipBytes(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func TestParseResponse(t *testing.T) {
	tx := seqTxID
	xor4 := attr(attrXorMappedAddress, mustHex(t, "000183bb2010a746"))                         // 1.2.3.4:41641
	xor6 := attr(attrXorMappedAddress, mustHex(t, "000283bb0113a9fa000102030405060708090a0a")) // [2001:db8::1]:41641
	plain4 := attr(attrMappedAddress, mapped(1, 1000, 5, 6, 7, 8))
	plain6 := attr(attrMappedAddress, mapped(2, 1001, ipBytes("2001:db8::100")...))
	a4 := netip.MustParseAddrPort("1.2.3.4:41641")
	a6 := netip.MustParseAddrPort("[2001:db8::1]:41641")
	good := msg(typeBindingSuccess, tx, xor4)

	wrongCookie := bytes.Clone(good)
	wrongCookie[7] ^= 1
	badLen := bytes.Clone(good)
	binary.BigEndian.PutUint16(badLen[2:], 16) // claims more than present
	badFP := withFingerprint(good)
	badFP[len(badFP)-1] ^= 1

	tests := []struct {
		name string
		b    []byte
		want netip.AddrPort
		err  error
	}{
		{"xor ipv4", good, a4, nil},
		{"xor ipv6", msg(typeBindingSuccess, tx, xor6), a6, nil},
		{"xor alt type", msg(typeBindingSuccess, tx, attr(attrXorMappedAddressAlt, mustHex(t, "000183bb2010a746"))), a4, nil},
		{"mapped ipv4 fallback", msg(typeBindingSuccess, tx, plain4), netip.MustParseAddrPort("5.6.7.8:1000"), nil},
		{"mapped ipv6 fallback", msg(typeBindingSuccess, tx, plain6), netip.MustParseAddrPort("[2001:db8::100]:1001"), nil},
		{"xor preferred after mapped", msg(typeBindingSuccess, tx, plain4, xor4), a4, nil},
		{"xor preferred before mapped", msg(typeBindingSuccess, tx, xor6, plain4), a6, nil},
		{"first xor wins", msg(typeBindingSuccess, tx, xor4, xor6), a4, nil},
		{"unknown attrs skipped", msg(typeBindingSuccess, tx, attr(0x8022, []byte("abcde")), attr(0x0006, nil), xor4), a4, nil},
		{"mapped v4-in-v6 unmapped", msg(typeBindingSuccess, tx, attr(attrMappedAddress, mapped(2, 7, ipBytes("::ffff:9.9.9.9")...))), netip.MustParseAddrPort("9.9.9.9:7"), nil},
		{"longer address value tolerated", msg(typeBindingSuccess, tx, attr(attrMappedAddress, mapped(1, 1000, 5, 6, 7, 8, 0, 0, 0, 0))), netip.MustParseAddrPort("5.6.7.8:1000"), nil},
		{"trailing datagram bytes ignored", append(bytes.Clone(good), 1, 2, 3), a4, nil},
		{"fingerprint valid", withFingerprint(good), a4, nil},

		{"empty", nil, netip.AddrPort{}, ErrNotSTUN},
		{"short header", good[:19], netip.AddrPort{}, ErrNotSTUN},
		{"truncated body", good[:len(good)-1], netip.AddrPort{}, ErrNotSTUN},
		{"length past end", badLen, netip.AddrPort{}, ErrNotSTUN},
		{"wrong cookie", wrongCookie, netip.AddrPort{}, ErrNotSTUN},
		{"request not response", Request(tx), netip.AddrPort{}, ErrNotSuccessResponse},
		{"error response", msg(0x0111, tx, xor4), netip.AddrPort{}, ErrNotSuccessResponse},
		{"no address", msg(typeBindingSuccess, tx), netip.AddrPort{}, ErrNoAddress},
		{"only unknown attrs", msg(typeBindingSuccess, tx, attr(0x8022, []byte("x"))), netip.AddrPort{}, ErrNoAddress},
		{"attr length past message", msg(typeBindingSuccess, tx, []byte{0, 0x20, 0, 12, 0, 1, 0x83, 0xbb, 0x20, 0x10, 0xa7, 0x46}), netip.AddrPort{}, ErrMalformedAttrs},
		{"attr value missing", msg(typeBindingSuccess, tx, xor4, []byte{0x80, 0x22, 0, 8}), netip.AddrPort{}, ErrMalformedAttrs},
		{"empty mapped address", msg(typeBindingSuccess, tx, attr(attrMappedAddress, nil)), netip.AddrPort{}, ErrMalformedAttrs},
		{"xor address too short v4", msg(typeBindingSuccess, tx, attr(attrXorMappedAddress, mustHex(t, "000183bb2010a7"))), netip.AddrPort{}, ErrMalformedAttrs},
		{"xor address too short v6", msg(typeBindingSuccess, tx, attr(attrXorMappedAddress, mustHex(t, "000283bb2010a746"))), netip.AddrPort{}, ErrMalformedAttrs},
		{"xor address no port", msg(typeBindingSuccess, tx, attr(attrXorMappedAddress, []byte{0, 1})), netip.AddrPort{}, ErrMalformedAttrs},
		{"unknown family", msg(typeBindingSuccess, tx, attr(attrXorMappedAddress, mustHex(t, "000383bb2010a746"))), netip.AddrPort{}, ErrMalformedAttrs},
		{"mapped unknown family", msg(typeBindingSuccess, tx, attr(attrMappedAddress, mapped(0, 1, 1, 2, 3, 4))), netip.AddrPort{}, ErrMalformedAttrs},
		{"fingerprint wrong", badFP, netip.AddrPort{}, ErrWrongFingerprint},
		{"fingerprint not last", msg(typeBindingSuccess, tx, withFingerprint(good)[HeaderLen:], attr(0x8022, []byte("abcd"))), netip.AddrPort{}, ErrWrongFingerprint},
		{"fingerprint short", msg(typeBindingSuccess, tx, xor4, attr(attrFingerprint, []byte{1, 2})), netip.AddrPort{}, ErrWrongFingerprint},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gotTx, got, err := ParseResponse(tc.b)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("ParseResponse(%x) = %v, %v; want %v, %v", tc.b, got, err, tc.want, tc.err)
			}
			if err == nil && gotTx != tx {
				t.Fatalf("txid %x", gotTx)
			}
		})
	}
}

func TestParseResponseTxIDOnError(t *testing.T) {
	tx := NewTxID()
	gotTx, _, err := ParseResponse(msg(0x0111, tx))
	if err != ErrNotSuccessResponse || gotTx != tx {
		t.Fatalf("got %x, %v", gotTx, err)
	}
}

func TestParseResponseTruncated(t *testing.T) {
	full := withFingerprint(msg(typeBindingSuccess, seqTxID, mustHex(t, tsResponse6Hex)[HeaderLen:]))
	if _, _, err := ParseResponse(full); err != nil {
		t.Fatal(err)
	}
	for n := range len(full) {
		if _, _, err := ParseResponse(full[:n]); err == nil {
			t.Errorf("prefix %d parsed", n)
		}
	}
}

func TestParseBindingRequest(t *testing.T) {
	tx := seqTxID
	sw := attr(attrSoftware, []byte(software))
	good := Request(tx)
	badFP := bytes.Clone(good)
	badFP[len(badFP)-1] ^= 1
	tests := []struct {
		name string
		b    []byte
		err  error
	}{
		{"ok", good, nil},
		{"ok trailing bytes", append(bytes.Clone(good), 0, 0, 0, 0), nil},
		{"ok extra attrs", withFingerprint(msg(typeBindingRequest, tx, attr(0x0006, []byte("user")), sw)), nil},
		{"not stun", []byte("hello, this is not a STUN packet"), ErrNotSTUN},
		{"truncated", good[:len(good)-1], ErrNotSTUN},
		{"response", mustHex(t, tsResponse4Hex), ErrNotBindingRequest},
		{"indication", withFingerprint(msg(0x0011, tx, sw)), ErrNotBindingRequest},
		{"no software", withFingerprint(msg(typeBindingRequest, tx)), ErrWrongSoftware},
		{"other software", withFingerprint(msg(typeBindingRequest, tx, attr(attrSoftware, []byte("tailnod")))), ErrWrongSoftware},
		{"no fingerprint", msg(typeBindingRequest, tx, sw), ErrNoFingerprint},
		{"bad fingerprint", badFP, ErrWrongFingerprint},
		{"fingerprint not last", msg(typeBindingRequest, tx, good[HeaderLen:], attr(0x0006, []byte("u"))), ErrWrongFingerprint},
		{"bad attr length", msg(typeBindingRequest, tx, []byte{0x80, 0x22, 0, 9, 't', 'a', 'i', 'l', 'n', 'o', 'd', 'e'}), ErrMalformedAttrs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBindingRequest(tc.b)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && got != tx {
				t.Fatalf("txid %x", got)
			}
		})
	}
}

func TestIs(t *testing.T) {
	cookie := []byte{0x21, 0x12, 0xa4, 0x42}
	wg := func(typ byte) []byte {
		b := make([]byte, 148)
		b[0] = typ
		copy(b[4:], cookie) // the sender index happens to equal the cookie
		return b
	}
	discoPkt := append([]byte("TS\xf0\x9f\x92\xac"), make([]byte, 80)...)
	oddLen := mustHex(t, tsResponse4Hex)
	oddLen[3] = 0x0b
	other := mustHex(t, tsResponse4Hex)
	other[1] = 0x03 // Allocate (TURN), not Binding
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"request", Request(seqTxID), true},
		{"success", mustHex(t, tsResponse4Hex), true},
		{"error response", msg(0x0111, seqTxID), true},
		{"indication", msg(0x0011, seqTxID), true},
		{"header only", msg(typeBindingRequest, seqTxID), true},
		{"nil", nil, false},
		{"19 bytes", Request(seqTxID)[:19], false},
		{"declared body missing", Request(seqTxID)[:39], false},
		{"length not multiple of 4", oddLen, false},
		{"non-binding method", other, false},
		{"wireguard 1", wg(1), false},
		{"wireguard 2", wg(2), false},
		{"wireguard 3", wg(3), false},
		{"wireguard 4", wg(4), false},
		{"disco", discoPkt, false},
	} {
		if got := Is(tc.b); got != tc.want {
			t.Errorf("%s: Is = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIsNoAlloc(t *testing.T) {
	b := Request(seqTxID)
	if n := testing.AllocsPerRun(100, func() { Is(b) }); n != 0 {
		t.Fatalf("Is allocates %v times", n)
	}
}

func BenchmarkIs(b *testing.B) {
	p := make([]byte, 1400)
	p[0] = 4
	for b.Loop() {
		Is(p)
	}
}
