package backend

import (
	"encoding/json"
	"testing"

	"github.com/skeinvpn/skein/daemon/control/controltest"
	"github.com/skeinvpn/skein/ipc"
)

// BenchmarkStatus10k: status with 10,000 peers, built and encoded as the IPC server sends it,
// and decoded as a client reads it.
func BenchmarkStatus10k(b *testing.B) {
	e := newEnv(b)
	peers := controltest.SyntheticPeers(10000, 1)
	e.up(peers...)
	b.Run("build", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.b.Status()
		}
	})
	st := e.b.Status()
	var enc []byte
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			enc, _ = json.Marshal(st)
		}
	})
	b.Logf("%d peers, %d bytes", len(st.Peers), len(enc))
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out ipc.Status
			json.Unmarshal(enc, &out)
		}
	})
}
