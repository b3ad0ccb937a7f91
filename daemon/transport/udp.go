package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/daemon/sockmark"
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
	scmsg  [][]byte // per message: room for a UDP_SEGMENT control message

	// Offloads: GSO sends runs of equal-size packets as one datagram per syscall slot and
	// lets the kernel (or NIC) split them; GRO hands us coalesced runs to split ourselves.
	gso   atomic.Bool
	gro   bool
	rcmsg [][]byte // per message: room for a UDP_GRO control message
}

// Limits of UDP segmentation offload: the kernel takes at most 64 segments per send, and the
// whole datagram must fit a UDP payload.
const (
	maxGSOSegments = 64
	maxGSOPayload  = 65507
	groCmsgSpace   = 24 // CmsgSpace(4) on 64-bit
)

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
				serr = sockmark.Set(fd, mark)
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
	rc.Control(func(fd uintptr) {
		// A kernel that can read UDP_SEGMENT back can also send with it.
		if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			s.gso.Store(true)
		}
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
			s.gro = true
		}
	})
	s.rhdrs = make([]unix.Mmsghdr, batchSize)
	s.riov = make([]unix.Iovec, batchSize)
	s.rnames = make([]unix.RawSockaddrInet6, batchSize)
	s.shdrs = make([]unix.Mmsghdr, batchSize)
	s.siov = make([]unix.Iovec, batchSize)
	s.snames = make([]unix.RawSockaddrInet6, 1)
	s.scmsg = make([][]byte, batchSize)
	s.rcmsg = make([][]byte, batchSize)
	for i := range s.scmsg {
		s.scmsg[i] = make([]byte, unix.CmsgSpace(2))
		s.rcmsg[i] = make([]byte, groCmsgSpace)
	}
	return s, nil
}

func (s *udpSocket) Close() error { return s.pc.Close() }

// readBatch fills bufs with up to len(bufs) datagrams; sizes and srcs get their lengths and
// sources. It blocks until at least one datagram is there.
func (s *udpSocket) readBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	if s.gro && len(bufs) >= maxGSOSegments {
		return s.readBatchGRO(bufs, sizes, srcs)
	}
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
	got, err := s.recvmmsg(s.rhdrs[:n])
	if err != nil {
		return 0, err
	}
	for i := 0; i < got; i++ {
		sizes[i] = int(s.rhdrs[i].Len)
		srcs[i] = sockaddrToAddrPort(&s.rnames[i])
	}
	return got, nil
}

// recvmmsg reads up to n messages into s.rhdrs (already set up) and returns how many came.
func (s *udpSocket) recvmmsg(hdrs []unix.Mmsghdr) (int, error) {
	var got int
	var operr error
	err := s.rc.Read(func(fd uintptr) bool {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
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
	return got, nil
}

// readBatchGRO receives coalesced datagrams into the last slots of bufs and splits each into
// its segments, front to back. With 64 segments at most per datagram, one datagram per 64
// slots never overwrites a datagram not yet split.
func (s *udpSocket) readBatchGRO(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	k := len(bufs) / maxGSOSegments
	readAt := len(bufs) - k
	for j := 0; j < k; j++ {
		b := bufs[readAt+j]
		s.riov[j].Base = &b[0]
		s.riov[j].SetLen(len(b))
		h := &s.rhdrs[j].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.rnames[j]))
		h.Namelen = uint32(unsafe.Sizeof(s.rnames[j]))
		h.Iov = &s.riov[j]
		h.SetIovlen(1)
		h.Control = &s.rcmsg[j][0]
		h.SetControllen(len(s.rcmsg[j]))
		s.rhdrs[j].Len = 0
	}
	got, err := s.recvmmsg(s.rhdrs[:k])
	if err != nil {
		return 0, err
	}
	out := 0
	for j := 0; j < got; j++ {
		slot := readAt + j
		size := int(s.rhdrs[j].Len)
		src := sockaddrToAddrPort(&s.rnames[j])
		seg := groSize(s.rcmsg[j][:s.rhdrs[j].Hdr.Controllen])
		if seg <= 0 || size <= seg {
			if out != slot {
				copy(bufs[out], bufs[slot][:size])
			}
			sizes[out], srcs[out] = size, src
			out++
			continue
		}
		for off := 0; off < size && out <= slot; off += seg {
			end := min(off+seg, size)
			n := copy(bufs[out], bufs[slot][off:end])
			sizes[out], srcs[out] = n, src
			out++
		}
	}
	return out, nil
}

// groSize returns the segment size of a UDP_GRO control message (0 when there is none).
func groSize(control []byte) int {
	for len(control) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&control[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(control) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			data := control[unix.CmsgLen(0):l]
			return int(*(*uint16)(unsafe.Pointer(&data[0])))
		}
		control = control[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(control)):]
	}
	return 0
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

// writeBatch sends every buffer to dst with as few syscalls as sendmmsg allows, coalescing
// runs of equal-size packets into GSO datagrams when the kernel can. The caller serialises
// calls on one socket.
func (s *udpSocket) writeBatch(bufs [][]byte, dst netip.AddrPort) error {
	if dst.Addr().Is4() == s.is6 && !dst.Addr().Is4In6() {
		return errWrongFamily
	}
	namelen := s.fillSockaddr(&s.snames[0], dst)
	if s.gso.Load() {
		err := s.writeGSO(bufs, namelen)
		if !errors.Is(err, unix.EIO) {
			return err
		}
		// No checksum offload on the route's device: the kernel refuses GSO. Never again.
		s.gso.Store(false)
	}
	for len(bufs) > 0 {
		n := min(len(bufs), len(s.shdrs))
		for i := 0; i < n; i++ {
			s.setIov(i, bufs[i])
			s.setMsg(i, i, 1, namelen, 0)
		}
		if err := s.sendmmsg(s.shdrs[:n]); err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	return nil
}

func (s *udpSocket) setIov(i int, b []byte) {
	if len(b) == 0 {
		s.siov[i].Base = nil
	} else {
		s.siov[i].Base = &b[0]
	}
	s.siov[i].SetLen(len(b))
}

// setMsg points message m at iovecs [iov, iov+n) and, when segSize > 0, a UDP_SEGMENT cmsg.
func (s *udpSocket) setMsg(m, iov, n int, namelen uint32, segSize int) {
	h := &s.shdrs[m].Hdr
	h.Name = (*byte)(unsafe.Pointer(&s.snames[0]))
	h.Namelen = namelen
	h.Iov = &s.siov[iov]
	h.SetIovlen(n)
	if segSize == 0 {
		h.Control = nil
		h.Controllen = 0
		return
	}
	c := s.scmsg[m]
	ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	ch.Level = unix.SOL_UDP
	ch.Type = unix.UDP_SEGMENT
	ch.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(segSize)
	h.Control = &c[0]
	h.SetControllen(len(c))
}

// writeGSO groups bufs into runs of equal size (a shorter last one ends a run), one GSO
// datagram per run, scatter-gather straight from wireguard-go's buffers.
func (s *udpSocket) writeGSO(bufs [][]byte, namelen uint32) error {
	msgs, iov := 0, 0
	for i := 0; i < len(bufs); {
		seg := len(bufs[i])
		start, total, n := iov, 0, 0
		for i < len(bufs) && n < maxGSOSegments {
			l := len(bufs[i])
			if l > seg || total+l > maxGSOPayload {
				break
			}
			s.setIov(iov, bufs[i])
			iov++
			total += l
			n++
			i++
			if l < seg {
				break
			}
		}
		gsoSize := 0
		if n > 1 {
			gsoSize = seg
		}
		s.setMsg(msgs, start, n, namelen, gsoSize)
		msgs++
		if msgs == len(s.shdrs) || iov == len(s.siov) {
			if err := s.sendmmsg(s.shdrs[:msgs]); err != nil {
				return err
			}
			msgs, iov = 0, 0
		}
	}
	if msgs > 0 {
		return s.sendmmsg(s.shdrs[:msgs])
	}
	return nil
}

// sendmmsg sends every message, looping over partial sends.
func (s *udpSocket) sendmmsg(hdrs []unix.Mmsghdr) error {
	for len(hdrs) > 0 {
		var sent int
		var operr error
		err := s.rc.Write(func(fd uintptr) bool {
			r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
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
			if operr == unix.EIO {
				return unix.EIO
			}
			return &net.OpError{Op: "sendmmsg", Net: "udp", Err: operr}
		}
		if sent <= 0 {
			return &net.OpError{Op: "sendmmsg", Net: "udp", Err: errors.New("sent nothing")}
		}
		hdrs = hdrs[sent:]
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
