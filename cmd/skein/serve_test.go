package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

// The serve status tree is the official client's: TCP forwards together and then one blank
// line, each web host by short name and FQDN (no :80), mounts shortest first and aligned.
func TestServeStatusTree(t *testing.T) {
	cfg := ipc.ServeConfig{
		TCP: map[uint16]*ipc.TCPPortHandler{
			2222: {TCPForward: "127.0.0.1:22"},
			2223: {TCPForward: "127.0.0.1:23"},
			80:   {HTTP: true},
			3003: {HTTP: true},
		},
		Web: map[string]*ipc.WebServerConfig{
			"sk.tail.test:80": {Handlers: map[string]*ipc.HTTPHandler{"/": {Text: `say "hello" to everyone here`}}},
			"sk.tail.test:3003": {Handlers: map[string]*ipc.HTTPHandler{
				"/a2/": {Proxy: "http://127.0.0.1:3004"},
				"/":    {Proxy: "http://127.0.0.1:3002"},
				"/f":   {Path: "/srv/f"},
			}},
		},
	}
	self := ipc.Peer{DNSName: "sk.tail.test.", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}
	var b strings.Builder
	printServeTree(&b, &cfg, self, "")
	want := `|-- tcp://sk.tail.test:2222 (TLS over TCP, tailnet only)
|-- tcp://100.64.0.1:2222
|--> tcp://127.0.0.1:22
|-- tcp://sk.tail.test:2223 (TLS over TCP, tailnet only)
|-- tcp://100.64.0.1:2223
|--> tcp://127.0.0.1:23

http://sk:3003 (tailnet only)
http://sk.tail.test:3003 (tailnet only)
|-- /    proxy http://127.0.0.1:3002
|-- /f   path  /srv/f
|-- /a2/ proxy http://127.0.0.1:3004

http://sk (tailnet only)
http://sk.tail.test (tailnet only)
|-- / text  "say "hello" to ev..."

`
	if b.String() != want {
		t.Errorf("tree:\n%s\nwant:\n%s", b.String(), want)
	}
}
