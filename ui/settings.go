package ui

import (
	"context"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// settingsPage shows the prefs skeind has (hostname to change; operator and login server to
// read) and the app's own settings (start at login).
type settingsPage struct {
	content     fyne.CanvasObject
	hostname    *widget.Entry
	save        *widget.Button
	operator    *widget.Label
	operatorFix *widget.Label
	server      *widget.Label
	autostart   *widget.Check
	saved       string // the hostname as skeind last reported it
	edited      bool
	autostartOn bool // whether the autostart entry exists, read once and then kept
	loading     bool // set while update changes widgets, so their callbacks do nothing
}

func newSettingsPage(a *App) *settingsPage {
	s := &settingsPage{
		hostname:    widget.NewEntry(),
		operator:    widget.NewLabel(""),
		operatorFix: widget.NewLabel(""),
		server:      widget.NewLabel(""),
	}
	s.hostname.SetPlaceHolder("(this computer's host name)")
	s.hostname.OnChanged = func(text string) {
		if !s.loading {
			s.edited = text != s.saved
			s.update(a)
		}
	}
	s.save = widget.NewButton("Save", func() {
		name := strings.TrimSpace(s.hostname.Text)
		a.call(15*time.Second, func(ctx context.Context) error {
			p, err := a.client.SetPrefs(ctx, ipc.PrefsPatch{Hostname: &name})
			if err == nil {
				a.do(func() { a.v.prefs, a.v.havePrefs = p, true; s.edited = false })
			}
			return err
		}, nil)
	})
	s.operator.Selectable = true
	s.operatorFix.Wrapping = fyne.TextWrapWord
	s.operatorFix.Importance = widget.LowImportance
	s.server.Selectable = true
	s.autostart = widget.NewCheck("Start Skein in the tray when I log in", func(on bool) {
		if s.loading {
			return
		}
		if err := setAutostart(a.opts.AutostartDir, a.exePath(), on); err != nil {
			a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrInternal, Message: "start at login: " + err.Error()}, true
		} else {
			s.autostartOn = on
		}
		a.refresh()
	})
	form := widget.NewForm(
		widget.NewFormItem("Device name", container.NewBorder(nil, nil, nil, s.save, s.hostname)),
		widget.NewFormItem("Login server", s.server),
		widget.NewFormItem("Operator", container.NewVBox(s.operator, s.operatorFix)),
		widget.NewFormItem("Desktop", s.autostart),
	)
	s.content = container.NewVScroll(container.NewPadded(form))
	s.autostartOn = autostartEnabled(a.opts.AutostartDir)
	return s
}

func (s *settingsPage) update(a *App) {
	s.loading = true
	defer func() { s.loading = false }()
	v := &a.v
	s.saved = v.prefs.Hostname
	if !s.edited && s.hostname.Text != s.saved {
		s.hostname.SetText(s.saved)
	}
	editable := v.reachable && v.havePrefs
	if editable {
		s.hostname.Enable()
	} else {
		s.hostname.Disable()
	}
	if editable && s.edited {
		s.save.Enable()
	} else {
		s.save.Disable()
	}
	server := v.prefs.LoginServer
	if server == "" {
		server = v.st.LoginServer
	}
	s.server.SetText(orDash(server))
	if v.prefs.Operator != "" {
		s.operator.SetText(v.prefs.Operator)
	} else {
		s.operator.SetText("none (only root can change Skein's state)")
	}
	if u := currentUser(); u != "" && v.havePrefs && v.prefs.Operator != u && u != "root" {
		s.operatorFix.SetText("To connect and disconnect without sudo, run once: sudo skein set --operator=" + u)
		s.operatorFix.Show()
	} else {
		s.operatorFix.Hide()
	}
	if s.autostart.Checked != s.autostartOn {
		s.autostart.SetChecked(s.autostartOn)
	}
}
