package backend

import (
	"slices"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// engineWindow is how many applies the engine figures look back over.
const engineWindow = 256

// engineStats keeps the newest apply durations and latencies (under Backend.mu).
type engineStats struct {
	applies  uint64
	apply    [engineWindow]time.Duration
	latency  [engineWindow]time.Duration
	recorded int
}

// note records one apply: how long the tunnel took, and how long since the map arrived.
func (e *engineStats) note(apply, latency time.Duration) {
	i := int(e.applies % engineWindow)
	e.apply[i], e.latency[i] = apply, latency
	e.applies++
	e.recorded = min(e.recorded+1, engineWindow)
}

func (e *engineStats) status(netmapPeers, wgPeers int) *ipc.EngineStats {
	st := &ipc.EngineStats{NetmapPeers: netmapPeers, WireGuardPeers: wgPeers, Applies: e.applies}
	if e.recorded == 0 {
		return st
	}
	ms := func(v []time.Duration, q float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	a, l := e.apply[:e.recorded], e.latency[:e.recorded]
	st.ApplyP50Ms, st.ApplyP99Ms, st.ApplyMaxMs = ms(a, 0.5), ms(a, 0.99), ms(a, 1)
	st.LatencyP50Ms, st.LatencyP99Ms = ms(l, 0.5), ms(l, 0.99)
	return st
}
