package ui

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// The DNS part of the Settings tab: the accept-DNS switch, and a read-only summary of what the
// helper did with the system resolver and how its own resolver forwards names. The summary is
// a single label (one line per fact) so that it costs next to nothing while the tab is hidden.

// settingsAcceptDNS is the switch's label.
const settingsAcceptDNS = "Use tailnet DNS"

// defaultResolver is the helper's resolver address when the status does not name one.
var defaultResolver = tsaddr.MagicDNSv4.String()

// maxSplitRoutes bounds the split-DNS lines of the summary; the rest are counted.
const maxSplitRoutes = 8

type dnsSection struct {
	content  *fyne.Container
	check    *widget.Check
	note     *widget.Label
	warnings *widget.Label
	warnBox  *fyne.Container
	summary  *widget.Label
	loading  bool // set while update changes the check, so its callback does nothing
}

func newDNSSection(a *App) *dnsSection {
	d := &dnsSection{note: widget.NewLabel(""), warnings: widget.NewLabel(""), summary: widget.NewLabel("")}
	d.check = widget.NewCheck(lang.L(settingsAcceptDNS), func(on bool) {
		if !d.loading {
			a.patchPrefs(ipc.PrefsPatch{AcceptDNS: &on}, patchOpts{})
		}
	})
	d.note.Wrapping = fyne.TextWrapWord
	d.note.SizeName = theme.SizeNameCaptionText
	d.warnings.Wrapping = fyne.TextWrapWord
	d.warnings.Importance = widget.WarningImportance
	d.warnings.TextStyle = fyne.TextStyle{Bold: true}
	d.warnBox = container.NewBorder(nil, nil, container.NewVBox(widget.NewIcon(theme.NewWarningThemedResource(theme.WarningIcon()))), nil, d.warnings)
	d.warnBox.Hide()
	d.summary.Wrapping = fyne.TextWrapWord
	d.summary.Selectable = true
	d.summary.SizeName = theme.SizeNameCaptionText
	d.content = container.NewVBox(d.check, d.note, d.warnBox, d.summary)
	return d
}

func (d *dnsSection) update(a *App) {
	d.loading = true
	defer func() { d.loading = false }()
	v := &a.v
	if on := v.acceptDNS(); d.check.Checked != on {
		d.check.SetChecked(on)
	}
	if v.reachable && v.havePrefs {
		d.check.Enable()
	} else {
		d.check.Disable()
	}
	setText(d.note, acceptDNSNote(v))
	wasShown := d.warnBox.Visible()
	if w := dnsWarnings(v); w != "" {
		setText(d.warnings, w)
		d.warnBox.Show()
	} else {
		d.warnBox.Hide()
	}
	setText(d.summary, dnsSummary(v))
	if d.warnBox.Visible() != wasShown {
		d.content.Refresh() // the warnings' box came or went: lay the section out again
	}
}

// setText changes a label only when its text changes (SetText always lays it out again).
func setText(l *widget.Label, s string) {
	if l.Text != s {
		l.SetText(s)
	}
}

// acceptDNS is whether the system resolver is to point at the helper: the pref once known,
// else what the status says, else the default (on).
func (v *view) acceptDNS() bool {
	switch {
	case v.havePrefs:
		return !v.prefs.NoAcceptDNS
	case v.st.DNS != nil:
		return v.st.DNS.AcceptDNS
	}
	return true
}

// resolverAddr is the address the helper's resolver answers on, IPv4 preferred.
func (v *view) resolverAddr() string {
	if d := v.st.DNS; d != nil {
		for _, a := range d.Resolver {
			if a.Is4() {
				return a.String()
			}
		}
		if len(d.Resolver) > 0 {
			return d.Resolver[0].String()
		}
	}
	return defaultResolver
}

// acceptDNSNote explains the switch in its current position.
func acceptDNSNote(v *view) string {
	r := map[string]any{"Addr": v.resolverAddr()}
	if !v.acceptDNS() {
		return lang.L("Off: the system resolver is left alone; names of peers still resolve at {{.Addr}}.", r)
	}
	return lang.L("This computer asks Skein's resolver at {{.Addr}} for names: names of peers, the tailnet's split DNS and its resolvers.", r)
}

// dnsWarnings are the helper's DNS warnings, one per line ("" when none).
func dnsWarnings(v *view) string {
	if !v.reachable || v.st.DNS == nil {
		return ""
	}
	return strings.Join(v.st.DNS.Warnings, "\n")
}

// dnsSummary is the read-only DNS state, one fact per line.
func dnsSummary(v *view) string {
	d := v.st.DNS
	switch {
	case !v.reachable:
		return ""
	case d == nil && v.st.State == ipc.StateRunning:
		return lang.L("skeind reports no DNS state.")
	case d == nil:
		return lang.L("DNS details are shown while Skein is connected.")
	}
	var b strings.Builder
	line := func(parts ...string) {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		for _, p := range parts {
			b.WriteString(p)
		}
	}

	if d.MagicDNS {
		s := lang.L("MagicDNS: on") + " · " + plural(d.Hosts, "1 name", "{{.N}} names")
		if v.st.MagicDNS != "" {
			s += " " + lang.L("under {{.Domain}}", map[string]any{"Domain": strings.TrimSuffix(v.st.MagicDNS, ".")})
		}
		if d.ExtraRecords > 0 {
			s += " · " + plural(d.ExtraRecords, "1 extra record", "{{.N}} extra records")
		}
		line(s)
	} else {
		line(lang.L("MagicDNS: off in this tailnet"))
	}

	line(lang.L("System resolver:"), " ", resolverModeText(d))
	if len(d.SearchDomains) > 0 {
		line(lang.L("Search domains:"), " ", strings.Join(d.SearchDomains, ", "))
	}

	if len(d.SplitRoutes) > 0 {
		suffixes := slices.Sorted(maps.Keys(d.SplitRoutes))
		line(lang.L("Split DNS:"))
		for i, sfx := range suffixes {
			if i == maxSplitRoutes {
				line("    ", lang.L("+{{.N}} more", map[string]any{"N": strconv.Itoa(len(suffixes) - i)}))
				break
			}
			name := strings.TrimSuffix(sfx, ".")
			if name == "" {
				name = lang.L("(all names)")
			}
			to := lang.L("answered by Skein")
			if rs := d.SplitRoutes[sfx]; len(rs) > 0 {
				to = strings.Join(rs, ", ")
			}
			line("    ", name, " → ", to)
		}
	}

	switch {
	case len(d.Upstreams) > 0:
		s := lang.L("Other names:") + " " + strings.Join(d.Upstreams, ", ")
		switch d.UpstreamsFrom {
		case "tailnet":
			s += " " + lang.L("(the tailnet's resolvers)")
		case "system":
			s += " " + lang.L("(this computer's resolvers)")
		}
		line(s)
	case d.UpstreamsFrom == "system":
		line(lang.L("Other names:"), " ", lang.L("this computer's resolvers"))
	default:
		line(lang.L("Other names:"), " ", lang.L("no resolver configured"))
	}
	return b.String()
}

// resolverModeText says how the system resolver is configured: the mode, whether it points at
// the helper now, and why.
func resolverModeText(d *ipc.DNSStatus) string {
	var s string
	switch {
	case d.Mode == "":
		s = lang.L("left alone")
	case d.Applied:
		s = lang.L("{{.Mode}}, pointed at Skein", map[string]any{"Mode": d.Mode})
	default:
		s = lang.L("{{.Mode}}, not applied", map[string]any{"Mode": d.Mode})
	}
	if d.ModeReason != "" {
		s += " (" + d.ModeReason + ")"
	}
	return s
}
