package dns

import (
	"context"
	"encoding/binary"

	mdns "github.com/miekg/dns"
)

const headerLen = 12

// Handle answers one DNS query. tcp says which transport the query came on;
// it decides the response size limit (the client's EDNS0 payload size, or
// 512 bytes without EDNS0, for UDP). It returns the response to write back,
// or nil when nothing should be sent: the input is shorter than a DNS
// header, or it is itself a response (answering responses invites
// reflection and ping-pong loops).
//
// Handle never blocks longer than the query timeout (5 s by default), or
// ctx, whichever ends first.
func (s *Server) Handle(ctx context.Context, query []byte, tcp bool) []byte {
	if len(query) < headerLen || query[2]&0x80 != 0 {
		s.stats.dropped.Add(1)
		return nil
	}
	s.stats.queries.Add(1)
	if len(query) > MaxQuerySize {
		return s.headerOnly(query, mdns.RcodeFormatError)
	}
	if op := int(query[2]>>3) & 0xF; op != mdns.OpcodeQuery {
		return s.headerOnly(query, mdns.RcodeNotImplemented)
	}
	if binary.BigEndian.Uint16(query[4:]) != 1 { // QDCOUNT
		return s.headerOnly(query, mdns.RcodeFormatError)
	}

	req := new(mdns.Msg)
	if err := req.Unpack(query); err != nil || len(req.Question) != 1 {
		return s.headerOnly(query, mdns.RcodeFormatError)
	}
	var opt *mdns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*mdns.OPT); ok {
			if opt != nil || o.Hdr.Name != "." { // RFC 6891 §6.1.1
				return s.headerOnly(query, mdns.RcodeFormatError)
			}
			opt = o
		}
	}
	limit := maxTCPResponse
	if !tcp {
		limit = mdns.MinMsgSize
		if opt != nil {
			limit = min(max(int(opt.UDPSize()), mdns.MinMsgSize), maxUDPResponse)
		}
	}
	if opt != nil && opt.Version() != 0 {
		resp := reply(req, opt)
		resp.Rcode = mdns.RcodeBadVers
		return s.finish(resp, limit)
	}

	q := req.Question[0]
	switch {
	case q.Qclass != mdns.ClassINET:
		s.stats.refused.Add(1)
		resp := reply(req, opt)
		resp.Rcode = mdns.RcodeRefused
		return s.finish(resp, limit)
	case q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR:
		// Zone transfers are multi-message TCP streams we neither serve
		// nor proxy.
		s.stats.refused.Add(1)
		resp := reply(req, opt)
		resp.Rcode = mdns.RcodeNotImplemented
		return s.finish(resp, limit)
	}

	t := s.cfg.Load()
	name := lowerASCII(q.Name)
	if rec, ok := t.lookup(name); ok {
		s.stats.local.Add(1)
		return s.finish(localAnswer(req, opt, rec), limit)
	}
	z := t.zoneFor(name)
	if z != nil && z.kind == zoneLocal {
		s.stats.local.Add(1)
		resp := reply(req, opt)
		resp.Authoritative = true
		resp.Rcode = mdns.RcodeNameError
		return s.finish(resp, limit)
	}
	ups := t.def
	if z != nil {
		ups = z.ups
	}
	return s.forward(ctx, t, req, opt, name, ups, limit)
}

// reply turns req into the start of its response, in place (the request
// is not needed afterwards, and reusing it saves allocations on the hot
// path): same id, opcode, RD and CD, the question echoed as asked, RA set,
// all sections emptied, and an OPT record (advertising our UDP size and
// echoing DO) when the query had one.
func reply(req *mdns.Msg, reqOpt *mdns.OPT) *mdns.Msg {
	hdr := req.MsgHdr
	req.MsgHdr = mdns.MsgHdr{
		Id:                 hdr.Id,
		Response:           true,
		Opcode:             hdr.Opcode,
		RecursionDesired:   hdr.RecursionDesired,
		CheckingDisabled:   hdr.CheckingDisabled,
		RecursionAvailable: true,
	}
	req.Answer, req.Ns, req.Extra = nil, nil, req.Extra[:0]
	if reqOpt != nil {
		do := reqOpt.Do()
		reqOpt.Hdr.Ttl = 0 // version 0, no extended rcode, flags cleared
		reqOpt.SetDo(do)
		reqOpt.SetUDPSize(maxUDPResponse)
		reqOpt.Option = nil
		req.Extra = append(req.Extra, reqOpt)
	}
	return req
}

// localAnswer builds the authoritative answer for a name we hold. The owner
// name is the question name exactly as asked (case echoed; for a short name
// resolved through a search domain, the short name itself).
func localAnswer(req *mdns.Msg, reqOpt *mdns.OPT, rec *nameRec) *mdns.Msg {
	resp := reply(req, reqOpt)
	resp.Authoritative = true
	q := req.Question[0]
	hdr := mdns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: mdns.ClassINET, Ttl: LocalTTL}
	switch q.Qtype {
	case mdns.TypeA:
		if len(rec.a) > 0 {
			rrs := make([]mdns.A, len(rec.a))
			resp.Answer = make([]mdns.RR, len(rec.a))
			for i, ip := range rec.a {
				rrs[i] = mdns.A{Hdr: hdr, A: ip}
				resp.Answer[i] = &rrs[i]
			}
		}
	case mdns.TypeAAAA:
		if len(rec.aaaa) > 0 {
			rrs := make([]mdns.AAAA, len(rec.aaaa))
			resp.Answer = make([]mdns.RR, len(rec.aaaa))
			for i, ip := range rec.aaaa {
				rrs[i] = mdns.AAAA{Hdr: hdr, AAAA: ip}
				resp.Answer[i] = &rrs[i]
			}
		}
	case mdns.TypePTR:
		if len(rec.ptr) > 0 {
			rrs := make([]mdns.PTR, len(rec.ptr))
			resp.Answer = make([]mdns.RR, len(rec.ptr))
			for i, target := range rec.ptr {
				rrs[i] = mdns.PTR{Hdr: hdr, Ptr: target}
				resp.Answer[i] = &rrs[i]
			}
		}
	}
	// Any other type, ANY included, is NODATA: NOERROR with no records
	// and, as we publish no SOA, an empty authority section.
	return resp
}

// finish fits resp into limit bytes (setting TC when records had to go)
// and packs it.
func (s *Server) finish(resp *mdns.Msg, limit int) []byte {
	wasTC := resp.Truncated
	resp.Truncate(limit)
	if resp.Truncated && !wasTC {
		s.stats.truncated.Add(1)
	}
	resp.Compress = true
	b, err := resp.Pack()
	if err != nil || len(b) > limit {
		// Not expected: every record we emit was unpacked or built by
		// miekg. Fall back to a bare SERVFAIL rather than nothing.
		s.stats.servfail.Add(1)
		fail := new(mdns.Msg)
		fail.MsgHdr = resp.MsgHdr
		fail.Rcode = mdns.RcodeServerFailure
		fail.Question = resp.Question
		fail.Truncated = false
		fail.Compress = true
		if b, err = fail.Pack(); err != nil || len(b) > limit {
			fail.Question = nil
			b, _ = fail.Pack()
		}
	}
	return b
}

// headerOnly answers a query we could not (or will not) parse with just a
// header: its id, opcode and RD bit, and rcode.
func (s *Server) headerOnly(query []byte, rcode int) []byte {
	switch rcode {
	case mdns.RcodeFormatError:
		s.stats.formerr.Add(1)
	case mdns.RcodeServerFailure:
		s.stats.servfail.Add(1)
	default:
		s.stats.refused.Add(1)
	}
	var m mdns.Msg
	m.Id = binary.BigEndian.Uint16(query)
	m.Response = true
	m.Opcode = int(query[2]>>3) & 0xF
	m.RecursionDesired = query[2]&0x01 != 0
	m.RecursionAvailable = true
	m.Rcode = rcode
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// servFail answers req with SERVFAIL.
func (s *Server) servFail(req *mdns.Msg, reqOpt *mdns.OPT, limit int) []byte {
	s.stats.servfail.Add(1)
	resp := reply(req, reqOpt)
	resp.Rcode = mdns.RcodeServerFailure
	return s.finish(resp, limit)
}
