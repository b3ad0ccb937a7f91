package ui

import (
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// accountPage is the Account tab: who is logged in where, log in (interactive or with a
// pre-auth key, showing the login URL to visit), and log out.
type accountPage struct {
	content   fyne.CanvasObject
	who       *widget.Label
	server    *widget.Entry
	authKey   *widget.Entry
	login     *widget.Button
	loginBox  *fyne.Container
	urlBox    *fyne.Container
	url       *widget.Entry
	waiting   *widget.Label
	logout    *widget.Button
	box       *fyne.Container
	serverSet bool // the server entry was filled from skeind once
}

func newAccountPage(a *App) *accountPage {
	p := &accountPage{
		who:     widget.NewLabel(""),
		server:  widget.NewEntry(),
		authKey: widget.NewPasswordEntry(),
		url:     widget.NewEntry(),
		waiting: widget.NewLabel("Waiting for the login to be approved…"),
	}
	p.who.Wrapping = fyne.TextWrapWord
	p.server.SetPlaceHolder("https://headscale.example.com")
	p.authKey.SetPlaceHolder("optional pre-auth key")
	p.login = widget.NewButtonWithIcon("Log in", theme.LoginIcon(), func() {
		a.login(strings.TrimSpace(p.server.Text), strings.TrimSpace(p.authKey.Text))
		p.authKey.SetText("")
	})
	p.login.Importance = widget.HighImportance
	p.url.TextStyle = fyne.TextStyle{}
	open := widget.NewButtonWithIcon("Open in browser", theme.ComputerIcon(), func() { a.openURL(p.url.Text) })
	open.Importance = widget.HighImportance
	cp := widget.NewButtonWithIcon("Copy", theme.ContentCopyIcon(), func() { a.copyText(p.url.Text) })
	p.urlBox = container.NewVBox(
		widget.NewLabel("Visit this address to log in:"),
		container.NewBorder(nil, nil, nil, container.NewHBox(cp, open), p.url),
		p.waiting,
	)
	p.logout = widget.NewButtonWithIcon("Log out", theme.LogoutIcon(), func() {
		dialog.ShowConfirm("Log out?", "This device leaves the tailnet until you log in again.", func(ok bool) {
			if ok {
				a.logout()
			}
		}, a.win)
	})
	p.loginBox = container.NewVBox(
		widget.NewForm(
			widget.NewFormItem("Login server", p.server),
			widget.NewFormItem("Auth key", p.authKey),
		),
		container.NewHBox(p.login),
	)
	p.box = container.NewVBox(p.who, p.loginBox, p.urlBox, container.NewHBox(p.logout))
	p.content = container.NewVScroll(container.NewPadded(p.box))
	return p
}

func (p *accountPage) update(a *App) {
	before := [3]bool{p.loginBox.Visible(), p.urlBox.Visible(), p.logout.Visible()}
	defer func() {
		// Rows shown or hidden: lay the page out again (a row shown after a resize keeps its
		// old width otherwise).
		if [3]bool{p.loginBox.Visible(), p.urlBox.Visible(), p.logout.Visible()} != before {
			p.box.Refresh()
		}
	}()
	v := &a.v
	server := v.st.LoginServer
	if server == "" {
		server = v.prefs.LoginServer
	}
	if !p.serverSet && server != "" {
		p.server.SetText(server)
		p.serverSet = true
	}
	loggedIn := v.reachable && v.st.State != ipc.StateNeedsLogin && v.st.State != ipc.StateNoState && v.st.Self != nil
	switch {
	case !v.reachable:
		p.who.SetText("Not connected to skeind.")
	case loggedIn:
		p.who.SetText("Logged in as " + selfUser(&v.st) + " on " + orDash(server) + ".")
	case v.st.State == ipc.StateNeedsLogin:
		p.who.SetText("Logged out. Enter your login server and log in; without an auth key you get an address to approve the login in your browser.")
	default:
		p.who.SetText(v.stateText())
	}
	if v.reachable && !loggedIn {
		p.loginBox.Show()
	} else {
		p.loginBox.Hide()
	}
	if a.busy || !v.reachable {
		p.login.Disable()
	} else {
		p.login.Enable()
	}
	url := a.authURL
	if url == "" {
		url = v.st.AuthURL
	}
	if url != "" && v.reachable && v.st.State != ipc.StateRunning {
		p.url.SetText(url)
		p.urlBox.Show()
	} else {
		p.urlBox.Hide()
	}
	if loggedIn && !a.busy {
		p.logout.Show()
		p.logout.Enable()
	} else if loggedIn {
		p.logout.Disable()
	} else {
		p.logout.Hide()
	}
}

// selfUser is the login name of this device's user.
func selfUser(st *ipc.Status) string {
	if st.Self == nil {
		return "—"
	}
	if o := owner(st, st.Self); o != "" {
		return o
	}
	return "—"
}
