package ipc

import (
	"net/http"
	"slices"
	"strings"
)

// Every endpoint of the API is a row of routeTable: its path, and per method who may call it and
// the handler. Dispatch, the 405 answers and the authorization check all come from the table,
// so a new endpoint cannot be added without saying who may use it, and the tests try every row
// as a plain user (RouteList).

// Access says who may call a route's method.
type Access int

const (
	// Anyone: every local user may call it. What it returns is what any user of the machine
	// may see; secrets (a pending login URL, received files) are left out for callers who are
	// not privileged.
	Anyone Access = iota
	// Privileged: root, skeind's own uid or the configured operator.
	Privileged
)

func (a Access) String() string {
	if a == Privileged {
		return "privileged"
	}
	return "anyone"
}

// handler serves one method of a route; rest is the unescaped-path remainder after a prefix
// route's path ("" for exact routes).
type handler func(s *Server, w http.ResponseWriter, r *http.Request, rest string)

type method struct {
	name   string
	access Access
	serve  handler
	// noHead: HEAD is not accepted as a GET (a stream would never end).
	noHead bool
	// locks: the handler takes Server.authMu itself (it decides how from the body).
	locks bool
	// long: the call may last hours (a file transfer, a foreground serve), so it does not hold
	// Server.authMu: an operator being removed must not be able to hold the change back. What
	// it may do is decided when it starts.
	long bool
}

type route struct {
	path string
	// prefix: the route serves path + "/" + anything (path itself only when exact is set too).
	prefix  bool
	methods []method
}

// routeTable lists every endpoint. Order matters only for prefix routes that share a start.
var routeTable = []route{
	{path: PathStatus, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveStatus}}},
	{path: PathWatch, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveWatch, noHead: true}}},
	{path: PathPrefs, methods: []method{
		{name: http.MethodGet, access: Anyone, serve: (*Server).serveGetPrefs},
		{name: http.MethodPost, access: Privileged, serve: (*Server).servePostPrefs, locks: true},
	}},
	{path: PathUp, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveUp}}},
	{path: PathDown, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveDown}}},
	{path: PathLogout, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveLogout}}},
	{path: PathPing, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).servePing}}},
	{path: PathNetcheck, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveNetcheck}}},
	{path: PathWhy, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveWhy}}},
	{path: PathDNSQuery, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveDNSQuery}}},
	{path: PathFileTargets, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveFileTargets}}},
	// Taking files changes state (and the files are the desktop user's), so reading them needs
	// the same right as sending.
	{path: PathFiles, methods: []method{{name: http.MethodGet, access: Privileged, serve: (*Server).serveFileList}}},
	{path: PathFiles, prefix: true, methods: []method{
		{name: http.MethodGet, access: Privileged, serve: (*Server).serveFileGet, long: true},
		{name: http.MethodDelete, access: Privileged, serve: (*Server).serveFileDelete},
	}},
	{path: PathFilePut, prefix: true, methods: []method{{name: http.MethodPut, access: Privileged, serve: (*Server).serveFilePut, long: true}}},
	{path: PathServe, methods: []method{
		{name: http.MethodGet, access: Anyone, serve: (*Server).serveGetServe},
		{name: http.MethodPost, access: Privileged, serve: (*Server).servePostServe},
	}},
	{path: PathServeReset, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveServeReset}}},
	// The connection becomes the foreground serve's and lasts as long as it.
	{path: PathServeForeground, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveServeForeground, long: true}}},
	{path: PathSuggestExitNode, methods: []method{{name: http.MethodGet, access: Anyone, serve: (*Server).serveSuggestExitNode}}},
	{path: PathSwitchProfile, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveSwitchProfile}}},
	{path: PathRemoveProfile, methods: []method{{name: http.MethodPost, access: Privileged, serve: (*Server).serveRemoveProfile}}},
}

// RouteInfo describes one method of one endpoint, for tests and documentation.
type RouteInfo struct {
	// Path is the endpoint; with Prefix, requests go to Path + "/" + a name.
	Path   string
	Prefix bool
	Method string
	Access Access
}

// RouteList returns every endpoint and method the server answers, from the table it dispatches
// with.
func RouteList() []RouteInfo {
	var out []RouteInfo
	for _, rt := range routeTable {
		for _, m := range rt.methods {
			out = append(out, RouteInfo{Path: rt.path, Prefix: rt.prefix, Method: m.name, Access: m.access})
		}
	}
	return out
}

// findRoute returns the route for an escaped path and the (still escaped) rest after a prefix.
func findRoute(p string) (*route, string, bool) {
	if p == PathFiles+"/" { // the list, as it always was
		p = PathFiles
	}
	for i := range routeTable {
		rt := &routeTable[i]
		if !rt.prefix && p == rt.path {
			return rt, "", true
		}
		if rest, ok := strings.CutPrefix(p, rt.path+"/"); rt.prefix && ok {
			return rt, rest, true
		}
	}
	return nil, "", false
}

// pick returns the route's method for r (HEAD as GET unless refused), or nil.
func (rt *route) pick(r *http.Request) *method {
	for i := range rt.methods {
		m := &rt.methods[i]
		if r.Method == m.name || (r.Method == http.MethodHead && m.name == http.MethodGet && !m.noHead) {
			return m
		}
	}
	return nil
}

// allow is the Allow header of a route.
func (rt *route) allow() string {
	var names []string
	for _, m := range rt.methods {
		names = append(names, m.name)
		if m.name == http.MethodGet && !m.noHead {
			names = append(names, http.MethodHead)
		}
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ", ")
}

// dispatch serves r from the table: 404 for an unknown path, 405 for a method the route does not
// have, 403 for a caller without the right, else the handler.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	rt, rest, ok := findRoute(r.URL.EscapedPath())
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Code: ErrNotFound, Message: "no such API endpoint: " + r.URL.Path})
		return
	}
	m := rt.pick(r)
	if m == nil {
		s.methodNotAllowed(w, r, rt.allow())
		return
	}
	if m.access == Privileged {
		if !m.locks && !m.long {
			s.authMu.RLock()
			defer s.authMu.RUnlock()
		}
		uid, ok := peerUID(r.Context())
		if !ok {
			writeError(w, http.StatusForbidden, &Error{Code: ErrNeedsOperator, Message: "permission denied: cannot identify the caller (no peer credentials)"})
			return
		}
		if e := s.authorizeWrite(uid, false); e != nil {
			writeError(w, http.StatusForbidden, e)
			return
		}
	}
	m.serve(s, w, r, rest)
}
