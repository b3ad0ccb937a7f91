package portmap

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// socket is the one UDP socket a Client talks NAT-PMP, PCP and SSDP from.
// A reader goroutine queues what arrives; requests are made one at a time
// by the Client's goroutine, so any queued packet is an answer to the
// current request or a stale one (which the matchers skip).
type socket struct {
	conn        *net.UDPConn
	pkts        chan packet
	pxpPort     uint16
	ssdpPort    uint16
	noMulticast bool
}

type packet struct {
	from netip.AddrPort
	b    []byte
}

func newSocket(control func(string, string, syscall.RawConn) error, o Options) (*socket, error) {
	lc := net.ListenConfig{Control: control}
	pc, err := lc.ListenPacket(context.Background(), "udp4", ":0")
	if err != nil {
		return nil, fmt.Errorf("portmap socket: %w", err)
	}
	s := &socket{
		conn:        pc.(*net.UDPConn),
		pkts:        make(chan packet, 32),
		pxpPort:     5351,
		ssdpPort:    ssdpPort,
		noMulticast: o.noMulticast,
	}
	if o.pxpPort != 0 {
		s.pxpPort = o.pxpPort
	}
	if o.ssdpPort != 0 {
		s.ssdpPort = o.ssdpPort
	}
	go s.read()
	return s, nil
}

func (s *socket) close() { s.conn.Close() }

func (s *socket) read() {
	buf := make([]byte, 4096+1) // one more than any answer we accept
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				close(s.pkts)
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. an ICMP error: keep reading
			continue
		}
		p := packet{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), b: bytes.Clone(buf[:n])}
		select {
		case s.pkts <- p:
		default: // nobody is asking: drop
		}
	}
}

func (s *socket) drain() {
	for {
		select {
		case <-s.pkts:
		default:
			return
		}
	}
}

// retransmits: RFC 6886 starts at 250 ms and doubles; we stop after three
// sends (1.75 s), since a router that is there answers within milliseconds.
var retransmits = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}

var errNoAnswer = errors.New("no answer")

// ask sends req to dst and returns the first packet from dst's address that
// accept takes, resending on the retransmit schedule.
func (s *socket) ask(ctx context.Context, dst netip.AddrPort, req []byte, accept func(b []byte) bool) ([]byte, error) {
	s.drain()
	for _, wait := range retransmits {
		if _, err := s.conn.WriteToUDPAddrPort(req, dst); err != nil {
			return nil, err
		}
		t := time.NewTimer(wait)
	recv:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
				break recv
			case p, ok := <-s.pkts:
				if !ok {
					t.Stop()
					return nil, net.ErrClosed
				}
				if p.from.Addr() == dst.Addr() && accept(p.b) {
					t.Stop()
					return p.b, nil
				}
			}
		}
	}
	return nil, errNoAnswer
}

func (s *socket) pxp(gw netip.Addr) netip.AddrPort { return netip.AddrPortFrom(gw, s.pxpPort) }

// pmpExternal asks a NAT-PMP router for its external address and epoch.
func (s *socket) pmpExternal(ctx context.Context, gw netip.Addr) (pmpResponse, error) {
	var r pmpResponse
	_, err := s.ask(ctx, s.pxp(gw), pmpExternalAddrRequest(), func(b []byte) bool {
		var err error
		r, err = parsePMPResponse(b)
		return err == nil && r.Op == pmpOpExternalAddr
	})
	if err == nil && r.Result != pmpSuccess {
		err = fmt.Errorf("router answered %v", r.Result)
	}
	return r, err
}

// pcpAnnounce asks a PCP router for its epoch.
func (s *socket) pcpAnnounce(ctx context.Context, gw, self netip.Addr) (uint32, error) {
	var r pcpResponse
	_, err := s.ask(ctx, s.pxp(gw), pcpAnnounceRequest(self), func(b []byte) bool {
		var err error
		r, err = parsePCPResponse(b)
		return err == nil && r.Op == pcpOpAnnounce
	})
	if err == nil && r.Result != pcpSuccess {
		err = fmt.Errorf("router answered %v", r.Result)
	}
	return r.Epoch, err
}

// pmpMap maps (lifetime > 0) or deletes (0) a UDP mapping of internal.
func (s *socket) pmpMap(ctx context.Context, gw netip.Addr, internal, suggested uint16, lifetime uint32) (pmpResponse, error) {
	var r pmpResponse
	_, err := s.ask(ctx, s.pxp(gw), pmpMapRequest(internal, suggested, lifetime), func(b []byte) bool {
		var err error
		r, err = parsePMPResponse(b)
		return err == nil && r.Op == pmpOpMapUDP && (r.Result != pmpSuccess || r.Internal == internal)
	})
	if err == nil && r.Result != pmpSuccess {
		err = fmt.Errorf("router answered %v", r.Result)
	}
	return r, err
}

// pcpMap maps (lifetime > 0) or deletes (0) the UDP mapping of internal
// that nonce identifies.
func (s *socket) pcpMap(ctx context.Context, gw, self netip.Addr, nonce pcpNonce, internal, suggested uint16, suggestedIP netip.Addr, lifetime uint32) (pcpResponse, error) {
	var r pcpResponse
	var verr error
	req := pcpMapRequest(self, nonce, internal, suggested, suggestedIP, lifetime)
	_, err := s.ask(ctx, s.pxp(gw), req, func(b []byte) bool {
		var err error
		r, err = parsePCPResponse(b)
		if errors.Is(err, errPCPVersion) {
			verr = err
			return true
		}
		if err != nil || r.Op != pcpOpMap {
			return false
		}
		if r.Result != pcpSuccess {
			return r.Nonce == nonce || r.Nonce == pcpNonce{} // error answers may omit the data
		}
		return r.Nonce == nonce && r.Protocol == protoUDP && r.Internal == internal
	})
	switch {
	case err != nil:
		return r, err
	case verr != nil:
		return r, verr
	case r.Result != pcpSuccess:
		return r, fmt.Errorf("router answered %v", r.Result)
	}
	return r, nil
}

func newNonce() pcpNonce {
	var n pcpNonce
	rand.Read(n[:])
	return n
}

// probeResult is what one probe learned.
type probeResult struct {
	offers   Offers
	pmpEpoch uint32 // valid if offers.NATPMP
	pcpEpoch uint32 // valid if offers.PCP
	pmpAddr  netip.Addr
	ssdp     []ssdpResponse // IGD answers from gw
}

// probe asks gw at once over every protocol o allows, and collects the
// answers until each has answered or about a second has passed.
func (s *socket) probe(ctx context.Context, gw, self netip.Addr, o Options) probeResult {
	var res probeResult
	wantPMP, wantPCP, wantUPnP := !o.DisableNATPMP, !o.DisablePCP, !o.DisableUPnP
	send := func() {
		if wantPMP && !res.offers.NATPMP {
			s.conn.WriteToUDPAddrPort(pmpExternalAddrRequest(), s.pxp(gw))
		}
		if wantPCP && !res.offers.PCP {
			s.conn.WriteToUDPAddrPort(pcpAnnounceRequest(self), s.pxp(gw))
		}
		if wantUPnP && !res.offers.UPnP {
			// Unicast first: some host firewalls then let the unicast
			// answer to the multicast search in.
			s.conn.WriteToUDPAddrPort(ssdpSearchAll, netip.AddrPortFrom(gw, s.ssdpPort))
			s.conn.WriteToUDPAddrPort(ssdpSearchIGD, netip.AddrPortFrom(gw, s.ssdpPort))
			if !s.noMulticast {
				s.conn.WriteToUDPAddrPort(ssdpSearchAll, netip.AddrPortFrom(ssdpGroup, s.ssdpPort))
				s.conn.WriteToUDPAddrPort(ssdpSearchIGD, netip.AddrPortFrom(ssdpGroup, s.ssdpPort))
			}
		}
	}
	done := func() bool {
		return (!wantPMP || res.offers.NATPMP) && (!wantPCP || res.offers.PCP) && (!wantUPnP || res.offers.UPnP)
	}
	s.drain()
	for _, wait := range []time.Duration{300 * time.Millisecond, 700 * time.Millisecond} {
		if done() {
			break
		}
		send()
		t := time.NewTimer(wait)
	recv:
		for !done() {
			select {
			case <-ctx.Done():
				t.Stop()
				return res
			case <-t.C:
				break recv
			case p, ok := <-s.pkts:
				if !ok {
					t.Stop()
					return res
				}
				if p.from.Addr() != gw {
					continue // another device's SSDP answer, or noise
				}
				s.classify(&res, p, gw)
			}
		}
		t.Stop()
	}
	return res
}

func (s *socket) classify(res *probeResult, p packet, gw netip.Addr) {
	switch {
	case len(p.b) > 0 && p.b[0] == pmpVersion && p.from.Port() == s.pxpPort:
		if r, err := parsePMPResponse(p.b); err == nil && r.Op == pmpOpExternalAddr && r.Result == pmpSuccess {
			res.offers.NATPMP, res.pmpEpoch, res.pmpAddr = true, r.Epoch, r.External
		}
	case len(p.b) > 0 && p.b[0] == pcpVersion && p.from.Port() == s.pxpPort:
		if r, err := parsePCPResponse(p.b); err == nil && r.Op == pcpOpAnnounce && r.Result == pcpSuccess {
			res.offers.PCP, res.pcpEpoch = true, r.Epoch
		}
	case bytes.HasPrefix(p.b, []byte("HTTP/")):
		if r, err := parseSSDPResponse(p.b, gw); err == nil && r.isIGD() {
			res.offers.UPnP = true
			res.ssdp = append(res.ssdp, r)
		}
	}
}
