package ui

import (
	"fmt"
	"time"

	"fyne.io/fyne/v2/lang"
	"github.com/godbus/dbus/v5"
)

// "Save received files while Skein is closed" (on by default) runs the receiver
// (receiver.go) where it survives the app: the packages' systemd user unit, enabled and started
// through the user's service manager on the session bus; inside a Flatpak, the Background
// portal's autostart entry runs `skein-gui --receive` at login when the app itself is not
// started there ("Start at login" wins: the app then receives).

// ReceiverUnit is the systemd user unit the packages and make install ship.
const ReceiverUnit = "skein-receive.service"

// receiverCommand is the command line of the Flatpak's autostart entry for the receiver.
var receiverCommand = []string{"skein-gui", "--receive"}

const (
	systemdName    = "org.freedesktop.systemd1"
	systemdPath    = dbus.ObjectPath("/org/freedesktop/systemd1")
	systemdManager = "org.freedesktop.systemd1.Manager"
)

// receiveWhileClosed is the setting (default on).
func (a *App) receiveWhileClosed() bool {
	return a.fa.Preferences().BoolWithFallback(prefReceiveBackground, true)
}

// setReceiveWhileClosed switches the setting and the receiver with it (UI goroutine).
func (a *App) setReceiveWhileClosed(on bool) {
	a.fa.Preferences().SetBool(prefReceiveBackground, on)
	a.applyReceiver(on)
	a.refresh()
}

// applyReceiver makes the receiver run, or not, as the setting says; the result (or why it
// cannot) is shown under the setting.
func (a *App) applyReceiver(on bool) {
	if usePortals() {
		if a.startAtLoginEnabled() {
			a.receiverNote = ""
			return // the app starts at login and receives itself
		}
		go func() {
			got, err := portalBackground(on, receiverCommand, lang.L("Save received files while Skein is closed"))
			a.do(func() {
				switch {
				case err != nil:
					a.receiverNote = lang.L("The desktop did not start the receiver: {{.Err}}", map[string]any{"Err": err.Error()})
				case got != on:
					a.receiverNote = lang.L("The desktop did not allow Skein to run in the background.")
				default:
					a.receiverNote = ""
				}
				a.refresh()
			})
		}()
		return
	}
	go func() {
		err := systemdUserUnit(ReceiverUnit, on)
		a.do(func() {
			if err != nil {
				a.opts.Logf("receiver unit: %v", err)
				a.receiverNote = lang.L("The receiver service is not available here ({{.Err}}); files wait in skeind until Skein runs.", map[string]any{"Err": err.Error()})
			} else {
				a.receiverNote = ""
			}
			a.refresh()
		})
	}()
}

// systemdUserUnit enables and starts (or stops and disables) a unit of the user's service
// manager.
func systemdUserUnit(unit string, on bool) error {
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		return err
	}
	defer conn.Close()
	obj := conn.Object(systemdName, systemdPath)
	call := func(method string, args ...any) error {
		c := obj.Call(systemdManager+"."+method, 0, args...)
		if c.Err != nil {
			return fmt.Errorf("%s: %w", method, c.Err)
		}
		return nil
	}
	if on {
		if err := call("EnableUnitFiles", []string{unit}, false, true); err != nil {
			return err
		}
		return call("StartUnit", unit, "replace")
	}
	if err := call("StopUnit", unit, "replace"); err != nil {
		return err
	}
	return call("DisableUnitFiles", []string{unit}, false)
}

// ensureReceiver applies the setting a while after the app started, outside a sandbox (where
// it is cheap and idempotent, and puts the receiver back should the user's manager have lost
// it); the portal is asked only when the setting changes.
func (a *App) ensureReceiver() {
	if a.opts.NoReceiver || usePortals() {
		return
	}
	a.later(receiverDelay, func() {
		if a.receiveWhileClosed() {
			a.applyReceiver(true)
		}
	})
}

// receiverDelay keeps the receiver's set-up out of the app's start.
var receiverDelay = 3 * time.Second
