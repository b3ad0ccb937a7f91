// Package fileserve is the file server behind `skein serve PATH`. It runs as the user whose
// files it serves — in the `skein serve` command itself for a foreground share, or in a child
// of the session helper that has become the path's owner for a background one — and never in
// skeind: skeind hands it one connection per request (a socket pair end over a unixmsg
// stream) and proxies the answer. os.OpenRoot confines every open to the shared folder, so
// ".." and symlinks cannot lead out of it; what the user cannot read is not served.
package fileserve

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/internal/chanlisten"
	"github.com/skeinvpn/skein/internal/unixmsg"
)

// ConnFrame is the frame that carries one connection to answer.
const ConnFrame = "conn"

// Handler serves the file or folder at p: a folder's tree (with listings), or a single file
// at "/" only.
func Handler(p string) (http.Handler, func(), error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, nil, err
	}
	if fi.IsDir() {
		root, err := os.OpenRoot(p)
		if err != nil {
			return nil, nil, err
		}
		return http.FileServerFS(root.FS()), func() { root.Close() }, nil
	}
	root, err := os.OpenRoot(filepath.Dir(p))
	if err != nil {
		return nil, nil, err
	}
	name := filepath.Base(p)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "" {
			http.NotFound(w, r)
			return
		}
		f, err := root.Open(name)
		if err != nil {
			http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, name, st.ModTime(), f)
	})
	return h, func() { root.Close() }, nil
}

// Serve answers HTTP with h on every connection that arrives over c, until c closes.
func Serve(c *unixmsg.Conn, h http.Handler) error {
	ln := chanlisten.New(&net.UnixAddr{Name: "fileserve", Net: "unix"})
	go func() {
		defer ln.Close()
		for {
			hdr, _, files, err := c.Recv()
			if err != nil {
				return
			}
			if hdr.Type != ConnFrame || len(files) != 1 {
				for _, f := range files {
					f.Close()
				}
				continue
			}
			nc, err := net.FileConn(files[0])
			files[0].Close()
			if err != nil {
				continue
			}
			if !ln.Put(nc) {
				return
			}
		}
	}()
	err := (&http.Server{Handler: h}).Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Dial gives the file server at the other end of c one new connection.
func Dial(c *unixmsg.Conn) (net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "fileserve"), os.NewFile(uintptr(fds[1]), "fileserve-peer")
	defer theirs.Close()
	nc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, err
	}
	if err := c.Send(unixmsg.Header{Type: ConnFrame, FDs: 1}, theirs); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}
