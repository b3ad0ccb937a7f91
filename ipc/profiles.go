package ipc

import (
	"context"
	"net/http"
	"strings"
)

// Profiles: several logins (each its own node key, prefs and control server) kept by the
// helper, one in use at a time; and the exit node the helper suggests.
const (
	// PathSwitchProfile: POST ProfileRequest → Status, once the other profile runs (or needs a
	// login). The old profile's tunnel, routes and DNS are gone by then.
	PathSwitchProfile = "/" + APIVersion + "/profiles/switch"
	// PathRemoveProfile: POST ProfileRequest → Status. The profile in use cannot be removed.
	PathRemoveProfile = "/" + APIVersion + "/profiles/remove"
	// PathSuggestExitNode: GET → ExitNodeSuggestion, measured now (the peers offering an exit
	// node are pinged). Reading, so anyone may.
	PathSuggestExitNode = "/" + APIVersion + "/exit-node/suggest"
)

// Profile is one login kept by the helper. It never carries keys.
type Profile struct {
	ID string `json:"id"`
	// Name is the nickname, else the login name, else the login server's host.
	Name        string `json:"name"`
	LoginServer string `json:"loginServer,omitempty"`
	LoginName   string `json:"loginName,omitempty"`
	// Tailnet is the MagicDNS suffix of the profile's tailnet as last seen.
	Tailnet  string `json:"tailnet,omitempty"`
	LoggedIn bool   `json:"loggedIn"`
	Current  bool   `json:"current,omitempty"`
}

// ProfileRequest names a profile: its ID, name, login name or tailnet.
type ProfileRequest struct {
	Profile string `json:"profile"`
}

// ExitNodeSuggestion is the exit node the helper recommends: online, offering to be an exit
// node, with the lowest measured latency.
type ExitNodeSuggestion struct {
	ID   string `json:"id"` // StableID
	Name string `json:"name"`
	IP   string `json:"ip,omitempty"`
	// LatencyMs is the measured round trip (0 = not measured; then the choice is by name).
	LatencyMs float64 `json:"latencyMs,omitempty"`
	Location  string  `json:"location,omitempty"`
}

// ProfileBackend is what the helper implements for profiles and exit-node suggestions.
type ProfileBackend interface {
	// SwitchProfile makes the named profile the one in use.
	SwitchProfile(ctx context.Context, name string) error
	// RemoveProfile forgets a profile that is not in use.
	RemoveProfile(ctx context.Context, name string) error
	// SuggestExitNode measures the exit nodes now and names the best.
	SuggestExitNode(ctx context.Context) (ExitNodeSuggestion, error)
}

// LookupProfile finds a profile by ID, then name, then login name, then tailnet (as the
// official client's switch does), case-insensitively for names; the error names what exists.
func LookupProfile(q string, profiles []Profile) (Profile, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return Profile{}, &Error{Code: ErrBadRequest, Message: "no profile named"}
	}
	for _, by := range []func(p Profile) string{
		func(p Profile) string { return p.ID },
		func(p Profile) string { return p.Name },
		func(p Profile) string { return p.LoginName },
		func(p Profile) string { return p.Tailnet },
	} {
		var found []Profile
		for _, p := range profiles {
			if v := by(p); v != "" && strings.EqualFold(v, q) {
				found = append(found, p)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
			continue
		}
		return Profile{}, &Error{Code: ErrBadRequest, Message: "more than one profile matches " + quoteName(q) + "; use its ID", Fix: "skein switch --list"}
	}
	return Profile{}, &Error{Code: ErrNotFound, Message: "no profile named " + quoteName(q), Fix: "skein switch --list"}
}

func quoteName(s string) string { return "\"" + s + "\"" }

// serveProfiles handles the profile and suggestion paths; false when the path is another.
// profileBackend is the backend's profile side, or a 404 for a helper without profiles.
func (s *Server) profileBackend(w http.ResponseWriter) (ProfileBackend, bool) {
	pb, ok := s.b.(ProfileBackend)
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Code: ErrNotFound, Message: "this helper has no profiles"})
	}
	return pb, ok
}

func (s *Server) serveSuggestExitNode(w http.ResponseWriter, r *http.Request, _ string) {
	pb, ok := s.profileBackend(w)
	if !ok {
		return
	}
	sug, err := pb.SuggestExitNode(r.Context())
	s.reply(w, sug, err)
}

func (s *Server) serveSwitchProfile(w http.ResponseWriter, r *http.Request, _ string) {
	s.serveProfileChange(w, r, true)
}

func (s *Server) serveRemoveProfile(w http.ResponseWriter, r *http.Request, _ string) {
	s.serveProfileChange(w, r, false)
}

func (s *Server) serveProfileChange(w http.ResponseWriter, r *http.Request, switching bool) {
	pb, ok := s.profileBackend(w)
	if !ok {
		return
	}
	var req ProfileRequest
	if !s.decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Profile) == "" || len(req.Profile) > 256 {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "profile: want a profile's ID or name", Fix: "skein switch --list"})
		return
	}
	var err error
	if switching {
		err = pb.SwitchProfile(r.Context(), req.Profile)
	} else {
		err = pb.RemoveProfile(r.Context(), req.Profile)
	}
	s.replyStatus(w, r, err)
}

// SwitchProfile makes the named profile (ID, name, login name or tailnet) the one in use and
// returns the resulting status.
func (c *Client) SwitchProfile(ctx context.Context, name string) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodPost, PathSwitchProfile, ProfileRequest{Profile: name}, &st)
	return st, err
}

// RemoveProfile forgets a profile that is not in use and returns the resulting status.
func (c *Client) RemoveProfile(ctx context.Context, name string) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodPost, PathRemoveProfile, ProfileRequest{Profile: name}, &st)
	return st, err
}

// SuggestExitNode asks the helper which exit node it recommends now.
func (c *Client) SuggestExitNode(ctx context.Context) (ExitNodeSuggestion, error) {
	var out ExitNodeSuggestion
	err := c.do(ctx, http.MethodGet, PathSuggestExitNode, nil, &out)
	return out, err
}
