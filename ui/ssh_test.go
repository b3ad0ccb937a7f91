package ui

import (
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

// The Settings switch sets RunSSH in skeind; the note follows what skeind reports.
func TestSettingsSSHSwitch(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{LoginServer: "https://control.example.test"})
	h.ui(func() { h.a.tabs.selectSettings() })
	h.eventually("switch", func() string {
		if c := h.a.settings.ssh.check; !c.Visible() || c.Disabled() || c.Text != settingsRunSSH || c.Checked {
			return "the SSH switch is not shown, off and enabled"
		}
		return h.expect("Peers the tailnet's SSH policy allows could log in as the local users it names, with no keys to copy.")
	})
	h.ui(func() { h.a.settings.ssh.check.SetChecked(true) })
	h.eventually("pref set", func() string {
		if !h.be.Prefs().RunSSH {
			return "RunSSH not set in the helper"
		}
		return ""
	})
	st := running()
	st.Health = []ipc.Issue{{Code: "ssh", Message: "Tailscale SSH is on but cannot accept connections: the session helper is not running"}}
	h.be.SetStatus(st)
	h.eventually("problem shown", func() string { return h.expect(st.Health[0].Message) })
	st = running()
	st.Self.SSHHostKeys = []string{"ssh-ed25519 AAAA"}
	h.be.SetStatus(st)
	h.eventually("working", func() string {
		return h.expect("Peers the tailnet's SSH policy allows log in with: ssh USER@skein-a.lab.ts.net")
	})
	h.ui(func() { h.a.settings.ssh.check.SetChecked(false) })
	h.eventually("pref cleared", func() string {
		if h.be.Prefs().RunSSH {
			return "RunSSH still set"
		}
		return ""
	})
}

// A peer that runs Tailscale SSH offers the command to log in there; one that does not, none.
func TestCopySSHCommand(t *testing.T) {
	st := running()
	st.Peers[1].SSHHostKeys = []string{"ssh-ed25519 AAAA"} // gamma
	h := newHarness(t, st, ipc.Prefs{})
	h.eventually("rows", func() string {
		if len(h.rows()) != 3 {
			return "rows: " + rowsString(h.rows())
		}
		return ""
	})
	h.ui(func() { h.a.peers.list.Select(0) }) // beta: no SSH
	h.eventually("beta", func() string { return h.expect("beta.lab.ts.net", "[Copy IP]") })
	h.ui(func() {
		if h.look().buttons[peerCopySSH] != nil {
			t.Error("Copy ssh command shown for a peer without Tailscale SSH")
		}
	})
	h.ui(func() { h.a.peers.list.Select(1) }) // gamma
	h.eventually("gamma", func() string { return h.expect("gamma.lab.ts.net", "["+peerCopySSH+"]") })
	h.tap(peerCopySSH)
	want := "ssh " + currentUser() + "@gamma.lab.ts.net"
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != want {
			t.Errorf("clipboard = %q, want %q", got, want)
		}
	})
}
