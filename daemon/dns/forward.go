package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// flightKey identifies forwarded queries that may share one upstream
// exchange. Besides saving upstream traffic when a client retransmits, this
// is what breaks forwarding loops: if an upstream sends our own query back
// to us (say 127.0.0.53 forwarding to 100.100.100.100), the echo joins the
// flight that caused it instead of spawning a new upstream query, so each
// client query costs a bounded number of upstream packets and ends in
// SERVFAIL at the query timeout.
type flightKey struct {
	gen    uint64 // config generation: routes may differ across configs
	name   string // lower-case
	qtype  uint16
	qclass uint16
	flags  uint8 // RD, CD, DO: they change what upstreams return
}

type flight struct {
	done chan struct{}
	resp []byte // validated upstream response, nil on failure; set before done closes
}

// waitGrace lets a waiter outlive the flight's own deadline slightly, so
// that the flight's final outcome (for instance a truncated UDP answer kept
// when the TCP retry ran out of time) reaches it instead of a SERVFAIL.
const waitGrace = 100 * time.Millisecond

var udpBufPool = sync.Pool{New: func() any { b := make([]byte, 65535); return &b }}

func (s *Server) forward(ctx context.Context, t *table, req *mdns.Msg, reqOpt *mdns.OPT, name string, ups *upstreamSet, limit int) []byte {
	if ups == nil || len(ups.addrs) == 0 {
		if ups != nil && ups.logged.CompareAndSwap(false, true) {
			s.logf("dns: no usable upstream resolver for %s names (none configured, or all refused as loops); answering SERVFAIL", ups.name)
		}
		return s.servFail(req, reqOpt, limit)
	}
	n := s.stats.inFlight.Add(1)
	defer s.stats.inFlight.Add(-1)
	if n > s.maxInFlight {
		s.stats.overloaded.Add(1)
		s.logLimited("overload", 10*time.Second, "dns: %d forwarded queries in flight; answering SERVFAIL to new ones", s.maxInFlight)
		return s.servFail(req, reqOpt, limit)
	}

	q := req.Question[0]
	key := flightKey{gen: t.gen, name: name, qtype: q.Qtype, qclass: q.Qclass}
	if req.RecursionDesired {
		key.flags |= 1
	}
	if req.CheckingDisabled {
		key.flags |= 2
	}
	if reqOpt != nil && reqOpt.Do() {
		key.flags |= 4
	}

	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout+waitGrace)
	defer cancel()

	s.mu.Lock()
	f := s.flights[key]
	if f != nil {
		s.stats.coalesced.Add(1)
	} else {
		if s.stats.flights.Load() >= s.maxInFlight {
			// Waiters whose clients went away can leave flights running
			// up to the query timeout; bound those too.
			s.mu.Unlock()
			s.stats.overloaded.Add(1)
			return s.servFail(req, reqOpt, limit)
		}
		// The upstream query is the client's message as received (EDNS0
		// options included); only the id changes, per attempt.
		req.Compress = true
		packed, err := req.Pack()
		if err != nil {
			s.mu.Unlock()
			return s.servFail(req, reqOpt, limit)
		}
		f = &flight{done: make(chan struct{})}
		s.flights[key] = f
		s.stats.flights.Add(1)
		go s.runFlight(key, f, ups, packed, q)
	}
	s.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return s.servFail(req, reqOpt, limit)
	}
	if f.resp == nil {
		return s.servFail(req, reqOpt, limit)
	}
	resp := new(mdns.Msg)
	if err := resp.Unpack(f.resp); err != nil {
		return s.servFail(req, reqOpt, limit)
	}
	s.stats.forwarded.Add(1)
	resp.Id = req.Id
	resp.Question = req.Question // echo the client's spelling
	if reqOpt == nil {
		// RFC 6891 §7: no OPT in a response to a query without one. This
		// only happens when the flight was started by an EDNS0 query.
		resp.Extra = slicesDeleteOPT(resp.Extra)
		if resp.Rcode > 0xF {
			resp.Rcode = mdns.RcodeServerFailure
		}
	} else if o := resp.IsEdns0(); o != nil && o.UDPSize() > maxUDPResponse {
		o.SetUDPSize(maxUDPResponse)
	}
	return s.finish(resp, limit)
}

func slicesDeleteOPT(rrs []mdns.RR) []mdns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != mdns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

func (s *Server) runFlight(key flightKey, f *flight, ups *upstreamSet, query []byte, q mdns.Question) {
	ctx, cancel := context.WithTimeout(context.Background(), s.queryTimeout)
	f.resp = s.exchange(ctx, ups, query, q)
	cancel()
	s.mu.Lock()
	delete(s.flights, key)
	s.mu.Unlock()
	s.stats.flights.Add(-1)
	close(f.done)
}

// maxRounds bounds passes over an upstream list; together with the query
// timeout it keeps a misbehaving Dial (failing instantly with timeouts)
// from spinning.
const maxRounds = 3

// exchange asks the upstreams in turn, starting with the last one that
// worked. A SERVFAIL or REFUSED answer moves on to the next upstream but is
// kept as the result if nothing better turns up. When every attempt of a
// pass timed out (rather than failing outright) the list is tried again
// while time remains.
func (s *Server) exchange(ctx context.Context, ups *upstreamSet, query []byte, q mdns.Question) []byte {
	n := len(ups.addrs)
	start := int(ups.pref.Load()) % n
	var fallback []byte
	for round := 0; round < maxRounds; round++ {
		timedOut := false
		for i := 0; i < n; i++ {
			if ctx.Err() != nil {
				return fallback
			}
			idx := (start + i) % n
			addr := ups.addrs[idx]
			resp, rcode, err := s.try(ctx, addr, query, q)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
					timedOut = true
				}
				s.logLimited("fail "+addr, 10*time.Second, "dns: upstream %s (%s): %v", addr, ups.name, err)
				continue
			}
			if rcode == mdns.RcodeServerFailure || rcode == mdns.RcodeRefused {
				if fallback == nil {
					fallback = resp
				}
				continue
			}
			ups.pref.Store(uint32(idx))
			return resp
		}
		if fallback != nil || !timedOut {
			return fallback
		}
	}
	return fallback
}

// try runs one UDP exchange with addr, and a TCP one if the UDP answer is
// truncated. It returns the validated raw response and its rcode. If the
// TCP retry fails, the truncated UDP answer is returned: the client will
// see TC and can retry over TCP itself.
func (s *Server) try(ctx context.Context, addr string, query []byte, q mdns.Question) ([]byte, int, error) {
	tctx, cancel := context.WithTimeout(ctx, s.tryTimeout)
	defer cancel()
	s.stats.upstream.Add(1)
	conn, err := s.dial(tctx, "udp", addr)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	stop := watch(tctx, conn)
	defer stop()

	id := uint16(rand.Uint32())
	binary.BigEndian.PutUint16(query, id)
	if _, err := conn.Write(query); err != nil {
		return nil, 0, err
	}
	bp := udpBufPool.Get().(*[]byte)
	defer udpBufPool.Put(bp)
	buf := *bp
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if tctx.Err() != nil {
				return nil, 0, errTimeoutFor(tctx)
			}
			return nil, 0, err
		}
		m, ok := validResponse(buf[:n], id, q)
		if !ok {
			continue // stray or spoofed datagram; keep waiting
		}
		raw := append([]byte(nil), buf[:n]...)
		if !m.Truncated {
			return raw, m.Rcode, nil
		}
		s.stats.tcpRetries.Add(1)
		full, rcode, err := s.tryTCP(ctx, addr, query, q)
		if err == nil {
			return full, rcode, nil
		}
		s.logLimited("tcp "+addr, 10*time.Second, "dns: upstream %s: TCP retry after truncated UDP answer: %v", addr, err)
		return raw, m.Rcode, nil
	}
}

// tryTCP runs one exchange over TCP, bounded by ctx (the query's overall
// deadline).
func (s *Server) tryTCP(ctx context.Context, addr string, query []byte, q mdns.Question) ([]byte, int, error) {
	s.stats.upstream.Add(1)
	conn, err := s.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	stop := watch(ctx, conn)
	defer stop()

	id := uint16(rand.Uint32())
	binary.BigEndian.PutUint16(query, id)
	out := make([]byte, 2+len(query))
	binary.BigEndian.PutUint16(out, uint16(len(query)))
	copy(out[2:], query)
	if _, err := conn.Write(out); err != nil {
		return nil, 0, err
	}
	var lb [2]byte
	if _, err := io.ReadFull(conn, lb[:]); err != nil {
		if ctx.Err() != nil {
			return nil, 0, errTimeoutFor(ctx)
		}
		return nil, 0, err
	}
	l := int(binary.BigEndian.Uint16(lb[:]))
	if l < headerLen {
		return nil, 0, errors.New("short TCP response")
	}
	raw := make([]byte, l)
	if _, err := io.ReadFull(conn, raw); err != nil {
		if ctx.Err() != nil {
			return nil, 0, errTimeoutFor(ctx)
		}
		return nil, 0, err
	}
	m, ok := validResponse(raw, id, q)
	if !ok {
		return nil, 0, errors.New("TCP response does not match the query")
	}
	return raw, m.Rcode, nil
}

func errTimeoutFor(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return ctx.Err()
}

// watch makes conn's blocking calls return when ctx ends, whether by
// deadline or cancellation.
func watch(ctx context.Context, conn net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
}

// validResponse parses an upstream datagram and checks that it answers our
// query: QR set, opcode QUERY, our id and our question (case-insensitively;
// a truncated answer may omit the question).
func validResponse(raw []byte, id uint16, q mdns.Question) (*mdns.Msg, bool) {
	if len(raw) < headerLen || binary.BigEndian.Uint16(raw) != id || raw[2]&0x80 == 0 {
		return nil, false
	}
	m := new(mdns.Msg)
	if err := m.Unpack(raw); err != nil {
		return nil, false
	}
	if m.Opcode != mdns.OpcodeQuery {
		return nil, false
	}
	switch len(m.Question) {
	case 0:
		return m, m.Truncated
	case 1:
		mq := m.Question[0]
		return m, mq.Qtype == q.Qtype && mq.Qclass == q.Qclass && strings.EqualFold(mq.Name, q.Name)
	}
	return nil, false
}
