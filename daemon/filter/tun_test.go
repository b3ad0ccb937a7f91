package filter

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// fakeTUN is a tun.Device whose Read hands out queued packets and whose Write records them.
type fakeTUN struct {
	toRead   [][]byte
	written  [][]byte
	writes   int
	writeErr error
	events   chan tun.Event
}

func (f *fakeTUN) File() *os.File { return nil }

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && len(f.toRead) > 0 {
		sizes[n] = copy(bufs[n][offset:], f.toRead[0])
		f.toRead = f.toRead[1:]
		n++
	}
	return n, nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	f.writes++
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	for _, b := range bufs {
		f.written = append(f.written, bytes.Clone(b[offset:]))
	}
	return len(bufs), nil
}

func (f *fakeTUN) MTU() (int, error)        { return 1280, nil }
func (f *fakeTUN) Name() (string, error)    { return "fake0", nil }
func (f *fakeTUN) Events() <-chan tun.Event { return f.events }
func (f *fakeTUN) Close() error             { return nil }
func (f *fakeTUN) BatchSize() int           { return 128 }

// withOffset copies packets into buffers with offset bytes of headroom, as wireguard-go passes
// them.
func withOffset(offset int, pkts ...[]byte) [][]byte {
	var out [][]byte
	for _, p := range pkts {
		b := make([]byte, offset+len(p))
		copy(b[offset:], p)
		out = append(out, b)
	}
	return out
}

func TestWrap(t *testing.T) {
	const offset = 16
	e := newTestEngine(t, testRules, testLocal)
	dev := &fakeTUN{events: make(chan tun.Event)}
	w := Wrap(dev, e)

	// Pass-through methods.
	if mtu, _ := w.MTU(); mtu != 1280 {
		t.Errorf("MTU %d", mtu)
	}
	if name, _ := w.Name(); name != "fake0" || w.BatchSize() != 128 || w.Events() != dev.events {
		t.Error("pass-through methods")
	}

	// Read: outbound DNS query and a TCP packet; the query's flow is recorded.
	query := pkt(self4, "8.8.8.8", udpDgram(5353, 53))
	dev.toRead = [][]byte{query, pkt(self4, "8.8.8.8", tcpSeg(1, 2, fSYN))}
	bufs := withOffset(offset, make([]byte, 1500), make([]byte, 1500), make([]byte, 1500))
	sizes := make([]int, len(bufs))
	n, err := w.Read(bufs, sizes, offset)
	if err != nil || n != 2 || !bytes.Equal(bufs[0][offset:offset+sizes[0]], query) {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if e.Stats().Flows != 1 {
		t.Fatalf("Flows = %d, want 1", e.Stats().Flows)
	}

	// Write: dropped packets disappear, accepted ones keep their order.
	answer := pkt("8.8.8.8", self4, udpDgram(53, 5353))
	ssh := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))
	denied := pkt("100.64.0.99", self4, tcpSeg(1, 22, fSYN))
	ack := pkt("100.64.0.99", self4, tcpSeg(1, 22, fACK))
	in := withOffset(offset, denied, answer, denied, ssh, []byte{1, 2}, ack)
	in = append(in, make([]byte, offset-2)) // shorter than the offset
	n, err = w.Write(in, offset)
	if err != nil || n != 7 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	want := [][]byte{answer, ssh, ack}
	if len(dev.written) != len(want) {
		t.Fatalf("wrote %d packets, want %d", len(dev.written), len(want))
	}
	for i := range want {
		if !bytes.Equal(dev.written[i], want[i]) {
			t.Errorf("packet %d: %x, want %x", i, dev.written[i], want[i])
		}
	}
	st := e.Stats()
	if st.Accepted != 3 || st.Dropped != 4 || st.DroppedBy["no rule"] != 2 || st.DroppedBy["too short"] != 2 {
		t.Errorf("stats %+v", st)
	}

	// Nothing accepted: the device is not called.
	writes := dev.writes
	if n, err := w.Write(withOffset(offset, denied, denied), offset); n != 2 || err != nil || dev.writes != writes {
		t.Errorf("all-dropped Write = %d, %v, device writes %d", n, err, dev.writes-writes)
	}

	// Device errors come back.
	dev.writeErr = errors.New("boom")
	if _, err := w.Write(withOffset(offset, ssh), offset); err != dev.writeErr {
		t.Errorf("Write error = %v", err)
	}
}

// Wrap must satisfy the interface wireguard-go's device takes.
var _ tun.Device = Wrap(nil, nil)
