package ui

import (
	"context"
	"strconv"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// The helper's health messages (Status.Health) as banners at the top of the window, each with
// its fix: a command to copy and, where the app can do it, a button (Re-authenticate, choose
// another exit node). The tray shows a warning icon while any is active. Known issues are worded
// here, in the user's language, from the issue's data; others show the helper's message.

// issueView is one issue as the window words it.
type issueView struct {
	code    string
	title   string
	message string
	fix     string
	actions []issueAction
}

type issueAction struct {
	label string
	run   func()
}

// issueViews words the issues to show: every health issue but the one the error banner shows
// already.
func (a *App) issueViews() []issueView {
	v := &a.v
	if !v.reachable {
		return nil
	}
	var out []issueView
	for _, h := range v.st.Health {
		if v.err != nil && string(v.err.Code) == h.Code && v.err.Message == h.Message {
			continue
		}
		out = append(out, a.wordIssue(h))
	}
	return out
}

func (a *App) wordIssue(h ipc.Issue) issueView {
	iv := issueView{code: h.Code, message: h.Message, fix: fixCommand(&ipc.Error{Code: ipc.ErrorCode(h.Code), Fix: h.Fix})}
	chooseExit := issueAction{lang.L("Choose an exit node"), func() { a.ShowWindow(); a.tabs.selectExitNode() }}
	stopExit := issueAction{lang.L("Stop using an exit node"), func() { a.setExitNode("", false) }}
	switch h.Code {
	case ipc.IssueKeyExpiring:
		if t, err := time.Parse(time.RFC3339, h.Data["expiry"]); err == nil {
			iv.title = lang.L("This device's key expires {{.When}}", map[string]any{"When": untilText(t, a.now())})
			iv.message = lang.L("Re-authenticate before {{.At}} to keep this device in your tailnet.", map[string]any{"At": dateTimeText(t, a.now())})
		} else {
			iv.title = lang.L("This device's key expires soon")
		}
		iv.actions = []issueAction{{lang.L("Re-authenticate"), a.reauth}}
	case ipc.IssueExitNodeOffline:
		iv.title = lang.L("Exit node {{.Name}} is offline", map[string]any{"Name": h.Data["name"]})
		iv.message = lang.L("Internet traffic is blocked (never sent around the tunnel) until it is back or you choose another exit node.")
		iv.fix, iv.actions = "", []issueAction{chooseExit, stopExit}
	case ipc.IssueNoExitNode:
		iv.title = lang.L("No exit node available")
		iv.message = lang.L("The automatic exit node has no peer to use: internet traffic is blocked until one is back.")
		iv.fix, iv.actions = "", []issueAction{chooseExit, stopExit}
	case string(ipc.ErrNeedsLogin):
		iv.title = errorTitle(&ipc.Error{Code: ipc.ErrNeedsLogin})
		iv.actions = []issueAction{{lang.L("Log in again"), a.reauth}}
	case "dns":
		iv.title = lang.L("DNS")
	case "forwarding_blocked":
		iv.title = lang.L("Forwarding is blocked")
	default:
		iv.title = errorTitle(&ipc.Error{Code: ipc.ErrorCode(h.Code)})
	}
	return iv
}

// untilText is "in 3 days", "in 5 hours", "in 12 minutes" or "in less than a minute".
func untilText(t, now time.Time) string {
	d := t.Sub(now)
	round := func(unit time.Duration) string { return strconv.Itoa(int((d + unit/2) / unit)) }
	switch {
	case d >= 47*time.Hour+30*time.Minute:
		return lang.L("in {{.N}} days", map[string]any{"N": round(24 * time.Hour)})
	case d >= 119*time.Minute+30*time.Second:
		return lang.L("in {{.N}} hours", map[string]any{"N": round(time.Hour)})
	case d >= 90*time.Second:
		return lang.L("in {{.N}} minutes", map[string]any{"N": round(time.Minute)})
	case d >= 30*time.Second:
		return lang.L("in a minute")
	}
	return lang.L("in less than a minute")
}

// dateTimeText is t as a local date and time, "2026-12-08 14:03", or just the time today.
func dateTimeText(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04")
	}
	return t.Format("2006-01-02 15:04")
}

// healthBanners is the column of issue banners.
type healthBanners struct {
	content *fyne.Container
	sig     string
	// texts are the banners' titles and messages as shown (tests read them).
	texts []string
}

func newHealthBanners() *healthBanners {
	b := &healthBanners{content: container.NewVBox()}
	b.content.Hide()
	return b
}

func (b *healthBanners) update(a *App) {
	ivs := a.issueViews()
	var sig strings.Builder
	for _, iv := range ivs {
		sig.WriteString(iv.code + "\x00" + iv.title + "\x00" + iv.message + "\x00" + iv.fix + "\x01")
	}
	if sig.String() == b.sig {
		return
	}
	b.sig = sig.String()
	wasShown := b.content.Visible()
	b.texts = b.texts[:0]
	b.content.Objects = b.content.Objects[:0]
	for _, iv := range ivs {
		b.content.Add(a.issueBanner(iv))
		b.texts = append(b.texts, iv.title, iv.message)
	}
	if len(ivs) > 0 {
		b.content.Add(widget.NewSeparator())
		b.content.Show()
	} else {
		b.content.Hide()
	}
	b.content.Refresh()
	if b.content.Visible() != wasShown && a.root != nil {
		a.root.Refresh()
	}
}

func (a *App) issueBanner(iv issueView) fyne.CanvasObject {
	title := widget.NewLabel(iv.title)
	title.TextStyle = fyne.TextStyle{Bold: true}
	title.Importance = widget.WarningImportance
	title.Wrapping = fyne.TextWrapWord
	body := container.NewVBox(title)
	if iv.message != "" {
		m := widget.NewLabel(iv.message)
		m.Wrapping = fyne.TextWrapWord
		body.Add(m)
	}
	if iv.fix != "" {
		fix := widget.NewEntry()
		fix.SetText(iv.fix)
		cp := widget.NewButtonWithIcon(lang.L("Copy"), theme.ContentCopyIcon(), func() { a.copyText(fix.Text) })
		body.Add(container.NewBorder(nil, nil, widget.NewLabel(lang.L("Fix:")), cp, fix))
	}
	var buttons []fyne.CanvasObject
	for _, act := range iv.actions {
		btn := widget.NewButton(act.label, act.run)
		if len(buttons) == 0 {
			btn.Importance = widget.HighImportance
		}
		buttons = append(buttons, btn)
	}
	icon := widget.NewIcon(theme.NewWarningThemedResource(theme.WarningIcon()))
	return container.NewBorder(nil, nil, container.NewVBox(icon), container.NewVBox(buttons...), body)
}

// reauth runs the login flow again for this profile: the browser opens the login page (or the
// Account tab shows where to go).
func (a *App) reauth() {
	a.ShowWindow()
	a.tabs.selectAccount()
	a.authURL = ""
	a.busyCall(2*time.Minute, func(ctx context.Context) error {
		resp, err := a.client.Up(ctx, ipc.UpRequest{ForceReauth: true})
		if err == nil && resp.AuthURL != "" {
			a.do(func() {
				a.authURL = resp.AuthURL
				a.openURL(resp.AuthURL)
				a.refresh()
			})
		}
		return err
	}, nil)
}
