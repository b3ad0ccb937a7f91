package intercept

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/tun"
)

// newNetns creates a network namespace for the test and removes it at the
// end.
func newNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	name := fmt.Sprintf("skdns-%d-%06x", os.Getpid(), rand.Uint32()&0xffffff)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	return name
}

// joinNetns moves the calling goroutine's OS thread into the namespace
// until t ends. Sockets and TUN devices made by that goroutine live there.
// Every (sub)test goroutine that opens sockets must call it: t.Run starts a
// new goroutine.
func joinNetns(t *testing.T, name string) {
	t.Helper()
	runtime.LockOSThread()
	home, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	target, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Set(home); err != nil {
			t.Errorf("back to the original netns: %v", err) // thread stays locked and dies with the goroutine
		} else {
			runtime.UnlockOSThread()
		}
		home.Close()
		target.Close()
	})
}

func run(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stubDNS answers fixed records:
//
//	example.test. A 192.0.2.1 / AAAA 2001:db8::1
//	big.example.test. TXT: 60 records of 200 bytes (truncated over UDP)
//	slow.example.test. A 192.0.2.2 after 300 ms
//	large.example.test. TXT: 15 records of 200 bytes, over UDP too (> MTU)
//	anything else: NXDOMAIN
func stubDNS(ctx context.Context, q []byte, tcp bool) []byte {
	var req mdns.Msg
	if err := req.Unpack(q); err != nil || len(req.Question) != 1 {
		return nil
	}
	resp := new(mdns.Msg)
	resp.SetReply(&req)
	qq := req.Question[0]
	hdr := mdns.RR_Header{Name: qq.Name, Rrtype: qq.Qtype, Class: mdns.ClassINET, Ttl: 60}
	switch strings.ToLower(qq.Name) {
	case "example.test.":
		switch qq.Qtype {
		case mdns.TypeA:
			resp.Answer = append(resp.Answer, &mdns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 1)})
		case mdns.TypeAAAA:
			resp.Answer = append(resp.Answer, &mdns.AAAA{Hdr: hdr, AAAA: net.ParseIP("2001:db8::1")})
		}
	case "slow.example.test.":
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			return nil
		}
		resp.Answer = append(resp.Answer, &mdns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 2)})
	case "large.example.test.":
		for range 15 {
			resp.Answer = append(resp.Answer, &mdns.TXT{Hdr: hdr, Txt: []string{strings.Repeat("y", 200)}})
		}
	case "big.example.test.":
		if !tcp {
			resp.Truncated = true
			break
		}
		for i := range 60 {
			resp.Answer = append(resp.Answer, &mdns.TXT{Hdr: hdr, Txt: []string{fmt.Sprintf("%03d%s", i, strings.Repeat("x", 197))}})
		}
	default:
		resp.Rcode = mdns.RcodeNameError
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

func TestKernelTUN(t *testing.T) {
	ns := newNetns(t)
	joinNetns(t, ns)
	const ifname = "skdns0"
	dev, err := tun.CreateTUN(ifname, 1280)
	if err != nil {
		t.Fatalf("CreateTUN: %v", err)
	}
	run(t, ns, "ip", "link", "set", "lo", "up")
	run(t, ns, "ip", "link", "set", ifname, "up")
	run(t, ns, "ip", "addr", "add", "100.64.0.1/32", "dev", ifname)
	run(t, ns, "ip", "route", "add", "100.100.100.100/32", "dev", ifname)
	run(t, ns, "ip", "-6", "addr", "add", "fd7a:115c:a1e0::1/128", "dev", ifname, "nodad")
	run(t, ns, "ip", "-6", "route", "add", "fd7a:115c:a1e0::53/128", "dev", ifname)

	d := Wrap(dev, Options{Addrs: []netip.Addr{svc4, svc6}, Handler: stubDNS, Logf: t.Logf})
	// wireguard-go enables TUN offloads (virtio-net header, TSO) when the
	// kernel has them; its batch size is 128 then, 1 without.
	t.Logf("TUN batch size %d", d.BatchSize())
	var passed atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		// What wireguard-go does: read batches at offset 16 and route
		// them; here everything that comes out is simply counted.
		bufs := make([][]byte, d.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 16+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := d.Read(bufs, sizes, 16)
			for i := range n {
				pkt := bufs[i][16 : 16+sizes[i]]
				if d.isService(pkt) {
					readerDone <- errors.New("service packet passed through Read")
					return
				}
				passed.Add(1)
			}
			if err != nil {
				if errors.Is(err, tun.ErrTooManySegments) {
					continue
				}
				readerDone <- err
				return
			}
		}
	}()
	defer func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-readerDone:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("reader: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("reader did not stop")
		}
	}()

	servers := map[string]string{"v4": "100.100.100.100:53", "v6": "[fd7a:115c:a1e0::53]:53"}
	query := func(t *testing.T, network, server, name string, qtype uint16) *mdns.Msg {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		c := &mdns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 4096}
		r, _, err := c.Exchange(m, server)
		if err != nil {
			t.Fatalf("%s %s %s: %v", network, server, name, err)
		}
		if r.Id != m.Id {
			t.Fatalf("reply ID %d, want %d", r.Id, m.Id)
		}
		return r
	}

	for _, fam := range []string{"v4", "v6"} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(fam+"/"+network, func(t *testing.T) {
				joinNetns(t, ns)
				r := query(t, network, servers[fam], "example.test.", mdns.TypeA)
				if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "192.0.2.1" {
					t.Fatalf("answer %v", r.Answer)
				}
				r = query(t, network, servers[fam], "example.test.", mdns.TypeAAAA)
				if len(r.Answer) != 1 || r.Answer[0].(*mdns.AAAA).AAAA.String() != "2001:db8::1" {
					t.Fatalf("answer %v", r.Answer)
				}
				if r := query(t, network, servers[fam], "nope.test.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
					t.Fatalf("rcode %d", r.Rcode)
				}
			})
		}
		t.Run(fam+"/big", func(t *testing.T) {
			joinNetns(t, ns)
			if r := query(t, "udp", servers[fam], "big.example.test.", mdns.TypeTXT); !r.Truncated {
				t.Fatal("UDP answer not truncated")
			}
			r := query(t, "tcp", servers[fam], "big.example.test.", mdns.TypeTXT)
			if len(r.Answer) != 60 {
				t.Fatalf("%d TXT records", len(r.Answer))
			}
			for i, rr := range r.Answer {
				if txt := rr.(*mdns.TXT).Txt[0]; !strings.HasPrefix(txt, fmt.Sprintf("%03d", i)) || len(txt) != 200 {
					t.Fatalf("record %d: %q", i, txt)
				}
			}
		})
		t.Run(fam+"/udp-above-mtu", func(t *testing.T) {
			joinNetns(t, ns)
			// A UDP answer larger than the TUN MTU is written as one
			// datagram; the kernel delivers it.
			if r := query(t, "udp", servers[fam], "large.example.test.", mdns.TypeTXT); len(r.Answer) != 15 || r.Truncated {
				t.Fatalf("%d records, truncated %v", len(r.Answer), r.Truncated)
			}
		})
		t.Run(fam+"/pipelined", func(t *testing.T) {
			joinNetns(t, ns)
			conn, err := net.Dial("tcp", servers[fam])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			names := []string{"slow.example.test.", "example.test.", "big.example.test.", "nope.test.", "example.test."}
			var stream []byte
			want := map[uint16]string{}
			for i, n := range names {
				m := new(mdns.Msg)
				m.SetQuestion(n, mdns.TypeA)
				if n == "big.example.test." {
					m.Question[0].Qtype = mdns.TypeTXT
				}
				m.Id = uint16(100 + i)
				// Pad the queries so that together they exceed the
				// window: the kernel sends them in several (possibly
				// GSO) segments, and messages straddle segment borders.
				m.SetEdns0(1232, false)
				opt := m.IsEdns0()
				opt.Option = append(opt.Option, &mdns.EDNS0_PADDING{Padding: make([]byte, 1500+100*i)})
				want[m.Id] = n
				b, err := m.Pack()
				if err != nil {
					t.Fatal(err)
				}
				stream = binary.BigEndian.AppendUint16(stream, uint16(len(b)))
				stream = append(stream, b...)
			}
			// All queries in one write; the kernel may coalesce or split
			// them as it likes.
			if _, err := conn.Write(stream); err != nil {
				t.Fatal(err)
			}
			var order []string
			for range names {
				var l [2]byte
				if _, err := io.ReadFull(conn, l[:]); err != nil {
					t.Fatal(err)
				}
				b := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(conn, b); err != nil {
					t.Fatal(err)
				}
				var r mdns.Msg
				if err := r.Unpack(b); err != nil {
					t.Fatal(err)
				}
				n, ok := want[r.Id]
				if !ok {
					t.Fatalf("unexpected or repeated ID %d", r.Id)
				}
				delete(want, r.Id)
				order = append(order, n)
				if n == "big.example.test." && len(r.Answer) != 60 {
					t.Fatalf("big answer has %d records", len(r.Answer))
				}
			}
			t.Logf("answer order: %v", order)
			if order[len(order)-1] != "slow.example.test." {
				t.Errorf("the slow answer should come last: %v", order)
			}
		})
		t.Run(fam+"/refused", func(t *testing.T) {
			joinNetns(t, ns)
			host, _, _ := net.SplitHostPort(servers[fam])
			_, err := net.DialTimeout("tcp", net.JoinHostPort(host, "80"), 5*time.Second)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial port 80: %v, want connection refused", err)
			}
		})
	}

	t.Run("ping", func(t *testing.T) {
		out := run(t, ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1000", "100.100.100.100")
		if !strings.Contains(out, "3 received") {
			t.Fatalf("ping: %s", out)
		}
		out = run(t, ns, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fd7a:115c:a1e0::53")
		if !strings.Contains(out, "3 received") {
			t.Fatalf("ping -6: %s", out)
		}
	})

	t.Run("many-connections", func(t *testing.T) {
		joinNetns(t, ns)
		// Dial here (namespace thread), query from many goroutines.
		var conns []*mdns.Conn
		for i := range 64 {
			server := servers[[]string{"v4", "v6"}[i%2]]
			c, err := (&mdns.Client{Net: "tcp", Timeout: 5 * time.Second}).Dial(server)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(conns))
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for range 5 {
					m := new(mdns.Msg)
					m.SetQuestion("example.test.", mdns.TypeA)
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if err := c.WriteMsg(m); err != nil {
						errs <- err
						return
					}
					r, err := c.ReadMsg()
					if err != nil {
						errs <- err
						return
					}
					if r.Id != m.Id || len(r.Answer) != 1 {
						errs <- fmt.Errorf("bad answer %v", r)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	// Every client closed its connections: the table empties.
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats().TCPOpen != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	s := d.Stats()
	t.Logf("stats %+v; %d packets passed through", s, passed.Load())
	if s.TCPOpen != 0 {
		t.Errorf("%d TCP connections left open", s.TCPOpen)
	}
	if s.WriteErrors != 0 {
		t.Errorf("%d write errors", s.WriteErrors)
	}
	if s.Dropped != 0 {
		t.Errorf("%d packets dropped", s.Dropped)
	}
}
