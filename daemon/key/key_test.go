package key

import "testing"

// Points of small order on Curve25519 (as the kernel WireGuard selftest lists them) are
// recognised; real keys are not.
func TestLowOrder(t *testing.T) {
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		var k NodePublic
		if err := k.UnmarshalText([]byte("nodekey:" + h)); err != nil {
			t.Fatal(err)
		}
		if !k.LowOrder() {
			t.Errorf("%s not recognised as low-order", h)
		}
	}
	for range 100 {
		if NewNode().Public().LowOrder() {
			t.Fatal("a real key taken for low-order")
		}
	}
}
