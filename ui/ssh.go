package ui

import (
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// Tailscale SSH in the app: a switch in Settings (`skein set --ssh`), and on a peer that runs
// it, a button that copies the command to log in there.

// Labels.
const (
	settingsRunSSH = "Let peers log in to this device with SSH (Tailscale SSH)"
	peerCopySSH    = "Copy ssh command"
)

// sshSection is the Settings row for Tailscale SSH: the switch, and a note on what it does or
// why it does not work.
type sshSection struct {
	content fyne.CanvasObject
	check   *widget.Check
	note    *widget.Label
	loading bool
}

func newSSHSection(a *App) *sshSection {
	s := &sshSection{note: widget.NewLabel("")}
	s.note.Wrapping = fyne.TextWrapWord
	s.note.SizeName = theme.SizeNameCaptionText
	s.check = widget.NewCheck(lang.L(settingsRunSSH), func(on bool) {
		if !s.loading {
			a.patchPrefs(ipc.PrefsPatch{RunSSH: &on}, patchOpts{})
		}
	})
	s.content = container.NewVBox(s.check, s.note)
	return s
}

func (s *sshSection) update(a *App) {
	s.loading = true
	defer func() { s.loading = false }()
	v := &a.v
	if s.check.Checked != v.prefs.RunSSH {
		s.check.SetChecked(v.prefs.RunSSH)
	}
	if v.reachable && v.havePrefs {
		s.check.Enable()
	} else {
		s.check.Disable()
	}
	s.note.SetText(sshNote(v))
}

// sshNote explains the switch, or says what keeps SSH from working.
func sshNote(v *view) string {
	if !v.prefs.RunSSH {
		return lang.L("Peers the tailnet's SSH policy allows could log in as the local users it names, with no keys to copy.")
	}
	for _, h := range v.st.Health {
		if h.Code == "ssh" {
			return h.Message
		}
	}
	if v.st.Self != nil && len(v.st.Self.SSHHostKeys) > 0 {
		return lang.L("Peers the tailnet's SSH policy allows log in with: {{.Command}}", map[string]any{"Command": "ssh USER@" + strings.TrimSuffix(v.st.Self.DNSName, ".")})
	}
	return lang.L("Starting…")
}

// sshCommand is how to log in to p as user ("" when p does not run Tailscale SSH).
func sshCommand(p *ipc.Peer, user string) string {
	if p == nil || len(p.SSHHostKeys) == 0 {
		return ""
	}
	host := strings.TrimSuffix(p.DNSName, ".")
	if host == "" {
		host = p.FirstIP()
	}
	if user == "" {
		return "ssh " + host
	}
	return "ssh " + user + "@" + host
}

// newCopySSHButton copies the ssh command for the peer peer() returns; showCopySSH shows it
// only for peers that run Tailscale SSH.
func newCopySSHButton(a *App, peer func() *ipc.Peer) *widget.Button {
	return widget.NewButtonWithIcon(lang.L(peerCopySSH), theme.ContentCopyIcon(), func() {
		a.copyText(sshCommand(peer(), currentUser()))
	})
}

func showCopySSH(b *widget.Button, p *ipc.Peer) {
	if sshCommand(p, "") != "" {
		b.Show()
	} else {
		b.Hide()
	}
}
