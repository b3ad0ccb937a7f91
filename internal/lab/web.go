package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Web is a server on the lab's "internet": HTTP on port 80 answers GET / with the caller's
// address and GET /bytes?n=N with N bytes of a fixed pattern (GET /sum?n=N gives their
// SHA-256); UDP port 7 answers every datagram with the caller's address. The lab sees whose
// address leaves an exit node or a NAT this way.
type Web struct {
	host *Host
	ln   net.Listener
	pc   net.PacketConn
	srv  *http.Server
}

// StartWeb serves on the host's address until Close (or the lab's cleanup).
func (h *Host) StartWeb() (*Web, error) {
	ln, err := h.Listen("tcp", netip.AddrPortFrom(h.addr, 80).String())
	if err != nil {
		return nil, err
	}
	pc, err := h.ListenPacket("udp", netip.AddrPortFrom(h.addr, 7).String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	w := &Web{host: h, ln: ln, pc: pc}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(rw http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(rw, host)
	})
	mux.HandleFunc("GET /bytes", func(rw http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(rw, "bad n", http.StatusBadRequest)
			return
		}
		rw.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(rw, &pattern{left: n})
	})
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go w.srv.Serve(ln)
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			pc.WriteTo([]byte(host), from)
		}
	}()
	h.lab.addCleanup(w.Close)
	return w, nil
}

// Close stops the servers.
func (w *Web) Close() {
	w.srv.Close()
	w.pc.Close()
}

// Addr is the server's address.
func (w *Web) Addr() netip.Addr { return w.host.addr }

// PatternSum is the SHA-256 of what GET /bytes?n=N sends.
func PatternSum(n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, &pattern{left: n})
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// pattern yields a fixed, non-repeating-looking byte stream (not all zeros, which
// compression or a stuck buffer could fake).
type pattern struct {
	left int64
	off  int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.left)
	for i := range n {
		x := uint64(p.off + i)
		b[i] = byte(x*2654435761>>13) ^ byte(x>>8)
	}
	p.off += n
	p.left -= n
	return int(n), nil
}

// CallerAddr asks the web server, over HTTP from the given host, whose address it sees.
func (w *Web) CallerAddr(from *Host, timeout time.Duration) (netip.Addr, error) {
	c := from.HTTPClient()
	c.Timeout = timeout
	resp, err := c.Get("http://" + w.host.addr.String() + "/")
	if err != nil {
		return netip.Addr{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(strings.TrimSpace(string(b)))
}

// UDPCallerAddr is CallerAddr over UDP (one datagram, one answer).
func (w *Web) UDPCallerAddr(from *Host, timeout time.Duration) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := from.Dial(ctx, "udp", netip.AddrPortFrom(w.host.addr, 7).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("who am i")); err != nil {
		return netip.Addr{}, err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(string(buf[:n]))
}

// Download fetches n bytes from the server through from's namespace and checks their SHA-256.
func (w *Web) Download(from *Host, n int64, timeout time.Duration) (time.Duration, error) {
	c := from.HTTPClient()
	c.Timeout = timeout
	start := time.Now()
	resp, err := c.Get(fmt.Sprintf("http://%s/bytes?n=%d", w.host.addr, n))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	if err != nil {
		return 0, fmt.Errorf("after %d bytes: %w", got, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	if got != n || sum != PatternSum(n) {
		return 0, errors.New("download: size or checksum mismatch")
	}
	return time.Since(start), nil
}
