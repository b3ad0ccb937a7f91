// Package chanlisten is a net.Listener whose connections are handed to it, for servers (HTTP)
// that answer connections accepted elsewhere: by skeind's ingress, or passed over a socket.
package chanlisten

import (
	"net"
	"sync"
)

// Listener hands out the connections Put gives it.
type Listener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

// New returns a Listener that reports addr as its address.
func New(addr net.Addr) *Listener {
	return &Listener{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

// Put hands c to Accept; after Close it closes c and reports false.
func (l *Listener) Put(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.addr }
