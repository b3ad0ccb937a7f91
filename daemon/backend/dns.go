package backend

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/ipc"
)

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
	dp := b.dp
	b.mu.Unlock()
	if dp == nil {
		return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected: the MagicDNS resolver runs with the tunnel", Fix: "skein up"}
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), t)
	m.SetEdns0(4096, false)
	q, err := m.Pack()
	if err != nil {
		return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "cannot build the query: " + err.Error()}
	}
	start := time.Now()
	// As TCP: no truncation to a UDP size.
	resp := dp.DNSServer().Handle(ctx, q, true)
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

// addDNSStatusLocked fills Status.DNS.
func (b *Backend) addDNSStatusLocked(st *ipc.Status) {
	if b.dp == nil {
		return
	}
	ds := b.dp.DNS()
	s := &ipc.DNSStatus{
		AcceptDNS:     !b.data.Prefs.NoAcceptDNS,
		MagicDNS:      ds.MagicDNS,
		Resolver:      []netip.Addr{dataplane.MagicDNSv4},
		Mode:          ds.Mode,
		ModeReason:    ds.Reason,
		Applied:       ds.Applied,
		SearchDomains: ds.SearchDomains,
		SplitRoutes:   ds.SplitRoutes,
		Upstreams:     ds.Upstreams,
		Hosts:         ds.Hosts,
		ExtraRecords:  ds.ExtraRecords,
		Warnings:      ds.Warnings,
	}
	if ds.TailnetUpstreams {
		s.UpstreamsFrom = "tailnet"
	} else if len(ds.Upstreams) > 0 {
		s.UpstreamsFrom = "system"
	}
	st.DNS = s
	for _, w := range ds.Warnings {
		st.Health = append(st.Health, ipc.Issue{Code: "dns", Message: w})
	}
}
