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
