package ui

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/lang"

	"github.com/skeinvpn/skein/ipc"
)

// Notifications that people turn on (the Notifications page): the connection lost and
// restored, a watched device coming online or going offline, a peer's path changing to relay
// (off by default), and this device's key expiring (7 days and 1 day before). Each comes with an
// action that opens the page it is about. Nothing storms: after a subject's notification,
// further changes of that subject within alertWindow are held back and told once, summarized,
// when the window ends.

// Preference keys of the notification settings.
const (
	prefNotifyConnection = "notify.connection"
	prefNotifyWatched    = "notify.watched"
	prefNotifyRelay      = "notify.relay"
	prefNotifyExpiry     = "notify.keyExpiry"
	prefWatchedPeers     = "notify.watchedPeers"   // StableIDs, comma-separated
	prefExpiryNotified   = "notify.expiryNotified" // "EXPIRY/THRESHOLD" pairs already told, comma-separated
)

// Timings (vars for tests): the quiet window per subject, and how long the connection must be
// lost before that is told (a reconnect within it goes unnoticed).
var (
	alertWindow   = time.Minute
	connLostAfter = 5 * time.Second
)

// alert is one desktop notification.
type alert struct {
	subject string // what it is about, for the throttle: "connection", "peer:ID", "relay:ID", "expiry"…
	summary string
	body    string
	label   string // the action's button
	action  func()
}

// alertFunc shows an alert (tests replace the desktop notification with it).
type alertFunc func(al alert) error

// notifySettings are the switches of the Notifications page.
type notifySettings struct {
	connection, watched, relay, expiry bool
}

func (a *App) loadNotifySettings() {
	p := a.fa.Preferences()
	a.notifyOpts = notifySettings{
		connection: p.BoolWithFallback(prefNotifyConnection, true),
		watched:    p.BoolWithFallback(prefNotifyWatched, true),
		relay:      p.BoolWithFallback(prefNotifyRelay, false),
		expiry:     p.BoolWithFallback(prefNotifyExpiry, true),
	}
	a.watched = map[string]bool{}
	for _, id := range strings.Split(p.String(prefWatchedPeers), ",") {
		if id = strings.TrimSpace(id); id != "" {
			a.watched[id] = true
		}
	}
}

func (a *App) saveNotifySettings() {
	p := a.fa.Preferences()
	p.SetBool(prefNotifyConnection, a.notifyOpts.connection)
	p.SetBool(prefNotifyWatched, a.notifyOpts.watched)
	p.SetBool(prefNotifyRelay, a.notifyOpts.relay)
	p.SetBool(prefNotifyExpiry, a.notifyOpts.expiry)
	ids := make([]string, 0, len(a.watched))
	for id := range a.watched {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	p.SetString(prefWatchedPeers, strings.Join(ids, ","))
}

// setWatched watches a peer (or stops): a notification when it comes online or goes offline.
func (a *App) setWatched(id string, on bool) {
	if id == "" {
		return
	}
	if on {
		a.watched[id] = true
	} else {
		delete(a.watched, id)
	}
	a.saveNotifySettings()
	a.refresh()
}

// throttle sends the first alert of a subject at once and holds back the ones that follow
// within alertWindow, to tell them as one summary when the window ends.
type throttle struct {
	now   func() time.Time
	after func(d time.Duration, f func()) // runs f on the UI goroutine after d
	send  func(alert)
	subs  map[string]*subjectState
}

type subjectState struct {
	until     time.Time // end of the quiet window
	held      []alert
	scheduled bool
}

func (t *throttle) add(al alert) {
	if t.subs == nil {
		t.subs = map[string]*subjectState{}
	}
	now := t.now()
	s := t.subs[al.subject]
	if s == nil || (!now.Before(s.until) && len(s.held) == 0) {
		t.subs[al.subject] = &subjectState{until: now.Add(alertWindow)}
		t.send(al)
		return
	}
	s.held = append(s.held, al)
	if !s.scheduled {
		s.scheduled = true
		t.after(max(s.until.Sub(now), 0), func() { t.flush(al.subject) })
	}
}

func (t *throttle) flush(subject string) {
	s := t.subs[subject]
	if s == nil {
		return
	}
	held := s.held
	s.held, s.scheduled = nil, false
	if len(held) == 0 {
		return
	}
	s.until = t.now().Add(alertWindow)
	if len(held) == 1 {
		t.send(held[0])
		return
	}
	last := held[len(held)-1]
	last.body = lang.L("{{.N}} changes in the last minute. Now: {{.Last}}", map[string]any{"N": strconv.Itoa(len(held)), "Last": last.body})
	t.send(last)
}

// connState is the connection as the "connection lost/restored" notification sees it.
type connState int

const (
	connUnknown connState = iota
	connUp                // connected, control reachable
	connOff               // off on purpose (down, logged out, switching)
	connLost              // should run, but does not (helper gone, reconnecting, control unreachable)
)

func connStateOf(v *view) connState {
	switch {
	case v.connecting:
		return connUnknown
	case !v.reachable:
		return connLost
	case v.st.State == ipc.StateRunning && v.st.ControlConnected:
		return connUp
	case v.st.State == ipc.StateStopped, v.st.State == ipc.StateNeedsLogin, v.st.State == ipc.StateNoState:
		return connOff
	}
	return connLost
}

// alerter turns changes of the view into alerts.
type alerter struct {
	thr       throttle
	conn      connState
	lostTold  bool
	lostTimer int // increases with every timer armed, so an old one does nothing
}

// observe compares the view before and after an event and raises the alerts due.
func (a *App) observe(old, cur *view) {
	a.observeConnection(cur)
	if a.notifyOpts.expiry {
		a.observeExpiry(cur)
	}
	// Peers are compared only between two views of one running login: a switch or a
	// reconnection is not every device coming online.
	if !old.reachable || !cur.reachable || old.st.State != ipc.StateRunning || cur.st.State != ipc.StateRunning ||
		profileID(&old.st) != profileID(&cur.st) {
		return
	}
	before := map[string]*ipc.Peer{}
	for i := range old.st.Peers {
		before[old.st.Peers[i].StableID] = &old.st.Peers[i]
	}
	for i := range cur.st.Peers {
		p := &cur.st.Peers[i]
		q := before[p.StableID]
		if q == nil || p.StableID == "" {
			continue
		}
		if a.notifyOpts.watched && a.watched[p.StableID] && p.Online != q.Online {
			a.alertPeerOnline(p)
		}
		if a.notifyOpts.relay && q.Path().Kind == ipc.PathDirect && p.Path().Kind == ipc.PathRelay {
			a.alertRelay(p)
		}
	}
}

func profileID(st *ipc.Status) string {
	if st.Profile != nil {
		return st.Profile.ID
	}
	return ""
}

func (a *App) alertPeerOnline(p *ipc.Peer) {
	name, id := shortName(p), p.StableID
	al := alert{subject: "peer:" + id, label: lang.L("Show"), action: func() { a.showPeer(id) }}
	if p.Online {
		al.summary = lang.L("{{.Name}} is online", map[string]any{"Name": name})
		al.body = lang.L("{{.Name}} came online in your tailnet.", map[string]any{"Name": name})
	} else {
		al.summary = lang.L("{{.Name}} went offline", map[string]any{"Name": name})
		al.body = lang.L("{{.Name}} is no longer connected to your tailnet.", map[string]any{"Name": name})
	}
	a.alerts.thr.add(al)
}

func (a *App) alertRelay(p *ipc.Peer) {
	name, id := shortName(p), p.StableID
	a.alerts.thr.add(alert{subject: "relay:" + id,
		summary: lang.L("{{.Name}}: path changed to relay", map[string]any{"Name": name}),
		body:    lang.L("Packets to {{.Name}} now go through a relay ({{.Path}}), which is slower than a direct path.", map[string]any{"Name": name, "Path": pathText(p)}),
		label:   lang.L("Show"), action: func() { a.showPeer(id) }})
}

// observeConnection tells "connection lost" once it has lasted connLostAfter, and "restored"
// when it comes back after that.
func (a *App) observeConnection(cur *view) {
	st := connStateOf(cur)
	al := &a.alerts
	if st == al.conn || st == connUnknown {
		return
	}
	prev := al.conn
	al.conn = st
	al.lostTimer++
	switch st {
	case connLost:
		if prev != connUp || !a.notifyOpts.connection {
			return
		}
		run := al.lostTimer
		reason := connLostReason(cur)
		a.later(connLostAfter, func() {
			if run != al.lostTimer || al.conn != connLost {
				return
			}
			al.lostTold = true
			al.thr.add(alert{subject: "connection", summary: lang.L("Skein lost its connection"), body: reason,
				label: lang.L("Open Skein"), action: a.ShowWindow})
		})
	case connUp:
		if al.lostTold && a.notifyOpts.connection {
			// Its own subject: a return is told at once, not held behind the loss it ends.
			al.thr.add(alert{subject: "connection-restored", summary: lang.L("Skein is connected again"),
				body:  lang.L("Your tailnet is reachable again."),
				label: lang.L("Open Skein"), action: a.ShowWindow})
		}
		al.lostTold = false
	case connOff:
		al.lostTold = false
	}
}

func connLostReason(v *view) string {
	switch {
	case !v.reachable:
		return lang.L("skeind, Skein's helper, is not reachable.")
	case v.st.State == ipc.StateRunning:
		return lang.L("The control server cannot be reached; devices you were talking to stay reachable while the network allows.")
	}
	return lang.L("Skein is reconnecting to your tailnet.")
}

// observeExpiry tells, once per threshold (7 days, 1 day), that this device's key expires.
func (a *App) observeExpiry(cur *view) {
	exp, ok := keyExpiry(cur)
	if !ok {
		return
	}
	left := exp.Sub(a.now())
	var threshold string
	switch {
	case left <= 0:
		return
	case left <= 24*time.Hour:
		threshold = "1d"
	case left <= 7*24*time.Hour:
		threshold = "7d"
	default:
		return
	}
	key := exp.UTC().Format(time.RFC3339) + "/" + threshold
	p := a.fa.Preferences()
	told := strings.Split(p.String(prefExpiryNotified), ",")
	if slices.Contains(told, key) {
		return
	}
	// Only the newest pairs are kept.
	told = append(told, key)
	if len(told) > 4 {
		told = told[len(told)-4:]
	}
	p.SetString(prefExpiryNotified, strings.Trim(strings.Join(told, ","), ","))
	a.alerts.thr.add(alert{subject: "expiry",
		summary: lang.L("This device's key expires {{.When}}", map[string]any{"When": untilText(exp, a.now())}),
		body:    lang.L("Re-authenticate before {{.At}} to keep this device in your tailnet.", map[string]any{"At": dateTimeText(exp, a.now())}),
		label:   lang.L("Re-authenticate"), action: a.reauth})
}

// keyExpiry is when this device's key expires, from the helper's warning or its self node.
func keyExpiry(v *view) (time.Time, bool) {
	if !v.reachable {
		return time.Time{}, false
	}
	for _, h := range v.st.Health {
		if h.Code == ipc.IssueKeyExpiring {
			if t, err := time.Parse(time.RFC3339, h.Data["expiry"]); err == nil {
				return t, true
			}
		}
	}
	return time.Time{}, false
}

// later runs f on the UI goroutine after d, unless the app stopped.
func (a *App) later(d time.Duration, f func()) {
	time.AfterFunc(d, func() {
		if a.ctx.Err() == nil {
			a.do(f)
		}
	})
}

// alertUser shows an alert as a desktop notification with its action, falling back to Fyne's
// plain notification.
func (a *App) alertUser(al alert) {
	a.opts.Logf("notification: %s: %s", al.summary, al.body)
	if act := al.action; act != nil {
		// The notification server's click arrives on the notifier's goroutine.
		al.action = func() { a.do(act) }
	}
	send := a.opts.alert
	if send == nil {
		send = func(al alert) error {
			return a.notifier.sendAction(al.summary, al.body, al.label, "network", al.action)
		}
	}
	go func() {
		if err := send(al); err != nil {
			a.opts.Logf("notification over D-Bus: %v; using Fyne's", err)
			a.do(func() { a.fa.SendNotification(fyne.NewNotification(al.summary, al.body)) })
		}
	}()
}

// showPeer opens the window on the Peers tab with the peer selected.
func (a *App) showPeer(id string) {
	a.ShowWindow()
	a.tabs.selectPeers()
	a.peers.selectByID(id)
}
