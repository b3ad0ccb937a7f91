package ui

import (
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/assets"
	"github.com/skeinvpn/skein/ipc"
)

// noTrayText explains a missing tray host.
const noTrayText = "No system tray found on this desktop (on GNOME, install the AppIndicator extension). " +
	"Skein keeps working from this window; closing it quits Skein."

func (a *App) buildWindow() {
	a.win = a.fa.NewWindow("Skein")
	a.win.SetIcon(assets.AppIcon())
	a.header = newHeader(a)
	a.banner = newErrorBanner(a)
	a.health = newHealthBanners()
	a.peers = newPeerPage(a)
	a.exit = newExitPage(a)
	a.settings = newSettingsPage(a)
	a.account = newAccountPage(a)
	a.files = newFilesPage(a)
	a.notifyPg = newNotifyPage(a)
	a.langPg = newLanguagePage(a)

	// Settings holds three pages: the helper's and the app's settings, notifications, language.
	a.tabs.settingsGeneral = container.NewTabItemWithIcon(lang.L("General"), theme.SettingsIcon(), a.settings.content)
	a.tabs.notify = container.NewTabItemWithIcon(lang.L("Notifications"), theme.InfoIcon(), a.notifyPg.content)
	a.tabs.language = container.NewTabItemWithIcon(lang.L("Language"), theme.DocumentIcon(), a.langPg.content)
	a.tabs.inner = container.NewAppTabs(a.tabs.settingsGeneral, a.tabs.notify, a.tabs.language)

	// The Files tab's widgets join the window when it is first opened (OnSelected below): an
	// idle tray app does not pay for laying out, and shaping the text of, a page nobody opened.
	a.tabs.peers = container.NewTabItemWithIcon(lang.L("Peers"), theme.ComputerIcon(), a.peers.content)
	a.tabs.files = container.NewTabItemWithIcon(lang.L("Files"), theme.DownloadIcon(), container.NewStack())
	a.tabs.exit = container.NewTabItemWithIcon(lang.L("Exit node"), theme.MailForwardIcon(), a.exit.content)
	a.tabs.account = container.NewTabItemWithIcon(lang.L("Account"), theme.AccountIcon(), a.account.content)
	a.tabs.settings = container.NewTabItemWithIcon(lang.L("Settings"), theme.SettingsIcon(), a.tabs.inner)
	tabs := container.NewAppTabs(a.tabs.peers, a.tabs.files, a.tabs.exit, a.tabs.account, a.tabs.settings)
	a.tabs.t = tabs
	tabs.OnSelected = func(it *container.TabItem) {
		if it == a.tabs.files && !a.files.shown {
			a.files.shown = true
			it.Content = a.files.content
			a.files.update(a)
			tabs.Refresh()
		}
	}

	a.noTray = widget.NewLabel(lang.L(noTrayText))
	a.noTray.Wrapping = fyne.TextWrapWord
	a.noTray.Importance = widget.WarningImportance
	top := []fyne.CanvasObject{a.header.content, a.noTray, a.banner.content, a.health.content}
	a.showTrayHost()
	a.root = container.NewBorder(container.NewVBox(top...), nil, nil, nil, tabs)
	a.win.SetContent(a.root)
	a.win.Resize(fyne.NewSize(900, 600))
	// Files dropped on a peer row go to that peer; elsewhere they open the peer picker.
	a.win.SetOnDropped(a.dropped)
	// With a tray host the window hides to the tray ("Quit" in the tray ends the app); without
	// one, closing it is the only way out. The host may come and go while the app runs.
	a.win.SetCloseIntercept(a.closeRequested)
}

// closeRequested is the window's close button.
func (a *App) closeRequested() {
	if a.trayHost {
		a.win.Hide()
	} else {
		a.quit()
	}
}

type tabsView struct {
	t                                     *container.AppTabs
	peers, files, exit, account, settings *container.TabItem
	// The Settings tab's own pages.
	inner                             *container.AppTabs
	settingsGeneral, notify, language *container.TabItem
}

func (t tabsView) selectFiles()        { t.t.Select(t.files) }
func (t tabsView) selectPeers()        { t.t.Select(t.peers) }
func (t tabsView) peersSelected() bool { return t.t.Selected() == t.peers }

func (t tabsView) selectAccount()  { t.t.Select(t.account) }
func (t tabsView) selectExitNode() { t.t.Select(t.exit) }
func (t tabsView) selectSettings() { t.t.Select(t.settings); t.inner.Select(t.settingsGeneral) }
func (t tabsView) selectNotify()   { t.t.Select(t.settings); t.inner.Select(t.notify) }
func (t tabsView) selectLanguage() { t.t.Select(t.settings); t.inner.Select(t.language) }

// Pages the window can open on (skein-gui --page).
var Pages = []string{"peers", "files", "exit-node", "account", "settings", "notifications", "language"}

// ShowPage shows the window on a page (one of Pages); false for an unknown name.
func (a *App) ShowPage(name string) bool {
	sel := map[string]func(){
		"peers": a.tabs.selectPeers, "files": a.tabs.selectFiles, "exit-node": a.tabs.selectExitNode,
		"account": a.tabs.selectAccount, "settings": a.tabs.selectSettings,
		"notifications": a.tabs.selectNotify, "language": a.tabs.selectLanguage,
	}[name]
	if sel == nil {
		return false
	}
	a.ShowWindow()
	sel()
	return true
}

// header: state icon, state in large type, a detail line, and the big toggle.
type header struct {
	content *fyne.Container
	icon    *canvas.Image
	title   *widget.Label
	detail  *widget.Label
	toggle  *widget.Button
}

func newHeader(a *App) *header {
	h := &header{
		icon:   canvas.NewImageFromResource(assets.Tray(assets.Disconnected, false)),
		title:  widget.NewLabel(""),
		detail: widget.NewLabel(""),
		toggle: widget.NewButton(lang.L("Connect"), a.toggleConnection),
	}
	h.icon.FillMode = canvas.ImageFillContain
	h.icon.SetMinSize(fyne.NewSize(48, 48))
	h.title.TextStyle = fyne.TextStyle{Bold: true}
	h.title.SizeName = theme.SizeNameHeadingText
	h.detail.Truncation = fyne.TextTruncateEllipsis
	h.toggle.Importance = widget.HighImportance
	toggle := container.NewGridWrap(fyne.NewSize(160, 48), h.toggle)
	text := container.NewVBox(h.title, h.detail)
	h.content = container.NewBorder(nil, widget.NewSeparator(), container.NewCenter(h.icon), container.NewCenter(toggle), text)
	return h
}

func (h *header) update(a *App) {
	v := &a.v
	h.icon.Resource = assets.Tray(v.iconState(), a.darkTray())
	h.icon.Refresh()
	h.title.SetText(v.stateText())
	h.detail.SetText(headerDetail(v))
	label, act := v.toggle()
	if a.busy {
		switch act {
		case actDisconnect:
			label = lang.L("Disconnecting…")
		default:
			label = lang.L("Connecting…")
		}
	}
	h.toggle.SetText(label)
	if act == actNone || a.busy {
		h.toggle.Disable()
	} else {
		h.toggle.Enable()
	}
}

// headerDetail is the line under the state: this device and the server, or what to do.
func headerDetail(v *view) string {
	if !v.reachable {
		if v.connecting {
			return ""
		}
		return lang.L("skeind is not reachable; see below.")
	}
	switch v.st.State {
	case ipc.StateRunning, ipc.StateStarting:
		var parts []string
		if self := v.st.Self; self != nil {
			s := lang.L("This device: {{.Name}}", map[string]any{"Name": self.ShortName()})
			if ip := self.FirstIP(); ip != "" {
				s += " (" + ip + ")"
			}
			parts = append(parts, s)
		}
		if p := v.st.Profile; p != nil && len(v.st.Profiles) > 1 {
			parts = append(parts, lang.L("account {{.Name}}", map[string]any{"Name": p.Name}))
		}
		if v.st.LoginServer != "" {
			parts = append(parts, v.st.LoginServer)
		}
		if n, ok := v.exitNode(); ok && v.st.State == ipc.StateRunning {
			if n.online {
				parts = append(parts, lang.L("via exit node {{.Name}}", map[string]any{"Name": n.name}))
			} else {
				parts = append(parts, lang.L("exit node {{.Name}} offline", map[string]any{"Name": n.name}))
			}
		}
		return strings.Join(parts, " · ")
	case ipc.StateNeedsLogin:
		return lang.L("Log in to join your tailnet (Account tab).")
	case ipc.StateStopped:
		return lang.L("Skein is off; your tailnet is not reachable from this device.")
	}
	return ""
}

// errorBanner shows the current error with a copyable fix command.
type errorBanner struct {
	content *fyne.Container
	title   *widget.Label
	message *widget.Label
	hint    *widget.Label
	fix     *widget.Entry
	fixRow  *fyne.Container
	copyFix *widget.Button
	dismiss *widget.Button
}

func newErrorBanner(a *App) *errorBanner {
	b := &errorBanner{
		title:   widget.NewLabel(""),
		message: widget.NewLabel(""),
		hint:    widget.NewLabel(""),
		fix:     widget.NewEntry(),
	}
	b.title.TextStyle = fyne.TextStyle{Bold: true}
	b.title.Importance = widget.DangerImportance
	b.message.Wrapping = fyne.TextWrapWord
	b.hint.Wrapping = fyne.TextWrapWord
	b.fix.TextStyle = fyne.TextStyle{}
	b.copyFix = widget.NewButtonWithIcon(lang.L("Copy"), theme.ContentCopyIcon(), func() { a.copyText(b.fix.Text) })
	b.dismiss = widget.NewButtonWithIcon("", theme.CancelIcon(), func() {
		a.v.err, a.errAction = nil, false
		a.refresh()
	})
	b.dismiss.Importance = widget.LowImportance
	b.fixRow = container.NewBorder(nil, nil, widget.NewLabel(lang.L("Fix:")), b.copyFix, b.fix)
	b.content = container.NewVBox(
		container.NewBorder(nil, nil, widget.NewIcon(theme.ErrorIcon()), b.dismiss, b.title),
		b.message, b.hint, b.fixRow, widget.NewSeparator())
	b.content.Hide()
	return b
}

func (b *errorBanner) update(a *App) {
	wasVisible := b.content.Visible()
	defer func() {
		// The banner's height changes the layout above the tabs: lay the window out again.
		if b.content.Visible() != wasVisible && a.root != nil {
			a.root.Refresh()
		}
	}()
	e := a.v.err
	if e == nil {
		b.content.Hide()
		return
	}
	b.title.SetText(errorTitle(e))
	b.message.SetText(e.Message)
	if h := errorHint(e); h != "" {
		b.hint.SetText(h)
		b.hint.Show()
	} else {
		b.hint.Hide()
	}
	if fix := fixCommand(e); fix != "" {
		b.fix.SetText(fix)
		b.fixRow.Show()
	} else {
		b.fixRow.Hide()
	}
	// The helper being down is not something to dismiss: it clears itself on reconnect.
	if e.Code == ipc.ErrHelperUnreachable && !a.errAction {
		b.dismiss.Hide()
	} else {
		b.dismiss.Show()
	}
	b.content.Show()
}
