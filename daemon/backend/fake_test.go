package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/filter"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/daemon/session/sessiontest"
	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/whyrelay"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// fakeDP is a data plane without a host: it records what it is given. Its SetNetmap can be
// made slow; its status accessors answer at once, as the Dataplane contract says.
type fakeDP struct {
	opts dataplane.Options

	mu      sync.Mutex
	applies []fakeApply
	closed  bool
	ports   [2]uint16
	paths   map[key.NodePublic]transport.PathInfo

	// slow, when set, makes SetNetmap wait that long (outside any lock a status read takes).
	slow time.Duration
	// pingFail are peers whose pings get no pong; pingRTT the round trip of the others.
	pingFail map[key.NodePublic]bool
	pingRTT  map[key.NodePublic]time.Duration
	// log, when set, records "start"/"close" with the node key, in order, across data planes.
	log func(string)
}

type fakeApply struct {
	nm    *netmap.NetworkMap
	prefs dataplane.Prefs
}

func (f *fakeDP) SetNetmap(nm *netmap.NetworkMap, prefs dataplane.Prefs) error {
	f.mu.Lock()
	slow := f.slow
	f.mu.Unlock()
	if slow > 0 {
		time.Sleep(slow)
	}
	f.mu.Lock()
	f.applies = append(f.applies, fakeApply{nm, prefs})
	f.mu.Unlock()
	// A DERP map gives the transport a home at once, which it reports.
	if f.opts.OnEndpointsChanged != nil {
		f.opts.OnEndpointsChanged()
	}
	return nil
}

func (f *fakeDP) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	if f.log != nil {
		f.log("close " + f.opts.NodeKey.Public().String())
	}
}

func (f *fakeDP) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *fakeDP) lastApply() fakeApply {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applies) == 0 {
		return fakeApply{}
	}
	return f.applies[len(f.applies)-1]
}

func (f *fakeDP) SetPeerAPIPorts(v4, v6 uint16) {
	f.mu.Lock()
	f.ports = [2]uint16{v4, v6}
	f.mu.Unlock()
}

func (f *fakeDP) HomeDERP() int { return 1 }
func (f *fakeDP) NetInfo() *wire.NetInfo {
	udp := true
	return &wire.NetInfo{PreferredDERP: 1, WorkingUDP: &udp}
}
func (f *fakeDP) LastReport() transport.Report {
	return transport.Report{At: time.Now(), UDP: true, RegionLatency: map[int]time.Duration{1: 5 * time.Millisecond}, PreferredDERP: 1}
}
func (f *fakeDP) Endpoints() []transport.Endpoint {
	return []transport.Endpoint{{Addr: netip.MustParseAddrPort("198.51.100.7:41641"), Type: 2}}
}
func (f *fakeDP) PeerPath(k key.NodePublic) (transport.PathInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.paths[k]
	return p, ok
}

// PeerPathReport: every peer is relayed over region 1; its one address never answered.
func (f *fakeDP) PeerPathReport(ctx context.Context, k key.NodePublic, wait time.Duration) (dataplane.PathReport, bool) {
	r := dataplane.PathReport{}
	r.Path = transport.PathInfo{DERPRegion: 1}
	r.HasDisco = true
	to := netip.MustParseAddrPort("198.51.100.9:41641")
	r.Round = []transport.PingTally{{To: to, Sent: 1}, {Region: 1, Sent: 1, Answered: 1, Latency: time.Millisecond}}
	r.Facts = whyrelay.Facts{PeerHasDisco: true, NetcheckRan: true, UDP: true, Pings: whyrelay.Pings{DirectSent: 1, Addrs: 1, DERPSent: 1, DERPAnswered: 1}}
	return r, true
}
func (f *fakeDP) RelayCauses(k key.NodePublic, peer func(*whyrelay.Facts)) []ipc.Cause {
	return []ipc.Cause{{Code: ipc.CauseNoPong, Summary: "Pings go unanswered.", Fix: "allow inbound UDP 41641"}}
}
func (f *fakeDP) Ping(ctx context.Context, k key.NodePublic) transport.PingResult {
	f.mu.Lock()
	fail, rtt := f.pingFail[k], f.pingRTT[k]
	f.mu.Unlock()
	if fail {
		return transport.PingResult{Err: "no pong"}
	}
	if rtt == 0 {
		rtt = 3 * time.Millisecond
	}
	return transport.PingResult{Endpoint: netip.MustParseAddrPort("198.51.100.9:41641"), Latency: rtt}
}
func (f *fakeDP) Netcheck(ctx context.Context) transport.Report { return f.LastReport() }
func (f *fakeDP) WireGuardPeers() int                           { return 0 }
func (f *fakeDP) FilterStats() filter.Stats                     { return filter.Stats{Rules: 2} }
func (f *fakeDP) Routing() dataplane.RoutingState               { return dataplane.RoutingState{} }
func (f *fakeDP) DNS() dataplane.DNSState                       { return dataplane.DNSState{MagicDNS: true, Hosts: 2} }
func (f *fakeDP) DNSQuery(ctx context.Context, q []byte) []byte { return nil }

// env is a backend with a fake control server and fake data planes.
type env struct {
	t   testing.TB
	srv *sessiontest.Server
	b   *Backend
	dir string

	mu  sync.Mutex
	dps []*fakeDP
	// poll is the map poll the last serve answered.
	poll *sessiontest.Poll
	// dpErr, while set, makes data planes fail to start.
	dpErr error
	slow  time.Duration
	// events are the data planes' starts and closes, in order.
	events []string
}

func (e *env) eventLog() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.events...)
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, srv: sessiontest.NewServer("k"), dir: t.TempDir()}
	e.start()
	return e
}

// start (re)creates the backend on the same state directory.
func (e *env) start() {
	e.t.Helper()
	store, err := state.Open(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := New(Options{
		Store:      store,
		Version:    "test",
		Logf:       e.t.Logf,
		OSHostname: func() (string, error) { return "laptop", nil },
		TunName:    "skein-test0",
		Dial: func(server string, mk key.MachinePrivate) (session.Control, error) {
			return e.srv.Dial(server)
		},
		NewDataplane: func(o dataplane.Options) (Dataplane, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.dpErr != nil {
				return nil, e.dpErr
			}
			dp := &fakeDP{opts: o, slow: e.slow, paths: map[key.NodePublic]transport.PathInfo{}, log: func(s string) {
				e.mu.Lock()
				e.events = append(e.events, s)
				e.mu.Unlock()
			}}
			e.dps = append(e.dps, dp)
			e.events = append(e.events, "start "+o.NodeKey.Public().String())
			return dp, nil
		},
		LookupUser: func(name string) error {
			if name == "alice" {
				return nil
			}
			return errors.New("unknown user")
		},
		ListenPeerAPI: func(ctx context.Context, addr netip.Addr) (net.Listener, error) {
			return net.Listen("tcp", "127.0.0.1:0")
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.b = b
	e.t.Cleanup(b.Close)
	b.Start()
}

func (e *env) dp() *fakeDP {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.dps) == 0 {
		return nil
	}
	return e.dps[len(e.dps)-1]
}

// serve answers the next map poll with the node's self and the given peers, and returns it.
func (e *env) serve(peers ...*wire.Node) *sessiontest.Poll {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.srv.NextPoll(ctx)
	if err != nil {
		e.t.Fatalf("no map poll: %v", err)
	}
	e.mu.Lock()
	e.poll = p
	e.mu.Unlock()
	go p.Send(&wire.MapResponse{
		Node:    p.Node.SelfNode(),
		Peers:   peers,
		DERPMap: &wire.DERPMap{Regions: map[int]*wire.DERPRegion{1: {RegionID: 1, RegionCode: "lab"}}},
		UserProfiles: []wire.UserProfile{
			{ID: 1, LoginName: "alice@example", DisplayName: "Alice"},
		},
	})
	return p
}

// up logs in with the pre-auth key while answering the first map poll.
func (e *env) up(peers ...*wire.Node) ipc.UpResponse {
	e.t.Helper()
	type res struct {
		r   ipc.UpResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := e.b.Up(context.Background(), ipc.UpRequest{LoginServer: "https://control.example", AuthKey: "k"})
		ch <- res{r, err}
	}()
	e.serve(peers...)
	r := <-ch
	if r.err != nil || r.r.State != ipc.StateRunning {
		e.t.Fatalf("Up = %+v, %v", r.r, r.err)
	}
	return r.r
}

func (e *env) stored() state.Data {
	e.t.Helper()
	store, err := state.Open(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := store.Load()
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// eventually polls cond for up to 5 s.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func peerNode(id int, name string, user wire.UserID) *wire.Node {
	ip := netip.AddrFrom4([4]byte{100, 64, 1, byte(id)})
	return &wire.Node{
		ID: wire.NodeID(id), StableID: fmt.Sprintf("s%d", id), Name: name + ".tail.example.", User: user,
		Key: key.NewNode().Public(), DiscoKey: key.NewDisco().Public(), HomeDERP: 1,
		Addresses: []netip.Prefix{netip.PrefixFrom(ip, 32)},
		Hostinfo:  &wire.Hostinfo{Hostname: name, OS: "linux", Services: []wire.Service{{Proto: "peerapi4", Port: 4040}}},
		Online:    ptrTo(true),
	}
}

func ptrTo[T any](v T) *T { return &v }

// stateIs waits for the backend's state.
func (e *env) stateIs(want ipc.State) {
	e.t.Helper()
	eventually(e.t, "state "+string(want), func() error {
		if st := e.b.Status().State; st != want {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
}
