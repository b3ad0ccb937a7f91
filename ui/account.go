package ui

import (
	"context"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// accountPage is the Account tab: who is logged in where and until when (Re-authenticate, Log
// out), every login skeind keeps (profiles: switch in one click, remove), and the login form,
// for this profile when it is logged out or for another account ("Add account").
type accountPage struct {
	a         *App
	content   fyne.CanvasObject
	who       *widget.Label
	expiry    *widget.Label
	reauth    *widget.Button
	logout    *widget.Button
	profiles  *fyne.Container
	profSig   string
	addOpen   bool // the "Add account" form is open
	add       *widget.Button
	formTitle *widget.Label
	server    *widget.Entry
	authKey   *widget.Entry
	nickname  *widget.Entry
	nickRow   *fyne.Container
	login     *widget.Button
	cancelAdd *widget.Button
	loginBox  *fyne.Container
	urlBox    *fyne.Container
	url       *widget.Entry
	waiting   *widget.Label
	box       *fyne.Container
	serverSet bool // the server entry was filled from skeind once
}

func newAccountPage(a *App) *accountPage {
	p := &accountPage{
		a:       a,
		who:     widget.NewLabel(""),
		expiry:  widget.NewLabel(""),
		server:  widget.NewEntry(),
		authKey: widget.NewPasswordEntry(),
		url:     widget.NewEntry(),
		waiting: widget.NewLabel(lang.L("Waiting for the login to be approved…")),
	}
	p.who.Wrapping = fyne.TextWrapWord
	p.expiry.Wrapping = fyne.TextWrapWord
	p.server.SetPlaceHolder("https://headscale.example.com")
	p.authKey.SetPlaceHolder(lang.L("optional pre-auth key"))
	p.nickname = widget.NewEntry()
	p.nickname.SetPlaceHolder(lang.L("e.g. work (optional)"))
	p.login = widget.NewButtonWithIcon(lang.L("Log in"), theme.LoginIcon(), func() {
		server, key := strings.TrimSpace(p.server.Text), strings.TrimSpace(p.authKey.Text)
		if p.addOpen {
			a.addAccount(server, key, strings.TrimSpace(p.nickname.Text))
		} else {
			a.login(server, key)
		}
		p.authKey.SetText("")
	})
	p.login.Importance = widget.HighImportance
	p.cancelAdd = widget.NewButton(lang.L("Cancel"), func() {
		p.addOpen = false
		a.refresh()
	})
	p.url.TextStyle = fyne.TextStyle{}
	open := widget.NewButtonWithIcon(lang.L("Open in browser"), theme.ComputerIcon(), func() { a.openURL(p.url.Text) })
	open.Importance = widget.HighImportance
	cp := widget.NewButtonWithIcon(lang.L("Copy"), theme.ContentCopyIcon(), func() { a.copyText(p.url.Text) })
	p.urlBox = container.NewVBox(
		widget.NewLabel(lang.L("Visit this address to log in:")),
		container.NewBorder(nil, nil, nil, container.NewHBox(cp, open), p.url),
		p.waiting,
	)
	p.reauth = widget.NewButtonWithIcon(lang.L("Re-authenticate"), theme.ViewRefreshIcon(), a.reauth)
	p.logout = widget.NewButtonWithIcon(lang.L("Log out"), theme.LogoutIcon(), func() {
		dialog.ShowConfirm(lang.L("Log out?"), lang.L("This device leaves the tailnet until you log in again."), func(ok bool) {
			if ok {
				a.logout()
			}
		}, a.win)
	})
	p.add = widget.NewButtonWithIcon(lang.L("Add account…"), theme.ContentAddIcon(), func() {
		p.addOpen = true
		a.refresh()
	})
	p.formTitle = widget.NewLabel("")
	p.formTitle.TextStyle = fyne.TextStyle{Bold: true}
	form := widget.NewForm(
		widget.NewFormItem(lang.L("Login server"), p.server),
		widget.NewFormItem(lang.L("Auth key"), p.authKey),
	)
	p.nickRow = container.NewVBox(widget.NewForm(widget.NewFormItem(lang.L("Name"), p.nickname)))
	p.loginBox = container.NewVBox(p.formTitle, form, p.nickRow, container.NewHBox(p.login, p.cancelAdd))
	p.profiles = container.NewVBox()
	heading := func(s string) *widget.Label {
		l := widget.NewLabel(s)
		l.TextStyle = fyne.TextStyle{Bold: true}
		l.SizeName = theme.SizeNameSubHeadingText
		return l
	}
	p.box = container.NewVBox(
		heading(lang.L("This device")), p.who, p.expiry, container.NewHBox(p.reauth, p.logout),
		widget.NewSeparator(),
		heading(lang.L("Accounts")), p.profiles, container.NewHBox(p.add),
		p.loginBox, p.urlBox,
	)
	p.content = container.NewVScroll(container.NewPadded(p.box))
	return p
}

func (p *accountPage) update(a *App) {
	shown := func() [5]bool {
		return [5]bool{p.loginBox.Visible(), p.urlBox.Visible(), p.logout.Visible(), p.expiry.Visible(), p.nickRow.Visible()}
	}
	before := shown()
	defer func() {
		// Rows shown or hidden: lay the page out again (a row shown after a resize keeps its
		// old width otherwise).
		if shown() != before {
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
		setText(p.who, lang.L("Not connected to skeind."))
	case loggedIn:
		setText(p.who, lang.L("Logged in as {{.User}} on {{.Server}}.", map[string]any{"User": selfUser(&v.st), "Server": orDash(server)}))
	case v.st.State == ipc.StateNeedsLogin:
		setText(p.who, lang.L("Logged out. Enter your login server and log in; without an auth key you get an address to approve the login in your browser."))
	default:
		setText(p.who, v.stateText())
	}
	if t := keyExpiryText(v, a.now()); t != "" && loggedIn {
		setText(p.expiry, t)
		p.expiry.Show()
	} else {
		p.expiry.Hide()
	}
	if _, warn := keyExpiry(v); warn {
		p.expiry.Importance = widget.WarningImportance
	} else {
		p.expiry.Importance = widget.MediumImportance
	}
	p.expiry.Refresh()

	// The form: this profile's login when logged out, else another account's when asked for.
	if loggedIn || !v.reachable {
		if !p.addOpen {
			p.loginBox.Hide()
		} else {
			p.loginBox.Show()
		}
	} else {
		p.addOpen = false
		p.loginBox.Show()
	}
	if p.addOpen {
		setText(p.formTitle, lang.L("Add another account"))
		p.formTitle.Show()
		p.nickRow.Show()
		p.cancelAdd.Show()
	} else {
		p.formTitle.Hide()
		p.nickRow.Hide()
		p.cancelAdd.Hide()
	}
	if a.busy || !v.reachable {
		p.login.Disable()
		p.add.Disable()
	} else {
		p.login.Enable()
		p.add.Enable()
	}
	if p.addOpen || !loggedIn || len(v.st.Profiles) == 0 {
		p.add.Hide()
	} else {
		p.add.Show()
	}
	url := a.authURL
	if url == "" {
		url = v.st.AuthURL
	}
	if url != "" && v.reachable && (v.st.State != ipc.StateRunning || v.st.AuthURL != "") {
		p.url.SetText(url)
		p.urlBox.Show()
	} else {
		p.urlBox.Hide()
	}
	if loggedIn {
		p.logout.Show()
		p.reauth.Show()
	} else {
		p.logout.Hide()
		p.reauth.Hide()
	}
	if a.busy {
		p.logout.Disable()
		p.reauth.Disable()
	} else {
		p.logout.Enable()
		p.reauth.Enable()
	}
	p.updateProfiles(a)
}

// keyExpiryText is "Key expires 2026-12-08 14:03 (in 5 days)" or "Key never expires".
func keyExpiryText(v *view, now time.Time) string {
	s := v.st.Self
	if s == nil {
		return ""
	}
	if s.KeyExpiry == nil || s.KeyExpiry.IsZero() {
		return lang.L("This device's key does not expire.")
	}
	return lang.L("This device's key expires {{.At}} ({{.When}}).", map[string]any{"At": dateTimeText(*s.KeyExpiry, now), "When": untilText(*s.KeyExpiry, now)})
}

// updateProfiles rebuilds the profile rows when the list changed.
func (p *accountPage) updateProfiles(a *App) {
	v := &a.v
	var sig strings.Builder
	sig.WriteString(strings.Join([]string{boolText(v.reachable), boolText(a.busy)}, ","))
	for _, pr := range v.st.Profiles {
		sig.WriteString("|" + pr.ID + "," + pr.Name + "," + pr.Tailnet + "," + pr.LoginServer + "," + boolText(pr.Current) + boolText(pr.LoggedIn))
	}
	if sig.String() == p.profSig {
		return
	}
	p.profSig = sig.String()
	p.profiles.Objects = p.profiles.Objects[:0]
	if !v.reachable || len(v.st.Profiles) == 0 {
		l := widget.NewLabel(lang.L("No accounts yet."))
		l.Importance = widget.LowImportance
		p.profiles.Add(l)
	}
	for _, pr := range v.st.Profiles {
		p.profiles.Add(p.profileRow(a, pr))
	}
	p.profiles.Refresh()
}

func boolText(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// profileRow is one login: its name, account, tailnet and server, and Switch/Remove.
func (p *accountPage) profileRow(a *App, pr ipc.Profile) fyne.CanvasObject {
	name := widget.NewLabel(pr.Name)
	name.TextStyle = fyne.TextStyle{Bold: true}
	info := widget.NewLabel(profileInfo(pr))
	info.SizeName = theme.SizeNameCaptionText
	info.Wrapping = fyne.TextWrapWord
	icon := widget.NewIcon(theme.AccountIcon())
	var right []fyne.CanvasObject
	if pr.Current {
		cur := widget.NewLabel(lang.L("in use"))
		cur.Importance = widget.SuccessImportance
		right = append(right, container.NewCenter(cur))
	} else {
		id := pr.ID
		sw := widget.NewButton(lang.L("Switch"), func() { a.switchProfile(id, false) })
		sw.Importance = widget.HighImportance
		rm := widget.NewButtonWithIcon("", theme.DeleteIcon(), func() {
			dialog.ShowConfirm(lang.L("Remove account?"),
				lang.L("Skein forgets the login {{.Name}} on this device (its keys and settings). You can log in again later.", map[string]any{"Name": pr.Name}),
				func(ok bool) {
					if ok {
						a.removeProfile(id)
					}
				}, a.win)
		})
		rm.Importance = widget.LowImportance
		if a.busy || !a.v.reachable {
			sw.Disable()
			rm.Disable()
		}
		right = append(right, container.NewCenter(sw), container.NewCenter(rm))
	}
	return container.NewBorder(nil, nil, container.NewCenter(icon), container.NewHBox(right...), container.NewVBox(name, info))
}

// profileInfo is "alice@example.com · tail.example · https://hs.example", "(logged out)" added.
func profileInfo(pr ipc.Profile) string {
	var parts []string
	if pr.LoginName != "" && pr.LoginName != pr.Name {
		parts = append(parts, pr.LoginName)
	}
	if pr.Tailnet != "" {
		parts = append(parts, pr.Tailnet)
	}
	if pr.LoginServer != "" {
		parts = append(parts, pr.LoginServer)
	}
	if !pr.LoggedIn {
		parts = append(parts, lang.L("logged out"))
	}
	return strings.Join(parts, " · ")
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

// switchProfile makes another login the one in use; fromTray also reports a failure as a
// notification (the window may be hidden).
func (a *App) switchProfile(id string, fromTray bool) {
	a.busyCall(2*time.Minute, func(ctx context.Context) error {
		_, err := a.client.SwitchProfile(ctx, id)
		if err != nil && fromTray {
			e := asError(err)
			a.do(func() { a.fa.SendNotification(fyne.NewNotification(errorTitle(e), errorNotice(e))) })
		}
		return err
	}, nil)
}

func (a *App) removeProfile(id string) {
	a.call(30*time.Second, func(ctx context.Context) error {
		_, err := a.client.RemoveProfile(ctx, id)
		return err
	}, nil)
}

// addAccount logs in to another account as a new profile (interactive unless authKey is set).
func (a *App) addAccount(server, authKey, nickname string) {
	a.authURL = ""
	a.busyCall(2*time.Minute, func(ctx context.Context) error {
		resp, err := a.client.Up(ctx, ipc.UpRequest{LoginServer: server, AuthKey: authKey, NewProfile: true, Nickname: nickname, ForceReauth: true})
		a.do(func() {
			if err == nil {
				a.account.addOpen = false
				a.account.nickname.SetText("")
			}
			if err == nil && resp.AuthURL != "" {
				a.authURL = resp.AuthURL
			}
			a.refresh()
		})
		return err
	}, nil)
}
