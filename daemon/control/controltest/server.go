// Package controltest is a control server for tests that speaks the real wire protocol — GET
// /key, the ts2021 upgrade, HTTP/2 over it, /machine/register and the streaming /machine/map
// with zstd framing — and serves a scripted tailnet: synthetic peers in any number, deltas the
// test pushes, and whatever a hostile server might send. skeind logs in to it like to Headscale.
package controltest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/net/http2"

	"github.com/skeinvpn/skein/daemon/control/ts2021/ts2021test"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// Map is the tailnet every node sees (besides itself) in its first map response.
type Map struct {
	Peers        []*wire.Node
	DERPMap      *wire.DERPMap
	DNSConfig    *wire.DNSConfig
	PacketFilter []wire.FilterRule
	Domain       string
}

// Node is a node registered with the server.
type Node struct {
	ID   wire.NodeID
	Key  key.NodePublic
	Addr netip.Addr
	Name string
}

// Options configure a Server.
type Options struct {
	// AuthKey is the pre-auth key logins must carry ("" accepts any login).
	AuthKey string
	Logf    func(format string, args ...any)
}

// Server is the fake control server; serve Handler over TLS (the client refuses plain HTTP
// to anything but loopback).
type Server struct {
	opts Options
	priv key.MachinePrivate
	chal key.ChallengePublic

	mu      sync.Mutex
	nodes   map[key.NodePublic]*Node
	nextID  wire.NodeID
	m       Map
	polls   map[*poll]struct{}
	updates []*wire.MapRequest
	pollsCh chan struct{} // closed and replaced when a poll opens
}

// New returns a server with an empty tailnet.
func New(opts Options) *Server {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	return &Server{opts: opts, priv: key.NewMachine(), chal: ts2021test.NewChallenge(),
		nodes: map[key.NodePublic]*Node{}, nextID: 1, polls: map[*poll]struct{}{}, pollsCh: make(chan struct{})}
}

// SetMap replaces the tailnet that new map polls get.
func (s *Server) SetMap(m Map) {
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
}

// Push sends one map response (a delta) to every open map poll and returns how many got it.
func (s *Server) Push(mr *wire.MapResponse) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p := range s.polls {
		select {
		case p.ch <- mr:
			n++
		case <-p.done:
		}
	}
	return n
}

// Polls is the number of open map polls.
func (s *Server) Polls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.polls)
}

// PollOpened is closed when the next map poll opens.
func (s *Server) PollOpened() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pollsCh
}

// Nodes lists the registered nodes.
func (s *Server) Nodes() []Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Node
	for _, n := range s.nodes {
		out = append(out, *n)
	}
	return out
}

// Updates returns the lite updates (endpoint and Hostinfo reports) received.
func (s *Server) Updates() []*wire.MapRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wire.MapRequest(nil), s.updates...)
}

// Handler serves /key and the ts2021 upgrade.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /key", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"publicKey": s.priv.Public()})
	})
	mux.HandleFunc("POST /ts2021", s.serveTS2021)
	return mux
}

func (s *Server) serveTS2021(w http.ResponseWriter, r *http.Request) {
	init, err := base64.StdEncoding.DecodeString(r.Header.Get("X-Tailscale-Handshake"))
	if err != nil {
		http.Error(w, "bad handshake header", 400)
		return
	}
	resp, client, version, rx, tx, err := ts2021test.Respond(s.priv, init)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	nc, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer nc.Close()
	c := ts2021test.NewConn(nc, brw.Reader, rx, tx, client, version)
	out := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n")
	out = append(out, resp...)
	out = append(out, c.Record(ts2021test.EarlyPayload(s.chal))...)
	if _, err := nc.Write(out); err != nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /machine/register", s.serveRegister)
	mux.HandleFunc("POST /machine/map", s.serveMap)
	(&http2.Server{MaxReadFrameSize: 1 << 20}).ServeConn(c.NetConn(), &http2.ServeConnOpts{Handler: mux})
}

func (s *Server) serveRegister(w http.ResponseWriter, r *http.Request) {
	var req wire.RegisterRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	resp := wire.RegisterResponse{MachineAuthorized: true, User: wire.UserProfile{ID: 1, LoginName: "tester@example"}, Login: wire.Login{LoginName: "tester@example"}}
	s.mu.Lock()
	switch {
	case !req.Expiry.IsZero() && req.Expiry.Before(time.Now()):
		delete(s.nodes, req.NodeKey)
	case s.nodes[req.NodeKey] != nil:
		// A refresh of a known key.
	case s.opts.AuthKey != "" && (req.Auth == nil || req.Auth.AuthKey != s.opts.AuthKey):
		resp = wire.RegisterResponse{Error: "invalid auth key"}
	default:
		if !req.OldNodeKey.IsZero() {
			delete(s.nodes, req.OldNodeKey)
		}
		id := s.nextID
		s.nextID++
		name := fmt.Sprintf("node%d", id)
		if req.Hostinfo != nil && req.Hostinfo.Hostname != "" {
			name = req.Hostinfo.Hostname
		}
		s.nodes[req.NodeKey] = &Node{ID: id, Key: req.NodeKey, Addr: selfAddr(id), Name: name}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// selfAddr gives registered nodes addresses in 100.64.0.0/16, away from SyntheticPeers'.
func selfAddr(id wire.NodeID) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64, byte(id >> 8), byte(id)})
}

type poll struct {
	ch   chan *wire.MapResponse
	done chan struct{}
}

func (s *Server) serveMap(w http.ResponseWriter, r *http.Request) {
	var req wire.MapRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	s.mu.Lock()
	n := s.nodes[req.NodeKey]
	if !req.Stream {
		s.updates = append(s.updates, &req)
	}
	m := s.m
	s.mu.Unlock()
	if n == nil {
		http.Error(w, "unknown node key", 401)
		return
	}
	if !req.Stream {
		w.WriteHeader(200)
		return
	}
	enc, err := newFramer(w, req.Compress == "zstd")
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	defer enc.close()
	p := &poll{ch: make(chan *wire.MapResponse), done: make(chan struct{})}
	s.mu.Lock()
	s.polls[p] = struct{}{}
	close(s.pollsCh)
	s.pollsCh = make(chan struct{})
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.polls, p)
		s.mu.Unlock()
		close(p.done)
	}()
	w.WriteHeader(200)
	now := time.Now()
	self := &wire.Node{ID: n.ID, StableID: fmt.Sprintf("self%d", n.ID), Name: n.Name + ".test.example.", User: 1, Key: n.Key,
		DiscoKey: req.DiscoKey, Addresses: []netip.Prefix{netip.PrefixFrom(n.Addr, 32)}, Hostinfo: req.Hostinfo}
	first := &wire.MapResponse{Node: self, Peers: m.Peers, DERPMap: m.DERPMap, DNSConfig: m.DNSConfig,
		PacketFilter: m.PacketFilter, Domain: m.Domain, ControlTime: &now,
		UserProfiles: []wire.UserProfile{{ID: 1, LoginName: "tester@example", DisplayName: "Tester"}}}
	if err := enc.write(first); err != nil {
		return
	}
	keepAlive := time.NewTicker(50 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case mr := <-p.ch:
			if err := enc.write(mr); err != nil {
				return
			}
		case <-keepAlive.C:
			if err := enc.write(&wire.MapResponse{KeepAlive: true}); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// framer writes map responses as the client reads them: a little-endian uint32 size, then
// the JSON, zstd-compressed when the client asked.
type framer struct {
	w  http.ResponseWriter
	ze *zstd.Encoder
}

func newFramer(w http.ResponseWriter, compress bool) (*framer, error) {
	f := &framer{w: w}
	if compress {
		ze, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		f.ze = ze
	}
	return f, nil
}

func (f *framer) write(mr *wire.MapResponse) error {
	b, err := json.Marshal(mr)
	if err != nil {
		return err
	}
	if f.ze != nil {
		b = f.ze.EncodeAll(b, nil)
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := f.w.Write(append(hdr[:], b...)); err != nil {
		return err
	}
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return nil
}

func (f *framer) close() {
	if f.ze != nil {
		f.ze.Close()
	}
}

// SyntheticPeers returns n peers as control would describe them: keys, disco keys, an address
// each in 100.80.0.0/12 and the ULA, a home region, an endpoint, online, and a Hostinfo.
func SyntheticPeers(n int, homeRegion int) []*wire.Node {
	peers := make([]*wire.Node, n)
	online := true
	for i := range n {
		id := wire.NodeID(100000 + i)
		v4 := netip.AddrFrom4([4]byte{100, 80 + byte(i>>16), byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 1, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		name := fmt.Sprintf("peer%05d", i)
		peers[i] = &wire.Node{
			ID: id, StableID: fmt.Sprintf("p%d", i), Name: name + ".test.example.", User: 1,
			Key: key.NewNode().Public(), DiscoKey: key.NewDisco().Public(), HomeDERP: homeRegion,
			Addresses: []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)},
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 41641)},
			Hostinfo:  &wire.Hostinfo{Hostname: name, OS: "linux"},
			Online:    &online,
		}
	}
	return peers
}
