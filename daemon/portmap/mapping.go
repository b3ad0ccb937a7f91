package portmap

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// mapping is a mapping the router granted (public or not).
type mapping struct {
	proto    Protocol
	gw, self netip.Addr
	internal uint16
	external netip.AddrPort
	lifetime time.Duration // granted; 0: permanent (UPnP)
	renewAt  time.Time

	epoch   uint32    // NAT-PMP/PCP: the router's epoch when granted
	epochAt time.Time // and when we saw it
	nonce   pcpNonce  // PCP: renew and delete with the same nonce
	upnp    *upnpTarget
}

func (m *mapping) public() Mapping {
	return Mapping{
		External: m.external,
		Protocol: m.proto,
		Internal: netip.AddrPortFrom(m.self, m.internal),
		Gateway:  m.gw,
		Lifetime: m.lifetime,
		RenewAt:  m.renewAt,
	}
}

func (m *mapping) journal() journal {
	j := journal{
		Protocol: m.proto,
		Gateway:  m.gw.String(),
		Self:     m.self.String(),
		Internal: m.internal,
		External: m.external.Port(),
	}
	switch m.proto {
	case PCP:
		j.Nonce = hex.EncodeToString(m.nonce[:])
	case UPnP:
		j.URN, j.Control = m.upnp.URN, m.upnp.Control.String()
	}
	return j
}

// rebooted reports whether epoch, seen now, shows that the router lost its
// mappings since m was made: RFC 6886 section 3.6 lets the router's clock
// run 1/8 slow and allows 2 s of slack; anything further behind means the
// mapping table was started again.
func (m *mapping) rebooted(epoch uint32, now time.Time) bool {
	elapsed := now.Sub(m.epochAt)
	if elapsed < 0 {
		elapsed = 0
	}
	expected := int64(m.epoch) + int64(elapsed/time.Second)*7/8
	return int64(epoch)+2 < expected
}

// release deletes m on the router.
func (s *socket) release(ctx context.Context, m *mapping) error {
	switch m.proto {
	case NATPMP:
		_, err := s.pmpMap(ctx, m.gw, m.internal, 0, 0)
		return err
	case PCP:
		_, err := s.pcpMap(ctx, m.gw, m.self, m.nonce, m.internal, 0, netip.Addr{}, 0)
		return err
	case UPnP:
		return m.upnp.svc.DeletePortMappingCtx(ctx, "", m.external.Port(), "UDP")
	}
	return fmt.Errorf("unknown protocol %q", m.proto)
}

// mapper makes and renews mappings on one gateway; it is used only from
// the Client's goroutine.
type mapper struct {
	s        *socket
	hc       *http.Client
	gw, self netip.Addr
	o        Options
}

func (mp *mapper) lifetimeSec() uint32 {
	d := mp.o.Lifetime
	if d <= 0 {
		d = DefaultLifetime
	}
	return uint32(max(d/time.Second, 1))
}

// renewAfter is half the granted lifetime (a permanent UPnP lease is
// still re-added hourly, which also notices a router that forgot it).
func renewAfter(granted time.Duration) time.Duration {
	if granted <= 0 {
		return time.Hour
	}
	return max(granted/2, time.Second)
}

// mapPMP asks over NAT-PMP, suggesting the previous external port (or our
// own), and learns the external address with a second request.
func (mp *mapper) mapPMP(ctx context.Context, internal uint16, prev *mapping) (*mapping, error) {
	suggest := internal
	if prev != nil && prev.proto == NATPMP {
		suggest = prev.external.Port()
	}
	r, err := mp.s.pmpMap(ctx, mp.gw, internal, suggest, mp.lifetimeSec())
	if err != nil {
		return nil, err
	}
	if r.Lifetime == 0 || r.Mapped == 0 {
		return nil, errors.New("router granted an empty mapping")
	}
	ext, err := mp.s.pmpExternal(ctx, mp.gw)
	if err != nil {
		// The router holds a mapping we cannot use: give it back.
		mp.s.pmpMap(ctx, mp.gw, internal, 0, 0)
		return nil, err
	}
	now := time.Now()
	granted := time.Duration(r.Lifetime) * time.Second
	return &mapping{
		proto: NATPMP, gw: mp.gw, self: mp.self, internal: internal,
		external: netip.AddrPortFrom(ext.External, r.Mapped),
		lifetime: granted, renewAt: now.Add(renewAfter(granted)),
		epoch: r.Epoch, epochAt: now,
	}, nil
}

// mapPCP asks over PCP with a new nonce, or renews prev with its nonce.
func (mp *mapper) mapPCP(ctx context.Context, internal uint16, prev *mapping) (*mapping, error) {
	nonce := newNonce()
	suggest, suggestIP := internal, netip.Addr{}
	if prev != nil && prev.proto == PCP {
		nonce, suggest, suggestIP = prev.nonce, prev.external.Port(), prev.external.Addr()
	}
	r, err := mp.s.pcpMap(ctx, mp.gw, mp.self, nonce, internal, suggest, suggestIP, mp.lifetimeSec())
	if err != nil {
		return nil, err
	}
	if r.Lifetime == 0 || r.External.Port() == 0 {
		return nil, errors.New("router granted an empty mapping")
	}
	now := time.Now()
	granted := time.Duration(r.Lifetime) * time.Second
	return &mapping{
		proto: PCP, gw: mp.gw, self: mp.self, internal: internal,
		external: r.External, lifetime: granted, renewAt: now.Add(renewAfter(granted)),
		epoch: r.Epoch, epochAt: now, nonce: nonce,
	}, nil
}

// mapUPnP discovers the WAN services behind the SSDP answers (or reuses
// prev's) and maps on the first whose external address is public: asking
// before mapping leaves nothing behind on a router that lies.
func (mp *mapper) mapUPnP(ctx context.Context, internal uint16, prev *mapping, found []ssdpResponse) (*mapping, error) {
	var targets []*upnpTarget
	if prev != nil && prev.proto == UPnP {
		targets = append(targets, prev.upnp)
	}
	var errs []error
	for _, r := range found {
		ts, err := upnpDiscover(ctx, mp.hc, mp.gw, r.Location)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		targets = append(targets, ts...)
	}
	want := internal
	if prev != nil && prev.proto == UPnP {
		want = prev.external.Port()
	}
	desc := mp.o.Description
	if desc == "" {
		desc = "skein"
	}
	for _, t := range targets {
		if t.svc == nil {
			svc, err := newUPnPService(t.URN, t.Control, mp.hc)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			t.svc = svc
		}
		ip, err := upnpExternalIP(ctx, t)
		if err == nil {
			err = checkPublic(ip)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.name(), err))
			continue
		}
		port, granted, err := upnpMap(ctx, t, netip.AddrPortFrom(mp.self, internal), want,
			desc, time.Duration(mp.lifetimeSec())*time.Second)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return &mapping{
			proto: UPnP, gw: mp.gw, self: mp.self, internal: internal,
			external: netip.AddrPortFrom(ip, port), lifetime: granted,
			renewAt: time.Now().Add(renewAfter(granted)), upnp: t,
		}, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no gateway device")
	}
	return nil, errors.Join(errs...)
}
