package ui

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallCommandPerDistribution(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ release, want string }{
		{"ID=debian\n", "sudo apt install ./skein_"},
		{"ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n", "sudo apt install ./skein_"},
		{"ID=fedora\n", "sudo dnf install golang make git && git clone"},
		{"ID=arch\n", "sudo pacman -S --needed go make git && git clone"},
		{"ID=opensuse-tumbleweed\nID_LIKE=\"opensuse suse\"\n", "sudo zypper install go make git && git clone"},
		{"ID=nixos\n", "git clone https://github.com/skeinvpn/skein"},
	} {
		p := filepath.Join(dir, "os-release")
		os.WriteFile(p, []byte(tc.release), 0o644)
		if got := installCommand(p); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q: %q, want prefix %q", tc.release, got, tc.want)
		}
	}
	if got := installCommand(filepath.Join(dir, "missing")); got != fromSource {
		t.Errorf("no os-release: %q", got)
	}
}

func TestHelperMissingVersusStopped(t *testing.T) {
	old := helperSocket.Load()
	t.Cleanup(func() { helperSocket.Store(old) })
	dir := t.TempDir()
	setHelperSocket(filepath.Join(dir, "skeind.sock"))
	if got := helperMissingTitle(); got != "Skein's helper is installed but not running" || helperMissingFix() != "sudo systemctl enable --now skeind" {
		t.Errorf("stopped: %q / %q", got, helperMissingFix())
	}
	setHelperSocket(filepath.Join(dir, "gone", "skeind.sock"))
	if got := helperMissingTitle(); got != "Skein's helper is not installed" || !strings.Contains(helperMissingHint(), "Install it") {
		t.Errorf("missing: %q / %q", got, helperMissingHint())
	}
	t.Setenv("FLATPAK_ID", "io.github.skeinvpn.Skein")
	if !strings.Contains(helperMissingHint(), "reopen Skein") || osReleasePath() != "/run/host/os-release" {
		t.Errorf("flatpak: %q", helperMissingHint())
	}
}
