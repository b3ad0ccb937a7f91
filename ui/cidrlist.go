package ui

import (
	"net/netip"
	"slices"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// cidrList edits a list of CIDRs kept in the prefs (exit-node exceptions, advertised routes):
// the helper's list with a remove button per entry, and an entry to add more. Every add or
// remove is sent at once as the whole new list; the helper validates it. A rejected value is
// explained under the entry, which keeps what the user typed.
type cidrList struct {
	a       *App
	content *fyne.Container
	rows    *fyne.Container
	none    *widget.Label
	entry   *widget.Entry
	add     *widget.Button
	errText *widget.Label
	// get reads the list from the prefs; patch makes the patch that replaces it.
	get   func(p *ipc.Prefs) []netip.Prefix
	patch func(list []string) ipc.PrefsPatch
	shown []netip.Prefix // what rows show
	built bool
	// sending: a change is in flight. Each change sends the whole list, so the next one waits
	// for its answer rather than overwrite it.
	sending  bool
	editable bool
}

func newCIDRList(a *App, placeholder string, get func(p *ipc.Prefs) []netip.Prefix, patch func([]string) ipc.PrefsPatch) *cidrList {
	c := &cidrList{a: a, get: get, patch: patch,
		rows: container.NewVBox(), none: widget.NewLabel(lang.L("None")), entry: widget.NewEntry(), errText: widget.NewLabel("")}
	c.none.Importance = widget.LowImportance
	c.entry.SetPlaceHolder(placeholder)
	c.entry.OnChanged = func(string) { c.updateAdd() }
	c.entry.OnSubmitted = func(string) { c.submit() }
	c.add = widget.NewButtonWithIcon(lang.L("Add"), theme.ContentAddIcon(), c.submit)
	c.errText.Wrapping = fyne.TextWrapWord
	c.errText.Importance = widget.DangerImportance
	c.errText.Hide()
	c.content = container.NewVBox(c.rows, c.none, container.NewBorder(nil, nil, nil, c.add, c.entry), c.errText)
	return c
}

// submit adds what the entry holds (one or more CIDRs, separated by commas or spaces).
func (c *cidrList) submit() {
	text := strings.TrimSpace(c.entry.Text)
	if text == "" || !c.editable || c.sending {
		return
	}
	c.send(append(prefixStrings(c.shown), text), true)
}

func (c *cidrList) remove(p netip.Prefix) {
	if !c.editable || c.sending {
		return
	}
	rest := slices.DeleteFunc(slices.Clone(c.shown), func(q netip.Prefix) bool { return q == p })
	c.send(prefixStrings(rest), false)
}

// send replaces the list; fromEntry says the entry's text is part of it.
func (c *cidrList) send(list []string, fromEntry bool) {
	if list == nil {
		list = []string{} // an empty list clears; nil would mean "unchanged"
	}
	c.sending = true
	c.updateAdd()
	sent := c.entry.Text
	c.a.patchPrefs(c.patch(list), patchOpts{inline: func(e *ipc.Error) {
		c.sending = false
		if e != nil {
			c.showError(e)
			return
		}
		c.showError(nil)
		if fromEntry && c.entry.Text == sent {
			c.entry.SetText("")
		}
	}})
}

func (c *cidrList) showError(e *ipc.Error) {
	if e == nil {
		c.errText.SetText("")
		c.errText.Hide()
		return
	}
	msg := e.Message
	if fix := fixCommand(e); fix != "" {
		msg += "\n" + lang.L("Fix:") + " " + fix
	}
	c.errText.SetText(msg)
	c.errText.Show()
}

func (c *cidrList) updateAdd() {
	if c.editable && !c.sending && strings.TrimSpace(c.entry.Text) != "" {
		c.add.Enable()
	} else {
		c.add.Disable()
	}
}

// update shows the prefs' list; rows are rebuilt only when it changed.
func (c *cidrList) update(a *App) {
	v := &a.v
	c.editable = v.reachable && v.havePrefs
	if c.editable {
		c.entry.Enable()
	} else {
		c.entry.Disable()
	}
	c.updateAdd()
	list := c.get(&v.prefs)
	if c.built && slices.Equal(list, c.shown) {
		return
	}
	c.built = true
	c.shown = slices.Clone(list)
	objs := make([]fyne.CanvasObject, 0, len(list))
	for _, p := range list {
		rm := widget.NewButtonWithIcon("", theme.DeleteIcon(), func() { c.remove(p) })
		rm.Importance = widget.LowImportance
		l := widget.NewLabel(p.String())
		l.Selectable = true
		objs = append(objs, container.NewBorder(nil, nil, nil, rm, l))
	}
	c.rows.Objects = objs
	c.rows.Refresh()
	if len(list) == 0 {
		c.none.Show()
	} else {
		c.none.Hide()
	}
	c.content.Refresh()
}
