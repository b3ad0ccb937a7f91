// Package dns is the resolver that skeind answers at the MagicDNS service
// addresses (100.100.100.100 and fd7a:115c:a1e0::53).
//
// A Server is transport-agnostic: the caller reads a query from UDP or TCP,
// passes the bytes to Handle and writes back what Handle returns. All
// message parsing and packing goes through github.com/miekg/dns.
//
// Resolution order for a query (class IN; other classes get REFUSED, zone
// transfers NOTIMP):
//
//  1. A name in the local tables is answered authoritatively (AA, TTL 600):
//     Hosts names give A/AAAA, reverse names of their addresses give PTR,
//     single-label names resolve through SearchDomains (first domain wins,
//     owner name = the short name as asked). Any other type for such a name,
//     ANY included, is NODATA. Zone apexes and empty non-terminals inside
//     local domains are NODATA too (RFC 8020: NXDOMAIN would deny the whole
//     subtree).
//  2. Otherwise the longest suffix among LocalDomains and Routes decides: a
//     local domain gives NXDOMAIN (no SOA is published, so none is
//     attached); a route forwards to its upstreams. "local.", the link-local
//     reverse zones and "onion." are local unless configured otherwise (see
//     specialLocal).
//  3. Everything else goes to Config.Upstreams. A route whose upstreams were
//     all refused does not fall back to them (that would leak split-DNS
//     names to the default resolvers); it answers SERVFAIL.
//
// Forwarding sends the client's message unchanged (EDNS0 options included)
// apart from a fresh random id per attempt: over UDP first, each attempt
// bounded by TryTimeout, moving across upstreams (starting with the last one
// that answered) and retrying over TCP when the answer is truncated. The
// whole exchange is bounded by QueryTimeout, after which the client gets
// SERVFAIL. Identical questions in flight share one exchange, which also
// caps the damage of forwarding loops.
package dns

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits and defaults. The figures follow the MagicDNS reference behaviour
// documented in /work/shared/docs/reliability-security.md (DNS table).
const (
	// MaxQuerySize is the largest query Handle accepts (TCP or UDP). A TCP
	// listener should refuse length prefixes above it without reading the
	// body.
	MaxQuerySize = 4096
	// TCPIdleTimeout is how long a TCP listener should keep an idle client
	// connection open between queries.
	TCPIdleTimeout = 45 * time.Second
	// LocalTTL is the TTL of every locally generated record.
	LocalTTL = 600
	// DefaultMaxInFlight bounds concurrent forwarded queries.
	DefaultMaxInFlight = 256
	// DefaultTryTimeout bounds one UDP attempt against one upstream.
	DefaultTryTimeout = 2 * time.Second
	// DefaultQueryTimeout bounds the whole forwarding of one query, all
	// attempts and the TCP retry included. When it expires the client gets
	// SERVFAIL.
	DefaultQueryTimeout = 5 * time.Second

	// maxUDPResponse is the ceiling for UDP responses regardless of what
	// the client advertises; it is also the UDP payload size we advertise.
	maxUDPResponse = 4096
	// maxTCPResponse is what the two-byte TCP length prefix allows.
	maxTCPResponse = 65535
)

// Upstream is a plain DNS server reached over UDP and, for truncated
// answers, TCP. A zero port means 53.
//
// DNS-over-HTTPS upstreams (including the peerapi DoH proxy of exit nodes)
// are not supported yet; the caller must leave them out of the Config.
type Upstream struct{ Addr netip.AddrPort }

// Config is the resolver configuration derived from the netmap's DNSConfig.
type Config struct {
	// Hosts maps a lower-case FQDN with trailing dot to its addresses:
	// MagicDNS self and peer names plus ExtraRecords. Names are answered
	// locally for A/AAAA, and each address gets a PTR record.
	Hosts map[string][]netip.Addr
	// SearchDomains are domains without trailing dot. A single-label query
	// ("laptop.") is matched against Hosts under each of them, in order.
	SearchDomains []string
	// LocalDomains are FQDN suffixes (trailing dot) this server is
	// authoritative for: unknown names below them get NXDOMAIN, never a
	// forward. This holds the MagicDNS suffix, the 64.100.in-addr.arpa. …
	// 127.100.in-addr.arpa. and 0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa. reverse
	// zones and split-DNS routes that have no resolvers.
	LocalDomains []string
	// Routes is split DNS: FQDN suffix (trailing dot) → upstreams. The
	// longest matching suffix wins, among Routes and LocalDomains alike. A
	// route with an empty list is treated like a LocalDomains entry.
	Routes map[string][]Upstream
	// Upstreams handle every name not matched above. Empty means such
	// queries get SERVFAIL (and one log line per config).
	Upstreams []Upstream
	// Names answers, at query time, for names too many and too changeable
	// to compile (the tailnet's peers): forward lookups, PTR for their
	// addresses, and single-label names under SearchDomains. Hosts win
	// where both know a name (their addresses are merged).
	Names Names
}

// Names is a source of owner names looked up per query, so that a change
// to one of them costs nothing here.
type Names interface {
	// Lookup returns the addresses of a lower-case FQDN with trailing dot.
	Lookup(name string) ([]netip.Addr, bool)
	// Reverse returns the lower-case FQDN (trailing dot) that owns a.
	Reverse(a netip.Addr) (string, bool)
}

// Options configure a Server. Zero values select the defaults.
type Options struct {
	Logf func(string, ...any)
	// Dial opens upstream connections ("udp" or "tcp"); default net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// SelfAddrs are the addresses this server answers on (normally
	// 100.100.100.100 and fd7a:115c:a1e0::53). Upstreams pointing at any of
	// them, on any port, are dropped from the config to avoid loops.
	SelfAddrs []netip.Addr
	// StubLoops says the host's 127.0.0.53 stub (systemd-resolved) forwards
	// to this server, so 127.0.0.53 is refused as an upstream as well. It
	// can be changed later with SetStubLoops.
	StubLoops bool

	// MaxInFlight bounds concurrent forwarded queries (default 256);
	// queries beyond it get SERVFAIL at once.
	MaxInFlight int
	// TryTimeout bounds a single UDP attempt (default 2 s).
	TryTimeout time.Duration
	// QueryTimeout bounds the forwarding of one query (default 5 s).
	QueryTimeout time.Duration
}

// Stats are cumulative counters plus the current number of forwarded
// queries in flight.
type Stats struct {
	Queries         uint64 // Handle calls that got past the header
	LocalAnswers    uint64 // answered from the local tables (incl. NXDOMAIN/NODATA)
	Forwarded       uint64 // client queries answered via an upstream
	UpstreamQueries uint64 // individual upstream attempts (UDP and TCP)
	TCPRetries      uint64 // upstream UDP answers with TC retried over TCP
	Coalesced       uint64 // queries that joined an identical in-flight forward
	ServFail        uint64 // SERVFAIL responses we generated
	FormErr         uint64 // FORMERR responses we generated
	Refused         uint64 // REFUSED/NOTIMP responses we generated
	Overloaded      uint64 // SERVFAILs due to the in-flight bound
	Truncated       uint64 // responses cut to the client's UDP size (TC set)
	Dropped         uint64 // inputs answered with nothing (no header / not a query)
	InFlight        int64  // forwarded queries currently waiting
}

// Server is the MagicDNS resolver. It is safe for concurrent use.
type Server struct {
	logf         func(string, ...any)
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	selfAddrs    []netip.Addr
	stubLoops    atomic.Bool
	maxInFlight  int64
	tryTimeout   time.Duration
	queryTimeout time.Duration

	cfg atomic.Pointer[table]
	gen atomic.Uint64

	mu      sync.Mutex
	flights map[flightKey]*flight
	lastLog map[string]time.Time

	stats struct {
		queries, local, forwarded, upstream, tcpRetries, coalesced,
		servfail, formerr, refused, overloaded, truncated, dropped atomic.Uint64
		inFlight atomic.Int64
		flights  atomic.Int64
	}
}

// NewServer returns a Server with an empty config: nothing is local and
// everything gets SERVFAIL until SetConfig provides upstreams.
func NewServer(opts Options) *Server {
	s := &Server{
		logf:         opts.Logf,
		dial:         opts.Dial,
		selfAddrs:    make([]netip.Addr, 0, len(opts.SelfAddrs)),
		maxInFlight:  int64(opts.MaxInFlight),
		tryTimeout:   opts.TryTimeout,
		queryTimeout: opts.QueryTimeout,
		flights:      make(map[flightKey]*flight),
		lastLog:      make(map[string]time.Time),
	}
	for _, a := range opts.SelfAddrs {
		s.selfAddrs = append(s.selfAddrs, a.Unmap())
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if s.dial == nil {
		var d net.Dialer
		s.dial = d.DialContext
	}
	if s.maxInFlight <= 0 {
		s.maxInFlight = DefaultMaxInFlight
	}
	if s.tryTimeout <= 0 {
		s.tryTimeout = DefaultTryTimeout
	}
	if s.queryTimeout <= 0 {
		s.queryTimeout = DefaultQueryTimeout
	}
	s.stubLoops.Store(opts.StubLoops)
	s.SetConfig(Config{})
	return s
}

// SetStubLoops records whether 127.0.0.53 forwards back to this server. It
// takes effect at the next SetConfig.
func (s *Server) SetStubLoops(loops bool) { s.stubLoops.Store(loops) }

// SetConfig replaces the configuration. The lookup tables are built before
// the swap, so queries in progress finish against the old config and new
// queries see the new one; there is no window with a partial config.
func (s *Server) SetConfig(cfg Config) {
	t := s.compile(cfg)
	s.cfg.Store(t)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := &s.stats
	return Stats{
		Queries:         st.queries.Load(),
		LocalAnswers:    st.local.Load(),
		Forwarded:       st.forwarded.Load(),
		UpstreamQueries: st.upstream.Load(),
		TCPRetries:      st.tcpRetries.Load(),
		Coalesced:       st.coalesced.Load(),
		ServFail:        st.servfail.Load(),
		FormErr:         st.formerr.Load(),
		Refused:         st.refused.Load(),
		Overloaded:      st.overloaded.Load(),
		Truncated:       st.truncated.Load(),
		Dropped:         st.dropped.Load(),
		InFlight:        st.inFlight.Load(),
	}
}

// logLimited logs at most once per interval for each key, so a dead
// upstream under load produces a trickle of lines instead of a flood.
func (s *Server) logLimited(key string, interval time.Duration, format string, args ...any) {
	now := time.Now()
	s.mu.Lock()
	last, ok := s.lastLog[key]
	if ok && now.Sub(last) < interval {
		s.mu.Unlock()
		return
	}
	if len(s.lastLog) > 1024 {
		clear(s.lastLog)
	}
	s.lastLog[key] = now
	s.mu.Unlock()
	s.logf(format, args...)
}
