package ts2021

// The test server: ts2021test's responder (written independently of this package) behind an
// httptest server, with knobs for misbehaviour.

import (
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/skeinvpn/skein/daemon/control/ts2021/ts2021test"
	"github.com/skeinvpn/skein/daemon/key"
)

// srvConn is the server's view of the transport (daemon/control/ts2021/ts2021test).
type srvConn = ts2021test.Conn

type srvOpts struct {
	head            string   // replaces the 101 head, e.g. a 404
	errMsg          string   // send a type-0x03 frame instead of the response
	corruptResponse bool     // flip a bit in the response tag
	early           [][]byte // plaintext records sent right after the response; nil = standard early payload
	noHandshake     bool     // hijack and then say nothing
	run             func(s *srvConn)
}

type testServer struct {
	*httptest.Server
	priv key.MachinePrivate
	chal key.ChallengePublic
	wg   sync.WaitGroup // hijacked handlers, which httptest does not wait for
}

func mustChallenge(testing.TB) key.ChallengePublic { return ts2021test.NewChallenge() }

func earlyPayloadBytes(_ testing.TB, chal key.ChallengePublic) []byte {
	return ts2021test.EarlyPayload(chal)
}

func newTestServer(t *testing.T, tlsOn bool, o srvOpts) *testServer {
	ts := &testServer{priv: key.NewMachine(), chal: mustChallenge(t)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.wg.Add(1)
		defer ts.wg.Done()
		if r.Method != "POST" || r.URL.Path != "/ts2021" || r.URL.RawQuery != "" {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		if r.Header.Get("Upgrade") != "tailscale-control-protocol" || r.Header.Get("Connection") != "upgrade" {
			t.Errorf("upgrade headers: %q", r.Header)
		}
		init, err := base64.StdEncoding.DecodeString(r.Header.Get("X-Tailscale-Handshake"))
		if err != nil {
			t.Errorf("handshake header: %v", err)
		}
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer nc.Close()
		if o.noHandshake {
			io.Copy(io.Discard, nc) // until the client gives up
			return
		}
		out := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n")
		if o.head != "" {
			out = []byte(o.head)
		}
		resp, client, version, rx, tx, err := ts2021test.Respond(ts.priv, init)
		if err != nil {
			nc.Write(out) // like a server that upgrades and then hangs up
			return
		}
		s := ts2021test.NewConn(nc, brw.Reader, rx, tx, client, version)
		switch {
		case o.errMsg != "":
			out = append(out, 3, byte(len(o.errMsg)>>8), byte(len(o.errMsg)))
			out = append(out, o.errMsg...)
		case o.corruptResponse:
			resp[len(resp)-1] ^= 1
			out = append(out, resp...)
		default:
			out = append(out, resp...)
			early := o.early
			if early == nil {
				early = [][]byte{earlyPayloadBytes(t, ts.chal)}
			}
			for _, p := range early {
				out = append(out, s.Record(p)...)
			}
		}
		// One write, so the Noise bytes ride in the same segment as the 101.
		if _, err := nc.Write(out); err != nil {
			return
		}
		if o.run != nil {
			o.run(s)
		}
	})
	ts.Server = httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS failures are expected in some tests
	if tlsOn {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(func() { ts.Close(); ts.wg.Wait() })
	return ts
}

func (ts *testServer) opts() DialOptions {
	return DialOptions{ServerURL: ts.URL, MachineKey: key.NewMachine(), ServerKey: ts.priv.Public()}
}
