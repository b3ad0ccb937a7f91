package stun

import (
	"encoding/hex"
	"net/netip"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	for _, h := range []string{tsRequestHex, tsResponse4Hex, tsResponse6Hex} {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Add(Response(seqTxID, netip.MustParseAddrPort("[::ffff:10.0.0.1]:1")))
	f.Add(withFingerprint(msg(typeBindingSuccess, seqTxID, attr(attrMappedAddress, mapped(1, 80, 192, 0, 2, 1)))))
	f.Add([]byte{})
	f.Add(make([]byte, HeaderLen))
}

func FuzzParseResponse(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		isSTUN := Is(b)
		tx, addr, err := ParseResponse(b)
		if err != nil {
			return
		}
		if !isSTUN || !addr.IsValid() || addr.Addr().Is4In6() {
			t.Fatalf("accepted %x: Is=%v addr=%v", b, isSTUN, addr)
		}
		// What we parse, our server encodes back to the same answer.
		tx2, addr2, err := ParseResponse(Response(tx, addr))
		if err != nil || tx2 != tx || addr2 != addr {
			t.Fatalf("round trip of %v: %v %v %v", addr, tx2, addr2, err)
		}
	})
}

func FuzzParseBindingRequest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := ParseBindingRequest(b)
		if err != nil {
			return
		}
		if !Is(b) {
			t.Fatalf("accepted non-STUN %x", b)
		}
		if tx2, err := ParseBindingRequest(Request(tx)); err != nil || tx2 != tx {
			t.Fatalf("round trip: %x %v", tx2, err)
		}
	})
}
