package ui

import (
	"slices"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"
)

// notifyPage is the Notifications page (in Settings): which desktop notifications Skein sends,
// and the devices watched (each peer's pane has the switch that adds it).
type notifyPage struct {
	content    fyne.CanvasObject
	connection *widget.Check
	watched    *widget.Check
	relay      *widget.Check
	expiry     *widget.Check
	devices    *widget.Label
	loading    bool
}

func newNotifyPage(a *App) *notifyPage {
	p := &notifyPage{devices: widget.NewLabel("")}
	set := func(dst *bool) func(bool) {
		return func(on bool) {
			if p.loading {
				return
			}
			*dst = on
			a.saveNotifySettings()
			a.refresh()
		}
	}
	p.connection = widget.NewCheck(lang.L("Connection lost and restored"), set(&a.notifyOpts.connection))
	p.watched = widget.NewCheck(lang.L("A device I watch comes online or goes offline"), set(&a.notifyOpts.watched))
	p.relay = widget.NewCheck(lang.L("A peer's path changes to relay"), set(&a.notifyOpts.relay))
	p.expiry = widget.NewCheck(lang.L("This device's key expires soon (7 days and 1 day before)"), set(&a.notifyOpts.expiry))
	caption := func(s string) *widget.Label {
		l := widget.NewLabel(s)
		l.Wrapping = fyne.TextWrapWord
		l.SizeName = theme.SizeNameCaptionText
		return l
	}
	p.devices.Wrapping = fyne.TextWrapWord
	title := widget.NewLabel(lang.L("Notifications"))
	title.TextStyle = fyne.TextStyle{Bold: true}
	title.SizeName = theme.SizeNameSubHeadingText
	p.content = container.NewVScroll(container.NewPadded(container.NewVBox(
		title,
		caption(lang.L("Skein tells you on the desktop when something changes that you care about; each notification opens the page it is about. A device that keeps coming and going is summarized once a minute.")),
		p.connection,
		caption(lang.L("When this device loses its tailnet (the helper stops, the network or the control server goes away) for more than a few seconds, and when it is back.")),
		p.watched,
		caption(lang.L("Watch a device from its pane on the Peers tab.")),
		p.devices,
		p.relay,
		caption(lang.L("Relayed traffic is slower; this tells you when a direct path is lost.")),
		p.expiry,
	)))
	return p
}

func (p *notifyPage) update(a *App) {
	p.loading = true
	defer func() { p.loading = false }()
	for c, on := range map[*widget.Check]bool{p.connection: a.notifyOpts.connection, p.watched: a.notifyOpts.watched,
		p.relay: a.notifyOpts.relay, p.expiry: a.notifyOpts.expiry} {
		if c.Checked != on {
			c.SetChecked(on)
		}
	}
	setText(p.devices, watchedText(a))
}

// watchedText names the watched devices: "Watched: nas, phone", or that there are none.
func watchedText(a *App) string {
	var names []string
	for id := range a.watched {
		name := id
		for i := range a.v.st.Peers {
			if a.v.st.Peers[i].StableID == id {
				name = shortName(&a.v.st.Peers[i])
			}
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return lang.L("No device watched yet.")
	}
	slices.Sort(names)
	return lang.L("Watched: {{.Names}}", map[string]any{"Names": strings.Join(names, ", ")})
}
