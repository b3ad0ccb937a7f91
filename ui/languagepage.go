package ui

import (
	"os"
	"syscall"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"
)

// languagePage is the Language page (in Settings): the desktop's language or one chosen
// here. The window's words are set when it is built, so a change applies at the next start
// ("Restart Skein" does that now).
type languagePage struct {
	content fyne.CanvasObject
	radio   *widget.RadioGroup
	note    *widget.Label
	restart *widget.Button
	labels  []string // the radio's options, in Languages order
	started string   // the language the window was built in
	loading bool
}

// languageLabel is how the page names a language.
func languageLabel(l Language) string {
	if l.Tag == "" {
		return lang.L("The desktop's language ({{.Locale}})", map[string]any{"Locale": string(lang.SystemLocale())})
	}
	return l.Name
}

func newLanguagePage(a *App) *languagePage {
	p := &languagePage{note: widget.NewLabel(""), started: a.fa.Preferences().String(prefLanguage)}
	for _, l := range Languages {
		p.labels = append(p.labels, languageLabel(l))
	}
	p.radio = widget.NewRadioGroup(p.labels, func(sel string) {
		if p.loading {
			return
		}
		for i, l := range p.labels {
			if l == sel {
				a.fa.Preferences().SetString(prefLanguage, Languages[i].Tag)
			}
		}
		a.refresh()
	})
	p.note.Wrapping = fyne.TextWrapWord
	p.restart = widget.NewButtonWithIcon(lang.L("Restart Skein"), theme.ViewRefreshIcon(), a.restart)
	title := widget.NewLabel(lang.L("Language"))
	title.TextStyle = fyne.TextStyle{Bold: true}
	title.SizeName = theme.SizeNameSubHeadingText
	p.content = container.NewVScroll(container.NewPadded(container.NewVBox(title, p.radio, p.note, container.NewHBox(p.restart))))
	return p
}

func (p *languagePage) update(a *App) {
	p.loading = true
	defer func() { p.loading = false }()
	cur := a.fa.Preferences().String(prefLanguage)
	for i, l := range Languages {
		if l.Tag == cur && p.radio.Selected != p.labels[i] {
			p.radio.SetSelected(p.labels[i])
		}
	}
	if cur != p.started {
		setText(p.note, lang.L("The new language applies when Skein starts again."))
		p.note.Show()
		p.restart.Show()
	} else {
		p.note.Hide()
		p.restart.Hide()
	}
}

// restart starts this program again in place (same process, same arguments), so that the
// window is built in the chosen language; the tray and the single-instance name come back with
// it.
func (a *App) restart() {
	exe, err := os.Executable()
	if err != nil {
		a.fa.SendNotification(fyne.NewNotification(lang.L("Restart Skein"), err.Error()))
		return
	}
	a.cancel()
	args := append([]string{exe}, os.Args[1:]...)
	if err := syscall.Exec(exe, args, os.Environ()); err != nil {
		a.fa.SendNotification(fyne.NewNotification(lang.L("Restart Skein"), err.Error()))
	}
}
