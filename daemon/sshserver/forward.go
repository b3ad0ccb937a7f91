package sshserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"golang.org/x/crypto/ssh"
)

// directTCPIP is local forwarding (ssh -L): the user's process dials, as the user.
func (c *conn) directTCPIP(nch ssh.NewChannel) {
	var d struct {
		Host       string
		Port       uint32
		OriginAddr string
		OriginPort uint32
	}
	if ssh.Unmarshal(nch.ExtraData(), &d) != nil || d.Port > 65535 {
		nch.Reject(ssh.ConnectionFailed, "bad request")
		return
	}
	if !c.action.AllowLocalPortForwarding {
		nch.Reject(ssh.Prohibited, "local port forwarding is not allowed by the tailnet policy")
		return
	}
	u, err := c.userSockets()
	if err != nil {
		nch.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	addr := net.JoinHostPort(d.Host, strconv.Itoa(int(d.Port)))
	tc, err := u.Dial(addr)
	if err != nil {
		nch.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		tc.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	pipe(ch, tc)
}

// pipe copies both ways until both directions are done, passing half-closes on.
func pipe(ch ssh.Channel, nc net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(nc, ch)
		if tc, ok := nc.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		} else {
			nc.Close()
		}
	})
	wg.Go(func() {
		io.Copy(ch, nc)
		ch.CloseWrite()
	})
	wg.Wait()
	nc.Close()
	ch.Close()
}

// globalRequests answers connection-wide requests: remote forwarding as the policy allows,
// nothing else (keep-alives get the "no" OpenSSH expects).
func (c *conn) globalRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "tcpip-forward":
			port, err := c.remoteForward(req.Payload)
			if err != nil {
				c.s.opts.Logf("ssh: %v: remote forwarding refused: %v", c, err)
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, ssh.Marshal(struct{ Port uint32 }{port}))
		case "cancel-tcpip-forward":
			var f struct {
				Addr string
				Port uint32
			}
			if ssh.Unmarshal(req.Payload, &f) != nil {
				req.Reply(false, nil)
				continue
			}
			c.mu.Lock()
			ln := c.forwards[forwardKey(f.Addr, f.Port)]
			delete(c.forwards, forwardKey(f.Addr, f.Port))
			c.mu.Unlock()
			if ln != nil {
				ln.Close()
			}
			req.Reply(ln != nil, nil)
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

func forwardKey(addr string, port uint32) string {
	return net.JoinHostPort(addr, strconv.Itoa(int(port)))
}

// loopbackFor is where a remote forward listens: the loopback of the family asked for,
// whatever address the client named — a forward never opens a port to the network.
func loopbackFor(addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		return "::1"
	}
	return "127.0.0.1"
}

// remoteForward is ssh -R: a listener on loopback, opened by the user's process (the kernel
// keeps privileged ports from non-root users; we refuse them before asking). It returns the
// port listened on.
func (c *conn) remoteForward(payload []byte) (uint32, error) {
	var f struct {
		Addr string
		Port uint32
	}
	if err := ssh.Unmarshal(payload, &f); err != nil {
		return 0, err
	}
	if !c.action.AllowRemotePortForwarding {
		return 0, errors.New("not allowed by the tailnet policy")
	}
	if f.Port > 65535 {
		return 0, fmt.Errorf("port %d", f.Port)
	}
	if f.Port != 0 && f.Port < 1024 && c.user.UID != 0 {
		return 0, fmt.Errorf("port %d is privileged", f.Port)
	}
	u, err := c.userSockets()
	if err != nil {
		return 0, err
	}
	ln, err := u.ListenTCP(net.JoinHostPort(loopbackFor(f.Addr), strconv.Itoa(int(f.Port))))
	if err != nil {
		return 0, err
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	key := forwardKey(f.Addr, f.Port)
	c.mu.Lock()
	if c.done || c.forwards[key] != nil {
		c.mu.Unlock()
		ln.Close()
		return 0, errors.New("already forwarded")
	}
	c.forwards[key] = ln
	c.mu.Unlock()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go c.forwardedTCPIP(nc, f.Addr, port)
		}
	}()
	return port, nil
}

// forwardedTCPIP opens a channel to the client for one connection to a remote forward.
func (c *conn) forwardedTCPIP(nc net.Conn, addr string, port uint32) {
	ra, _ := nc.RemoteAddr().(*net.TCPAddr)
	var oaddr string
	var oport uint32
	if ra != nil {
		oaddr, oport = ra.IP.String(), uint32(ra.Port)
	}
	ch, reqs, err := c.sc.OpenChannel("forwarded-tcpip", ssh.Marshal(struct {
		Addr       string
		Port       uint32
		OriginAddr string
		OriginPort uint32
	}{addr, port, oaddr, oport}))
	if err != nil {
		nc.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	pipe(ch, nc)
}

// agentSocket is the user's agent socket for this connection, made on first use; each
// connection to it becomes an agent channel to the client.
func (c *conn) agentSocket() (string, error) {
	c.mu.Lock()
	if c.agent != "" {
		defer c.mu.Unlock()
		return c.agent, nil
	}
	c.mu.Unlock()
	u, err := c.userSockets()
	if err != nil {
		return "", err
	}
	ln, path, err := u.ListenAgent()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.agent != "" || c.done {
		c.mu.Unlock()
		ln.Close()
		return c.agent, nil
	}
	c.agent, c.agentLn = path, ln
	c.mu.Unlock()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				ch, reqs, err := c.sc.OpenChannel("auth-agent@openssh.com", nil)
				if err != nil {
					nc.Close()
					return
				}
				go ssh.DiscardRequests(reqs)
				pipe(ch, nc)
			}()
		}
	}()
	return path, nil
}
