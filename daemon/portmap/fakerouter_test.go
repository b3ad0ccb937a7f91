package portmap

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRouter is an in-process gateway on 127.0.0.1: NAT-PMP and PCP on one
// UDP socket (like miniupnpd), SSDP on another, and an IGD over httptest.
type fakeRouter struct {
	t        *testing.T
	pxp      *net.UDPConn
	ssdp     *net.UDPConn
	http     *httptest.Server
	external netip.Addr // what the router claims as its external address

	mu        sync.Mutex
	offerPMP  bool
	offerPCP  bool
	offerUPnP bool
	igdV2     bool
	start     time.Time           // epoch 0
	maps      map[uint16]*fakeMap // by external port
	log       []fakeReq
	tcpConns  int
}

type fakeMap struct {
	proto    Protocol
	internal netip.AddrPort
	external uint16
	nonce    pcpNonce
	lifetime uint32
	desc     string
}

// fakeReq records one request the router served.
type fakeReq struct {
	at       time.Time
	proto    Protocol
	op       string // "map", "delete", "probe", "get", "external"
	lifetime uint32
	nonce    pcpNonce
	port     uint16 // internal port
}

func newFakeRouter(t *testing.T, pmp, pcp, upnp bool) *fakeRouter {
	t.Helper()
	f := &fakeRouter{
		t: t, offerPMP: pmp, offerPCP: pcp, offerUPnP: upnp, igdV2: true,
		external: netip.MustParseAddr("203.0.113.7"),
		start:    time.Now().Add(-time.Hour),
		maps:     map[uint16]*fakeMap{},
	}
	var err error
	if f.pxp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if f.ssdp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	f.http = httptest.NewUnstartedServer(http.HandlerFunc(f.serveHTTP))
	f.http.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.mu.Lock()
			f.tcpConns++
			f.mu.Unlock()
		}
	}
	f.http.Start()
	go f.servePXP()
	go f.serveSSDP()
	t.Cleanup(func() {
		f.pxp.Close()
		f.ssdp.Close()
		f.http.Close()
	})
	return f
}

// options points a Client at the fake.
func (f *fakeRouter) options(port uint16) Options {
	return Options{
		LocalPort:     port,
		Gateway:       netip.MustParseAddr("127.0.0.1"),
		pxpPort:       uint16(f.pxp.LocalAddr().(*net.UDPAddr).Port),
		ssdpPort:      uint16(f.ssdp.LocalAddr().(*net.UDPAddr).Port),
		noMulticast:   true,
		CheckInterval: time.Hour,
		Logf:          f.t.Logf,
	}
}

func (f *fakeRouter) epoch() uint32 { return uint32(time.Since(f.start) / time.Second) }

// reboot forgets every mapping and restarts the epoch.
func (f *fakeRouter) reboot() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.start = time.Now()
	f.maps = map[uint16]*fakeMap{}
}

func (f *fakeRouter) record(r fakeReq) {
	r.at = time.Now()
	f.log = append(f.log, r)
}

// requests returns the recorded requests of one protocol and op.
func (f *fakeRouter) requests(p Protocol, op string) []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeReq
	for _, r := range f.log {
		if r.proto == p && r.op == op {
			out = append(out, r)
		}
	}
	return out
}

// mapping returns the router's mapping of internal port, if any.
func (f *fakeRouter) mapping(internal uint16) *fakeMap {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.maps {
		if m.internal.Port() == internal {
			c := *m
			return &c
		}
	}
	return nil
}

func (f *fakeRouter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.maps)
}

func (f *fakeRouter) servePXP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := f.pxp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if resp := f.handlePXP(buf[:n], from); resp != nil {
			f.pxp.WriteToUDPAddrPort(resp, from)
		}
	}
}

func (f *fakeRouter) handlePXP(b []byte, from netip.AddrPort) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	src := from.Addr().Unmap()
	epoch := f.epoch()
	if len(b) > 0 && b[0] == pmpVersion {
		if !f.offerPMP {
			return nil
		}
		q, err := parsePMPRequest(b)
		if err != nil {
			return nil
		}
		r := pmpResponse{Op: q.Op, Epoch: epoch}
		if q.Op == pmpOpExternalAddr {
			f.record(fakeReq{proto: NATPMP, op: "external"})
			r.External = f.external
			return r.marshal()
		}
		r.Internal = q.Internal
		if q.Lifetime == 0 {
			f.record(fakeReq{proto: NATPMP, op: "delete", port: q.Internal})
			for ext, m := range f.maps {
				if m.internal == netip.AddrPortFrom(src, q.Internal) {
					delete(f.maps, ext)
				}
			}
			return r.marshal()
		}
		f.record(fakeReq{proto: NATPMP, op: "map", port: q.Internal, lifetime: q.Lifetime})
		ext := f.place(q.External, netip.AddrPortFrom(src, q.Internal))
		f.maps[ext] = &fakeMap{proto: NATPMP, internal: netip.AddrPortFrom(src, q.Internal), external: ext, lifetime: q.Lifetime}
		r.Mapped, r.Lifetime = ext, q.Lifetime
		return r.marshal()
	}
	if len(b) > 0 && b[0] == pcpVersion {
		if !f.offerPCP {
			if f.offerPMP { // a NAT-PMP-only router says so in NAT-PMP
				return pmpResponse{Op: b[1] & 0x7f, Result: pmpUnsupportedVersion, Epoch: epoch}.marshal()
			}
			return nil
		}
		q, err := parsePCPRequest(b)
		if err != nil {
			return nil
		}
		r := pcpResponse{Op: q.Op, Epoch: epoch, Lifetime: q.Lifetime}
		if q.Client != src {
			r.Result = pcpAddressMismatch
			return r.marshal()
		}
		if q.Op == pcpOpAnnounce {
			f.record(fakeReq{proto: PCP, op: "probe"})
			return r.marshal()
		}
		r.Nonce, r.Protocol, r.Internal = q.Nonce, q.Protocol, q.Internal
		internal := netip.AddrPortFrom(src, q.Internal)
		if q.Lifetime == 0 {
			f.record(fakeReq{proto: PCP, op: "delete", port: q.Internal, nonce: q.Nonce})
			for ext, m := range f.maps {
				if m.internal == internal {
					if m.nonce != q.Nonce {
						r.Result = pcpNotAuthorized
						return r.marshal()
					}
					delete(f.maps, ext)
				}
			}
			r.External = netip.AddrPortFrom(f.external, 0)
			return r.marshal()
		}
		f.record(fakeReq{proto: PCP, op: "map", port: q.Internal, lifetime: q.Lifetime, nonce: q.Nonce})
		for _, m := range f.maps {
			if m.internal == internal && m.nonce != q.Nonce {
				r.Result = pcpNotAuthorized
				return r.marshal()
			}
		}
		ext := f.place(q.Suggested, internal)
		f.maps[ext] = &fakeMap{proto: PCP, internal: internal, external: ext, nonce: q.Nonce, lifetime: q.Lifetime}
		r.External = netip.AddrPortFrom(f.external, ext)
		return r.marshal()
	}
	return nil
}

// place picks the external port: the one asked for, unless another
// client holds it. Called with mu held.
func (f *fakeRouter) place(want uint16, internal netip.AddrPort) uint16 {
	if want == 0 {
		want = internal.Port()
	}
	for p := want; ; p++ {
		if p < 1024 {
			p = 1024
		}
		m := f.maps[p]
		if m == nil || m.internal == internal {
			return p
		}
	}
}

func (f *fakeRouter) serveSSDP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := f.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		f.mu.Lock()
		offer := f.offerUPnP
		f.mu.Unlock()
		if !offer || !strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
			continue
		}
		// Name another address in LOCATION: the client must use the gateway.
		port := f.http.Listener.Addr().(*net.TCPAddr).Port
		resp := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n" +
			"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"USN: uuid:fake::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"EXT:\r\nSERVER: fake/1 UPnP/1.1 fake/1\r\n" +
			"LOCATION: http://192.0.2.1:" + strconv.Itoa(port) + "/rootDesc.xml\r\n\r\n"
		f.ssdp.WriteToUDPAddrPort([]byte(resp), from)
	}
}

func (f *fakeRouter) serveHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	v2 := f.igdV2
	f.mu.Unlock()
	svc := "urn:schemas-upnp-org:service:WANIPConnection:1"
	if v2 {
		svc = "urn:schemas-upnp-org:service:WANIPConnection:2"
	}
	if r.Method == http.MethodGet && r.URL.Path == "/rootDesc.xml" {
		fmt.Fprintf(w, `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><friendlyName>fake</friendlyName>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<serviceList><service><serviceType>%s</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`, svc)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/ctl/IPConn" {
		http.NotFound(w, r)
		return
	}
	action := strings.Trim(r.Header.Get("SOAPACTION"), `"`)
	_, name, _ := strings.Cut(action, "#")
	body, _ := io.ReadAll(r.Body)
	var env struct {
		Body struct {
			Inner []byte `xml:",innerxml"`
		}
	}
	xml.Unmarshal(body, &env)
	var args struct {
		RemoteHost string `xml:"NewRemoteHost"`
		ExtPort    uint16 `xml:"NewExternalPort"`
		Proto      string `xml:"NewProtocol"`
		IntPort    uint16 `xml:"NewInternalPort"`
		Client     string `xml:"NewInternalClient"`
		Desc       string `xml:"NewPortMappingDescription"`
		Lease      uint32 `xml:"NewLeaseDuration"`
	}
	xml.Unmarshal(env.Body.Inner, &args)
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(inner string) {
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`, name, svc, inner, name)
	}
	fault := func(code int, desc string) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code, desc)
	}
	switch name {
	case "GetExternalIPAddress":
		f.record(fakeReq{proto: UPnP, op: "external"})
		reply("<NewExternalIPAddress>" + f.external.String() + "</NewExternalIPAddress>")
	case "AddAnyPortMapping", "AddPortMapping":
		if name == "AddAnyPortMapping" && !v2 {
			fault(401, "Invalid Action")
			return
		}
		client, err := netip.ParseAddr(args.Client)
		if err != nil || args.Proto != "UDP" {
			fault(402, "Invalid Args")
			return
		}
		internal := netip.AddrPortFrom(client, args.IntPort)
		f.record(fakeReq{proto: UPnP, op: "map", port: args.IntPort, lifetime: args.Lease})
		ext := args.ExtPort
		if m := f.maps[ext]; m != nil && m.internal != internal {
			if name == "AddPortMapping" {
				fault(718, "ConflictInMappingEntry")
				return
			}
			ext = f.place(ext, internal)
		}
		f.maps[ext] = &fakeMap{proto: UPnP, internal: internal, external: ext, lifetime: args.Lease, desc: args.Desc}
		if name == "AddAnyPortMapping" {
			reply(fmt.Sprintf("<NewReservedPort>%d</NewReservedPort>", ext))
		} else {
			reply("")
		}
	case "DeletePortMapping":
		f.record(fakeReq{proto: UPnP, op: "delete", port: args.ExtPort})
		if f.maps[args.ExtPort] == nil {
			fault(714, "NoSuchEntryInArray")
			return
		}
		delete(f.maps, args.ExtPort)
		reply("")
	case "GetSpecificPortMappingEntry":
		f.record(fakeReq{proto: UPnP, op: "get", port: args.ExtPort})
		m := f.maps[args.ExtPort]
		if m == nil {
			fault(714, "NoSuchEntryInArray")
			return
		}
		reply(fmt.Sprintf("<NewInternalPort>%d</NewInternalPort><NewInternalClient>%s</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>%s</NewPortMappingDescription><NewLeaseDuration>%d</NewLeaseDuration>",
			m.internal.Port(), m.internal.Addr(), m.desc, m.lifetime))
	default:
		fault(401, "Invalid Action")
	}
}
