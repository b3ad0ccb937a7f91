package dataplane

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
)

// Lazy WireGuard peers. A peer configured in wireguard-go costs about 30 KiB and two goroutines
// (measured: 10,000 peers took skeind to 410 MB), and most peers of a large tailnet never talk
// to us. So, as the official client does, a peer is configured only when it is used: on the
// first packet we send to one of its addresses (lazyTUN, on the outbound path) or the first
// handshake it sends us (the transport's OnHandshake, before wireguard-go sees the packet), and
// it is taken out again after idleTrim without traffic either way.
const (
	idleTrim  = 5 * time.Minute
	trimEvery = time.Minute
)

// lazyPeers is what the data plane may configure in WireGuard and what it has. Its own lock, not
// the data plane's: the packet path takes it, and must not wait for an apply that is doing
// host I/O.
type lazyPeers struct {
	mu   sync.Mutex
	want map[key.NodePublic]string // every usable peer's UAPI block
	have map[key.NodePublic]string // configured in wireguard-go now (blocks as configured)
	// since is when each peer in have was configured: its idle time counts from then until
	// its first packet either way.
	since map[key.NodePublic]time.Time
	// configured is have's keys, read without the lock on the packet path.
	configured sync.Map
	// index finds the peer that owns a destination: the netmap of the last apply (single
	// addresses) and the wider prefixes (subnet routes, the exit node's /0), longest first.
	nm   atomic.Pointer[netmap.NetworkMap]
	wide atomic.Pointer[[]wideOwner]
}

type wideOwner struct {
	p netip.Prefix
	k key.NodePublic
}

func newLazyPeers() *lazyPeers {
	return &lazyPeers{want: map[key.NodePublic]string{}, have: map[key.NodePublic]string{}, since: map[key.NodePublic]time.Time{}}
}

// ownerOf returns the peer a packet to dst goes to, if any.
func (l *lazyPeers) ownerOf(dst netip.Addr) (key.NodePublic, bool) {
	if nm := l.nm.Load(); nm != nil {
		if p := nm.PeerByAddr(dst); p != nil {
			return p.Key, true
		}
	}
	if w := l.wide.Load(); w != nil {
		for _, o := range *w {
			if o.p.Contains(dst) {
				return o.k, true
			}
		}
	}
	return key.NodePublic{}, false
}

// setWide replaces the wide-prefix index (longest prefix first, so the first match wins).
func (l *lazyPeers) setWide(plans map[key.NodePublic][]netip.Prefix) {
	var w []wideOwner
	for k, ps := range plans {
		for _, p := range ps {
			w = append(w, wideOwner{p, k})
		}
	}
	slices.SortFunc(w, func(a, b wideOwner) int { return b.p.Bits() - a.p.Bits() })
	l.wide.Store(&w)
}

// isConfigured is the packet path's check, without a lock.
func (l *lazyPeers) isConfigured(k key.NodePublic) bool {
	_, ok := l.configured.Load(k)
	return ok
}

// ensure configures k in WireGuard now if it is wanted and not yet there.
func (d *Dataplane) ensurePeer(k key.NodePublic) {
	l := d.lazy
	if l.isConfigured(k) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	block, ok := l.want[k]
	if !ok || l.have[k] == block {
		return
	}
	var b bytes.Buffer
	b.WriteString(block)
	if err := d.ipcSet(&b); err != nil {
		d.logf("dataplane: %v", err)
		return
	}
	l.have[k] = block
	l.since[k] = time.Now()
	l.configured.Store(k, struct{}{})
	d.publishWG()
}

// setWantedLocked records what WireGuard may have and updates what it has: a configured peer
// that is no longer wanted goes, one whose block changed gets the new block. The caller holds
// l.mu and sends uapi.
func (l *lazyPeers) setWantedLocked(k key.NodePublic, block string, uapi *bytes.Buffer) {
	if block == "" {
		delete(l.want, k)
		if _, ok := l.have[k]; ok {
			removeBlock(uapi, k)
			delete(l.have, k)
			delete(l.since, k)
			l.configured.Delete(k)
		}
		return
	}
	l.want[k] = block
	if old, ok := l.have[k]; ok && old != block {
		uapi.WriteString(block)
		l.have[k] = block
	}
}

// trimLoop trims idle peers every trimEvery.
func (d *Dataplane) trimLoop(ctx context.Context) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.trimIdle(now)
		}
	}
}

// trimIdle takes peers without traffic for idleTrim out of WireGuard.
func (d *Dataplane) trimIdle(now time.Time) {
	l := d.lazy
	l.mu.Lock()
	defer l.mu.Unlock()
	var uapi bytes.Buffer
	for k := range l.have {
		// Idle since the last packet either way, or since it was configured (for a first
		// packet that has not gone yet): the data plane's start is no clock for a peer
		// configured later.
		pi, _ := d.conn.PeerPath(k)
		last := l.since[k]
		if pi.LastSend.After(last) {
			last = pi.LastSend
		}
		if pi.LastRecv.After(last) {
			last = pi.LastRecv
		}
		if now.Sub(last) < idleTrim {
			continue
		}
		removeBlock(&uapi, k)
		delete(l.have, k)
		delete(l.since, k)
		l.configured.Delete(k)
	}
	if uapi.Len() > 0 {
		if err := d.ipcSet(&uapi); err != nil {
			d.logf("dataplane: %v", err)
		}
		d.publishWG()
	}
}

// lazyTUN is the outermost layer of the TUN stack, what wireguard-go reads from: a packet to a
// peer that WireGuard does not have yet configures that peer before WireGuard sees it.
type lazyTUN struct {
	tun.Device
	d *Dataplane
}

func (t *lazyTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	var last netip.Addr
	for i := range n {
		dst, ok := dstAddr(bufs[i][offset : offset+sizes[i]])
		if !ok || dst == last {
			continue // a bulk flow: one look per batch
		}
		last = dst
		if k, ok := t.d.lazy.ownerOf(dst); ok && !t.d.lazy.isConfigured(k) {
			t.d.ensurePeer(k)
		}
	}
	return n, err
}

// dstAddr is an IP packet's destination.
func dstAddr(b []byte) (netip.Addr, bool) {
	if len(b) < 20 {
		return netip.Addr{}, false
	}
	switch b[0] >> 4 {
	case 4:
		return netip.AddrFrom4([4]byte(b[16:20])), true
	case 6:
		if len(b) >= 40 {
			return netip.AddrFrom16([16]byte(b[24:40])), true
		}
	}
	return netip.Addr{}, false
}
