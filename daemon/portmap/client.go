package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

var (
	// ErrDisabled is returned by Probe while port mapping is turned off.
	ErrDisabled = errors.New("port mapping is turned off")
	// ErrClosed is returned by Probe after Close.
	ErrClosed = errors.New("portmap: client closed")
)

// Client keeps one UDP port mapped on the default gateway. All network work
// happens on its own goroutine; its methods are safe for concurrent use.
type Client struct {
	o    Options
	logf func(string, ...any)

	changes  chan struct{}
	kick     chan struct{}
	probes   chan chan probeAnswer
	closing  chan context.Context
	done     chan struct{}
	closeErr error

	mu        sync.Mutex
	st        Status
	cur       *mapping // owned by the goroutine; read under mu
	localPort uint16
	reported  netip.AddrPort // what Mapping last returned, for Changes
	closed    bool

	// goroutine-only state
	sock      *socket
	mp        *mapper
	found     []ssdpResponse // IGD answers of the last probe
	lost      *mapping       // a mapping the router lost, to ask for again
	nextCheck time.Time
	failures  int
}

type probeAnswer struct {
	offers Offers
	err    error
}

// New starts a Client for o.LocalPort. It maps in the background; watch
// Changes and read Mapping. A journal left in o.StateDir by a crash is
// released first.
func New(o Options) (*Client, error) {
	if o.LocalPort == 0 {
		return nil, errors.New("portmap: LocalPort is required")
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	c := &Client{
		o:         o,
		logf:      o.Logf,
		changes:   make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		probes:    make(chan chan probeAnswer),
		closing:   make(chan context.Context),
		done:      make(chan struct{}),
		localPort: o.LocalPort,
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	c.st.Disabled = o.Disabled
	go c.run()
	return c, nil
}

// Changes is signalled (coalesced) whenever Mapping's answer changes.
func (c *Client) Changes() <-chan struct{} { return c.changes }

// Mapping returns the current public mapping, if any.
func (c *Client) Mapping() (Mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return Mapping{}, false
	}
	return c.cur.public(), true
}

// Status returns a snapshot for diagnostics.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if c.cur != nil {
		m := c.cur.public()
		st.Mapping = &m
	}
	return st
}

// SetLocalPort changes the port to map (the transport rebound): the old
// mapping is deleted and a new one made.
func (c *Client) SetLocalPort(port uint16) {
	if port == 0 {
		return
	}
	c.mu.Lock()
	c.localPort = port
	c.mu.Unlock()
	c.poke()
}

// SetDisabled turns port mapping off (deleting a live mapping) or on.
func (c *Client) SetDisabled(off bool) {
	c.mu.Lock()
	c.st.Disabled = off
	c.mu.Unlock()
	c.poke()
}

// NetworkChanged makes the Client look at the gateway again now (a link,
// address or route changed): a new gateway gets a new mapping, and a
// router that restarted is noticed without waiting for the next check.
func (c *Client) NetworkChanged() {
	c.mu.Lock()
	c.nextCheck = time.Time{}
	c.mu.Unlock()
	c.poke()
}

func (c *Client) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Probe asks the gateway now which protocols it offers (for netcheck's
// PortMapping line); it also checks a live mapping for a router restart.
func (c *Client) Probe(ctx context.Context) (Offers, error) {
	ch := make(chan probeAnswer, 1)
	select {
	case c.probes <- ch:
	case <-c.done:
		return Offers{}, ErrClosed
	case <-ctx.Done():
		return Offers{}, ctx.Err()
	}
	select {
	case a := <-ch:
		return a.offers, a.err
	case <-ctx.Done():
		return Offers{}, ctx.Err()
	}
}

// Close deletes the mapping on the router (waiting at most until ctx is
// done), removes the journal and stops the Client.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		select {
		case c.closing <- ctx:
		case <-c.done:
		}
	}
	select {
	case <-c.done:
		return c.closeErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) run() {
	defer close(c.done)
	if c.o.StateDir != "" {
		if err := cleanup(c.o.StateDir, c.o); err != nil {
			c.logf("portmap: %v", err)
		}
	}
	defer func() {
		if c.sock != nil {
			c.sock.close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case ctx := <-c.closing:
			c.closeErr = c.drop(ctx, true)
			return
		case ch := <-c.probes:
			ch <- c.probeNow()
			continue
		case <-c.kick:
		case <-timer.C:
		}
		next := c.step()
		timer.Reset(next)
	}
}

// ensureSocket opens the probe socket on first use.
func (c *Client) ensureSocket() error {
	if c.sock != nil {
		return nil
	}
	s, err := newSocket(c.o.Control, c.o)
	if err != nil {
		return err
	}
	c.sock = s
	return nil
}

// gateway finds the gateway and our address toward it, and keeps a mapper
// for that pair.
func (c *Client) gateway() (*mapper, error) {
	gw := c.o.Gateway
	if !gw.IsValid() {
		var err error
		if gw, err = defaultGateway(); err != nil {
			return nil, err
		}
	}
	self, err := selfToward(gw, c.o.Control)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.st.Gateway, c.st.Self = gw, self
	c.mu.Unlock()
	if c.mp == nil || c.mp.gw != gw || c.mp.self != self {
		c.mp = &mapper{s: c.sock, hc: gatewayHTTPClient(gw, c.o.Control), gw: gw, self: self, o: c.o}
		c.found = nil
	}
	return c.mp, nil
}

// step does what is due and returns when to look again.
func (c *Client) step() time.Duration {
	const idle = 24 * time.Hour // only a poke wakes us
	c.mu.Lock()
	disabled, port := c.st.Disabled, c.localPort
	nextCheck := c.nextCheck
	c.mu.Unlock()
	if disabled {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c.drop(ctx, true)
		cancel()
		return idle
	}
	if err := c.ensureSocket(); err != nil {
		return c.fail(err)
	}
	mp, err := c.gateway()
	if err != nil {
		c.setOffers(Offers{}, false)
		c.dropQuietly()
		return c.fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cur := c.current()
	if cur != nil && (cur.gw != mp.gw || cur.self != mp.self || cur.internal != port) {
		c.logf("portmap: gateway, address or port changed: dropping %s mapping %v", cur.proto, cur.external)
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		c.drop(rctx, true)
		rcancel()
		cur = nil
	}
	now := time.Now()
	if cur != nil && now.Before(cur.renewAt) {
		if now.Before(nextCheck) {
			return min(cur.renewAt.Sub(now), nextCheck.Sub(now))
		}
		lost := c.check(ctx, cur)
		c.mu.Lock()
		c.nextCheck = time.Now().Add(c.o.CheckInterval)
		c.mu.Unlock()
		if !lost {
			return min(time.Until(cur.renewAt), c.o.CheckInterval)
		}
		c.mu.Lock()
		c.st.Remaps++
		c.mu.Unlock()
		c.dropQuietly()
		c.lost = cur
	}
	// Map again like a renewal of what was lost (same protocol, port and
	// PCP nonce), so a router that kept it after all hands the same back.
	prev := cur
	if c.lost != nil && c.lost.gw == mp.gw && c.lost.internal == port {
		prev = c.lost
	}
	c.lost = nil
	if err := c.mapNow(ctx, mp, port, prev); err != nil {
		c.dropQuietly() // a failed renewal: stop advertising it
		return c.fail(err)
	}
	c.failures = 0
	c.mu.Lock()
	c.nextCheck = time.Now().Add(c.o.CheckInterval)
	c.mu.Unlock()
	return min(time.Until(c.current().renewAt), c.o.CheckInterval)
}

func (c *Client) current() *mapping {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// fail records err and returns the retry delay: 5 s doubling to 5 min.
func (c *Client) fail(err error) time.Duration {
	c.mu.Lock()
	c.st.LastError = err.Error()
	c.mu.Unlock()
	d := 5 * time.Second << min(c.failures, 6)
	c.failures++
	if d > 5*time.Minute {
		d = 5 * time.Minute
	}
	c.logf("portmap: %v (next try in %v)", err, d)
	return d
}

func (c *Client) setOffers(o Offers, probed bool) {
	c.mu.Lock()
	c.st.Offers = o
	if probed {
		c.st.ProbedAt = time.Now()
	}
	c.mu.Unlock()
}

// probe runs one probe and records its offers.
func (c *Client) probe(ctx context.Context, mp *mapper) probeResult {
	r := mp.s.probe(ctx, mp.gw, mp.self, c.o)
	c.setOffers(r.offers, true)
	c.found = r.ssdp
	return r
}

// probeNow serves Probe: a fresh probe, which also checks a live mapping.
func (c *Client) probeNow() probeAnswer {
	c.mu.Lock()
	disabled := c.st.Disabled
	c.mu.Unlock()
	if disabled {
		return probeAnswer{err: ErrDisabled}
	}
	if err := c.ensureSocket(); err != nil {
		return probeAnswer{err: err}
	}
	mp, err := c.gateway()
	if err != nil {
		c.setOffers(Offers{}, false)
		return probeAnswer{err: err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := c.probe(ctx, mp)
	if cur := c.current(); cur != nil && cur.gw == mp.gw {
		if c.checkProbed(ctx, cur, r) {
			c.mu.Lock()
			c.st.Remaps++
			c.mu.Unlock()
			c.dropQuietly()
			c.lost = cur
			c.poke() // map again at once
		}
	}
	return probeAnswer{offers: r.offers}
}

// check reports whether the router lost cur, asking only over cur's own
// protocol: its epoch (NAT-PMP external address request, PCP ANNOUNCE)
// or, over UPnP, whether the mapping is still listed. No answer is not
// proof: the next renewal will tell.
func (c *Client) check(ctx context.Context, cur *mapping) (lost bool) {
	switch cur.proto {
	case NATPMP:
		r, err := c.mp.s.pmpExternal(ctx, c.mp.gw)
		return err == nil && c.epochLost(cur, r.Epoch)
	case PCP:
		epoch, err := c.mp.s.pcpAnnounce(ctx, c.mp.gw, c.mp.self)
		return err == nil && c.epochLost(cur, epoch)
	case UPnP:
		ok, err := upnpHasMapping(ctx, cur.upnp, cur.external.Port(), netip.AddrPortFrom(cur.self, cur.internal))
		if err == nil && !ok {
			c.logf("portmap: the router no longer lists our UPnP mapping %v", cur.external)
			return true
		}
	}
	return false
}

// checkProbed is check from a full probe's answers (Probe).
func (c *Client) checkProbed(ctx context.Context, cur *mapping, r probeResult) (lost bool) {
	switch {
	case cur.proto == NATPMP && r.offers.NATPMP:
		return c.epochLost(cur, r.pmpEpoch)
	case cur.proto == PCP && r.offers.PCP:
		return c.epochLost(cur, r.pcpEpoch)
	case cur.proto == UPnP:
		return c.check(ctx, cur)
	}
	return false
}

// epochLost compares the router's epoch with what cur last saw, and
// remembers it (RFC 6886 compares each answer with the previous one).
func (c *Client) epochLost(cur *mapping, epoch uint32) bool {
	now := time.Now()
	if cur.rebooted(epoch, now) {
		c.logf("portmap: router epoch %d is behind %d: it restarted and lost %s mapping %v", epoch, cur.epoch, cur.proto, cur.external)
		return true
	}
	c.mu.Lock()
	cur.epoch, cur.epochAt = epoch, now
	c.mu.Unlock()
	return false
}

// mapNow renews prev (same protocol, same nonce) or makes a new mapping:
// PCP, then NAT-PMP, then UPnP, each if the router offered it.
func (c *Client) mapNow(ctx context.Context, mp *mapper, port uint16, prev *mapping) error {
	if prev != nil { // a renewal is one exchange with what worked before
		var m *mapping
		var err error
		switch {
		case prev.proto == PCP && !c.o.DisablePCP:
			m, err = mp.mapPCP(ctx, port, prev)
		case prev.proto == NATPMP && !c.o.DisableNATPMP:
			m, err = mp.mapPMP(ctx, port, prev)
		case prev.proto == UPnP && !c.o.DisableUPnP:
			m, err = mp.mapUPnP(ctx, port, prev, nil)
		}
		if m != nil {
			if checkPublic(m.external.Addr()) == nil {
				c.install(m, prev)
				return nil
			}
			mp.s.release(ctx, m) // turned into a lie: the full round below says why
		}
		if err != nil {
			c.logf("portmap: renewing %s mapping %v: %v", prev.proto, prev.external, err)
		}
	}
	r := c.probe(ctx, mp)
	type attempt struct {
		proto Protocol
		do    func() (*mapping, error)
	}
	var tries []attempt
	add := func(p Protocol, offered, off bool, do func() (*mapping, error)) {
		if offered && !off || prev != nil && prev.proto == p && !off {
			tries = append(tries, attempt{p, do})
		}
	}
	add(PCP, r.offers.PCP, c.o.DisablePCP, func() (*mapping, error) { return mp.mapPCP(ctx, port, prev) })
	add(NATPMP, r.offers.NATPMP, c.o.DisableNATPMP, func() (*mapping, error) { return mp.mapPMP(ctx, port, prev) })
	add(UPnP, r.offers.UPnP, c.o.DisableUPnP, func() (*mapping, error) { return mp.mapUPnP(ctx, port, prev, r.ssdp) })
	if prev != nil { // renew with what worked first
		for i, t := range tries {
			if t.proto == prev.proto {
				tries[0], tries[i] = tries[i], tries[0]
				break
			}
		}
	}
	if len(tries) == 0 {
		return fmt.Errorf("gateway %v offers no port mapping (UPnP, NAT-PMP, PCP)", mp.gw)
	}
	var errs []error
	rejected := ""
	var rejectedExt netip.Addr
	for _, t := range tries {
		m, err := t.do()
		if err == nil {
			if err = checkPublic(m.external.Addr()); err != nil {
				// A double NAT or a lying router: useless to peers.
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				mp.s.release(rctx, m)
				cancel()
			}
		}
		if err != nil {
			var np *notPublicError
			if errors.As(err, &np) {
				rejected = fmt.Sprintf("%s: %v", t.proto, np)
				rejectedExt = np.addr
			}
			errs = append(errs, fmt.Errorf("%s: %w", t.proto, err))
			continue
		}
		c.install(m, prev)
		return nil
	}
	c.mu.Lock()
	c.st.Rejected, c.st.RejectedExternal = rejected, rejectedExt
	c.mu.Unlock()
	return errors.Join(errs...)
}

// install makes m the current mapping, journals it and signals a change.
func (c *Client) install(m *mapping, prev *mapping) {
	if err := writeJournal(c.o.StateDir, m.journal()); err != nil {
		c.logf("portmap: journal: %v", err)
	}
	if prev == nil || prev.external != m.external || prev.proto != m.proto {
		c.logf("portmap: %s mapping %v -> %v:%d (lifetime %v)", m.proto, m.external, m.self, m.internal, m.lifetime)
	}
	c.mu.Lock()
	c.cur = m
	c.st.LastError, c.st.Rejected, c.st.RejectedExternal = "", "", netip.Addr{}
	c.mu.Unlock()
	c.notify()
}

// drop forgets the current mapping, deleting it on the router if release.
func (c *Client) drop(ctx context.Context, release bool) error {
	c.mu.Lock()
	cur := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cur == nil {
		return nil
	}
	var err error
	if release && c.sock != nil {
		if err = c.sock.release(ctx, cur); err != nil {
			c.logf("portmap: deleting %s mapping %v: %v", cur.proto, cur.external, err)
		} else {
			c.logf("portmap: deleted %s mapping %v", cur.proto, cur.external)
		}
	}
	if jerr := removeJournal(c.o.StateDir); jerr != nil {
		err = errors.Join(err, jerr)
	}
	c.notify()
	return err
}

// dropQuietly forgets a mapping the router no longer has.
func (c *Client) dropQuietly() { c.drop(context.Background(), false) }

// notify signals Changes if what Mapping returns has changed.
func (c *Client) notify() {
	c.mu.Lock()
	var now netip.AddrPort
	if c.cur != nil {
		now = c.cur.external
	}
	changed := now != c.reported
	c.reported = now
	c.mu.Unlock()
	if changed {
		select {
		case c.changes <- struct{}{}:
		default:
		}
	}
}
