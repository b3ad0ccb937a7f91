package portmap

import (
	"bytes"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestPMPRoundTrip(t *testing.T) {
	q, err := parsePMPRequest(pmpMapRequest(41641, 50000, 7200))
	if err != nil || q != (pmpRequest{Op: pmpOpMapUDP, Internal: 41641, External: 50000, Lifetime: 7200}) {
		t.Fatalf("map request: %+v %v", q, err)
	}
	if q, err := parsePMPRequest(pmpExternalAddrRequest()); err != nil || q.Op != pmpOpExternalAddr {
		t.Fatalf("external request: %+v %v", q, err)
	}
	for _, r := range []pmpResponse{
		{Op: pmpOpExternalAddr, Epoch: 77, External: netip.MustParseAddr("203.0.113.1")},
		{Op: pmpOpMapUDP, Epoch: 1, Internal: 41641, Mapped: 41642, Lifetime: 7200},
		{Op: pmpOpMapUDP, Result: pmpNetworkFailure, Epoch: 3},
	} {
		got, err := parsePMPResponse(r.marshal())
		if err != nil || got != r {
			t.Errorf("round trip %+v -> %+v, %v", r, got, err)
		}
	}
	// miniupnpd's answer with a reserved WAN address (lab-notes.md).
	got, err := parsePMPResponse([]byte{0, 0x80, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0})
	if err != nil || got.Result != pmpNetworkFailure || got.Result.String() != "network failure" {
		t.Errorf("network failure answer: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0x80, 0, 0}, {0, 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {2, 0x80, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0, 0}} {
		if _, err := parsePMPResponse(bad); err == nil {
			t.Errorf("accepted %x", bad)
		}
	}
}

func TestPCPRoundTrip(t *testing.T) {
	self := netip.MustParseAddr("192.168.1.10")
	nonce := pcpNonce{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	b := pcpMapRequest(self, nonce, 41641, 41641, netip.Addr{}, 7200)
	if len(b) != 60 {
		t.Fatalf("MAP request is %d bytes, want 60", len(b))
	}
	q, err := parsePCPRequest(b)
	want := pcpRequest{Op: pcpOpMap, Lifetime: 7200, Client: self, Nonce: nonce, Protocol: protoUDP,
		Internal: 41641, Suggested: 41641, SuggestedIP: netip.IPv4Unspecified()}
	if err != nil || q != want {
		t.Fatalf("MAP request: %+v %v, want %+v", q, err, want)
	}
	if q, err := parsePCPRequest(pcpAnnounceRequest(self)); err != nil || q.Op != pcpOpAnnounce || q.Client != self || q.Lifetime != 0 {
		t.Fatalf("ANNOUNCE: %+v %v", q, err)
	}
	for _, r := range []pcpResponse{
		{Op: pcpOpAnnounce, Epoch: 5},
		{Op: pcpOpMap, Lifetime: 7200, Epoch: 9, Nonce: nonce, Protocol: protoUDP, Internal: 41641,
			External: netip.MustParseAddrPort("203.0.113.1:41641")},
		{Op: pcpOpMap, Result: pcpNotAuthorized, Nonce: nonce, External: netip.AddrPortFrom(netip.IPv4Unspecified(), 0)},
	} {
		got, err := parsePCPResponse(r.marshal())
		if err != nil || got != r {
			t.Errorf("round trip %+v -> %+v, %v", r, got, err)
		}
	}
	// A NAT-PMP-only router answers PCP in NAT-PMP (RFC 6887 section 9).
	if _, err := parsePCPResponse(pmpResponse{Op: 1, Result: pmpUnsupportedVersion}.marshal()); err != errPCPVersion {
		t.Errorf("version answer: %v", err)
	}
	// Short error answers without the MAP data are valid.
	short := pcpResponse{Op: pcpOpMap, Result: pcpMalformedRequest}.marshal()[:pcpHeaderLen]
	if r, err := parsePCPResponse(short); err != nil || r.Result != pcpMalformedRequest {
		t.Errorf("short error: %+v %v", r, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 24), pcpAnnounceRequest(self), append(pcpResponse{Op: pcpOpMap}.marshal()[:40], 0, 0, 0, 0)} {
		if _, err := parsePCPResponse(bad); err == nil {
			t.Errorf("accepted %x", bad)
		}
	}
	if pcpResult(200).String() != "result 200" || pcpAddressMismatch.String() != "address mismatch" {
		t.Error("result names")
	}
}

func TestSSDPParse(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	resp := "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
		"USN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
		"LOCATION: http://10.9.9.9:5000/rootDesc.xml#frag\r\nSERVER: miniupnpd\r\n\r\n"
	r, err := parseSSDPResponse([]byte(resp), gw)
	if err != nil {
		t.Fatal(err)
	}
	if r.Location.String() != "http://192.168.1.1:5000/rootDesc.xml" || !r.isIGD() || r.Server != "miniupnpd" {
		t.Errorf("got %+v (%s)", r, r.Location)
	}
	printer := strings.Replace(strings.Replace(resp, "InternetGatewayDevice", "Printer", 2), "LOCATION: http://10.9.9.9:5000", "LOCATION: http://10.9.9.9", 1)
	if r, err := parseSSDPResponse([]byte(printer), gw); err != nil || r.isIGD() || r.Location.Host != "192.168.1.1:80" {
		t.Errorf("printer: %+v %v", r, err)
	}
	for _, bad := range []string{
		"",
		"HTTP/1.1 404 Not Found\r\nLOCATION: http://a/\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nLOCATION: https://192.168.1.1/x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n",
		"HTTP/1.1 200 OK\r\nLOCATION: http://u:p@192.168.1.1/x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:99999/x\r\n\r\n",
		"M-SEARCH * HTTP/1.1\r\n\r\n",
	} {
		if _, err := parseSSDPResponse([]byte(bad), gw); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// Whatever hosts the description names, every URL we use is on the
// gateway.
func TestUPnPRootPointsAtGateway(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	loc, _ := url.Parse("http://192.168.1.1:5000/rootDesc.xml")
	desc := `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://10.0.0.5:6000/</URLBase>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>r</friendlyName>
<serviceList>
<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>/ppp</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>http://evil.example:7000/ip</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/l3f</controlURL></service>
</serviceList></device></root>`
	ts, err := parseUPnPRoot(strings.NewReader(desc), gw, loc)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range ts {
		got = append(got, x.name()+" "+x.Control.String())
	}
	want := []string{"WANIPConnection:1 http://192.168.1.1:7000/ip", "WANPPPConnection:1 http://192.168.1.1:6000/ppp"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("services %q, want %q", got, want)
	}
	if _, err := parseUPnPRoot(strings.NewReader(`<root xmlns="urn:schemas-upnp-org:device-1-0"><device/></root>`), gw, loc); err == nil {
		t.Error("a device without WAN services was accepted")
	}
}

func TestCheckPublic(t *testing.T) {
	for _, a := range []string{"203.0.113.7", "198.18.3.4", "44.0.1.1", "8.8.8.8"} {
		if err := checkPublic(netip.MustParseAddr(a)); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0", "0.1.2.3", "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "100.127.255.254", "169.254.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "2001:db8::1"} {
		if checkPublic(netip.MustParseAddr(a)) == nil {
			t.Errorf("%s counted as public", a)
		}
	}
	if checkPublic(netip.Addr{}) == nil {
		t.Error("invalid address counted as public")
	}
}

func TestEpochRule(t *testing.T) {
	m := &mapping{epoch: 1000}
	m.epochAt = m.epochAt.Add(0)
	now := m.epochAt.Add(100e9) // 100 s later
	for _, tc := range []struct {
		epoch  uint32
		reboot bool
	}{{1100, false}, {1088, false}, {1085, false}, {1080, true}, {5, true}, {5000, false}} {
		if got := m.rebooted(tc.epoch, now); got != tc.reboot {
			t.Errorf("epoch %d after 100 s from 1000: rebooted=%v", tc.epoch, got)
		}
	}
	if !bytes.Equal(pcpAnnounceRequest(netip.MustParseAddr("10.0.0.1"))[8:24], netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()) {
		t.Error("PCP client address is not v4-mapped")
	}
}
