package backend

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/skeinvpn/skein/ipc"
)

// tunnelLocked returns the running data plane, or the error a front end shows without one.
func (b *Backend) tunnelLocked(what string) (Dataplane, error) {
	if dp := b.tun.dp; dp != nil {
		return dp, nil
	}
	return nil, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: what, Fix: "skein up"}
}

// Ping sends one disco ping to a peer.
func (b *Backend) Ping(ctx context.Context, peer string) (ipc.PingResult, error) {
	b.mu.Lock()
	dp, err := b.tunnelLocked("not connected")
	if err != nil || b.stateLocked() != ipc.StateRunning {
		b.mu.Unlock()
		return ipc.PingResult{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	n, err := b.findPeerLocked(peer)
	if err != nil {
		b.mu.Unlock()
		return ipc.PingResult{}, err
	}
	res := ipc.PingResult{NodeName: shortName(n)}
	for _, a := range n.Addresses {
		if a.Addr().Is4() {
			res.NodeIP = a.Addr()
			break
		}
	}
	online := n.Online == nil || *n.Online
	b.mu.Unlock()
	if !online {
		res.Err = "peer is offline"
		return res, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := dp.Ping(pctx, n.Key)
	res.Err = r.Err
	res.LatencySeconds = r.Latency.Seconds()
	if r.Endpoint.IsValid() {
		res.Endpoint = r.Endpoint.String()
	}
	if r.DERPRegion != 0 {
		res.DERPRegionID = r.DERPRegion
		b.mu.Lock()
		res.DERPRegionCode = b.regionCodeLocked(r.DERPRegion)
		b.mu.Unlock()
	}
	return res, nil
}

// DNSQuery asks the MagicDNS resolver directly, as a program would at 100.100.100.100.
func (b *Backend) DNSQuery(ctx context.Context, name, qtype string) (ipc.DNSQueryResult, error) {
	t, ok := mdns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		n, err := strconv.ParseUint(qtype, 10, 16)
		if err != nil {
			return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("unknown record type %q", qtype)}
		}
		t = uint16(n)
	}
	if _, ok := mdns.IsDomainName(name); !ok {
		return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%q is not a DNS name", name)}
	}
	b.mu.Lock()
	dp, err := b.tunnelLocked("not connected: the MagicDNS resolver runs with the tunnel")
	b.mu.Unlock()
	if err != nil {
		return ipc.DNSQueryResult{}, err
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), t)
	m.SetEdns0(4096, false)
	q, err := m.Pack()
	if err != nil {
		return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "cannot build the query: " + err.Error()}
	}
	start := time.Now()
	resp := dp.DNSQuery(ctx, q)
	res := ipc.DNSQueryResult{Name: mdns.Fqdn(name), Type: mdns.TypeToString[t], LatencyMs: float64(time.Since(start).Microseconds()) / 1000}
	if res.Type == "" {
		res.Type = strconv.Itoa(int(t))
	}
	var r mdns.Msg
	if resp == nil || r.Unpack(resp) != nil {
		res.Rcode = "SERVFAIL"
		return res, nil
	}
	res.Rcode = mdns.RcodeToString[r.Rcode]
	for _, rr := range r.Answer {
		res.Answers = append(res.Answers, rr.String())
	}
	if r.Authoritative {
		res.Via = "local"
	} else {
		res.Via = "upstream"
	}
	return res, nil
}
