package sshchild

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/skeinvpn/skein/internal/unixmsg"
)

// Requests the helper sends a ModeUser child, and its replies (unixmsg frames).
const (
	ReqDial        = "dial"         // Addr: host:port to connect to (local forwarding)
	ReqListenTCP   = "listen-tcp"   // Addr: loopback host:port to listen on (remote forwarding)
	ReqListenAgent = "listen-agent" // a Unix socket for the forwarded agent; the reply's Path names it
	replyType      = "reply"
)

// Request is one request to the user's child.
type Request struct {
	unixmsg.Header
	ID   uint64 `json:"id"`
	Addr string `json:"addr,omitempty"`
}

// Reply answers the request with the same ID; a socket comes attached unless Error is set.
type Reply struct {
	unixmsg.Header
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
	Path  string `json:"path,omitempty"`
}

// dialTimeout bounds one forwarded connection attempt.
const dialTimeout = 15 * time.Second

// serveUser answers the helper's requests until it hangs up, then removes the agent sockets
// it made. Requests run concurrently: a slow dial does not hold up the others.
func serveUser(f *os.File) int {
	c, err := unixmsg.FromFile(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "skeind ssh-child user: %v\n", err)
		return 1
	}
	defer c.Close()
	var mu sync.Mutex
	var dirs []string
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		h, body, files, err := c.Recv()
		for _, f := range files {
			f.Close() // the helper never sends us descriptors
		}
		if err != nil {
			return 0
		}
		var req Request
		if unixmsg.Decode(body, &req) != nil {
			return 1
		}
		wg.Go(func() {
			rep := Reply{Header: unixmsg.Header{Type: replyType}, ID: req.ID}
			var file *os.File
			var err error
			switch h.Type {
			case ReqDial:
				file, err = dial(req.Addr)
			case ReqListenTCP:
				file, err = listenTCP(req.Addr)
			case ReqListenAgent:
				var dir string
				file, dir, rep.Path, err = listenAgent()
				if err == nil {
					mu.Lock()
					dirs = append(dirs, dir)
					mu.Unlock()
				}
			default:
				err = fmt.Errorf("unknown request %q", h.Type)
			}
			if err != nil {
				rep.Error = err.Error()
				c.Send(rep)
				return
			}
			rep.FDs = 1
			c.Send(rep, file)
			file.Close()
		})
	}
}

// dial connects as the user, with no firewall mark (the user has no right to set one), so
// the connection takes the routes any of the user's own connections would.
func dial(addr string) (*os.File, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*net.TCPConn).File()
}

// listenTCP listens as the user: the kernel refuses a privileged port to anyone but root.
func listenTCP(addr string) (*os.File, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s is not a loopback address", host)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	return ln.(*net.TCPListener).File()
}

// listenAgent makes a private directory and a socket in it, both the user's, mode 0700 and
// 0600: where the session's SSH_AUTH_SOCK points.
func listenAgent() (file *os.File, dir, path string, err error) {
	base := os.TempDir()
	dir, err = os.MkdirTemp(base, "skein-ssh-")
	if err != nil {
		return nil, "", "", err
	}
	path = filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err == nil {
		ln.SetUnlinkOnClose(false)
		if err = os.Chmod(path, 0o600); err == nil {
			file, err = ln.File()
		}
		ln.Close()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", "", errors.Join(errors.New("agent socket"), err)
	}
	return file, dir, path, nil
}
