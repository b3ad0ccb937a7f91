// Package ingress brings TCP connections that peers open to a port on this node's tailnet
// addresses (22 for SSH, the ports `skein serve` shares) to listeners of skeind's own,
// without taking the port from the host: a program on the host may listen on 0.0.0.0:22 (sshd)
// and keeps getting every connection that does not come through the tunnel.
//
// How: an nftables table of its own ("inet skein-ingress", beside daemon/forwarding's "inet
// skein") redirects TCP arriving on the TUN device for ADDR:PORT to a listener on a random
// port bound to the TUN device (SO_BINDTODEVICE), so nothing from another interface or from
// this machine itself reaches it. Each accepted connection is checked again in userspace: its
// original destination (SO_ORIGINAL_DST) must be one of our addresses at the service's port,
// and its source a peer's own address. The packet filter (the tailnet's ACLs) has already seen
// the packets, with the original port.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Conn is one accepted connection that passed the checks.
type Conn struct {
	*net.TCPConn
	// Src is the peer's tailnet address and port; Dst our address and the service's port
	// (the original destination, before the redirect).
	Src, Dst netip.AddrPort
}

// Options configure a Service.
type Options struct {
	// Tun is the TUN device connections must arrive on.
	Tun string
	// Port is the port peers connect to (22 for SSH).
	Port uint16
	// Self reports whether an address is one of this node's tailnet addresses now.
	Self func(netip.Addr) bool
	// Peer reports whether an address is a peer's own tailnet address now.
	Peer func(netip.Addr) bool
	// Handle takes over each accepted connection (in its own goroutine).
	Handle func(Conn)
	Logf   func(string, ...any)
}

// Service is the listeners of one port, one per address family.
type Service struct {
	opts Options
	lns  []*net.TCPListener
	// To4 and To6 are the listeners' ports, for the redirect rules (0: that family failed).
	To4, To6 uint16
	wg       sync.WaitGroup
}

// Listen opens the listeners. An address family the host lacks (no IPv6) is skipped; it is an
// error only when neither works.
func Listen(o Options) (*Service, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	s := &Service{opts: o}
	var errs []error
	for _, fam := range []struct{ net, addr string }{{"tcp4", "0.0.0.0:0"}, {"tcp6", "[::]:0"}} {
		lc := net.ListenConfig{Control: bindToDevice(o.Tun)}
		ln, err := lc.Listen(context.Background(), fam.net, fam.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s listener on %s: %w", fam.net, o.Tun, err))
			continue
		}
		tl := ln.(*net.TCPListener)
		port := uint16(tl.Addr().(*net.TCPAddr).Port)
		if fam.net == "tcp4" {
			s.To4 = port
		} else {
			s.To6 = port
		}
		s.lns = append(s.lns, tl)
	}
	if len(s.lns) == 0 {
		return nil, errors.Join(errs...)
	}
	for _, ln := range s.lns {
		s.wg.Go(func() { s.serve(ln) })
	}
	return s, nil
}

// Rules are the redirects this service needs for our addresses.
func (s *Service) Rules(addrs []netip.Addr) []Rule {
	var out []Rule
	for _, a := range addrs {
		to := s.To4
		if a.Is6() {
			to = s.To6
		}
		if to != 0 {
			out = append(out, Rule{Addr: a, Port: s.opts.Port, To: to})
		}
	}
	return out
}

// Close stops accepting; connections already handed over are the handler's.
func (s *Service) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.wg.Wait()
}

func (s *Service) serve(ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.opts.Logf("ingress :%d: %v", s.opts.Port, err)
			}
			return
		}
		src, dst, err := s.check(c)
		if err != nil {
			s.opts.Logf("ingress :%d: refused %v: %v", s.opts.Port, c.RemoteAddr(), err)
			c.Close()
			continue
		}
		go s.opts.Handle(Conn{TCPConn: c, Src: src, Dst: dst})
	}
}

// check applies the rules a connection must meet besides arriving on the TUN device.
func (s *Service) check(c *net.TCPConn) (src, dst netip.AddrPort, err error) {
	src = c.RemoteAddr().(*net.TCPAddr).AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst, err = OriginalDst(c)
	if err != nil {
		return src, dst, err
	}
	switch {
	case dst.Port() != s.opts.Port || !s.opts.Self(dst.Addr()):
		return src, dst, fmt.Errorf("original destination %v is not ours at port %d", dst, s.opts.Port)
	case s.opts.Self(src.Addr()):
		return src, dst, errors.New("from this machine itself")
	case !s.opts.Peer(src.Addr()):
		return src, dst, errors.New("not a peer's own address")
	}
	return src, dst, nil
}

// OriginalDst is where a redirected connection was going before the redirect.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v6 := c.LocalAddr().(*net.TCPAddr).IP.To4() == nil
	var ap netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) { ap, serr = originalDst(int(fd), v6) })
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	return ap, nil
}

// bindToDevice makes a socket see only what arrives on dev.
func bindToDevice(dev string) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) }); err != nil {
			return err
		}
		return serr
	}
}

// SameRules reports whether two rule sets are equal as sets.
func SameRules(a, b []Rule) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, Rule.compare)
	slices.SortFunc(b, Rule.compare)
	return slices.Equal(a, b)
}
