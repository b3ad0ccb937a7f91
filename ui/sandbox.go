package ui

import (
	"os"
)

// Inside a Flatpak sandbox the app cannot hand file:// URLs to the host, write the session's
// autostart entries or find other instances through its private runtime directory: those
// features go through the desktop portals (portal.go) and the session bus (dbusapp.go).

// flatpakInfo is the file flatpak puts at the root of every sandbox; xdg-desktop-portal and
// GLib tell a sandboxed app by it too. Tests point it elsewhere.
var flatpakInfo = "/.flatpak-info"

// PortalEnv, set to 1, makes the app use the portals outside a Flatpak as well (as
// GTK_USE_PORTAL does for GTK): for other sandboxes, and for tests with stand-in portals.
const PortalEnv = "SKEIN_USE_PORTAL"

// usePortals tells whether "Open folder" and "Start at login" must go through the portals.
func usePortals() bool {
	if os.Getenv(PortalEnv) == "1" {
		return true
	}
	_, err := os.Stat(flatpakInfo)
	return err == nil
}
