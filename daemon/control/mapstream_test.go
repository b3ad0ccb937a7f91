package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
)

func frame(t testing.TB, compress bool, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if compress {
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		body = enc.EncodeAll(body, nil)
		enc.Close()
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	return append(out, body...)
}

func TestMapDecoderStream(t *testing.T) {
	for _, compress := range []bool{true, false} {
		var stream bytes.Buffer
		stream.Write(frame(t, compress, wire.MapResponse{Node: &wire.Node{ID: 1, Name: "self.example."}}))
		stream.Write(frame(t, compress, wire.MapResponse{KeepAlive: true}))
		stream.Write(frame(t, compress, wire.MapResponse{PeersRemoved: []wire.NodeID{7}}))
		d, err := newMapDecoder(&stream, compress)
		if err != nil {
			t.Fatal(err)
		}
		r1, err := d.Next()
		if err != nil || r1.Node == nil || r1.Node.ID != 1 {
			t.Fatalf("first: %+v %v", r1, err)
		}
		r2, err := d.Next()
		if err != nil || !r2.KeepAlive {
			t.Fatalf("second: %+v %v", r2, err)
		}
		r3, err := d.Next()
		if err != nil || len(r3.PeersRemoved) != 1 {
			t.Fatalf("third: %+v %v", r3, err)
		}
		if _, err := d.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("end: %v, want EOF", err)
		}
		d.Close()
	}
}

func TestMapDecoderRejects(t *testing.T) {
	cases := map[string][]byte{
		"truncated size":    {1, 0},
		"truncated message": {10, 0, 0, 0, 'a'},
		"huge size":         {0xff, 0xff, 0xff, 0xff},
		"not zstd":          append([]byte{4, 0, 0, 0}, "abcd"...),
	}
	for name, in := range cases {
		d, err := newMapDecoder(bytes.NewReader(in), true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Next(); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("%s: got %v, want an error", name, err)
		}
		d.Close()
	}
}

// FuzzMapDecoder feeds arbitrary streams through the decoder and the netmap merge: neither may
// panic, whatever the server sends.
func FuzzMapDecoder(f *testing.F) {
	f.Add(frame(f, false, wire.MapResponse{Node: &wire.Node{ID: 1}, Peers: []*wire.Node{{ID: 2, DERP: "127.3.3.40:999"}}}), false)
	f.Add(frame(f, true, wire.MapResponse{PeersChangedPatch: []*wire.PeerChange{{NodeID: 2}}}), true)
	f.Add([]byte(`{"PacketFilters":{"*":null,"base":[{"SrcIPs":["*"]}]}}`), false)
	f.Fuzz(func(t *testing.T, data []byte, compress bool) {
		nm := netmap.New()
		d, err := newMapDecoder(bytes.NewReader(data), compress)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for i := 0; i < 16; i++ {
			mr, err := d.Next()
			if err != nil {
				break
			}
			nm.Apply(mr, nm.ReceivedAt)
		}
		// A raw JSON body (no framing) goes through the same merge path.
		var mr wire.MapResponse
		if json.Unmarshal(data, &mr) == nil {
			nm.Apply(&mr, nm.ReceivedAt)
			nm.SortedPeers()
		}
	})
}

// TestCheckServerURL (hole 6): plain http:// only to this machine.
func TestCheckServerURL(t *testing.T) {
	for _, tc := range []struct {
		url   string
		plain bool
		ok    bool
	}{
		{"https://hs.example.com", false, true},
		{"https://hs.example.com:8443/prefix", false, true},
		{"http://127.0.0.1:8080", true, true},
		{"http://127.3.4.5", true, true},
		{"http://[::1]:8080", true, true},
		{"http://localhost:8080", true, true},
		{"http://LOCALHOST", true, true},
		{"http://hs.example.com", false, false},
		{"http://10.0.0.1:8080", false, false},
		{"http://localhost.evil.example", false, false},
		{"http://[::ffff:8.8.8.8]", false, false},
		{"ftp://hs.example.com", false, false},
		{"https://", false, false},
		{"https://u:p@hs.example.com", false, false},
		{"hs.example.com", false, false},
	} {
		plain, err := CheckServerURL(tc.url)
		if (err == nil) != tc.ok || plain != tc.plain {
			t.Errorf("CheckServerURL(%q) = %v, %v; want plain=%v ok=%v", tc.url, plain, err, tc.plain, tc.ok)
		}
	}
	if _, err := New(Options{ServerURL: "http://hs.example.com"}); err == nil {
		t.Error("New accepted plain http:// to another machine")
	}
}

// TestRegisterResponseCleaned (hole 5): what control says at login is safe to print, and a
// login URL that is not a plain http(s) URL is refused.
func TestRegisterResponseCleaned(t *testing.T) {
	rr := &wire.RegisterResponse{Error: "bad\x1b[2Jthing", Login: wire.Login{LoginName: "alice\u202e@x"}}
	if err := cleanRegisterResponse(rr); err != nil || rr.Error != "bad[2Jthing" || rr.Login.LoginName != "alice@x" {
		t.Errorf("cleaned: %+v %v", rr, err)
	}
	for _, u := range []string{"javascript:alert(1)", "file:///etc/passwd", "https://hs.example/a\x1b]52;c;eA==\x07", "https://hs.example/a b", "https://u@hs.example/x", "https:///x"} {
		if err := cleanRegisterResponse(&wire.RegisterResponse{AuthURL: u}); err == nil {
			t.Errorf("login URL %q accepted", u)
		}
	}
	if err := cleanRegisterResponse(&wire.RegisterResponse{AuthURL: "https://hs.example/register/abc?x=1"}); err != nil {
		t.Errorf("a good login URL refused: %v", err)
	}
}
