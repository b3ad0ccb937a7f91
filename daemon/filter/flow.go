package filter

import (
	"math/bits"
	"sync"
	"time"
)

// The flow table remembers UDP and SCTP flows this node sent recently, so that their replies
// pass without a rule. It is a fixed-size set-associative cache: a flow hashes (with a per-table
// random seed) to one set of flowWays slots; a new flow takes an empty or expired slot of its
// set, or else the least recently used one. Memory is allocated once and never grows.
const (
	// DefaultFlows is the table size. An exit-node user sends DNS queries and QUIC from many
	// source ports; 8192 flows of 48 bytes (384 KiB, allocated once) hold a few thousand
	// concurrent flows comfortably.
	DefaultFlows = 8192
	// DefaultFlowTTL is how long a flow is remembered after its last packet in either direction.
	DefaultFlowTTL = 2 * time.Minute

	flowWays    = 8
	flowStripes = 64 // lock stripes; sets map to stripes by their low bits
)

// flowKey is a flow as an inbound reply would carry it: src is the remote end.
type flowKey struct {
	src, dst addr
	sport    uint16
	dport    uint16
	proto    uint8
	v6       bool
}

type flowEntry struct {
	key  flowKey
	seen int64 // clock reading of the last use; 0 = empty slot
}

type paddedMutex struct {
	sync.Mutex
	_ [56]byte
}

type flowTable struct {
	entries []flowEntry // len = sets*flowWays
	setMask uint64
	ttl     int64
	seed    uint64
	now     func() int64 // monotonic nanoseconds, always > 0
	locks   [flowStripes]paddedMutex
}

func newFlowTable(size int, ttl time.Duration, seed uint64, now func() int64) *flowTable {
	sets := 1
	for sets*flowWays < size {
		sets <<= 1
	}
	return &flowTable{
		entries: make([]flowEntry, sets*flowWays),
		setMask: uint64(sets - 1),
		ttl:     int64(ttl),
		seed:    seed,
		now:     now,
	}
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (t *flowTable) set(k *flowKey) (set []flowEntry, mu *paddedMutex) {
	ports := uint64(k.sport)<<24 | uint64(k.dport)<<8 | uint64(k.proto)
	if k.v6 {
		ports |= 1 << 40
	}
	hs := mix(k.src.hi^t.seed^0xa0761d6478bd642f, k.src.lo^0xe7037ed1a0b428db)
	hd := mix(k.dst.hi^0x8ebc6af09c88c6e3, k.dst.lo^t.seed^0x589965cc75374cc3)
	i := mix(hs^ports^0x1d8e4e27c47d124f, hd) & t.setMask
	return t.entries[i*flowWays : i*flowWays+flowWays : i*flowWays+flowWays], &t.locks[i%flowStripes]
}

// add records k (or refreshes it).
func (t *flowTable) add(k *flowKey) {
	now := t.now()
	set, mu := t.set(k)
	mu.Lock()
	victim := 0
	for i := range set {
		e := &set[i]
		if e.seen != 0 && e.key == *k {
			e.seen = now
			mu.Unlock()
			return
		}
		if set[victim].seen != 0 && (e.seen == 0 || e.seen < set[victim].seen) {
			victim = i
		}
	}
	// Prefer an empty slot (seen 0 sorts first), then the oldest, which is expired if any is.
	set[victim] = flowEntry{key: *k, seen: now}
	mu.Unlock()
}

// hit reports whether k is a live flow, and refreshes it if so.
func (t *flowTable) hit(k *flowKey) bool {
	now := t.now()
	set, mu := t.set(k)
	mu.Lock()
	for i := range set {
		e := &set[i]
		if e.seen != 0 && e.key == *k {
			if now-e.seen > t.ttl {
				e.seen = 0
				break
			}
			e.seen = now
			mu.Unlock()
			return true
		}
	}
	mu.Unlock()
	return false
}

// live counts the flows that have not expired.
func (t *flowTable) live() int {
	now := t.now()
	n := 0
	for s := 0; s*flowWays < len(t.entries); s++ {
		mu := &t.locks[s%flowStripes]
		mu.Lock()
		for _, e := range t.entries[s*flowWays : s*flowWays+flowWays] {
			if e.seen != 0 && now-e.seen <= t.ttl {
				n++
			}
		}
		mu.Unlock()
	}
	return n
}
