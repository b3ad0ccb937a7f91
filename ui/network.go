package ui

import (
	"context"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// networkSection is the Settings page's network part: the port mapping switch and a network
// check, the report `skein netcheck` prints (UDP, public addresses, the NAT's mapping, what the
// router offers for port mapping, DERP latencies), with a button to copy it.
type networkSection struct {
	a       *App
	content *fyne.Container
	mapping *widget.Check
	run     *widget.Button
	copy    *widget.Button
	note    *widget.Label
	report  *widget.Label
	text    string
	running bool
	loading bool // set while update changes the check, so its callback does nothing
}

// Texts of the section.
const (
	settingsPortMapping = "Ask the router to forward a port (UPnP, NAT-PMP, PCP)"
	networkCheck        = "Check network"
	networkCopy         = "Copy report"
)

func newNetworkSection(a *App) *networkSection {
	n := &networkSection{a: a, note: widget.NewLabel(""), report: widget.NewLabel("")}
	n.mapping = widget.NewCheck(lang.L(settingsPortMapping), func(on bool) {
		if !n.loading {
			a.patchPrefs(ipc.PrefsPatch{PortMapping: &on}, patchOpts{})
		}
	})
	n.run = widget.NewButtonWithIcon(lang.L(networkCheck), theme.SearchIcon(), n.check)
	n.copy = widget.NewButtonWithIcon(lang.L(networkCopy), theme.ContentCopyIcon(), func() { a.copyText(n.text) })
	n.copy.Hide()
	n.note.Wrapping = fyne.TextWrapWord
	n.note.SizeName = theme.SizeNameCaptionText
	n.report.Selectable = true
	n.report.TextStyle = fyne.TextStyle{Monospace: true}
	n.report.Hide()
	n.content = container.NewVBox(n.mapping, container.NewHBox(n.run, n.copy), n.note, n.report)
	return n
}

// check runs a netcheck (root and the operator get a new one; others skeind's last report).
func (n *networkSection) check() {
	if n.running {
		return
	}
	n.running = true
	n.run.Disable()
	n.note.SetText(lang.L("Checking…"))
	var rep ipc.NetcheckReport
	n.a.call(20*time.Second, func(ctx context.Context) error {
		var err error
		rep, err = n.a.client.Netcheck(ctx)
		return err
	}, func(err error) {
		n.running = false
		n.update(n.a)
		if err != nil {
			n.note.SetText(asError(err).Message)
			return
		}
		n.show(rep)
	})
}

// show puts a report on the page.
func (n *networkSection) show(rep ipc.NetcheckReport) {
	n.text = strings.TrimLeft(rep.Text(), "\n")
	n.report.SetText(strings.ReplaceAll(n.text, "\t", "    "))
	n.report.Show()
	n.copy.Show()
	switch {
	case rep.Cached && rep.Time.IsZero():
		n.note.SetText(lang.L("skeind has no report yet; a new check needs root or the operator (sudo skein set --operator=$USER)."))
	case rep.Cached:
		n.note.SetText(lang.L("skeind's last report, from {{.Time}}: a new check needs root or the operator.", map[string]any{"Time": rep.Time.Local().Format(time.TimeOnly)}))
	default:
		n.note.SetText("")
	}
}

func (n *networkSection) update(a *App) {
	n.loading = true
	defer func() { n.loading = false }()
	v := &a.v
	if on := v.havePrefs && !v.prefs.NoPortMapping; n.mapping.Checked != on {
		n.mapping.SetChecked(on)
	}
	if v.reachable && v.havePrefs {
		n.mapping.Enable()
	} else {
		n.mapping.Disable()
	}
	if v.reachable && v.st.State == ipc.StateRunning && !n.running {
		n.run.Enable()
	} else {
		n.run.Disable()
	}
}
