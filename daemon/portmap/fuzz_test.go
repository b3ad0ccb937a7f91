package portmap

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
)

// The router's answers are untrusted bytes: each parser must reject or
// decode without panicking, and what it decodes must encode back the same.

func FuzzPMPResponse(f *testing.F) {
	f.Add(pmpResponse{Op: pmpOpExternalAddr, Epoch: 77, External: netip.MustParseAddr("203.0.113.1")}.marshal())
	f.Add(pmpResponse{Op: pmpOpMapUDP, Epoch: 1, Internal: 41641, Mapped: 41642, Lifetime: 7200}.marshal())
	f.Add([]byte{0, 0x80, 0, 3, 0, 0, 0, 9})
	f.Add(pmpMapRequest(1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePMPResponse(b)
		if err != nil {
			return
		}
		if r.Result == pmpSuccess && r.Op == pmpOpExternalAddr && !r.External.Is4() {
			t.Fatalf("external %v", r.External)
		}
		again, err := parsePMPResponse(r.marshal())
		if err != nil || again != r {
			t.Fatalf("round trip %+v -> %+v %v", r, again, err)
		}
		parsePMPRequest(b)
	})
}

func FuzzPCPResponse(f *testing.F) {
	nonce := pcpNonce{1, 2, 3}
	f.Add(pcpResponse{Op: pcpOpAnnounce, Epoch: 5}.marshal())
	f.Add(pcpResponse{Op: pcpOpMap, Lifetime: 7200, Nonce: nonce, Protocol: protoUDP, Internal: 41641,
		External: netip.MustParseAddrPort("203.0.113.1:41641")}.marshal())
	f.Add(pcpResponse{Op: pcpOpMap, Result: pcpNoResources}.marshal()[:pcpHeaderLen])
	f.Add(pmpResponse{Op: 1, Result: pmpUnsupportedVersion}.marshal())
	f.Add(pcpMapRequest(netip.MustParseAddr("10.0.0.1"), nonce, 1, 2, netip.Addr{}, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		parsePCPRequest(b)
		r, err := parsePCPResponse(b)
		if err != nil || r.Op != pcpOpMap && r.Op != pcpOpAnnounce {
			return
		}
		if r.Op == pcpOpMap && len(b) < pcpHeaderLen+pcpMapLen {
			return // a short error answer: nothing more to compare
		}
		again, err := parsePCPResponse(r.marshal())
		if err != nil || again != r {
			t.Fatalf("round trip %+v -> %+v %v", r, again, err)
		}
	})
}

func FuzzSSDPResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://[::1]:5000/x\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200\r\nLocation:http://a:0\r\n\r\n"))
	gw := netip.MustParseAddr("192.168.1.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSSDPResponse(b, gw)
		if err != nil {
			return
		}
		ap, err := netip.ParseAddrPort(r.Location.Host)
		if err != nil || ap.Addr() != gw || r.Location.Scheme != "http" {
			t.Fatalf("LOCATION %q does not point at the gateway", r.Location)
		}
		r.isIGD()
	})
}

// FuzzUPnPRoot feeds device descriptions: every control URL must end up on
// the gateway.
func FuzzUPnPRoot(f *testing.F) {
	f.Add([]byte(`<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl</controlURL></service></serviceList></device></root>`))
	f.Add([]byte(`<root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://h:1/</URLBase><device><deviceList><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><controlURL>http://x:9/c</controlURL></service></serviceList></device></deviceList></device></root>`))
	gw := netip.MustParseAddr("192.168.1.1")
	loc, _ := url.Parse("http://192.168.1.1:5000/rootDesc.xml")
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := parseUPnPRoot(bytes.NewReader(b), gw, loc)
		if err != nil {
			return
		}
		for _, x := range ts {
			ap, err := netip.ParseAddrPort(x.Control.Host)
			if err != nil || ap.Addr() != gw || x.Control.Scheme != "http" {
				t.Fatalf("control URL %q is not on the gateway", x.Control)
			}
		}
	})
}

// answerWith is an http.RoundTripper that answers every request with body.
type answerWith struct {
	status int
	body   []byte
}

func (a answerWith) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    a.status,
		Body:          io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)),
		Header:        http.Header{"Content-Type": {"text/xml"}},
		Request:       r,
	}, nil
}

// FuzzSOAPResponse feeds the router's SOAP answers to every action we use,
// through goupnp's decoder and our checks: no panic, and a "mapped" port is
// never 0.
func FuzzSOAPResponse(f *testing.F) {
	env := func(inner string) []byte {
		return []byte(`<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>` + inner + `</s:Body></s:Envelope>`)
	}
	f.Add(200, env(`<u:AddAnyPortMappingResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"><NewReservedPort>41641</NewReservedPort></u:AddAnyPortMappingResponse>`))
	f.Add(200, env(`<u:GetExternalIPAddressResponse xmlns:u="x"><NewExternalIPAddress>0.0.0.0</NewExternalIPAddress></u:GetExternalIPAddressResponse>`))
	f.Add(500, env(`<s:Fault><faultcode>s:Client</faultcode><detail><UPnPError><errorCode>725</errorCode></UPnPError></detail></s:Fault>`))
	f.Add(200, env(`<u:GetSpecificPortMappingEntryResponse xmlns:u="x"><NewInternalPort>70000</NewInternalPort><NewInternalClient>1.2.3.4</NewInternalClient><NewEnabled>2</NewEnabled></u:GetSpecificPortMappingEntryResponse>`))
	ctl, _ := url.Parse("http://192.168.1.1:5000/ctl")
	internal := netip.MustParseAddrPort("192.168.1.10:41641")
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			status = 200
		}
		hc := &http.Client{Transport: limitedBody{answerWith{status, body}}}
		ctx := context.Background()
		for _, urn := range upnpURNs {
			svc, err := newUPnPService(urn, ctl, hc)
			if err != nil {
				t.Fatal(err)
			}
			tg := &upnpTarget{URN: urn, Control: ctl, svc: svc}
			if ip, err := upnpExternalIP(ctx, tg); err == nil && !ip.IsValid() {
				t.Fatal("valid answer with an invalid address")
			}
			if port, _, err := upnpMap(ctx, tg, internal, 41641, "skein", 7200e9); err == nil && port == 0 {
				t.Fatal("mapped port 0")
			}
			upnpHasMapping(ctx, tg, 41641, internal)
			upnpErrorCode(svc.DeletePortMappingCtx(ctx, "", 41641, "UDP"))
		}
	})
}
