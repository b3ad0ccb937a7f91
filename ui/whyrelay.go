package ui

import (
	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// relayWhy is the peer pane's answer to "why relay?": for an active peer reached over a relay,
// the most likely cause in one sentence (skeind finds it, as `skein why` does) and a button
// that copies the command or setting that fixes it.
type relayWhy struct {
	a        *App
	content  *fyne.Container
	sentence *widget.Label
	copyFix  *widget.Button
	fix      string
}

// Label of the copy button.
const relayCopyFix = "Copy fix"

func newRelayWhy(a *App) *relayWhy {
	w := &relayWhy{a: a, sentence: widget.NewLabel("")}
	w.sentence.Wrapping = fyne.TextWrapWord
	w.sentence.Selectable = true
	w.copyFix = widget.NewButtonWithIcon(lang.L(relayCopyFix), theme.ContentCopyIcon(), func() { w.a.copyText(w.fix) })
	icon := widget.NewIcon(theme.NewWarningThemedResource(theme.InfoIcon()))
	w.content = container.NewBorder(nil, nil, container.NewVBox(icon), nil,
		container.NewVBox(w.sentence, container.NewHBox(w.copyFix)))
	w.content.Hide()
	return w
}

// show fills the row for p: hidden unless p is relayed and skeind named a cause.
func (w *relayWhy) show(p *ipc.Peer) {
	c := p.RelayCause
	if c == nil || p.Path().Kind != ipc.PathRelay {
		w.content.Hide()
		return
	}
	w.sentence.SetText(relayWhyText(c))
	w.fix = c.Fix
	if c.Fix == "" {
		w.copyFix.Hide()
	} else {
		w.copyFix.Show()
	}
	w.content.Show()
}

// relayWhyText is the sentence: the cause, then its fix (a command or setting, as skeind gives
// it and `skein why` prints it).
func relayWhyText(c *ipc.Cause) string {
	if c.Fix == "" {
		return lang.L("Why relay? {{.Cause}}", map[string]any{"Cause": relayCauseText(c)})
	}
	return lang.L("Why relay? {{.Cause}} Fix: {{.Fix}}", map[string]any{"Cause": relayCauseText(c), "Fix": c.Fix})
}

// relayCauseText words a cause in the user's language from its code and data; a cause this
// app does not know, or one without the data its sentence names, keeps skeind's summary.
func relayCauseText(c *ipc.Cause) string {
	peer, port := c.Data["peer"], c.Data["port"]
	data := map[string]any{"Peer": peer, "Port": port}
	if peer == "" || port == "" {
		return c.Summary
	}
	switch c.Code {
	case ipc.CausePeerOffline:
		return lang.L("{{.Peer}} is offline: control has no connection from it.", data)
	case ipc.CausePeerNoDisco:
		return lang.L("{{.Peer}} has no disco key, so no direct path can be worked out with it; only the relay carries its traffic.", data)
	case ipc.CauseUDPBlocked:
		return lang.L("UDP is blocked on this network: only the relay (over TCP) gets through.")
	case ipc.CausePeerUDPBlocked:
		return lang.L("UDP is blocked on {{.Peer}}'s network.", data)
	case ipc.CauseFirewall:
		return lang.L("This machine's firewall drops inbound UDP {{.Port}}: peers whose NAT picks a new port per destination cannot reach it.", data)
	case ipc.CauseHardNATBoth:
		return lang.L("Both this machine and {{.Peer}} are behind hard NAT, and neither has a port mapping.", data)
	case ipc.CauseHardNATLocal:
		return lang.L("This machine is behind a hard NAT without a port mapping: a peer reaches it only if the peer's own NAT is easy.")
	case ipc.CauseHardNATPeer:
		return lang.L("{{.Peer}} is behind a hard NAT without a port mapping.", data)
	case ipc.CauseDoubleNAT:
		return lang.L("There is another NAT in front of your router (double NAT): a port mapping on your router alone does not open a way in.")
	case ipc.CauseCGNAT:
		return lang.L("Your provider's carrier-grade NAT is in front of you: a port mapping on your router alone does not open a way in.")
	case ipc.CauseNoPong:
		return lang.L("Pings to {{.Peer}}'s addresses go unanswered: something between us drops UDP to it.", data)
	}
	return c.Summary
}
