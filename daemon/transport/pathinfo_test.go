package transport

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/skeinvpn/skein/daemon/wire"
)

// TestPathInfoActive: a disco ping alone leaves a peer idle; tunnel traffic makes it active for
// 45 s after the last send, and the path that traffic took stays known afterwards.
func TestPathInfoActive(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.addPeer(t, b, b.loopback())
	b.addPeer(t, a, a.loopback())

	pingUntilDirect(t, a, b)
	pi, _ := a.conn.PeerPath(b.node.Public())
	if pi.Direct != b.loopback() {
		t.Fatalf("no direct path after pings: %+v", pi)
	}
	if pi.Active || pi.LastDirect.IsValid() || pi.LastDERPRegion != 0 {
		t.Fatalf("a disco ping made the peer active or gave it a last path: %+v", pi)
	}

	sendAndExpect(t, a, b)
	pi, _ = a.conn.PeerPath(b.node.Public())
	if !pi.Active || pi.Direct != b.loopback() || pi.LastDirect != b.loopback() {
		t.Fatalf("after traffic: %+v, want active and direct %v", pi, b.loopback())
	}

	pe := a.conn.peerByKey(b.node.Public())
	pe.mu.Lock()
	last := pe.lastSend
	pe.mu.Unlock()
	if pi := pe.pathInfo(last.Add(sessionActiveTimeout - time.Millisecond)); !pi.Active {
		t.Errorf("not active %v after the last send", sessionActiveTimeout-time.Millisecond)
	}
	pi = pe.pathInfo(last.Add(sessionActiveTimeout))
	if pi.Active {
		t.Errorf("still active %v after the last send", sessionActiveTimeout)
	}
	if pi.LastDirect != b.loopback() || pi.LastDERPRegion != 0 {
		t.Errorf("idle peer's last path %v / region %d, want direct %v", pi.LastDirect, pi.LastDERPRegion, b.loopback())
	}
}

// TestPathInfoRelayed: traffic to a peer with no verified address goes to its DERP region, and
// that is its last path.
func TestPathInfoRelayed(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.conn.SetPeers([]PeerConfig{{NodeKey: b.node.Public(), DiscoKey: b.disco.Public(), HomeDERP: 7, Name: "b"}})
	r := b.node.Public().Raw()
	hk := hex.EncodeToString(r[:])
	if err := a.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n", hk, hk, b.ip)); err != nil {
		t.Fatal(err)
	}
	a.tun.Outbound <- tuntest.Ping(b.ip, a.ip) // a handshake goes out; no region 7 exists to carry it
	deadline := time.Now().Add(10 * time.Second)
	var pi PathInfo
	for time.Now().Before(deadline) {
		if pi, _ = a.conn.PeerPath(b.node.Public()); pi.Active {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !pi.Active || pi.Direct.IsValid() || pi.DERPRegion != 7 || pi.LastDERPRegion != 7 || pi.LastDirect.IsValid() {
		t.Fatalf("path info %+v, want active through region 7", pi)
	}
}

// A batch that left over UDP was sent, even when DERP (tried too while the path is not yet
// trusted) is down: wireguard-go logged a send failure per batch when DERP's error won.
func TestSendOverUDPWithDERPDown(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.conn.SetDERPMap(&wire.DERPMap{Regions: map[int]*wire.DERPRegion{7: {RegionID: 7, RegionCode: "down",
		Nodes: []*wire.DERPNode{{Name: "7a", RegionID: 7, HostName: "127.0.0.1", IPv4: "127.0.0.1", DERPPort: 1}}}}})
	a.conn.SetPeers([]PeerConfig{{NodeKey: b.node.Public(), DiscoKey: b.disco.Public(), Endpoints: []netip.AddrPort{b.loopback()}, HomeDERP: 7, Name: "b"}})
	pe := a.conn.peerByKey(b.node.Public())
	pe.mu.Lock()
	pe.bestAddr, pe.trustUntil = b.loopback(), time.Time{}
	pe.mu.Unlock()
	if err := pe.send([][]byte{make([]byte, 100)}); err != nil {
		t.Fatalf("UDP send worked, DERP down: send returned %v", err)
	}
	pe.mu.Lock()
	pe.bestAddr = netip.AddrPort{}
	pe.mu.Unlock()
	if err := pe.send([][]byte{make([]byte, 100)}); err == nil {
		t.Fatal("no address and DERP down: send returned no error")
	}
}
