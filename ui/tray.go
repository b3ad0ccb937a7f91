package ui

import (
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/fyne/v2/lang"

	"github.com/skeinvpn/skein/assets"
	"github.com/skeinvpn/skein/ipc"
)

// The tray menu, rebuilt from the view on every change that alters what it shows (the
// StatusNotifierItem's dbusmenu is replaced wholesale, which every tray host handles; updating
// items in place breaks submenus on several of them). Submenus are never empty: "No peers" is
// a disabled item.

// Labels of the fixed tray items (English keys of lang.L).
const (
	TrayOpen    = "Open Skein"
	TrayQuit    = "Quit"
	TrayPeers   = "Peers"
	TrayNoPeers = "No peers"
	// TraySendFile opens a file chooser, then the peer picker.
	TraySendFile = "Send file…"
	// TrayAccount is the submenu of logins (profiles): one click switches.
	TrayAccount        = "Account"
	TrayAddAccount     = "Add account…"
	TrayManageAccounts = "Manage accounts…"
)

// buildTrayMenu returns the menu for the current view.
func (a *App) buildTrayMenu() *fyne.Menu {
	v := &a.v
	items := []*fyne.MenuItem{}

	status := fyne.NewMenuItem(v.connectionText(), nil)
	status.Disabled = true
	items = append(items, status)

	label, act := v.toggle()
	toggle := fyne.NewMenuItem(label, a.toggleConnection)
	toggle.Disabled = act == actNone || a.busy
	items = append(items, toggle, fyne.NewMenuItemSeparator())

	if line := v.selfLine(); line != "" {
		ip := v.st.Self.FirstIP()
		items = append(items, fyne.NewMenuItem(line, func() { a.copyText(ip) }))
	}

	peerItems := []*fyne.MenuItem{}
	if v.reachable {
		for _, p := range sortedPeers(v.st.Peers) {
			ip := (&p).FirstIP()
			it := fyne.NewMenuItem(trayPeerLabel(&p), func() { a.copyText(ip) })
			peerItems = append(peerItems, it)
		}
	}
	if len(peerItems) == 0 {
		none := fyne.NewMenuItem(lang.L(TrayNoPeers), nil)
		none.Disabled = true
		peerItems = append(peerItems, none)
	}
	peers := fyne.NewMenuItem(lang.L(TrayPeers), nil)
	peers.ChildMenu = fyne.NewMenu(lang.L(TrayPeers), peerItems...)
	send := fyne.NewMenuItem(lang.L(TraySendFile), a.chooseFileToSend)
	send.Disabled = !v.reachable || v.st.State != ipc.StateRunning
	items = append(items, peers, a.exitNodeMenu(), send, a.accountMenu(), fyne.NewMenuItemSeparator())

	items = append(items, fyne.NewMenuItem(lang.L(TrayOpen), a.ShowWindow))
	quit := fyne.NewMenuItem(lang.L(TrayQuit), a.quit)
	quit.IsQuit = true
	items = append(items, quit)
	return fyne.NewMenu("Skein", items...)
}

// accountMenu is the tray's "Account" submenu: every login skeind keeps, the one in use
// checked, each switched to in one click; then adding one and the Account page.
func (a *App) accountMenu() *fyne.MenuItem {
	v := &a.v
	var items []*fyne.MenuItem
	if v.reachable {
		for _, p := range v.st.Profiles {
			id := p.ID
			it := fyne.NewMenuItem(trayProfileLabel(p), func() {
				if !a.isCurrentProfile(id) {
					a.switchProfile(id, true)
				}
			})
			it.Checked = p.Current
			it.Disabled = a.busy && !p.Current
			items = append(items, it)
		}
	}
	if len(items) > 0 {
		items = append(items, fyne.NewMenuItemSeparator())
	}
	add := fyne.NewMenuItem(lang.L(TrayAddAccount), func() {
		a.ShowWindow()
		a.tabs.selectAccount()
		a.account.addOpen = a.v.st.Self != nil
		a.refresh()
	})
	add.Disabled = !v.reachable
	items = append(items, add, fyne.NewMenuItem(lang.L(TrayManageAccounts), func() {
		a.ShowWindow()
		a.tabs.selectAccount()
	}))
	m := fyne.NewMenuItem(lang.L(TrayAccount), nil)
	m.ChildMenu = fyne.NewMenu(lang.L(TrayAccount), items...)
	return m
}

// trayProfileLabel is "work — tail.example" (or the login server's host), "(logged out)" added.
func trayProfileLabel(p ipc.Profile) string {
	s := p.Name
	where := p.Tailnet
	if where == "" {
		where = hostOf(p.LoginServer)
	}
	if where != "" && where != p.Name {
		s += " — " + where
	}
	if !p.LoggedIn {
		s += " " + lang.L("(logged out)")
	}
	return s
}

func hostOf(u string) string {
	u = strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	host, _, _ := strings.Cut(u, "/")
	return host
}

func (a *App) isCurrentProfile(id string) bool {
	return a.v.st.Profile != nil && a.v.st.Profile.ID == id
}

// menuSignature identifies what a menu shows, to skip rebuilding an unchanged one.
func menuSignature(m *fyne.Menu) string {
	var b strings.Builder
	var walk func(m *fyne.Menu, depth int)
	walk = func(m *fyne.Menu, depth int) {
		for _, it := range m.Items {
			b.WriteString(strings.Repeat(">", depth))
			if it.IsSeparator {
				b.WriteString("---\n")
				continue
			}
			b.WriteString(it.Label)
			if it.Disabled {
				b.WriteString(" [disabled]")
			}
			if it.Checked {
				b.WriteString(" [checked]")
			}
			b.WriteString("\n")
			if it.ChildMenu != nil {
				walk(it.ChildMenu, depth+1)
			}
		}
	}
	walk(m, 0)
	return b.String()
}

// updateTray rebuilds the tray menu and icon when what they show changed.
func (a *App) updateTray() {
	m := a.buildTrayMenu()
	if sig := menuSignature(m); sig != a.traySig || a.trayMenu == nil {
		a.traySig = sig
		// One Menu value for the app's life, its items replaced: Fyne's tray, once its D-Bus
		// side is ready, re-renders the Menu it was first given, which must then be current.
		if a.trayMenu == nil {
			a.trayMenu = m
		} else {
			a.trayMenu.Label, a.trayMenu.Items = m.Label, m.Items
		}
		if a.hasTray {
			first := !a.trayStarted
			a.trayStarted = true
			a.fa.(desktop.App).SetSystemTrayMenu(a.trayMenu)
			if first {
				a.startTrayText()
			}
		}
	}
	a.updateTrayText()
	icon := assets.Tray(a.v.iconState(), a.darkTray())
	if a.trayIcon == nil || icon.Name() != a.trayIcon.Name() {
		a.trayIcon = icon
		if a.hasTray {
			a.fa.(desktop.App).SetSystemTrayIcon(icon)
		}
	}
}
