package ipc

import (
	"context"
	"errors"
	"net"
	"syscall"
)

// PeerCred identifies the process at the other end of a Unix socket connection, as the kernel
// recorded it at connect time (SO_PEERCRED), so it cannot be forged by the client.
type PeerCred struct {
	PID int32
	UID uint32
	GID uint32
}

type peerCredKey struct{}

// PeerCredFromContext returns the caller's credentials for a request served by Server; the
// Backend may use it, e.g. to log who asked for a change. ok is false when the connection
// carried none (not a Unix socket, or the lookup failed).
func PeerCredFromContext(ctx context.Context) (cred PeerCred, ok bool) {
	cred, ok = ctx.Value(peerCredKey{}).(PeerCred)
	return cred, ok
}

func peerUID(ctx context.Context) (uint32, bool) {
	c, ok := PeerCredFromContext(ctx)
	return c.UID, ok
}

// connContext is http.Server.ConnContext: the credentials are read once per connection, right
// after accept, and every request on the connection inherits them.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*credConn); ok { // read by the listener already
		return context.WithValue(ctx, peerCredKey{}, cc.cred)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	cred, err := getPeerCred(uc)
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerCredKey{}, cred)
}

// isStaleSocketErr reports whether dialing a socket file failed because nobody listens on it.
func isStaleSocketErr(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
