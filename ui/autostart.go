package ui

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The "Start at login" option writes an XDG autostart entry
// ($XDG_CONFIG_HOME/autostart/io.github.skeinvpn.Skein.desktop) that starts the app in the tray.

// autostartFile is the entry's path for dir ("" = the user's autostart directory).
func autostartFile(dir string) string {
	if dir == "" {
		base := os.Getenv("XDG_CONFIG_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".config")
		}
		dir = filepath.Join(base, "autostart")
	}
	return filepath.Join(dir, AppID+".desktop")
}

// autostartEntry is the desktop entry that starts exe minimized to the tray.
func autostartEntry(exe string) string {
	return fmt.Sprintf(`[Desktop Entry]
Type=Application
Name=Skein
Comment=Tailnet status and control in the system tray
Exec=%s --minimized
Icon=%s
Terminal=false
Categories=Network;
X-GNOME-Autostart-enabled=true
`, desktopExecQuote(exe), AppID)
}

// desktopExecQuote quotes a path for a desktop entry's Exec key when it needs it.
func desktopExecQuote(s string) string {
	if !strings.ContainsAny(s, " \t\n\"'\\><~|&;$*?#()`") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", `$`, `\$`)
	return `"` + r.Replace(s) + `"`
}

// autostartEnabled tells whether the entry exists and is not disabled.
func autostartEnabled(dir string) bool {
	b, err := os.ReadFile(autostartFile(dir))
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.Contains(s, "\nHidden=true") && !strings.Contains(s, "X-GNOME-Autostart-enabled=false")
}

// setAutostart writes or removes the entry.
func setAutostart(dir, exe string, on bool) error {
	path := autostartFile(dir)
	if !on {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(autostartEntry(exe)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
