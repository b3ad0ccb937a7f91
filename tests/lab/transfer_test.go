package lab_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// patternReader yields n bytes of a fixed pseudo-random 1 MiB block repeated: cheap to make,
// so the test measures the tunnel rather than its own generator.
type patternReader struct {
	left int64
	off  int
}

var pattern = func() []byte {
	b := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{7}).Read(b)
	return b
}()

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := copy(p, pattern[r.off:])
	r.off = (r.off + n) % len(pattern)
	r.left -= int64(n)
	return n, nil
}

// transfer sends size bytes over TCP from `from` to toIP:port (a listener in `to`'s namespace)
// and checks that the SHA-256 of what arrived matches what was sent. It returns the duration.
func transfer(t testing.TB, from, to *lab.Host, toIP netip.Addr, size int64, timeout time.Duration) time.Duration {
	t.Helper()
	ln, err := to.Listen("tcp", netip.AddrPortFrom(toIP, 0).String())
	if err != nil {
		t.Fatalf("listen on %s: %v", toIP, err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	c, err := from.Dial(ctx, "tcp", netip.AddrPortFrom(toIP, uint16(port)).String())
	if err != nil {
		t.Fatalf("dial %s:%d: %v", toIP, port, err)
	}
	c.SetDeadline(time.Now().Add(timeout))
	h := sha256.New()
	src := &patternReader{left: size}
	if _, err := io.Copy(io.MultiWriter(c, h), src); err != nil {
		c.Close()
		t.Fatalf("sending: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		c.Close()
		t.Fatalf("transfer of %d bytes did not finish in %v", size, timeout)
	}
	c.Close()
	d := time.Since(start)
	if r.err != nil && !errors.Is(r.err, io.EOF) {
		t.Fatalf("receiving: %v", r.err)
	}
	var want [32]byte
	copy(want[:], h.Sum(nil))
	if r.n != size || r.sum != want {
		t.Fatalf("transfer: received %d of %d bytes, checksum match %v", r.n, size, r.sum == want)
	}
	t.Logf("%d MB %s -> %s in %v (%.0f Mbit/s)", size>>20, from.Name(), to.Name(), d.Round(time.Millisecond), float64(size*8)/d.Seconds()/1e6)
	return d
}

// pingICMP runs the system ping in a namespace: the kernel's own packets across the tunnel.
// The first echo may be lost while WireGuard's first handshake is in flight (an official peer
// configures a new peer lazily and drops the first initiation; WireGuard retries after 5 s),
// so it waits for one reply, then wants three in a row.
func pingICMP(t testing.TB, from *lab.Host, to netip.Addr) {
	t.Helper()
	lab.Eventually(t, 15*time.Second, func() error {
		out, err := from.Run("ping", "-c", "1", "-W", "1", to.String())
		if err != nil {
			return fmt.Errorf("ping %s from %s: %v\n%s", to, from.Name(), err, out)
		}
		return nil
	})
	out, err := from.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", to.String())
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", to, from.Name(), err, out)
	}
}
