package ui

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"fyne.io/fyne/v2/lang"

	"github.com/skeinvpn/skein/assets"
	"github.com/skeinvpn/skein/ipc"
)

// This file holds the pure functions that turn what skeind reports into the words the window
// and the tray show, so that both say the same thing.

// view is everything the app knows about the helper at one moment.
type view struct {
	// reachable is false while the helper cannot be reached; err then says why.
	reachable bool
	// connecting is true before the first answer from the helper.
	connecting bool
	st         ipc.Status
	prefs      ipc.Prefs
	havePrefs  bool
	// err is the last error worth showing: the helper's background error, a failed action, or
	// why the helper is unreachable.
	err *ipc.Error
}

// stateText is the headline: what a person wants to know first.
func (v *view) stateText() string {
	switch {
	case v.connecting:
		return lang.L("Connecting to skeind…")
	case !v.reachable:
		return lang.L("Helper not running")
	}
	switch v.st.State {
	case ipc.StateRunning:
		return lang.L("Connected")
	case ipc.StateStarting:
		return lang.L("Connecting…")
	case ipc.StateStopped:
		return lang.L("Disconnected")
	case ipc.StateNeedsLogin:
		if v.st.AuthURL != "" {
			return lang.L("Waiting for login approval")
		}
		return lang.L("Logged out")
	case ipc.StateNoState:
		return lang.L("Starting…")
	}
	return string(v.st.State)
}

// connectionText is stateText with the login server's host while connected, for the places
// that show the connection in a few words (the tray): who runs the tailnet is part of it.
func (v *view) connectionText() string {
	s := v.stateText()
	if v.reachable && !v.connecting && v.st.State == ipc.StateRunning {
		if u, err := url.Parse(v.st.LoginServer); err == nil && u.Host != "" {
			s = lang.L("{{.State}} to {{.Host}}", map[string]any{"State": s, "Host": u.Host})
		}
	}
	return s
}

// iconState picks the tray and header icon.
func (v *view) iconState() assets.State {
	switch {
	case v.connecting:
		return assets.Disconnected
	case !v.reachable:
		return assets.Error
	}
	switch v.st.State {
	case ipc.StateRunning:
		if v.err != nil && v.err.Code == ipc.ErrServerUnreachable {
			return assets.Error
		}
		if n, ok := v.exitNode(); ok && !n.online {
			return assets.Error // internet traffic is blocked until the exit node is back
		}
		if len(v.st.Health) > 0 {
			return assets.Warning // connected, but something needs attention (a banner says what)
		}
		return assets.Connected
	case ipc.StateNeedsLogin:
		return assets.NeedsLogin
	}
	if v.err != nil && v.st.State != ipc.StateStopped {
		return assets.Error
	}
	return assets.Disconnected
}

// toggle is the main action: its label, whether it can be used, and what it does.
type toggleAction int

const (
	actNone toggleAction = iota
	actConnect
	actDisconnect
	actLogin
)

func (v *view) toggle() (label string, act toggleAction) {
	if v.connecting || !v.reachable {
		return lang.L("Connect"), actNone
	}
	switch v.st.State {
	case ipc.StateRunning, ipc.StateStarting:
		return lang.L("Disconnect"), actDisconnect
	case ipc.StateNeedsLogin:
		return lang.L("Log in…"), actLogin
	case ipc.StateStopped:
		return lang.L("Connect"), actConnect
	}
	return lang.L("Connect"), actNone
}

// selfLine is the tray's "This device" line, or "" when there is no self node yet.
func (v *view) selfLine() string {
	s := v.st.Self
	if s == nil || !v.reachable {
		return ""
	}
	name := shortName(s)
	if ip := s.FirstIP(); ip != "" {
		return lang.L("This device: {{.Name}} ({{.IP}})", map[string]any{"Name": name, "IP": ip})
	}
	return lang.L("This device: {{.Name}}", map[string]any{"Name": name})
}

// sortedPeers returns the peers in display order: online first, then by name.
func sortedPeers(peers []ipc.Peer) []ipc.Peer {
	out := slices.Clone(peers)
	slices.SortStableFunc(out, func(a, b ipc.Peer) int {
		if a.Online != b.Online {
			if a.Online {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(strings.ToLower(shortName(&a)), strings.ToLower(shortName(&b))), cmp.Compare((&a).FirstIP(), (&b).FirstIP()))
	})
	return out
}

// pathText says how packets reach a peer, under ipc's path rule: "direct 1.2.3.4:41641" or
// "relay (fra)" while traffic flows, else "idle", "offline" or "key expired". An idle peer's
// home relay is never shown as its path: for a user "relay" means something is in the way.
func pathText(p *ipc.Peer) string { return pathWords(p.Path()) }

func pathWords(pa ipc.Path) string {
	switch pa.Kind {
	case ipc.PathDirect:
		return lang.L("direct {{.Addr}}", map[string]any{"Addr": pa.Addr})
	case ipc.PathRelay:
		return relayWords(pa.Region)
	case ipc.PathOffline:
		return lang.L("offline")
	case ipc.PathExpired:
		return lang.L("key expired")
	}
	return lang.L("idle")
}

func relayWords(region string) string {
	if region == "" {
		return lang.L("relay")
	}
	return lang.L("relay ({{.Region}})", map[string]any{"Region": region})
}

// detailPathText is the detail pane's path: pathText, and for a peer not active now the path
// its latest traffic took and when, "idle (last: direct 1.2.3.4:41641 at 14:03)". The time is
// absolute: the pane is not redrawn while nothing changes, so "3 min ago" would go stale.
func detailPathText(p *ipc.Peer, now time.Time) string {
	pa := p.Path()
	s := pathWords(pa)
	if l := pa.Last; l != nil {
		last := pathWords(ipc.Path{Kind: l.Kind, Addr: l.Addr, Region: l.Region})
		if !l.At.IsZero() {
			s += " " + lang.L("(last: {{.Path}} at {{.Time}})", map[string]any{"Path": last, "Time": clockText(l.At, now)})
		} else {
			s += " " + lang.L("(last: {{.Path}})", map[string]any{"Path": last})
		}
	}
	return s
}

// clockText is t as a local time of day, with the date when it is not today.
func clockText(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04")
	}
	return t.Format("2 Jan 15:04")
}

// latencyText is "3.2 ms" for a direct path in use with a measured latency, else "".
func latencyText(p *ipc.Peer) string {
	pa := p.Path()
	if pa.Kind != ipc.PathDirect || pa.LatencyMs <= 0 {
		return ""
	}
	return formatMs(pa.LatencyMs)
}

func formatMs(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.0f ms", ms)
	}
}

// onlineText is "online" or "offline".
func onlineText(p *ipc.Peer) string {
	if p.Online {
		return lang.L("online")
	}
	return lang.L("offline")
}

// trayPeerLabel is one item of the tray's Peers submenu: the name and the path,
// "beta — direct 1.2.3.4:41641 (1.2 ms)", "beta — relay (fra)", "beta — idle".
func trayPeerLabel(p *ipc.Peer) string {
	label := shortName(p) + " — " + pathText(p)
	if l := latencyText(p); l != "" {
		label += " (" + l + ")"
	}
	return label
}

// lastSeenText is "last seen 5 min ago" for an offline peer with a known time, else "".
func lastSeenText(p *ipc.Peer, now time.Time) string {
	if p.Online || p.LastSeen == nil || p.LastSeen.IsZero() {
		return ""
	}
	return lang.L("last seen {{.Ago}}", map[string]any{"Ago": ago(now.Sub(*p.LastSeen))})
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return lang.L("just now")
	case d < time.Hour:
		return lang.L("{{.N}} min ago", map[string]any{"N": strconv.Itoa(int(d / time.Minute))})
	case d < 48*time.Hour:
		return lang.L("{{.N}} h ago", map[string]any{"N": strconv.Itoa(int(d / time.Hour))})
	}
	return lang.L("{{.N}} days ago", map[string]any{"N": strconv.Itoa(int(d / (24 * time.Hour)))})
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// shortName is the peer's short name, or its stable ID when it has no name at all.
func shortName(p *ipc.Peer) string { return cmp.Or(p.ShortName(), p.StableID) }

// owner is the login name of the peer's user, or "tagged" for a tagged node.
func owner(st *ipc.Status, p *ipc.Peer) string {
	if len(p.Tags) > 0 {
		return lang.L("tagged")
	}
	for _, u := range st.Users {
		if u.ID == p.UserID {
			return u.LoginName
		}
	}
	return ""
}

// matches is the peer list's search: every word of q must appear in the peer's name, DNS
// name, an address, its OS, owner, online/offline or its path.
func matches(st *ipc.Status, p *ipc.Peer, q string) bool {
	q = strings.ToLower(strings.TrimSpace(q))
	if q == "" {
		return true
	}
	// The words are those shown, and their English forms too (the search box's hint names
	// them, and people type them in any language).
	pa := p.Path()
	online := "offline"
	if p.Online {
		online = "online"
	}
	words := append([]string{
		shortName(p), p.HostName, p.DNSName, p.OS, owner(st, p), onlineText(p), pathText(p), p.Location,
		online, string(pa.Kind), pa.Addr, pa.Region,
	}, addrStrings(p.Addresses)...)
	if p.ExitNodeOption || p.ExitNode {
		words = append(words, "exit node", lang.L("exit node"))
	}
	if len(p.PrimaryRoutes) > 0 {
		words = append(words, "routes subnet", lang.L("subnet routes"))
		words = append(words, prefixStrings(p.PrimaryRoutes)...)
	}
	hay := strings.ToLower(strings.Join(words, " "))
	for _, w := range strings.Fields(q) {
		if !strings.Contains(hay, w) {
			return false
		}
	}
	return true
}

// currentUser is the name the operator fix uses.
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// fixCommand is the command that fixes e, with $USER filled in so that it can be pasted as is.
func fixCommand(e *ipc.Error) string {
	if e == nil {
		return ""
	}
	fix := e.Fix
	switch {
	case fix == "" && (e.Code == ipc.ErrNeedsOperator || e.Code == ipc.ErrNeedsRoot):
		fix = "sudo skein set --operator=$USER"
	case e.Code == ipc.ErrHelperUnreachable:
		fix = helperMissingFix()
	}
	if u := currentUser(); u != "" {
		fix = strings.ReplaceAll(fix, "$USER", u)
	}
	return fix
}

// errorTitle is a short explanation of e for people.
func errorTitle(e *ipc.Error) string {
	switch e.Code {
	case ipc.ErrHelperUnreachable:
		return helperMissingTitle()
	case ipc.ErrNeedsOperator:
		return lang.L("Permission denied: your user may not change Skein's settings")
	case ipc.ErrNeedsRoot:
		return lang.L("Permission denied: only root can do this")
	case ipc.ErrServerUnreachable:
		return lang.L("The login server cannot be reached")
	case ipc.ErrCertUntrusted:
		return lang.L("The login server's certificate is not trusted")
	case ipc.ErrNeedsLogin:
		return lang.L("Login needed")
	case ipc.ErrLoginFailed:
		return lang.L("Login failed")
	}
	return lang.L("Something went wrong")
}

// errorHint adds what to do when no single command fixes it.
func errorHint(e *ipc.Error) string {
	switch e.Code {
	case ipc.ErrHelperUnreachable:
		return helperMissingHint()
	case ipc.ErrNeedsOperator:
		return lang.L("Make your user skeind's operator once (needs sudo), then try again.")
	case ipc.ErrServerUnreachable:
		return lang.L("Check the login server address and your network; skeind keeps retrying.")
	}
	return ""
}
