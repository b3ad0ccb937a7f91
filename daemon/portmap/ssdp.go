package portmap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// SSDP (UPnP device discovery) on udp/1900: we ask the gateway directly and
// the SSDP multicast group, for IGDs and for everything (some routers answer
// "ssdp:all" with only their first device, others only the IGD search).

var ssdpGroup = netip.AddrFrom4([4]byte{239, 255, 255, 250})

const ssdpPort = 1900

func ssdpSearch(st string) []byte {
	return []byte("M-SEARCH * HTTP/1.1\r\n" +
		"HOST: 239.255.255.250:1900\r\n" +
		"ST: " + st + "\r\n" +
		"MAN: \"ssdp:discover\"\r\n" +
		"MX: 1\r\n\r\n")
}

var (
	ssdpSearchAll = ssdpSearch("ssdp:all")
	ssdpSearchIGD = ssdpSearch("urn:schemas-upnp-org:device:InternetGatewayDevice:1")
)

// ssdpResponse is what we keep of an answer to M-SEARCH.
type ssdpResponse struct {
	Location *url.URL // the root device description, on the gateway
	ST       string
	USN      string
	Server   string
}

// isIGD reports whether the answer is about an Internet gateway (device or
// one of its WAN connection services), not a printer or a TV.
func (r ssdpResponse) isIGD() bool {
	for _, s := range []string{r.ST, r.USN} {
		if strings.Contains(s, "InternetGatewayDevice") || strings.Contains(s, "WANIPConnection") ||
			strings.Contains(s, "WANPPPConnection") || strings.Contains(s, "WANDevice") ||
			strings.Contains(s, "WANConnectionDevice") {
			return true
		}
	}
	return false
}

// parseSSDPResponse decodes an answer to M-SEARCH from gw. Its LOCATION must
// be an http URL; the host is replaced by gw (some routers name another of
// their addresses), so that we only ever talk HTTP to the gateway.
func parseSSDPResponse(b []byte, gw netip.Addr) (ssdpResponse, error) {
	var r ssdpResponse
	if len(b) > 4096 {
		return r, errors.New("SSDP: oversized answer")
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return r, fmt.Errorf("SSDP: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("SSDP: status %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return r, errors.New("SSDP: no LOCATION")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return r, fmt.Errorf("SSDP: LOCATION: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" || u.User != nil {
		return r, fmt.Errorf("SSDP: LOCATION %q is not a plain http URL", loc)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	if p, err := netip.ParseAddrPort("0.0.0.0:" + port); err != nil || p.Port() == 0 {
		return r, fmt.Errorf("SSDP: LOCATION %q: bad port", loc)
	}
	u.Host = net.JoinHostPort(gw.String(), port)
	u.Fragment, u.RawFragment = "", ""
	r.Location = u
	r.ST = resp.Header.Get("St")
	r.USN = resp.Header.Get("Usn")
	r.Server = resp.Header.Get("Server")
	return r, nil
}
