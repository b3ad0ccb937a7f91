package ts2021

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
)

// HTTP/2 with prior knowledge on top, as the control protocol uses it; without
// an early payload the server's SETTINGS header is what gets replayed.
func TestHTTP2OverConn(t *testing.T) {
	for _, withEarly := range []bool{true, false} {
		name := "early"
		var early [][]byte
		if !withEarly {
			name, early = "no-early", [][]byte{}
		}
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, false, srvOpts{
				early: early,
				run: func(s *srvConn) {
					h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						w.Header().Set("X-Path", r.URL.Path)
						io.Copy(w, r.Body)
					})
					(&http2.Server{}).ServeConn(s.NetConn(), &http2.ServeConnOpts{Handler: h})
				},
			})
			c := dial(t, ts.opts())
			if (c.EarlyPayload() != nil) != withEarly {
				t.Fatalf("EarlyPayload = %v", c.EarlyPayload())
			}
			cc, err := (&http2.Transport{}).NewClientConn(c)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			body := make([]byte, 200_000)
			rand.Read(body)
			req, _ := http.NewRequest("POST", "https://control.example/machine/map", bytes.NewReader(body))
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, body) || resp.Header.Get("X-Path") != "/machine/map" {
				t.Fatalf("response: %d bytes, err %v, path %q", len(got), err, resp.Header.Get("X-Path"))
			}
		})
	}
}
