package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/skeinvpn/skein/daemon/portmap"
	"github.com/skeinvpn/skein/daemon/router"
	"github.com/skeinvpn/skein/daemon/transport"
)

// portMapper is the transport's port mapper: a daemon/portmap client for the tunnel's UDP
// port, made when the transport's socket has that port, and off until the prefs (applied with
// each netmap) turn it on. Its mapping is released when the transport shuts down (skein down,
// exit); a crash leaves a journal that Cleanup reads.
type portMapper struct {
	stateDir string
	logf     func(string, ...any)
	only     string // SKEIN_PORTMAP_ONLY: one protocol, for diagnosis and tests

	mu       sync.Mutex
	c        *portmap.Client
	disabled bool
	onChange func() // the transport's PortMapChanged, set once it exists
	stop     chan struct{}
}

// closeTimeout bounds the release of the mapping at shutdown (a router that went away).
const portMapCloseTimeout = 3 * time.Second

var _ transport.PortMapper = (*portMapper)(nil)

// portMapOnlyEnv, when set to upnp, natpmp or pcp, keeps port mapping to that one protocol: to
// find out which one a router gets wrong (miniupnpd switches NAT-PMP and PCP together).
const portMapOnlyEnv = "SKEIN_PORTMAP_ONLY"

func newPortMapper(stateDir string, logf func(string, ...any)) *portMapper {
	only := strings.ToLower(os.Getenv(portMapOnlyEnv))
	switch only {
	case "", "upnp", "natpmp", "pcp":
	default:
		logf("dataplane: %s=%q is none of upnp, natpmp, pcp; ignored", portMapOnlyEnv, only)
		only = ""
	}
	return &portMapper{stateDir: stateDir, logf: logf, only: only, disabled: true, stop: make(chan struct{})}
}

func (p *portMapper) setOnChange(f func()) {
	p.mu.Lock()
	p.onChange = f
	p.mu.Unlock()
}

func (p *portMapper) client() *portmap.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c
}

// SetLocalPort implements transport.PortMapper.
func (p *portMapper) SetLocalPort(port uint16) {
	if port == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c != nil {
		p.c.SetLocalPort(port)
		return
	}
	c, err := portmap.New(portmap.Options{
		LocalPort:     port,
		Control:       router.ControlBypass,
		StateDir:      p.stateDir,
		Disabled:      p.disabled,
		Logf:          p.logf,
		DisableUPnP:   p.only != "" && p.only != "upnp",
		DisableNATPMP: p.only != "" && p.only != "natpmp",
		DisablePCP:    p.only != "" && p.only != "pcp",
	})
	if err != nil {
		p.logf("dataplane: port mapping: %v", err)
		return
	}
	p.c = c
	go p.watch(c)
}

// watch tells the transport each time the mapping appears, moves or goes.
func (p *portMapper) watch(c *portmap.Client) {
	for {
		select {
		case <-p.stop:
			return
		case <-c.Changes():
		}
		p.mu.Lock()
		f := p.onChange
		p.mu.Unlock()
		if f != nil {
			f()
		}
	}
}

// setDisabled applies the pref.
func (p *portMapper) setDisabled(off bool) {
	p.mu.Lock()
	changed := p.disabled != off
	p.disabled = off
	c := p.c
	p.mu.Unlock()
	if changed && c != nil {
		c.SetDisabled(off)
	}
}

// Mapping implements transport.PortMapper.
func (p *portMapper) Mapping() (netip.AddrPort, bool) {
	c := p.client()
	if c == nil {
		return netip.AddrPort{}, false
	}
	m, ok := c.Mapping()
	return m.External, ok
}

// Probe implements transport.PortMapper: turned off, it checks nothing.
func (p *portMapper) Probe(ctx context.Context) (transport.PortMapProbe, error) {
	c := p.client()
	if c == nil {
		return transport.PortMapProbe{}, transport.ErrPortMapOff
	}
	o, err := c.Probe(ctx)
	if errors.Is(err, portmap.ErrDisabled) || errors.Is(err, portmap.ErrClosed) {
		return transport.PortMapProbe{}, transport.ErrPortMapOff
	}
	return transport.PortMapProbe{UPnP: o.UPnP, PMP: o.NATPMP, PCP: o.PCP}, err
}

// status is the client's state, for "why relay?" (zero before the socket opened).
func (p *portMapper) status() portmap.Status {
	if c := p.client(); c != nil {
		return c.Status()
	}
	return portmap.Status{Disabled: true}
}

// networkChanged makes the client look at the gateway again.
func (p *portMapper) networkChanged() {
	if c := p.client(); c != nil {
		c.NetworkChanged()
	}
}

// Close implements transport.PortMapper: the mapping is deleted on the router.
func (p *portMapper) Close() error {
	p.mu.Lock()
	c := p.c
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.mu.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), portMapCloseTimeout)
	defer cancel()
	return c.Close(ctx)
}
