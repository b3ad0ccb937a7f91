package unixmsg

import (
	"encoding/binary"
	"io"
	"os"
	"strings"
	"testing"
)

type ping struct {
	Header
	Text string `json:"text"`
}

func TestSendRecvWithFiles(t *testing.T) {
	a, bf, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := FromFile(bf)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	go func() {
		a.Send(ping{Header: Header{Type: "p"}, Text: "one"})
		a.Send(ping{Header: Header{Type: "f", FDs: 1}, Text: strings.Repeat("x", 200000)}, w)
		w.Close()
		a.Send(ping{Header: Header{Type: "p"}, Text: "three"})
	}()
	for i, want := range []string{"p", "f", "p"} {
		h, body, files, err := b.Recv()
		if err != nil || h.Type != want {
			t.Fatalf("frame %d: %v %v", i, h, err)
		}
		var p ping
		if err := Decode(body, &p); err != nil {
			t.Fatal(err)
		}
		if want == "f" {
			if len(files) != 1 || len(p.Text) != 200000 {
				t.Fatalf("files %d, text %d", len(files), len(p.Text))
			}
			files[0].Write([]byte("through"))
			files[0].Close()
			got, _ := io.ReadAll(r)
			if string(got) != "through" {
				t.Fatalf("passed pipe carried %q", got)
			}
		} else if len(files) != 0 {
			t.Fatal("unexpected files")
		}
	}
	if err := a.Send(ping{Header: Header{Type: "f", FDs: 2}}, w); err == nil {
		t.Error("a wrong descriptor count was sent")
	}
}

// A frame that claims descriptors that never came, or is too long, ends the stream.
func TestBadFrames(t *testing.T) {
	for _, raw := range [][]byte{
		binary.BigEndian.AppendUint32(nil, MaxFrame+1),
		append(binary.BigEndian.AppendUint32(nil, 22), `{"type":"x","fds":1}  `...),
		append(binary.BigEndian.AppendUint32(nil, 2), `{}`...),
	} {
		a, bf, _ := Pair()
		b, _ := FromFile(bf)
		a.Unix().Write(raw)
		a.Close()
		if _, _, _, err := b.Recv(); err == nil {
			t.Errorf("%q accepted", raw)
		}
		b.Close()
	}
}

// FuzzParseHeader: no frame body makes the header parser panic or accept a bad count.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(`{"type":"conn","fds":1,"src":"100.64.0.2:1234"}`))
	f.Add([]byte(`{"type":"","fds":-1}`))
	f.Add([]byte(`{"type":"x","fds":99999999999}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err == nil && (h.Type == "" || h.FDs < 0 || h.FDs > maxFDs) {
			t.Fatalf("accepted %+v", h)
		}
	})
}
