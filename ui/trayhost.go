package ui

import (
	"github.com/godbus/dbus/v5"
)

// The tray host (a StatusNotifierWatcher: the panel's tray) may appear after the app started:
// autostart at login races the panel. The app starts its tray item anyway (fyne.io/systray
// registers it whenever a watcher takes the name) and follows the name's owner here, so that
// the window knows whether closing it can hide it or must quit.

const trayWatcherName = "org.kde.StatusNotifierWatcher"

// TrayHostPresent tells whether a tray host is on the session bus now.
func TrayHostPresent() bool {
	conn, err := dbus.SessionBus()
	if err != nil {
		return false
	}
	return hasOwner(conn, trayWatcherName)
}

func hasOwner(conn *dbus.Conn, name string) bool {
	var owner string
	err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, name).Store(&owner)
	return err == nil && owner != ""
}

// followTrayHost watches NameOwnerChanged for the tray host until the app stops, and tells
// the UI each change. Without a session bus there is nothing to follow.
func (a *App) followTrayHost() {
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		a.opts.Logf("tray host: %v", err)
		return
	}
	defer conn.Close()
	if err := conn.AddMatchSignal(
		dbus.WithMatchObjectPath("/org/freedesktop/DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, trayWatcherName),
	); err != nil {
		a.opts.Logf("tray host: %v", err)
		return
	}
	ch := make(chan *dbus.Signal, 8)
	conn.Signal(ch)
	// The host may have come between the app's first look and the match.
	a.do(func() { a.setTrayHost(hasOwner(conn, trayWatcherName)) })
	for {
		select {
		case <-a.ctx.Done():
			return
		case sig, ok := <-ch:
			if !ok {
				return
			}
			if len(sig.Body) < 3 {
				continue
			}
			owner, _ := sig.Body[2].(string)
			a.do(func() { a.setTrayHost(owner != "") })
		}
	}
}

// setTrayHost follows a tray host coming or going (UI goroutine).
func (a *App) setTrayHost(present bool) {
	if present == a.trayHost {
		return
	}
	a.opts.Logf("tray host %s", map[bool]string{true: "appeared", false: "went away"}[present])
	a.trayHost = present
	if present && a.trayStarted {
		// The item registers by itself; the host then reads the menu, icon and title, which
		// are current. Hosts take the item's title as its ID once registered: set ours again
		// after that, as at start.
		a.trayTextLive = false
		a.startTrayText()
	}
	a.showTrayHost()
}

// showTrayHost shows or hides the window's "no tray" note (UI goroutine).
func (a *App) showTrayHost() {
	if a.noTray == nil {
		return
	}
	if a.trayHost {
		a.noTray.Hide()
	} else {
		a.noTray.Show()
	}
	if a.root != nil {
		a.root.Refresh()
	}
}
