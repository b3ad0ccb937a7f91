package serve

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

const fqdn = "sk.tail.test"

func TestApplyForms(t *testing.T) {
	var c ipc.ServeConfig
	op := Caller{}
	steps := []ipc.ServeRequest{
		{Mode: "http", Port: 3003, Target: "http://127.0.0.1:3002"},
		{Mode: "http", Port: 3003, Mount: "/a2", Target: "3004"},
		{Mode: "tcp", Port: 2222, Target: "22"},
		{Mode: "http", Port: 8080, Target: "/srv/share/"},
	}
	for _, r := range steps {
		if err := Apply(&c, fqdn, r, op); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
	}
	b, _ := json.Marshal(c)
	want := `{"TCP":{"2222":{"TCPForward":"127.0.0.1:22"},"3003":{"HTTP":true},"8080":{"HTTP":true}},"Web":{"sk.tail.test:3003":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:3002"},"/a2":{"Proxy":"http://127.0.0.1:3004"}}},"sk.tail.test:8080":{"Handlers":{"/":{"Path":"/srv/share"}}}}}`
	if string(b) != want {
		t.Fatalf("config\n%s\nwant\n%s", b, want)
	}
	// off removes one mount, then the port; TCP off removes the forward.
	for _, r := range []ipc.ServeRequest{{Mode: "http", Port: 3003, Mount: "/a2", Off: true}, {Mode: "tcp", Port: 2222, Off: true}, {Mode: "http", Port: 8080, Off: true}} {
		if err := Apply(&c, fqdn, r, op); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
	}
	b, _ = json.Marshal(c)
	if string(b) != `{"TCP":{"3003":{"HTTP":true}},"Web":{"sk.tail.test:3003":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:3002"}}}}}` {
		t.Fatalf("after off: %s", b)
	}
}

// What skeind refuses, with the config left as it was.
func TestApplyRefusals(t *testing.T) {
	var c ipc.ServeConfig
	Apply(&c, fqdn, ipc.ServeRequest{Mode: "tcp", Port: 2222, Target: "22"}, Caller{})
	before, _ := json.Marshal(c)
	for _, r := range []ipc.ServeRequest{
		{Mode: "http", Port: 80, Target: "http://192.0.2.1:80"},
		{Mode: "http", Port: 80, Target: "http://example.com:80"},
		{Mode: "http", Port: 80, Target: "unix:/var/run/docker.sock"},
		{Mode: "tcp", Port: 81, Target: "unix:/run/x.sock"},
		{Mode: "tcp", Port: 81, Target: "10.0.0.1:22"},
		{Mode: "http", Port: 80, Target: "text:hello"},
		{Mode: "http", Port: 80, Target: "http://user:pw@127.0.0.1:80"},
		{Mode: "https", Port: 443, Target: "3000"},
		{Mode: "tls-terminated-tcp", Port: 443, Target: "3000"},
		{Mode: "http", Port: 2222, Target: "3000"}, // port serves TCP
		{Mode: "http", Port: 0, Target: "3000"},
		{Mode: "http", Port: 80, Target: "0"},
		{Mode: "http", Port: 80, Mount: "/../x", Target: "3000"},
		{Mode: "tcp", Port: 81, Mount: "/x", Target: "22"},
		{Mode: "http", Port: 9999, Off: true},
		{Mode: "gopher", Port: 70, Target: "70"},
	} {
		if err := Apply(&c, fqdn, r, Caller{}); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if after, _ := json.Marshal(c); string(after) != string(before) {
		t.Errorf("a refused request changed the config: %s", after)
	}
	if err := Apply(&c, fqdn, ipc.ServeRequest{Mode: "https", Port: 443, Target: "3000"}, Caller{}); err != ErrNoCerts {
		t.Errorf("https without certificates: %v", err)
	}
	if err := Apply(&c, fqdn, ipc.ServeRequest{Mode: "https", Port: 443, Target: "3000"}, Caller{CertDomains: true}); err != ErrCertsLater {
		t.Errorf("https with certificate domains: %v", err)
	}
	if err := Apply(&c, fqdn, ipc.ServeRequest{Mode: "http", Port: 80, Target: "text:hi"}, Caller{Root: true}); err != nil {
		t.Errorf("text from root: %v", err)
	}
}

func TestHostAndMounts(t *testing.T) {
	self := Self{FQDN: fqdn, Short: "sk", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:115c:a1e0::1")}}
	for h, want := range map[string]bool{
		"sk.tail.test": true, "SK.tail.test.:8080": true, "sk": true, "sk:80": true, "100.64.0.1:8080": true,
		"[fd7a:115c:a1e0::1]:80": true, "other.tail.test": false, "evil.example": false, "": false, "100.64.0.2": false,
	} {
		if hostOK(h, self) != want {
			t.Errorf("hostOK(%q) = %v", h, !want)
		}
	}
	w := &ipc.WebServerConfig{Handlers: map[string]*ipc.HTTPHandler{"/": {Text: "root"}, "/a2": {Text: "a2"}, "/files/": {Text: "files"}}}
	for p, want := range map[string]string{"/": "/", "/x/y": "/", "/a2": "/a2", "/a2/b": "/a2", "/a2b": "/", "/files": "/files/", "/files/x": "/files/", "/../a2": "/a2"} {
		if _, m, ok := handlerFor(w, p); !ok || m != want {
			t.Errorf("handlerFor(%q) = %q %v, want %q", p, m, ok, want)
		}
	}
}

// The proxy keeps Host, strips the mount, sets X-Forwarded-*, and replaces identity headers:
// a forged one from the client is gone, a known untagged peer is named, others are not.
func TestProxyHeaders(t *testing.T) {
	type seen struct{ path, host, xff, xfh, xfp, login, name string }
	got := make(chan seen, 10)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.Path, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("Tailscale-User-Login"), r.Header.Get("Tailscale-User-Name")}
	}))
	defer backend.Close()
	var cfg ipc.ServeConfig
	if err := Apply(&cfg, fqdn, ipc.ServeRequest{Mode: "http", Port: 3003, Mount: "/a2", Target: backend.URL}, Caller{}); err != nil {
		t.Fatal(err)
	}
	peers := map[netip.Addr]Who{
		netip.MustParseAddr("100.64.0.2"): {Known: true, Login: "alice@", Name: "Alïce"},
		netip.MustParseAddr("100.64.0.3"): {Known: true, Tagged: true, Login: "tagged-devices"},
	}
	s := New(Options{
		Config: func() ipc.ServeConfig { return cfg },
		Self: func() Self {
			return Self{FQDN: fqdn, Short: "sk", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}
		},
		Whois: func(a netip.Addr) Who { return peers[a] },
		Files: func(uint16, string) (FileDialer, bool) { return nil, false },
		Logf:  t.Logf,
	})
	defer s.Close()
	get := func(src, host string) (int, string) {
		a, b := net.Pipe()
		go s.HandleConn(b, netip.MustParseAddrPort(src), 3003)
		req, _ := http.NewRequest("GET", "http://"+host+"/a2/deep/x?q=1", nil)
		req.Header.Set("Tailscale-User-Login", "forged@evil")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Proto", "https")
		tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return a, nil }}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b2)
	}
	if code, _ := get("100.64.0.2:5000", "sk.tail.test:3003"); code != 200 {
		t.Fatalf("status %d", code)
	}
	if s := <-got; s != (seen{"/deep/x", "sk.tail.test:3003", "100.64.0.2", "sk.tail.test:3003", "", "alice@", "=?utf-8?q?Al=C3=AFce?="}) {
		t.Errorf("untagged peer: %+v", s)
	}
	get("100.64.0.3:5000", "sk:3003")
	if s := <-got; s.login != "" || s.name != "" || s.xff != "100.64.0.3" {
		t.Errorf("tagged peer: %+v", s)
	}
	if code, _ := get("100.64.0.2:5000", "evil.example:3003"); code != 404 {
		t.Errorf("foreign Host: %d", code)
	}
	if len(got) != 0 {
		t.Errorf("the foreign Host reached the backend")
	}
}

// FuzzRoute: no Host or path a peer sends makes routing panic, and a path never selects a
// mount it is not under.
func FuzzRoute(f *testing.F) {
	f.Add("sk.tail.test:80", "/a2/x")
	f.Add("[::1]:80", "/../../etc/passwd")
	f.Add("100.64.0.1", "//a2")
	w := &ipc.WebServerConfig{Handlers: map[string]*ipc.HTTPHandler{"/": {Text: "r"}, "/a2": {Text: "a"}, "/f/": {Text: "f"}}}
	self := Self{FQDN: fqdn, Short: "sk", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}
	f.Fuzz(func(t *testing.T, host, p string) {
		hostOK(host, self)
		if _, m, ok := handlerFor(w, p); ok && m != "/" {
			c, base := path.Clean("/"+p), strings.TrimSuffix(m, "/")
			if p != m && c != base && !strings.HasPrefix(c, base+"/") {
				t.Fatalf("%q routed to %q", p, m)
			}
		}
	})
}

// https+insecure reaches a local HTTPS server with a certificate of its own.
func TestProxyHTTPSInsecure(t *testing.T) {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls "+r.URL.Path) }))
	defer backend.Close()
	var cfg ipc.ServeConfig
	target := "https+insecure://" + strings.TrimPrefix(backend.URL, "https://")
	if err := Apply(&cfg, fqdn, ipc.ServeRequest{Mode: "http", Port: 80, Target: target}, Caller{}); err != nil {
		t.Fatal(err)
	}
	s := New(Options{
		Config: func() ipc.ServeConfig { return cfg },
		Self:   func() Self { return Self{FQDN: fqdn} },
		Whois:  func(netip.Addr) Who { return Who{} },
		Files:  func(uint16, string) (FileDialer, bool) { return nil, false },
	})
	defer s.Close()
	a, b := net.Pipe()
	go s.HandleConn(b, netip.MustParseAddrPort("100.64.0.2:1"), 80)
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return a, nil }}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + fqdn + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "tls /x" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}
