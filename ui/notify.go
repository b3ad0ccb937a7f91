package ui

import (
	"errors"
	"strings"
	"sync"

	"fyne.io/fyne/v2/lang"
	"github.com/godbus/dbus/v5"
)

// Desktop notifications with an action, straight over D-Bus (org.freedesktop.Notifications).
//
// Libraries such as beeep do send over that interface on Linux, but pass no actions and close
// their connection right after Notify, so a click could never come back; Fyne's
// SendNotification has no actions either. The app therefore calls Notify itself, on a private
// session-bus connection that stays open to hear ActionInvoked. When that fails (no server, or a Flatpak without
// --talk-name=org.freedesktop.Notifications) the app falls back to Fyne's notification, which in
// a Flatpak build goes through the notification portal.

const (
	notifyName  = "org.freedesktop.Notifications"
	notifyPath  = dbus.ObjectPath("/org/freedesktop/Notifications")
	notifyIface = "org.freedesktop.Notifications"
	// actionOpen is the action key of the notification's button ("Open folder" and others);
	// "default" is a click on the bubble.
	actionOpen = "open-folder"
	// maxPendingActions bounds the actions remembered for notifications still on screen.
	maxPendingActions = 32
)

var errNotifierClosed = errors.New("notifier closed")

// noMarkup replaces the characters notification markup is made of with look-alikes, for a
// server whose markup support is unknown (escaping would show "&lt;" on one without).
func noMarkup(s string) string {
	return strings.NewReplacer("<", "‹", ">", "›", "&", "＆").Replace(s)
}

// desktopNotifier sends notifications and runs the action of the one the user clicks.
type desktopNotifier struct {
	mu      sync.Mutex
	conn    *dbus.Conn
	caps    map[string]bool
	actions map[uint32]func()
	order   []uint32
	closed  bool
}

func newDesktopNotifier() *desktopNotifier {
	return &desktopNotifier{actions: map[uint32]func(){}}
}

// connection returns the open connection, connecting (and asking the server what it can do)
// the first time.
func (n *desktopNotifier) connection() (*dbus.Conn, map[string]bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, nil, errNotifierClosed
	}
	if n.conn != nil {
		return n.conn, n.caps, nil
	}
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		return nil, nil, err
	}
	if err := conn.AddMatchSignal(dbus.WithMatchObjectPath(notifyPath), dbus.WithMatchInterface(notifyIface)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	ch := make(chan *dbus.Signal, 16)
	conn.Signal(ch)
	go n.listen(ch)
	var caps []string
	conn.Object(notifyName, notifyPath).Call(notifyIface+".GetCapabilities", 0).Store(&caps)
	n.caps = map[string]bool{}
	for _, c := range caps {
		n.caps[c] = true
	}
	n.conn = conn
	return conn, n.caps, nil
}

// send shows a notification of a received file; action, when set and the server supports
// actions, runs when the user clicks the notification or its "Open folder" button.
func (n *desktopNotifier) send(summary, body string, action func()) error {
	return n.sendAction(summary, body, lang.L("Open folder"), "transfer.complete", action)
}

// sendAction shows a notification whose action (a button labelled label, and a click on the
// notification) runs action, when set and the server supports actions. category is the
// notification spec's category hint.
func (n *desktopNotifier) sendAction(summary, body, label, category string, action func()) error {
	conn, caps, err := n.connection()
	if err != nil {
		return err
	}
	actions := []string{}
	if action != nil && caps["actions"] {
		actions = []string{"default", label, actionOpen, label}
	}
	if caps["body-markup"] {
		body = markupEscape(body)
	}
	hints := map[string]dbus.Variant{
		"desktop-entry": dbus.MakeVariant(AppID),
		"category":      dbus.MakeVariant(category),
		"urgency":       dbus.MakeVariant(byte(1)),
	}
	var id uint32
	err = conn.Object(notifyName, notifyPath).Call(notifyIface+".Notify", 0,
		"Skein", uint32(0), AppID, summary, body, actions, hints, int32(-1)).Store(&id)
	if err != nil {
		n.mu.Lock()
		if n.conn == conn && !conn.Connected() {
			n.conn = nil // reconnect next time
		}
		n.mu.Unlock()
		return err
	}
	if len(actions) > 0 {
		n.mu.Lock()
		n.actions[id] = action
		n.order = append(n.order, id)
		if len(n.order) > maxPendingActions {
			delete(n.actions, n.order[0])
			n.order = n.order[1:]
		}
		n.mu.Unlock()
	}
	return nil
}

// listen runs actions as the server reports clicks, and forgets closed notifications.
func (n *desktopNotifier) listen(ch <-chan *dbus.Signal) {
	for sig := range ch {
		if len(sig.Body) < 2 {
			continue
		}
		id, ok := sig.Body[0].(uint32)
		if !ok {
			continue
		}
		switch sig.Name {
		case notifyIface + ".ActionInvoked":
			key, _ := sig.Body[1].(string)
			if key != "default" && key != actionOpen {
				continue
			}
			n.mu.Lock()
			f := n.actions[id]
			delete(n.actions, id)
			n.mu.Unlock()
			if f != nil {
				f()
			}
		case notifyIface + ".NotificationClosed":
			n.mu.Lock()
			delete(n.actions, id)
			n.mu.Unlock()
		}
	}
}

// close drops the connection; later sends fail.
func (n *desktopNotifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
}
