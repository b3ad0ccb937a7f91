package ts2021

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// srvNetConn turns the responder's transport into a net.Conn for http2.Server.
type srvNetConn struct {
	s   *srvConn
	buf []byte
	wmu sync.Mutex
}

func (c *srvNetConn) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		r, err := c.s.readRecord()
		if err != nil {
			return 0, err
		}
		c.buf = r
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *srvNetConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for off := 0; off < len(p); off += 4077 {
		if err := c.s.writeRecord(p[off:min(len(p), off+4077)]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func (c *srvNetConn) Close() error                       { return c.s.nc.Close() }
func (c *srvNetConn) LocalAddr() net.Addr                { return c.s.nc.LocalAddr() }
func (c *srvNetConn) RemoteAddr() net.Addr               { return c.s.nc.RemoteAddr() }
func (c *srvNetConn) SetDeadline(t time.Time) error      { return c.s.nc.SetDeadline(t) }
func (c *srvNetConn) SetReadDeadline(t time.Time) error  { return c.s.nc.SetReadDeadline(t) }
func (c *srvNetConn) SetWriteDeadline(t time.Time) error { return c.s.nc.SetWriteDeadline(t) }

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
					(&http2.Server{}).ServeConn(&srvNetConn{s: s}, &http2.ServeConnOpts{Handler: h})
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
