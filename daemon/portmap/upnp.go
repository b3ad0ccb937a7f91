package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/huin/goupnp"
	ig "github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// upnpService is what we use of a WAN connection service; the goupnp
// clients for WANIPConnection:1/2 and WANPPPConnection:1 all have it.
type upnpService interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string,
		intPort uint16, intClient string, enabled bool, desc string, leaseSec uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	GetSpecificPortMappingEntryCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) (
		intPort uint16, intClient string, enabled bool, desc string, leaseSec uint32, err error)
}

// upnpURNs in order of preference: IGDv2's AddAnyPortMapping lets the
// router pick a free port instead of failing on a conflict.
var upnpURNs = []string{ig.URN_WANIPConnection_2, ig.URN_WANIPConnection_1, ig.URN_WANPPPConnection_1}

// upnpTarget is one WAN connection service on the gateway.
type upnpTarget struct {
	URN     string
	Control *url.URL // always on the gateway
	svc     upnpService
}

// name is the service's short name, e.g. "WANIPConnection:2".
func (t *upnpTarget) name() string {
	return strings.TrimPrefix(t.URN, "urn:schemas-upnp-org:service:")
}

// newUPnPService makes a goupnp client for a service whose SOAP requests go
// through hc (goupnp's own default client would use unmarked sockets and
// the environment's proxy).
func newUPnPService(urn string, control *url.URL, hc *http.Client) (upnpService, error) {
	sc := goupnp.ServiceClient{
		SOAPClient: soap.NewSOAPClient(*control),
		Location:   control,
		Service:    &goupnp.Service{ServiceType: urn},
	}
	sc.SOAPClient.HTTPClient = *hc
	switch urn {
	case ig.URN_WANIPConnection_2:
		return &ig.WANIPConnection2{ServiceClient: sc}, nil
	case ig.URN_WANIPConnection_1:
		return &ig.WANIPConnection1{ServiceClient: sc}, nil
	case ig.URN_WANPPPConnection_1:
		return &ig.WANPPPConnection1{ServiceClient: sc}, nil
	}
	return nil, fmt.Errorf("unsupported UPnP service %q", urn)
}

const maxUPnPBody = 256 << 10 // a description or SOAP answer is a few KB

// gatewayHTTPClient returns a client that dials only gw, with control
// applied to its sockets, no proxy, no redirects and bounded answers.
func gatewayHTTPClient(gw netip.Addr, control func(string, string, syscall.RawConn) error) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second, Control: control}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || ap.Addr().Unmap() != gw {
				return nil, fmt.Errorf("UPnP: refusing to connect to %s: not the gateway %v", addr, gw)
			}
			return d.DialContext(ctx, "tcp4", addr)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 16 << 10,
		ResponseHeaderTimeout:  3 * time.Second,
	}
	return &http.Client{
		Transport: limitedBody{tr},
		Timeout:   5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("UPnP: the router redirected")
		},
	}
}

// limitedBody cuts every response body at maxUPnPBody: goupnp decodes
// whatever it is given.
type limitedBody struct{ rt http.RoundTripper }

func (l limitedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxUPnPBody), resp.Body}
	return resp, nil
}

// upnpDiscover fetches the root description at loc and returns the WAN
// connection services it lists, best first, all pointed at gw.
func upnpDiscover(ctx context.Context, hc *http.Client, gw netip.Addr, loc *url.URL) ([]*upnpTarget, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("device description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("device description %s: %s", loc, resp.Status)
	}
	return parseUPnPRoot(resp.Body, gw, loc)
}

// parseUPnPRoot decodes a root device description and lists its WAN
// connection services (see upnpDiscover).
func parseUPnPRoot(r io.Reader, gw netip.Addr, loc *url.URL) ([]*upnpTarget, error) {
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(r)
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("device description: %w", err)
	}
	base := *loc
	if root.URLBaseStr != "" {
		// Deprecated since UPnP 1.1 but still sent; keep its path and port,
		// never its host.
		if u, err := url.Parse(root.URLBaseStr); err == nil && u.Scheme == "http" {
			base = *u
			port := u.Port()
			if port == "" {
				port = "80"
			}
			base.Host = net.JoinHostPort(gw.String(), port)
		}
	}
	root.SetURLBase(&base)
	var out []*upnpTarget
	for _, urn := range upnpURNs {
		for _, s := range root.Device.FindService(urn) {
			if !s.ControlURL.Ok {
				continue
			}
			u := s.ControlURL.URL
			if u.Scheme != "http" {
				continue
			}
			port := u.Port()
			if port == "" {
				port = "80"
			}
			u.Host = net.JoinHostPort(gw.String(), port)
			u.User = nil
			out = append(out, &upnpTarget{URN: urn, Control: &u})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("device %q offers no WAN connection service", root.Device.FriendlyName)
	}
	return out, nil
}

// upnpErrorCode extracts the UPnP error code of a SOAP fault (0: none).
func upnpErrorCode(err error) int {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return f.Detail.UPnPError.Errorcode
	}
	return 0
}

const (
	upnpErrConflict      = 718 // ConflictInMappingEntry
	upnpErrNoSuchEntry   = 714 // NoSuchEntryInArray
	upnpErrOnlyPermanent = 725 // OnlyPermanentLeasesSupported
	upnpErrInvalidArgs   = 402 // some routers' way of saying the same
)

// upnpMap asks t for a UDP mapping of internal (suggesting external port
// want) and returns the external port and the granted lease (0:
// permanent). IGDv2 picks a free port itself; with IGDv1 we try a few
// random ports after a conflict.
func upnpMap(ctx context.Context, t *upnpTarget, internal netip.AddrPort, want uint16, desc string, lease time.Duration) (uint16, time.Duration, error) {
	leaseSec := uint32(lease / time.Second)
	if want < 1024 {
		want = uint16(1024 + rand.IntN(65535-1024))
	}
	add := func(ext uint16, leaseSec uint32) (uint16, error) {
		if v2, ok := t.svc.(*ig.WANIPConnection2); ok {
			return v2.AddAnyPortMappingCtx(ctx, "", ext, "UDP", internal.Port(), internal.Addr().String(), true, desc, leaseSec)
		}
		return ext, t.svc.AddPortMappingCtx(ctx, "", ext, "UDP", internal.Port(), internal.Addr().String(), true, desc, leaseSec)
	}
	for try := 0; ; try++ {
		got, err := add(want, leaseSec)
		switch code := upnpErrorCode(err); {
		case err == nil:
			if got == 0 {
				return 0, 0, errors.New("router reserved external port 0")
			}
			return got, time.Duration(leaseSec) * time.Second, nil
		case (code == upnpErrOnlyPermanent || code == upnpErrInvalidArgs) && leaseSec != 0:
			leaseSec = 0 // ask again for a permanent lease, deleted on Close
		case code == upnpErrConflict && try < 3:
			want = uint16(1024 + rand.IntN(65535-1024))
		default:
			return 0, 0, fmt.Errorf("%s: %w", t.name(), err)
		}
	}
}

// upnpExternalIP asks t for the router's external address.
func upnpExternalIP(ctx context.Context, t *upnpTarget) (netip.Addr, error) {
	s, err := t.svc.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("GetExternalIPAddress: %w", err)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("GetExternalIPAddress: %q: %w", s, err)
	}
	return a.Unmap(), nil
}

// upnpHasMapping reports whether t still forwards external to internal.
func upnpHasMapping(ctx context.Context, t *upnpTarget, external uint16, internal netip.AddrPort) (bool, error) {
	port, client, _, _, _, err := t.svc.GetSpecificPortMappingEntryCtx(ctx, "", external, "UDP")
	if upnpErrorCode(err) == upnpErrNoSuchEntry {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return port == internal.Port() && client == internal.Addr().String(), nil
}
