package intercept

import (
	"math/rand/v2"
	"net/netip"
	"time"
)

// The TCP responder.
//
// It is the passive side of RFC 9293 cut down to what a DNS server on the
// local kernel's path needs:
//
//   - SYN → SYN-ACK with an MSS option (1240 over IPv4, 1220 over IPv6);
//     the peer's MSS option bounds our segments, all its other options are
//     ignored and we send none, so no window scaling, timestamps or SACK.
//   - Data is accepted in order only, into a fixed receive buffer whose free
//     space is the advertised window. A segment beyond rcvNxt is dropped and
//     answered with a duplicate ACK; an old one is trimmed.
//   - The byte stream is split into two-byte length-prefixed DNS messages.
//     A message larger than maxTCPMessage (or empty) resets the connection.
//     Complete messages go to the Handler, several at once per connection;
//     their answers are queued, length-prefixed, in the order the Handler
//     returns them (RFC 7766 allows out-of-order answers).
//   - Answer data goes out in segments of at most the MSS within the peer's
//     window. One timer per connection drives retransmission (go-back-N from
//     sndUna with exponential backoff), zero-window probes, SYN-ACK and FIN
//     retransmission, and the handshake, idle and closing timeouts.
//   - The peer's FIN is acknowledged; once all its queries are answered the
//     responder sends its own FIN. After an idle timeout the responder closes
//     first (FIN, or RST when answer data is stuck). TIME-WAIT is not kept:
//     the connection is forgotten as soon as both FINs are acknowledged.
//
// All connection state is guarded by Device.mu.

const (
	maxTCPMessage = 4096 // largest DNS message accepted over TCP
	tcpRecvBuf    = 8192 // receive buffer per connection = largest advertised window
	maxMSS        = 1240 // largest MSS announced in the SYN-ACK
	minMSS        = 64   // floor for a peer's MSS option
)

const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

type tcpState uint8

const (
	stSynRcvd     tcpState = iota // SYN answered, waiting for the ACK
	stEstablished                 // open both ways
	stCloseWait                   // peer sent FIN; answering what is left
	stLastAck                     // peer sent FIN, then we did; waiting for its ACK
	stFinWait1                    // we sent FIN first (idle timeout); not yet acknowledged
	stFinWait2                    // our FIN acknowledged; waiting for the peer's FIN
	stClosing                     // both sent FIN; ours not yet acknowledged
)

type connKey struct {
	client, server netip.AddrPort
}

type conn struct {
	key    connKey
	state  tcpState
	dead   bool // removed from the table
	queued bool // in Device.waitq

	// Receive side.
	irs        uint32
	rcvNxt     uint32
	rbuf       []byte // received, not yet dispatched bytes (cap tcpRecvBuf once allocated)
	lastAdvWnd int    // window in the last segment sent

	// Send side. sbuf holds the bytes from sndUna on, sent or not.
	iss      uint32
	sndUna   uint32
	sndNxt   uint32
	sndMax   uint32 // highest sequence number sent + 1
	sndWnd   uint32
	mss      int // send segment size
	advMSS   int // MSS announced in the SYN-ACK
	sbuf     []byte
	wantFin  bool // send FIN after sbuf; no more answers are queued
	finOut   bool // FIN is in [sndUna, sndNxt)
	finAcked bool

	inflight int // Handler calls running for this connection

	rto      time.Duration
	rtoAt    time.Time // retransmission / persist timer; zero = off
	retries  int
	deadline time.Time // handshake, idle or closing timeout
}

type tcpSegment struct {
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	wnd          uint16
	mss          uint16 // MSS option of a SYN; 0 = absent
	data         []byte
}

func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

// parseTCP parses a TCP segment; the checksum is verified by the caller.
func parseTCP(b []byte) (s tcpSegment, ok bool) {
	if len(b) < 20 {
		return s, false
	}
	off := int(b[12]>>4) * 4
	if off < 20 || off > len(b) {
		return s, false
	}
	s.sport, s.dport = be16(b[0:]), be16(b[2:])
	s.seq, s.ack = be32(b[4:]), be32(b[8:])
	s.flags = b[13]
	s.wnd = be16(b[14:])
	s.data = b[off:]
	if s.flags&flagSYN != 0 {
		opts := b[20:off]
		for i := 0; i < len(opts); {
			kind := opts[i]
			if kind == 0 { // end of option list
				break
			}
			if kind == 1 { // no-op
				i++
				continue
			}
			if i+1 >= len(opts) {
				break
			}
			l := int(opts[i+1])
			if l < 2 || i+l > len(opts) {
				break
			}
			if kind == 2 && l == 4 {
				s.mss = be16(opts[i+2:])
			}
			i += l
		}
	}
	return s, true
}

// segLen is the sequence space a segment occupies.
func (s *tcpSegment) segLen() uint32 {
	n := uint32(len(s.data))
	if s.flags&flagSYN != 0 {
		n++
	}
	if s.flags&flagFIN != 0 {
		n++
	}
	return n
}

// tcp handles a TCP segment addressed to a service address.
func (d *Device) tcp(ip ipPacket) bool {
	if !d.cfg.noVerify && !transportSumOK(ip, ip.payload) {
		return false
	}
	seg, ok := parseTCP(ip.payload)
	if !ok || seg.sport == 0 {
		return false
	}
	key := connKey{
		client: netip.AddrPortFrom(ip.src, seg.sport),
		server: netip.AddrPortFrom(ip.dst, seg.dport),
	}
	if seg.dport != 53 {
		if seg.flags&flagRST != 0 {
			return false
		}
		d.write([][]byte{d.resetFor(key, &seg)})
		return true
	}
	now := time.Now()
	var out [][]byte
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return true
	}
	if c := d.conns[key]; c != nil {
		d.segment(c, &seg, now, &out)
		if !c.dead {
			d.armLocked(c)
		}
	} else {
		d.listen(key, &seg, now, &out)
	}
	d.unlockAndWrite(out)
	return true
}

// resetFor builds the RST answering seg when there is no connection for it.
func (d *Device) resetFor(key connKey, seg *tcpSegment) []byte {
	d.st.resets.Add(1)
	if seg.flags&flagACK != 0 {
		return d.tcpPacket(key, seg.ack, 0, flagRST, 0, 0, nil)
	}
	return d.tcpPacket(key, 0, seg.seq+seg.segLen(), flagRST|flagACK, 0, 0, nil)
}

// listen handles a segment for which no connection exists.
func (d *Device) listen(key connKey, seg *tcpSegment, now time.Time, out *[][]byte) {
	switch {
	case seg.flags&flagRST != 0:
		return
	case seg.flags&flagACK != 0:
		*out = append(*out, d.resetFor(key, seg))
		return
	case seg.flags&flagSYN == 0 || seg.flags&flagFIN != 0:
		return
	}
	if len(d.conns) >= d.cfg.maxConns {
		d.st.busy.Add(1)
		d.logRateLimited("dns intercept: TCP connection table full (%d); refusing %v", len(d.conns), key.client)
		*out = append(*out, d.resetFor(key, seg))
		return
	}
	// The MSS we announce is what 1280-byte packets carry (IPv6 minimum
	// MTU, and the default TUN MTU), at most maxMSS. The kernel clamps its
	// segments to the TUN's MTU on its own, and its MSS option, which
	// bounds our segments, already accounts for that MTU.
	adv, peer := maxMSS, 536
	if key.server.Addr().Is6() {
		adv, peer = 1220, 1220
	}
	if seg.mss != 0 {
		peer = int(seg.mss)
	}
	var iss uint32
	if d.cfg.iss != nil {
		iss = d.cfg.iss()
	} else {
		iss = rand.Uint32()
	}
	c := &conn{
		key:      key,
		state:    stSynRcvd,
		irs:      seg.seq,
		rcvNxt:   seg.seq + 1,
		iss:      iss,
		sndUna:   iss,
		sndNxt:   iss + 1,
		sndMax:   iss + 1,
		sndWnd:   uint32(seg.wnd),
		mss:      max(min(adv, peer), minMSS),
		advMSS:   adv,
		rto:      d.cfg.rtoInitial,
		rtoAt:    now.Add(d.cfg.rtoInitial),
		deadline: now.Add(d.cfg.handshake),
	}
	d.conns[key] = c
	d.st.tcpAccepted.Add(1)
	*out = append(*out, d.synAck(c))
	d.armLocked(c)
}

func (d *Device) synAck(c *conn) []byte {
	c.lastAdvWnd = tcpRecvBuf
	return d.tcpPacket(c.key, c.iss, c.rcvNxt, flagSYN|flagACK, tcpRecvBuf, c.advMSS, nil)
}

// recvWindow is the window to advertise.
func (c *conn) recvWindow() int {
	if c.state == stEstablished {
		return tcpRecvBuf - len(c.rbuf)
	}
	return tcpRecvBuf
}

// seg builds a segment of c from the current state (ack = rcvNxt).
func (d *Device) seg(c *conn, seq uint32, flags uint8, data []byte) []byte {
	w := c.recvWindow()
	c.lastAdvWnd = w
	return d.tcpPacket(c.key, seq, c.rcvNxt, flags|flagACK, uint16(w), 0, data)
}

func (d *Device) ack(c *conn) []byte { return d.seg(c, c.sndNxt, 0, nil) }

// segment handles a segment for the existing connection c.
func (d *Device) segment(c *conn, seg *tcpSegment, now time.Time, out *[][]byte) {
	if seg.flags&flagRST != 0 {
		// Accept a reset anywhere in the receive window.
		if seg.seq-c.rcvNxt < uint32(max(c.recvWindow(), 1)) {
			d.remove(c)
		}
		return
	}
	if seg.flags&flagSYN != 0 {
		if c.state == stSynRcvd && seg.seq == c.irs && seg.flags&flagACK == 0 {
			*out = append(*out, d.synAck(c)) // our SYN-ACK was lost
			return
		}
		// A SYN on a synchronized connection: challenge ACK (RFC 5961). A
		// peer that really starts over answers it with a RST.
		*out = append(*out, d.ack(c))
		return
	}
	if seg.flags&flagACK == 0 {
		return
	}

	// Acknowledgement.
	if c.state == stSynRcvd {
		if seg.ack != c.iss+1 {
			*out = append(*out, d.resetFor(c.key, seg))
			return
		}
		c.state = stEstablished
		c.sndUna = seg.ack
		c.sndWnd = uint32(seg.wnd)
		c.retries, c.rto, c.rtoAt = 0, d.cfg.rtoInitial, time.Time{}
		c.deadline = now.Add(d.cfg.idle)
	} else {
		if seqGT(seg.ack, c.sndMax) {
			*out = append(*out, d.ack(c)) // acknowledges what was never sent
			return
		}
		if seqGT(seg.ack, c.sndUna) {
			acked := int(seg.ack - c.sndUna)
			data := min(acked, len(c.sbuf))
			c.sbuf = c.sbuf[data:]
			if len(c.sbuf) == 0 {
				c.sbuf = nil
			}
			d.sendBytes -= data
			if acked > data && c.wantFin {
				c.finAcked = true
			}
			c.sndUna = seg.ack
			if seqLT(c.sndNxt, c.sndUna) {
				c.sndNxt = c.sndUna
			}
			c.retries, c.rto, c.rtoAt = 0, d.cfg.rtoInitial, time.Time{}
		}
		if !seqLT(seg.ack, c.sndUna) {
			wasZero := c.sndWnd == 0
			c.sndWnd = uint32(seg.wnd)
			if wasZero && c.sndWnd > 0 && c.sndNxt != c.sndUna && !c.finAcked {
				// The window opened after a probe the peer may have
				// dropped: continue from the first unacknowledged byte.
				c.sndNxt, c.finOut = c.sndUna, false
			}
		}
		if c.finAcked {
			switch c.state {
			case stFinWait1:
				c.state = stFinWait2
			case stClosing, stLastAck:
				d.remove(c)
				return
			}
		}
	}

	// Data and FIN.
	needAck := false
	data, seq := seg.data, seg.seq
	fin := seg.flags&flagFIN != 0
	switch c.state {
	case stEstablished, stFinWait1, stFinWait2:
		if seqLT(seq, c.rcvNxt) {
			// A retransmission, perhaps because our ACK was lost: ACK again.
			needAck = len(data) > 0 || fin
			skip := c.rcvNxt - seq
			if skip > uint32(len(data)) {
				// Entirely old (a FIN here would be before rcvNxt too).
				data, fin = nil, false
			} else {
				data = data[skip:]
			}
			seq = c.rcvNxt
		}
		if seq != c.rcvNxt {
			needAck = len(data) > 0 || fin // out of order: duplicate ACK
			break
		}
		if len(data) > 0 {
			needAck = true
			n := len(data)
			if c.state == stEstablished {
				n = min(n, c.recvWindow())
				if c.rbuf == nil && n > 0 {
					c.rbuf = make([]byte, 0, tcpRecvBuf)
				}
				c.rbuf = append(c.rbuf, data[:n]...)
				if !validFraming(c.rbuf) {
					d.abort(c, out)
					return
				}
			} // In FIN-WAIT data is acknowledged and discarded.
			c.rcvNxt += uint32(n)
			if n < len(data) {
				fin = false // beyond the window
			}
		}
		if fin {
			c.rcvNxt++
			needAck = true
			switch c.state {
			case stEstablished:
				c.state = stCloseWait
			case stFinWait1:
				c.state = stClosing
			case stFinWait2:
				*out = append(*out, d.ack(c))
				d.remove(c)
				return
			}
		}
	default:
		// The peer's FIN is in: anything taking sequence space is a
		// retransmission.
		needAck = len(data) > 0 || fin
	}
	if c.state == stEstablished || c.state == stCloseWait {
		c.deadline = now.Add(d.cfg.idle)
	}
	if needAck {
		*out = append(*out, d.ack(c))
	}
	d.dispatch(c, now, out)
	d.output(c, now, false, out)
	d.maybeFinish(c, now, out)
}

// validFraming checks every length prefix visible in b.
func validFraming(b []byte) bool {
	for len(b) >= 2 {
		l := int(be16(b))
		if l == 0 || l > maxTCPMessage {
			return false
		}
		if len(b) < 2+l {
			return true
		}
		b = b[2+l:]
	}
	return true
}

// dispatch starts Handler calls for the complete messages in c's receive
// buffer, as far as the per-connection and global limits allow.
func (d *Device) dispatch(c *conn, now time.Time, out *[][]byte) {
	if c.dead || c.wantFin || (c.state != stEstablished && c.state != stCloseWait) {
		return
	}
	consumed := false
	for c.inflight < d.cfg.maxConnInFlight && len(c.sbuf) < d.cfg.sendSoftCap && len(c.rbuf) >= 2 {
		l := int(be16(c.rbuf))
		if len(c.rbuf) < 2+l {
			break
		}
		if d.closed {
			return
		}
		if d.active >= d.cfg.maxInFlight {
			if !c.queued {
				c.queued = true
				d.waitq = append(d.waitq, c)
				d.st.busy.Add(1)
			}
			break
		}
		q := append([]byte(nil), c.rbuf[2:2+l]...)
		c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[2+l:])]
		consumed = true
		c.inflight++
		d.active++
		d.wg.Add(1)
		d.st.tcpQueries.Add(1)
		go d.tcpQuery(c, q)
	}
	if len(c.rbuf) == 0 && c.inflight == 0 {
		c.rbuf = nil
	}
	if consumed && c.state == stEstablished && c.lastAdvWnd < c.mss && c.recvWindow() > c.lastAdvWnd {
		*out = append(*out, d.ack(c)) // window update
	}
}

// tcpQuery runs the Handler for one message of c and queues the answer.
func (d *Device) tcpQuery(c *conn, q []byte) {
	defer d.wg.Done()
	resp := d.call(q, true)

	now := time.Now()
	var out [][]byte
	d.mu.Lock()
	d.active--
	c.inflight--
	if !c.dead && !d.closed {
		if len(resp) > 0 && len(resp) <= 0xffff && !c.wantFin {
			if d.sendBytes+2+len(resp) > d.cfg.maxSendTotal {
				d.logRateLimited("dns intercept: TCP answer buffer full; resetting %v", c.key.client)
				d.abort(c, &out)
			} else {
				c.sbuf = append(c.sbuf, byte(len(resp)>>8), byte(len(resp)))
				c.sbuf = append(c.sbuf, resp...)
				d.sendBytes += 2 + len(resp)
				d.st.tcpAnswers.Add(1)
				if c.state == stEstablished || c.state == stCloseWait {
					c.deadline = now.Add(d.cfg.idle)
				}
			}
		}
		if !c.dead {
			d.dispatch(c, now, &out)
			d.output(c, now, false, &out)
			d.maybeFinish(c, now, &out)
			if !c.dead {
				d.armLocked(c)
			}
		}
	}
	d.serviceWaitq(now, &out)
	d.unlockAndWrite(out)
}

// serviceWaitq hands free handler slots to connections waiting for one.
func (d *Device) serviceWaitq(now time.Time, out *[][]byte) {
	for d.active < d.cfg.maxInFlight && len(d.waitq) > 0 && !d.closed {
		c := d.waitq[0]
		d.waitq[0] = nil
		d.waitq = d.waitq[1:]
		c.queued = false
		if c.dead {
			continue
		}
		d.dispatch(c, now, out)
		d.maybeFinish(c, now, out)
		if !c.dead {
			d.armLocked(c)
		}
	}
	if len(d.waitq) == 0 {
		d.waitq = nil
	}
}

// output sends what c may send now: answer data within the peer's window in
// segments of at most c.mss, then the FIN if one is due. With probe, one byte
// goes out even into a zero window (a window probe). It also (re)starts the
// retransmission timer while anything is unacknowledged or waiting for
// window.
func (d *Device) output(c *conn, now time.Time, probe bool, out *[][]byte) {
	if c.dead || c.state == stSynRcvd || c.finAcked {
		return
	}
	for !c.finOut {
		off := int(c.sndNxt - c.sndUna)
		avail := len(c.sbuf) - off
		if avail <= 0 {
			break
		}
		usable := int(int32(c.sndUna + c.sndWnd - c.sndNxt))
		if usable <= 0 {
			if !probe || c.sndNxt != c.sndUna {
				break
			}
			usable = 1
		}
		probe = false
		n := min(avail, usable, c.mss)
		flags := uint8(0)
		if n == avail {
			flags = flagPSH
		}
		*out = append(*out, d.seg(c, c.sndNxt, flags, c.sbuf[off:off+n]))
		c.sndNxt += uint32(n)
	}
	if c.wantFin && !c.finOut && int(c.sndNxt-c.sndUna) == len(c.sbuf) {
		*out = append(*out, d.seg(c, c.sndNxt, flagFIN, nil))
		c.sndNxt++
		c.finOut = true
	}
	if seqGT(c.sndNxt, c.sndMax) {
		c.sndMax = c.sndNxt
	}
	pending := c.sndUna != c.sndMax || len(c.sbuf) > 0 || (c.wantFin && !c.finAcked)
	switch {
	case !pending:
		c.rtoAt, c.retries = time.Time{}, 0
	case c.rtoAt.IsZero():
		c.rtoAt = now.Add(c.rto)
	}
}

// maybeFinish sends our FIN once the peer has closed its side and every
// query it sent is answered.
func (d *Device) maybeFinish(c *conn, now time.Time, out *[][]byte) {
	if c.dead || c.state != stCloseWait || c.wantFin || c.inflight > 0 {
		return
	}
	if len(c.rbuf) >= 2 && len(c.rbuf) >= 2+int(be16(c.rbuf)) {
		return // a complete message still waits for a handler slot
	}
	c.rbuf = nil // a partial message can never complete
	c.wantFin = true
	c.state = stLastAck
	c.deadline = now.Add(d.cfg.closing)
	d.output(c, now, false, out)
}

// onTimer handles c's expired deadline or retransmission timer.
func (d *Device) onTimer(c *conn, now time.Time, out *[][]byte) {
	if !c.deadline.IsZero() && !now.Before(c.deadline) {
		switch c.state {
		case stEstablished, stCloseWait:
			if len(c.sbuf) > 0 {
				d.abort(c, out) // the client is not reading its answers
				return
			}
			// Idle: close gracefully.
			c.wantFin = true
			c.rbuf = nil
			if c.state == stEstablished {
				c.state = stFinWait1
			} else {
				c.state = stLastAck
			}
			c.deadline = now.Add(d.cfg.closing)
			d.output(c, now, false, out)
		default:
			d.abort(c, out)
			return
		}
	}
	if c.rtoAt.IsZero() || now.Before(c.rtoAt) {
		return
	}
	c.retries++
	if c.retries > d.cfg.maxRetries {
		d.abort(c, out)
		return
	}
	c.rto = min(2*c.rto, d.cfg.rtoMax)
	d.st.retransmits.Add(1)
	if c.state == stSynRcvd {
		c.rtoAt = now.Add(c.rto)
		*out = append(*out, d.synAck(c))
		return
	}
	// Go back to the first unacknowledged byte and send again.
	c.sndNxt = c.sndUna
	if !c.finAcked {
		c.finOut = false
	}
	c.rtoAt = time.Time{}
	d.output(c, now, true, out)
}

// abort sends a RST for c and forgets it.
func (d *Device) abort(c *conn, out *[][]byte) {
	d.st.resets.Add(1)
	*out = append(*out, d.tcpPacket(c.key, c.sndNxt, c.rcvNxt, flagRST|flagACK, 0, 0, nil))
	d.remove(c)
}

// remove forgets c. Handler calls still running for it drop their answers.
func (d *Device) remove(c *conn) {
	if c.dead {
		return
	}
	c.dead = true
	delete(d.conns, c.key)
	d.sendBytes -= len(c.sbuf)
	c.sbuf, c.rbuf = nil, nil
}

// next is c's earliest timer.
func (c *conn) next() time.Time {
	t := c.deadline
	if !c.rtoAt.IsZero() && (t.IsZero() || c.rtoAt.Before(t)) {
		t = c.rtoAt
	}
	return t
}

// armLocked makes sure the timer goroutine wakes up in time for c.
func (d *Device) armLocked(c *conn) {
	t := c.next()
	if t.IsZero() || (!d.nextWake.IsZero() && !t.Before(d.nextWake)) {
		return
	}
	d.nextWake = t
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// timerLoop runs the connections' timers.
func (d *Device) timerLoop() {
	defer d.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-d.kick:
		case <-t.C:
		}
		now := time.Now()
		var out [][]byte
		var next time.Time
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return
		}
		for _, c := range d.conns {
			if n := c.next(); !n.IsZero() && !now.Before(n) {
				d.onTimer(c, now, &out)
			}
			if !c.dead {
				if n := c.next(); !n.IsZero() && (next.IsZero() || n.Before(next)) {
					next = n
				}
			}
		}
		d.serviceWaitq(now, &out)
		d.nextWake = next
		d.unlockAndWrite(out)
		if next.IsZero() {
			t.Stop()
		} else {
			t.Reset(time.Until(next))
		}
	}
}

// tcpPacket builds a TCP segment from key.server to key.client. A nonzero mss
// adds the MSS option.
func (d *Device) tcpPacket(key connKey, seq, ack uint32, flags uint8, wnd uint16, mss int, data []byte) []byte {
	hl := 20
	if mss > 0 {
		hl = 24
	}
	src, dst := key.server.Addr(), key.client.Addr()
	buf, t := d.newPacket(src, dst, protoTCP, hl+len(data), true)
	put16(t[0:], key.server.Port())
	put16(t[2:], key.client.Port())
	put32(t[4:], seq)
	put32(t[8:], ack)
	t[12] = byte(hl/4) << 4
	t[13] = flags
	put16(t[14:], wnd)
	if mss > 0 {
		t[20], t[21] = 2, 4
		put16(t[22:], uint16(mss))
	}
	copy(t[hl:], data)
	put16(t[16:], ^fold(sum(t, pseudoSum(src, dst, protoTCP, len(t)))))
	return buf
}
