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

// relayWhyText is the sentence: the cause, then its fix. The cause is skeind's sentence (as
// `skein why` prints it); the words around it are the user's language.
func relayWhyText(c *ipc.Cause) string {
	if c.Fix == "" {
		return lang.L("Why relay? {{.Cause}}", map[string]any{"Cause": c.Summary})
	}
	return lang.L("Why relay? {{.Cause}} Fix: {{.Fix}}", map[string]any{"Cause": c.Summary, "Fix": c.Fix})
}
