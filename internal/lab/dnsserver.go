package lab

import (
	"net"
	"net/netip"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// DNSServer is a small authoritative DNS server in a lab namespace (UDP and TCP port 53) that
// answers A queries from a fixed table and records every name it was asked.
type DNSServer struct {
	mu      sync.Mutex
	records map[string]netip.Addr
	asked   []string
	servers []*mdns.Server
}

// Inet is the lab's "internet" router host (198.18.X.1): every namespace's resolv.conf names
// it, so a DNSServer started there is the machines' original upstream.
func (l *Lab) Inet() *Host { return l.inet }

// StartDNS serves records (lower-case FQDN with trailing dot → IPv4) on h's address.
// Unknown names get NXDOMAIN.
func (h *Host) StartDNS(records map[string]netip.Addr) (*DNSServer, error) {
	s := &DNSServer{records: map[string]netip.Addr{}}
	for k, v := range records {
		s.records[strings.ToLower(mdns.Fqdn(k))] = v
	}
	addr := netip.AddrPortFrom(h.addr, 53).String()
	pc, err := h.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, err
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: s}, {Listener: ln, Handler: s}} {
		s.servers = append(s.servers, srv)
		go srv.ActivateAndServe()
	}
	h.lab.addCleanup(s.Close)
	return s, nil
}

// ServeDNS answers one query.
func (s *DNSServer) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) == 1 {
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.Lock()
		s.asked = append(s.asked, name)
		a, ok := s.records[name]
		s.mu.Unlock()
		switch {
		case !ok:
			m.Rcode = mdns.RcodeNameError
		case q.Qtype == mdns.TypeA:
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IP(a.AsSlice())})
		}
	}
	w.WriteMsg(m)
}

// Asked returns the names asked so far (lower case, trailing dot).
func (s *DNSServer) Asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

// Close stops the server.
func (s *DNSServer) Close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
}

// LookupA asks server (an ip:port) for name's A records from inside h's namespace, over UDP or
// TCP, and returns the rcode and addresses.
func (h *Host) LookupA(server netip.AddrPort, name string, tcp bool) (rcode int, addrs []netip.Addr, err error) {
	return h.Lookup(server, name, mdns.TypeA, tcp)
}

// Lookup is LookupA for any record type; addresses are filled for A and AAAA answers, and the
// names of PTR answers are returned via LookupPTR.
func (h *Host) Lookup(server netip.AddrPort, name string, qtype uint16, tcp bool) (rcode int, addrs []netip.Addr, err error) {
	r, err := h.exchange(server, name, qtype, tcp)
	if err != nil {
		return 0, nil, err
	}
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *mdns.A:
			a, _ := netip.AddrFromSlice(v.A)
			addrs = append(addrs, a.Unmap())
		case *mdns.AAAA:
			a, _ := netip.AddrFromSlice(v.AAAA)
			addrs = append(addrs, a)
		}
	}
	return r.Rcode, addrs, nil
}

// LookupPTR returns the PTR names for addr.
func (h *Host) LookupPTR(server netip.AddrPort, addr netip.Addr) ([]string, error) {
	rev, err := mdns.ReverseAddr(addr.String())
	if err != nil {
		return nil, err
	}
	r, err := h.exchange(server, rev, mdns.TypePTR, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range r.Answer {
		if p, ok := rr.(*mdns.PTR); ok {
			out = append(out, p.Ptr)
		}
	}
	return out, nil
}

func (h *Host) exchange(server netip.AddrPort, name string, qtype uint16, tcp bool) (*mdns.Msg, error) {
	var r *mdns.Msg
	var err error
	nerr := inNetns(h.netns, func() {
		c := &mdns.Client{Net: "udp", Timeout: 3e9}
		if tcp {
			c.Net = "tcp"
		}
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), qtype)
		r, _, err = c.Exchange(m, server.String())
	})
	if nerr != nil {
		return nil, nerr
	}
	return r, err
}
