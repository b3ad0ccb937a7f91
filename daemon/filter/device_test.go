package filter

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/skeinvpn/skein/daemon/wire"
)

// TestWireGuardDevices runs the filter inside a real wireguard-go device: node A (self4,
// filtered) and peer B (100.64.0.2) talk over an in-memory bind.
func TestWireGuardDevices(t *testing.T) {
	keyA, _ := ecdh.X25519().GenerateKey(rand.Reader)
	keyB, _ := ecdh.X25519().GenerateKey(rand.Reader)
	binds := bindtest.NewChannelBinds()
	tunA, tunB := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()

	rules := []wire.FilterRule{{SrcIPs: []string{"100.64.0.2"}, DstPorts: []wire.NetPortRange{dst(self4, 22, 22)}}}
	e := newTestEngine(t, rules, pfxs(self4+"/32"))
	quiet := device.NewLogger(device.LogLevelError, "")
	devA := device.NewDevice(Wrap(tunA.TUN(), e), binds[0], quiet)
	devB := device.NewDevice(tunB.TUN(), binds[1], quiet)
	t.Cleanup(devA.Close)
	t.Cleanup(devB.Close)

	cfg := func(d *device.Device, priv, peer *ecdh.PrivateKey, allowed string) {
		t.Helper()
		s := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nallowed_ip=%s\n",
			hex.EncodeToString(priv.Bytes()), hex.EncodeToString(peer.PublicKey().Bytes()), allowed)
		if err := d.IpcSet(s); err != nil {
			t.Fatal(err)
		}
		if err := d.Up(); err != nil {
			t.Fatal(err)
		}
	}
	cfg(devA, keyA, keyB, "100.64.0.2/32")
	cfg(devB, keyB, keyA, self4+"/32")
	// bindtest's two binds listen on fixed ports; each device reaches the other's.
	for _, x := range []struct {
		d    *device.Device
		peer *ecdh.PrivateKey
		port int
	}{{devA, keyB, portOf(t, devB)}, {devB, keyA, portOf(t, devA)}} {
		if err := x.d.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\n", hex.EncodeToString(x.peer.PublicKey().Bytes()), x.port)); err != nil {
			t.Fatal(err)
		}
	}

	// arrives sends p from B and reports whether the filter let it reach A's TUN. The filter's
	// counters say when A has judged it, so no timeout decides the answer.
	judged := func() uint64 { st := e.Stats(); return st.Accepted + st.Dropped }
	arrives := func(p []byte) bool {
		t.Helper()
		before, acc := judged(), e.Stats().Accepted
		tunB.Outbound <- p
		deadline := time.Now().Add(10 * time.Second)
		for judged() == before {
			if time.Now().After(deadline) {
				t.Fatalf("A never judged %x", p)
			}
			time.Sleep(time.Millisecond)
		}
		if e.Stats().Accepted == acc {
			return false
		}
		select {
		case got := <-tunA.Inbound:
			if !bytes.Equal(got, p) {
				t.Fatalf("A received %x, want %x", got, p)
			}
			return true
		case <-time.After(10 * time.Second):
			t.Fatal("accepted packet never reached the TUN")
			return false
		}
	}
	// The first packet also runs the handshake.
	if !arrives(pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))) {
		t.Error("allowed SYN dropped")
	}
	if arrives(pkt("100.64.0.2", self4, tcpSeg(1, 23, fSYN))) {
		t.Error("SYN to a closed port arrived")
	}
	if !arrives(pkt("100.64.0.2", self4, tcpSeg(23, 1, fSYN|fACK))) {
		t.Error("SYN-ACK dropped")
	}
	if arrives(pkt("100.64.0.2", self4, udpDgram(53, 4000))) {
		t.Error("unsolicited UDP arrived")
	}
	// A queries B; B's answer passes.
	tunA.Outbound <- pkt(self4, "100.64.0.2", udpDgram(4000, 53))
	select {
	case <-tunB.Inbound:
	case <-time.After(10 * time.Second):
		t.Fatal("query never reached B")
	}
	if !arrives(pkt("100.64.0.2", self4, udpDgram(53, 4000))) {
		t.Error("UDP answer dropped")
	}
	st := e.Stats()
	if st.Accepted != 3 || st.Dropped != 2 || st.DroppedBy["no rule"] != 2 {
		t.Errorf("stats %+v", st)
	}
}

// portOf reads a device's listen port over UAPI.
func portOf(t *testing.T, d *device.Device) int {
	t.Helper()
	s, err := d.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	var port int
	for _, line := range bytes.Split([]byte(s), []byte("\n")) {
		if _, err := fmt.Sscanf(string(line), "listen_port=%d", &port); err == nil {
			return port
		}
	}
	t.Fatalf("no listen_port in %q", s)
	return 0
}
