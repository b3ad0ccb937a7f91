package ipc

// AuthorizeWrite exposes the authorization decision to the external tests, which feed it
// synthetic uids.
func (s *Server) AuthorizeWrite(uid uint32, setsOperator bool) *Error {
	return s.authorizeWrite(uid, setsOperator)
}
