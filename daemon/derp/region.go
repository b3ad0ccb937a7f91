package derp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

const (
	regionConnectTimeout = 10 * time.Second // all nodes of a region, one attempt
	minBackoff           = 100 * time.Millisecond
	maxBackoff           = 5 * time.Second
	// stableConn: a connection that lived this long resets the backoff.
	stableConn = 10 * time.Second
)

// ErrNotConnected is returned by RegionClient.Send while there is no connection.
var ErrNotConnected = errors.New("derp: region not connected")

// RegionOptions configure a RegionClient.
type RegionOptions struct {
	Region      *wire.DERPRegion
	PrivateKey  key.NodePrivate
	TLSConfig   *tls.Config
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Mark        uint32 // see DialOptions.Mark
	Logf        func(format string, args ...any)
	// Preferred marks the region as home: NotePreferred(true) is sent on every connection.
	Preferred bool
	// OnMessage gets every message, in order, on the single read goroutine. It must be quick
	// and must not call Close: while it runs nothing is read, and the server drops packets
	// for us once its small per-client queue is full. A *ReceivedPacket and its Data are
	// valid only until it returns. Each new connection starts with a ServerInfoMessage.
	OnMessage func(Message)
}

// RegionClient keeps one connection to a DERP region, trying its nodes in map order and
// reconnecting with jittered exponential backoff (at most 5 s). Its methods are safe for
// concurrent use.
type RegionClient struct {
	opts     RegionOptions
	regionID int
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	cur      atomic.Pointer[Client]

	// prefMu orders NotePreferred writes so the server ends up with the latest value.
	prefMu    sync.Mutex
	preferred bool

	mu     sync.Mutex
	region *wire.DERPRegion
	closed bool
}

// NewRegionClient starts connecting in the background. A nil Region or a zero PrivateKey is
// a programming error and panics.
func NewRegionClient(opts RegionOptions) *RegionClient {
	if opts.Region == nil {
		panic("derp: NewRegionClient without a region")
	}
	if opts.PrivateKey.IsZero() {
		panic("derp: NewRegionClient without a private key")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.OnMessage == nil {
		opts.OnMessage = func(Message) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &RegionClient{
		opts:     opts,
		regionID: opts.Region.RegionID,
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		region:   opts.Region,
	}
	rc.preferred = opts.Preferred
	go rc.run()
	return rc
}

// RegionID is the region's ID.
func (rc *RegionClient) RegionID() int { return rc.regionID }

// Connected reports whether a connection is up.
func (rc *RegionClient) Connected() bool { return rc.cur.Load() != nil }

// Send relays pkt to dst. Without a connection it fails at once with ErrNotConnected, so the
// data plane never waits for a reconnect; a stalled connection can block it about 5 s.
func (rc *RegionClient) Send(dst key.NodePublic, pkt []byte) error {
	c := rc.cur.Load()
	if c == nil {
		return ErrNotConnected
	}
	err := c.Send(dst, pkt)
	if err != nil {
		// The connection is broken; fail fast until the read loop has replaced it.
		rc.cur.CompareAndSwap(c, nil)
	}
	return err
}

// SendBatch is Send for several packets to one peer, written together.
func (rc *RegionClient) SendBatch(dst key.NodePublic, pkts [][]byte) error {
	c := rc.cur.Load()
	if c == nil {
		return ErrNotConnected
	}
	err := c.SendBatch(dst, pkts)
	if err != nil {
		rc.cur.CompareAndSwap(c, nil)
	}
	return err
}

// SetPreferred changes whether this is the home region and tells the current server.
func (rc *RegionClient) SetPreferred(preferred bool) {
	rc.prefMu.Lock()
	defer rc.prefMu.Unlock()
	if rc.preferred == preferred {
		return
	}
	rc.preferred = preferred
	if c := rc.cur.Load(); c != nil {
		if err := c.NotePreferred(preferred); err != nil {
			rc.opts.Logf("derp region %d: NotePreferred: %v", rc.regionID, err)
		}
	}
}

// SetRegion replaces the region's node list (after a DERP map update); it is used from the
// next connection attempt on.
func (rc *RegionClient) SetRegion(r *wire.DERPRegion) {
	if r == nil {
		return
	}
	rc.mu.Lock()
	rc.region = r
	rc.mu.Unlock()
}

// Close ends the connection and the reconnect loop and waits for the read goroutine.
func (rc *RegionClient) Close() {
	rc.mu.Lock()
	rc.closed = true
	rc.mu.Unlock()
	rc.cancel()
	if c := rc.cur.Swap(nil); c != nil {
		c.Close()
	}
	<-rc.done
}

func (rc *RegionClient) run() {
	defer close(rc.done)
	failures := 0
	for rc.ctx.Err() == nil {
		c, err := rc.connect()
		if err != nil {
			if rc.ctx.Err() != nil {
				return
			}
			failures++
			d := backoff(failures)
			rc.opts.Logf("derp region %d: %v; retrying in %v", rc.regionID, err, d.Round(time.Millisecond))
			rc.sleep(d)
			continue
		}
		start := time.Now()
		hint := rc.serve(c)
		if time.Since(start) >= stableConn {
			failures = 0
		}
		failures++
		d := backoff(failures)
		if hint > 0 {
			d = min(hint/2+rand.N(hint/2+1), maxBackoff)
		}
		rc.sleep(d)
	}
}

// connect tries the region's nodes in order, skipping STUN-only ones.
func (rc *RegionClient) connect() (*Client, error) {
	rc.mu.Lock()
	region := rc.region
	rc.mu.Unlock()
	ctx, cancel := context.WithTimeout(rc.ctx, regionConnectTimeout)
	defer cancel()
	var errs []error
	for _, n := range region.Nodes {
		if n == nil || n.STUNOnly {
			continue
		}
		c, err := Dial(ctx, DialOptions{
			Node:        n,
			PrivateKey:  rc.opts.PrivateKey,
			TLSConfig:   rc.opts.TLSConfig,
			DialContext: rc.opts.DialContext,
			Mark:        rc.opts.Mark,
			Logf:        rc.opts.Logf,
		})
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("region %d has no DERP node", region.RegionID)
	}
	return nil, errors.Join(errs...)
}

// serve publishes c, reads from it until it fails and returns a server-suggested
// reconnect delay (0 if none).
func (rc *RegionClient) serve(c *Client) (hint time.Duration) {
	defer c.Close()
	rc.mu.Lock()
	if rc.closed {
		rc.mu.Unlock()
		return 0
	}
	rc.cur.Store(c)
	rc.mu.Unlock()
	defer rc.cur.CompareAndSwap(c, nil)
	rc.opts.Logf("derp region %d: connected to %s from %v", rc.regionID, c.name, c.LocalAddr())
	rc.prefMu.Lock()
	var err error
	if rc.preferred {
		err = c.NotePreferred(true)
	}
	rc.prefMu.Unlock()
	if err != nil {
		rc.opts.Logf("derp region %d: NotePreferred: %v", rc.regionID, err)
		return 0
	}
	for {
		m, err := c.Recv()
		if err != nil {
			if rc.ctx.Err() == nil {
				rc.opts.Logf("derp region %d: %v", rc.regionID, err)
			}
			return hint
		}
		if r, ok := m.(ServerRestartingMessage); ok {
			hint = r.ReconnectIn
		}
		rc.opts.OnMessage(m)
	}
}

func (rc *RegionClient) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-rc.ctx.Done():
	}
}

// backoff is the delay before attempt n+1 after n failures: doubling from 100 ms, capped at
// 5 s, randomised to [d/2, d] so clients dropped together do not return together.
func backoff(failures int) time.Duration {
	d := maxBackoff
	if failures <= 6 {
		d = min(minBackoff<<max(failures-1, 0), maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}
