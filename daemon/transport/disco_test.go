package transport

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
)

// discoRig is a Conn with one peer whose disco messages the test writes, and a record of the
// disco messages the Conn sends (none leaves the process).
type discoRig struct {
	c        *Conn
	peerNode key.NodePrivate
	peerDisc key.DiscoPrivate
	shared   *disco.SharedKey

	mu    sync.Mutex
	pings []sentAt
	derp  []disco.Message
}

type sentAt struct {
	to netip.AddrPort
	at time.Time
}

// rigKeys are the keys of a rig: the peer's node and disco keys and our disco key.
type rigKeys struct {
	peerNode key.NodePrivate
	peerDisc key.DiscoPrivate
	mine     key.DiscoPrivate
}

func newRigKeys() rigKeys {
	return rigKeys{peerNode: key.NewNode(), peerDisc: key.NewDisco(), mine: key.NewDisco()}
}

func newDiscoRig(t testing.TB, netmapEPs ...netip.AddrPort) *discoRig {
	return newDiscoRigWith(t, newRigKeys(), netmapEPs...)
}

func newDiscoRigWith(t testing.TB, k rigKeys, netmapEPs ...netip.AddrPort) *discoRig {
	r := &discoRig{peerNode: k.peerNode, peerDisc: k.peerDisc}
	mine := k.mine
	r.c = New(Options{DiscoKey: mine, Logf: func(string, ...any) {}})
	t.Cleanup(r.c.Shutdown)
	r.c.SetPrivateKey(key.NewNode())
	r.c.SetPeers([]PeerConfig{{NodeKey: r.peerNode.Public(), DiscoKey: r.peerDisc.Public(), HomeDERP: 1, Endpoints: netmapEPs}})
	r.c.testHookDiscoUDP = func(dst netip.AddrPort, m disco.Message) bool {
		if _, ok := m.(*disco.Ping); ok {
			r.mu.Lock()
			r.pings = append(r.pings, sentAt{dst, time.Now()})
			r.mu.Unlock()
		}
		return true
	}
	r.c.testHookDiscoDERP = func(region int, m disco.Message) {
		r.mu.Lock()
		r.derp = append(r.derp, m)
		r.mu.Unlock()
	}
	r.shared = disco.Precompute(mine.Public(), r.peerDisc)
	return r
}

// fromPeer seals m as the peer would.
func (r *discoRig) fromPeer(m disco.Message) []byte {
	return disco.Seal(nil, r.peerDisc.Public(), r.shared, m)
}

// viaDERP delivers a disco packet from the peer over DERP region 1.
func (r *discoRig) viaDERP(pkt []byte) {
	r.c.handleDisco(pkt, netip.AddrPort{}, 1, r.peerNode.Public(), time.Now())
}

func (r *discoRig) sentPings() []sentAt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentAt(nil), r.pings...)
}

// cmmOf builds a CallMeMaybe with n distinct public-looking endpoints (round picks the set).
func cmmOf(n, round int) *disco.CallMeMaybe {
	m := &disco.CallMeMaybe{}
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 51, byte(round), byte(i % 250)})
		m.MyNumber = append(m.MyNumber, netip.AddrPortFrom(ip, uint16(1000+i)))
	}
	return m
}

// TestCallMeMaybeFloodIsCapped: a peer sending CallMeMaybes of 1,000 endpoints, a new set every
// 20 ms for 3 s, makes us send at most the capped number of pings per second (maxCMMEndpoints
// plus the netmap's endpoints), and the set it can make us keep stays capped.
func TestCallMeMaybeFloodIsCapped(t *testing.T) {
	netmapEP := netip.MustParseAddrPort("192.0.2.10:41641")
	r := newDiscoRig(t, netmapEP)
	start := time.Now()
	for round := 0; time.Since(start) < 3*time.Second; round++ {
		r.viaDERP(r.fromPeer(cmmOf(1000, round%200)))
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(cmmForceInterval + 200*time.Millisecond) // the deferred round, if any
	pings := r.sentPings()
	limit := maxCMMEndpoints + 1
	for i := range pings {
		n := 0
		for _, p := range pings[i:] {
			if p.at.Sub(pings[i].at) < cmmForceInterval {
				n++
			}
		}
		if n > limit {
			t.Fatalf("%d pings within %v from %v, want at most %d", n, cmmForceInterval, pings[i].at.Sub(start), limit)
		}
	}
	if len(pings) == 0 {
		t.Fatal("no pings at all: the CallMeMaybes were ignored")
	}
	pe := r.c.peerByKey(r.peerNode.Public())
	pe.mu.Lock()
	kept := len(pe.candidates)
	pe.mu.Unlock()
	if kept > limit {
		t.Errorf("%d candidates kept, want at most %d", kept, limit)
	}
	t.Logf("%d pings in %v for %d-endpoint CallMeMaybes every 20 ms", len(pings), time.Since(start).Round(time.Millisecond), 1000)
}

// A CallMeMaybe replaces the previous one's set: addresses it no longer lists are forgotten
// (the netmap's stay), and loopback, multicast, unspecified and link-local ones are never
// taken.
func TestCallMeMaybeReplacesSet(t *testing.T) {
	netmapEP := netip.MustParseAddrPort("192.0.2.10:41641")
	r := newDiscoRig(t, netmapEP)
	old := netip.MustParseAddrPort("198.51.100.1:41641")
	r.viaDERP(r.fromPeer(&disco.CallMeMaybe{MyNumber: []netip.AddrPort{old, netmapEP}}))
	bad := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:41641"),
		netip.MustParseAddrPort("[::1]:41641"),
		netip.MustParseAddrPort("224.0.0.251:5353"),
		netip.MustParseAddrPort("0.0.0.0:41641"),
		netip.MustParseAddrPort("[::]:41641"),
		netip.MustParseAddrPort("255.255.255.255:41641"),
		netip.MustParseAddrPort("[fe80::1]:41641"),
		netip.MustParseAddrPort("198.51.100.3:0"),
	}
	fresh := netip.MustParseAddrPort("198.51.100.2:41641")
	r.viaDERP(r.fromPeer(&disco.CallMeMaybe{MyNumber: append([]netip.AddrPort{fresh}, bad...)}))
	pe := r.c.peerByKey(r.peerNode.Public())
	pe.mu.Lock()
	var have []netip.AddrPort
	for a := range pe.candidates {
		have = append(have, a)
	}
	pe.mu.Unlock()
	want := map[netip.AddrPort]bool{netmapEP: true, fresh: true}
	if len(have) != len(want) {
		t.Fatalf("candidates %v, want %v", have, want)
	}
	for _, a := range have {
		if !want[a] {
			t.Fatalf("candidates %v, want %v", have, want)
		}
	}
	time.Sleep(cmmForceInterval + 200*time.Millisecond)
	for _, p := range r.sentPings() {
		for _, b := range bad {
			if p.to == b {
				t.Errorf("pinged %v", b)
			}
		}
	}
}

// A CallMeMaybe that no longer lists the address we use to reach the peer ends our trust in
// it, even while the (lagging) netmap still has it: the peer moved.
func TestCallMeMaybeWithoutOurPathDropsIt(t *testing.T) {
	old := netip.MustParseAddrPort("198.51.100.1:41641")
	r := newDiscoRig(t, old)
	r.viaDERP(r.fromPeer(&disco.CallMeMaybe{MyNumber: []netip.AddrPort{old}}))
	pe := r.c.peerByKey(r.peerNode.Public())
	// Pretend a pong made old the trusted path.
	pe.mu.Lock()
	pe.bestAddr, pe.bestLatency, pe.trustUntil = old, time.Millisecond, time.Now().Add(time.Minute)
	pe.mu.Unlock()
	moved := netip.MustParseAddrPort("198.51.100.9:41641")
	r.viaDERP(r.fromPeer(&disco.CallMeMaybe{MyNumber: []netip.AddrPort{moved}}))
	if pi := pe.pathInfo(time.Now()); pi.Direct.IsValid() {
		t.Fatalf("still direct via %v after the peer moved to %v", pi.Direct, moved)
	}
}

// The receive path's demux and the disco handler take anything: a fuzzer feeds datagrams from
// arbitrary sources (and over DERP, from the peer's node and from strangers) to a Conn with one
// peer, whose sealed messages seed it.
func FuzzReceive(f *testing.F) {
	keys := newRigKeys()
	seedRig := newDiscoRigWith(f, keys)
	for _, m := range []disco.Message{
		&disco.Ping{TxID: [12]byte{1}, NodeKey: seedRig.peerNode.Public()},
		&disco.Pong{TxID: [12]byte{2}, Src: netip.MustParseAddrPort("203.0.113.1:41641")},
		cmmOf(3, 0),
		cmmOf(1000, 1),
		&disco.RelayMessage{Kind: disco.TypeCallMeMaybeVia, Body: make([]byte, 40)},
	} {
		f.Add(seedRig.fromPeer(m), uint16(41641), byte(0))
		f.Add(seedRig.fromPeer(m), uint16(41641), byte(1))
	}
	f.Add([]byte{1, 0, 0, 0}, uint16(1), byte(0)) // WireGuard handshake type
	f.Add(make([]byte, 20), uint16(3478), byte(0))
	f.Fuzz(func(t *testing.T, pkt []byte, port uint16, how byte) {
		// The seeds were sealed for these keys.
		r := newDiscoRigWith(t, keys, netip.MustParseAddrPort("192.0.2.10:41641"))
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(port)}), port)
		switch how % 3 {
		case 0:
			bufs := [][]byte{append([]byte(nil), pkt...)}
			sizes := []int{len(pkt)}
			eps := make([]conn.Endpoint, 1)
			var cache addrCache
			r.c.demux(bufs, sizes, []netip.AddrPort{src}, eps, &cache, time.Now())
		case 1:
			r.c.handleDisco(pkt, netip.AddrPort{}, 1, seedRig.peerNode.Public(), time.Now())
		case 2:
			r.c.handleDisco(pkt, netip.AddrPort{}, 1, key.NewNode().Public(), time.Now())
		}
		pe := r.c.peerByKey(seedRig.peerNode.Public())
		pe.mu.Lock()
		n := len(pe.candidates)
		pe.mu.Unlock()
		if n > maxCMMEndpoints+maxLearnedEndpoints+1 {
			t.Fatalf("%d candidates", n)
		}
	})
}
