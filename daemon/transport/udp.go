package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketBufferSize is what upstream wireguard-go asks for; large buffers matter more than
// anything else for bulk throughput (performance.md B.2.6).
const socketBufferSize = 7 << 20

// udpSocket is one UDP socket with batched, allocation-free receive and send (recvmmsg and
// sendmmsg on raw sockaddrs, driven through Go's poller).
type udpSocket struct {
	pc   *net.UDPConn
	rc   syscall.RawConn
	is6  bool
	port uint16

	// Receive state, used by the single receive goroutine only.
	rhdrs  []unix.Mmsghdr
	riov   []unix.Iovec
	rnames []unix.RawSockaddrInet6 // big enough for v4 and v6

	// Send state, guarded by the caller (Conn serialises sends per socket).
	shdrs  []unix.Mmsghdr
	siov   []unix.Iovec
	snames []unix.RawSockaddrInet6
}

func listenUDP(network string, port uint16, mark uint32) (*udpSocket, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// Best effort: FORCE needs CAP_NET_ADMIN, the plain option caps at rmem_max.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBufferSize) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferSize)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
			}
			if mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
			if network == "udp6" {
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	addr := fmt.Sprintf(":%d", port)
	if network == "udp6" {
		addr = fmt.Sprintf("[::]:%d", port)
	}
	c, err := lc.ListenPacket(contextBackground(), network, addr)
	if err != nil {
		return nil, err
	}
	pc := c.(*net.UDPConn)
	rc, err := pc.SyscallConn()
	if err != nil {
		pc.Close()
		return nil, err
	}
	s := &udpSocket{pc: pc, rc: rc, is6: network == "udp6", port: uint16(pc.LocalAddr().(*net.UDPAddr).Port)}
	s.rhdrs = make([]unix.Mmsghdr, batchSize)
	s.riov = make([]unix.Iovec, batchSize)
	s.rnames = make([]unix.RawSockaddrInet6, batchSize)
	s.shdrs = make([]unix.Mmsghdr, batchSize)
	s.siov = make([]unix.Iovec, batchSize)
	s.snames = make([]unix.RawSockaddrInet6, 1)
	return s, nil
}

func (s *udpSocket) Close() error { return s.pc.Close() }

// readBatch fills bufs with up to len(bufs) datagrams; sizes and srcs get their lengths and
// sources. It blocks until at least one datagram is there.
func (s *udpSocket) readBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	n := min(len(bufs), len(s.rhdrs))
	for i := 0; i < n; i++ {
		b := bufs[i]
		s.riov[i].Base = &b[0]
		s.riov[i].SetLen(len(b))
		h := &s.rhdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.rnames[i]))
		h.Namelen = uint32(unsafe.Sizeof(s.rnames[i]))
		h.Iov = &s.riov[i]
		h.SetIovlen(1)
		h.Control = nil
		h.Controllen = 0
		s.rhdrs[i].Len = 0
	}
	var got int
	var operr error
	err := s.rc.Read(func(fd uintptr) bool {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.rhdrs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EWOULDBLOCK {
			return false
		}
		if errno != 0 {
			operr = errno
		}
		got = int(r)
		return true
	})
	if err != nil {
		return 0, err
	}
	if operr != nil {
		return 0, &net.OpError{Op: "recvmmsg", Net: "udp", Err: operr}
	}
	for i := 0; i < got; i++ {
		sizes[i] = int(s.rhdrs[i].Len)
		srcs[i] = sockaddrToAddrPort(&s.rnames[i])
	}
	return got, nil
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := uint16(sa4.Port>>8) | uint16(sa4.Port<<8)
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := uint16(sa.Port>>8) | uint16(sa.Port<<8)
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

func (s *udpSocket) fillSockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) uint32 {
	port := dst.Port()
	if !s.is6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.Addr().As4()}
		sa4.Port = port<<8 | port>>8
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.Addr().As16()}
	sa.Port = port<<8 | port>>8
	return unix.SizeofSockaddrInet6
}

var errWrongFamily = errors.New("address family does not match socket")

// writeBatch sends every buffer to dst with as few syscalls as sendmmsg allows. The caller
// serialises calls on one socket.
func (s *udpSocket) writeBatch(bufs [][]byte, dst netip.AddrPort) error {
	if dst.Addr().Is4() == s.is6 && !dst.Addr().Is4In6() {
		return errWrongFamily
	}
	namelen := s.fillSockaddr(&s.snames[0], dst)
	for len(bufs) > 0 {
		n := min(len(bufs), len(s.shdrs))
		for i := 0; i < n; i++ {
			b := bufs[i]
			if len(b) == 0 {
				s.siov[i].Base = nil
			} else {
				s.siov[i].Base = &b[0]
			}
			s.siov[i].SetLen(len(b))
			h := &s.shdrs[i].Hdr
			h.Name = (*byte)(unsafe.Pointer(&s.snames[0]))
			h.Namelen = namelen
			h.Iov = &s.siov[i]
			h.SetIovlen(1)
			h.Control = nil
			h.Controllen = 0
		}
		var sent int
		var operr error
		err := s.rc.Write(func(fd uintptr) bool {
			r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.shdrs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
			if errno == unix.EAGAIN || errno == unix.EWOULDBLOCK {
				return false
			}
			if errno != 0 {
				operr = errno
			}
			sent = int(r)
			return true
		})
		if err != nil {
			return err
		}
		if operr != nil {
			return &net.OpError{Op: "sendmmsg", Net: "udp", Err: operr}
		}
		if sent <= 0 {
			return &net.OpError{Op: "sendmmsg", Net: "udp", Err: errors.New("sent nothing")}
		}
		bufs = bufs[sent:]
	}
	return nil
}

// writeTo sends one datagram (disco, STUN): rare, so the plain path is fine.
func (s *udpSocket) writeTo(b []byte, dst netip.AddrPort) error {
	if dst.Addr().Is4() == s.is6 {
		return errWrongFamily
	}
	_, err := s.pc.WriteToUDPAddrPort(b, dst)
	return err
}
