package ui

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/skeinvpn/skein/ipc"

	"fyne.io/fyne/v2/lang"
)

// The "Start at login" option starts the app in the tray when the user logs in. Outside a
// sandbox it writes an XDG autostart entry ($XDG_CONFIG_HOME/autostart/APPID.desktop). Inside
// a Flatpak that directory is the sandbox's private copy, which the session never reads, so the
// Background portal is asked instead: it writes the session's entry, which runs the app through
// `flatpak run` with autostartCommand. The sandbox cannot read that entry back, so the portal's
// last answer is kept in the app's preferences.

// autostartCommand is the command line the portal's entry runs (inside the sandbox).
var autostartCommand = []string{"skein-gui", "--minimized"}

// prefStartAtLogin remembers the portal's answer.
const prefStartAtLogin = "startAtLogin"

// startAtLoginEnabled tells whether "Start at login" is on.
func (a *App) startAtLoginEnabled() bool {
	if usePortals() {
		return a.fa.Preferences().Bool(prefStartAtLogin)
	}
	return autostartEnabled(a.opts.AutostartDir)
}

// setStartAtLogin switches "Start at login" (UI goroutine). The portal may ask the user first,
// so its answer arrives later; the checkbox waits for it, disabled.
func (a *App) setStartAtLogin(on bool) {
	s := a.settings
	fail := func(err error) {
		a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrInternal, Message: lang.L("start at login: {{.Err}}", map[string]any{"Err": err.Error()})}, true
	}
	if !usePortals() {
		if err := setAutostart(a.opts.AutostartDir, a.exePath(), on); err != nil {
			fail(err)
		} else {
			s.autostartOn = on
		}
		a.refresh()
		return
	}
	s.autostart.Disable()
	go func() {
		got, err := portalBackground(on, autostartCommand, lang.L("Start Skein in the tray when you log in"))
		a.do(func() {
			s.autostart.Enable()
			if err != nil {
				fail(err)
			} else {
				a.fa.Preferences().SetBool(prefStartAtLogin, got)
				s.autostartOn = got
				if got != on {
					fail(errPortalDenied)
				}
			}
			a.refresh()
		})
	}()
}

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
