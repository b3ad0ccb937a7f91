package transport

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestBatchOffloads sends runs of equal-size packets (GSO when the kernel has it) and reads
// them back (GRO when the kernel has it): every packet arrives whole, in order, with the
// sender's address, whatever the kernel coalesced.
func TestBatchOffloads(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			a, err := listenUDP("udp4", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := listenUDP("udp4", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if !offload {
				a.gso.Store(false)
				b.gro = false
			}
			t.Logf("gso=%v gro=%v", a.gso.Load(), b.gro)
			dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.port)
			// 3 runs: 100 × 1200 (more than one GSO datagram), a 700 tail, 30 × 900, then singles.
			var sent [][]byte
			mk := func(n, size int) {
				for i := 0; i < n; i++ {
					p := bytes.Repeat([]byte{byte(len(sent))}, size)
					sent = append(sent, p)
				}
			}
			mk(100, 1200)
			mk(1, 700)
			mk(27, 900)
			if err := a.writeBatch(sent, dst); err != nil {
				t.Fatal(err)
			}
			bufs := make([][]byte, batchSize)
			for i := range bufs {
				bufs[i] = make([]byte, 65535)
			}
			sizes := make([]int, batchSize)
			srcs := make([]netip.AddrPort, batchSize)
			var got [][]byte
			deadline := time.Now().Add(5 * time.Second)
			for len(got) < len(sent) && time.Now().Before(deadline) {
				b.pc.SetReadDeadline(deadline)
				n, err := b.readBatch(bufs, sizes, srcs)
				if err != nil {
					t.Fatalf("after %d packets: %v", len(got), err)
				}
				for i := 0; i < n; i++ {
					if srcs[i].Port() != a.port {
						t.Fatalf("source %v, want port %d", srcs[i], a.port)
					}
					got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
				}
			}
			if len(got) != len(sent) {
				t.Fatalf("got %d packets, sent %d", len(got), len(sent))
			}
			for i := range sent {
				if !bytes.Equal(got[i], sent[i]) {
					t.Fatalf("packet %d: %d bytes (first %d), want %d bytes (first %d)", i, len(got[i]), got[i][0], len(sent[i]), sent[i][0])
				}
			}
		})
	}
}
