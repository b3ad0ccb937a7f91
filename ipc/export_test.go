package ipc

import "context"

// AuthorizeWrite exposes the authorization decision to the external tests, which feed it
// synthetic uids.
func (s *Server) AuthorizeWrite(uid uint32, setsOperator bool) *Error {
	return s.authorizeWrite(uid, setsOperator)
}

// WithPeerCred gives a request context the credentials a Unix socket would (for the fuzz
// target, which calls ServeHTTP directly).
func WithPeerCred(ctx context.Context, cred PeerCred) context.Context {
	return context.WithValue(ctx, peerCredKey{}, cred)
}
