package ui

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"fyne.io/fyne/v2/lang"

	"github.com/skeinvpn/skein/ipc"
)

// The helper is missing or stopped: the packages (and make install) create /run/skein at boot
// through tmpfiles.d, so a missing directory means skeind is not installed at all, while an
// existing one with nothing answering means it is installed but not running.

// helperSocket is the socket the app talks to, set when the App is made. Atomic because an
// App's background goroutines read it while another App may be made (tests make many).
var helperSocket atomic.Pointer[string]

func setHelperSocket(path string) { helperSocket.Store(&path) }

// helperDir is the directory of the helper's socket.
func helperDir() string {
	if p := helperSocket.Load(); p != nil {
		return filepath.Dir(*p)
	}
	return filepath.Dir(ipc.DefaultSocket)
}

// osReleasePath is the host's os-release (inside a Flatpak the host's copy is under /run/host).
var osReleasePath = func() string {
	if os.Getenv("FLATPAK_ID") != "" {
		return "/run/host/os-release"
	}
	return "/etc/os-release"
}

func helperInstalled() bool {
	fi, err := os.Stat(helperDir())
	return err == nil && fi.IsDir()
}

// osRelease reads ID and ID_LIKE.
func osRelease(path string) (id string, like []string) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "ID_LIKE":
			like = strings.Fields(v)
		}
	}
	return id, like
}

const fromSource = `git clone https://github.com/skeinvpn/skein && cd skein && sudo env "PATH=$PATH" make install-helper`

// installCommand is the command that installs the helper on the distribution described by the
// os-release file at path.
func installCommand(path string) string {
	id, like := osRelease(path)
	is := func(names ...string) bool {
		for _, n := range names {
			if id == n {
				return true
			}
			for _, l := range like {
				if l == n {
					return true
				}
			}
		}
		return false
	}
	switch {
	case is("debian", "ubuntu"):
		return "sudo apt install ./skein_*_amd64.deb   # the .deb from https://github.com/skeinvpn/skein/releases"
	case is("fedora", "rhel", "centos"):
		return "sudo dnf install golang make git && " + fromSource
	case is("arch"):
		return "sudo pacman -S --needed go make git && " + fromSource
	case is("opensuse", "suse", "opensuse-tumbleweed", "opensuse-leap"):
		return "sudo zypper install go make git && " + fromSource
	}
	return fromSource
}

// helperMissingTitle, Hint and Fix describe an unreachable helper: not installed, or stopped.
func helperMissingTitle() string {
	if !helperInstalled() {
		return lang.L("Skein's helper is not installed")
	}
	return lang.L("Skein's helper is installed but not running")
}

func helperMissingHint() string {
	if !helperInstalled() {
		if os.Getenv("FLATPAK_ID") != "" {
			return lang.L("Skein needs its helper service, skeind, on this computer: it does the networking, this app shows and controls it. Install it with the command below, then reopen Skein.")
		}
		return lang.L("Skein needs its helper service, skeind, on this computer: it does the networking, this app shows and controls it. Install it with the command below.")
	}
	return lang.L("Start it with the command below; the app reconnects by itself. If it stops again, `journalctl -u skeind -b` shows why.")
}

func helperMissingFix() string {
	if !helperInstalled() {
		return installCommand(osReleasePath())
	}
	return "sudo systemctl enable --now skeind"
}
