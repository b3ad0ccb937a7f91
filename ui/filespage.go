package ui

import (
	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// Texts of the Files tab.
const (
	filesSend      = "Send file…"
	filesIdle      = "No transfers in progress. Drop files on a device in the Peers tab to send them."
	filesNoHistory = "Nothing sent or received yet."
	filesCancel    = "Cancel"
	filesOpen      = "Open folder"
)

// filesPage is the Files tab: a "Send file…" button, where received files go, the transfers in
// progress (progress bar, bytes, rate, time left, Cancel) and the last historyMax finished ones.
type filesPage struct {
	a         *App
	content   fyne.CanvasObject
	scroll    *container.Scroll
	send      *widget.Button
	dest      *widget.Label
	note      *widget.Label
	idle      *widget.Label
	active    *fyne.Container
	noHistory *widget.Label
	history   *fyne.Container
	// historyChanged: the history rows must be rebuilt on the next update.
	historyChanged bool
	// relayout: rows came or went, so the scrolled page must be laid out again (a container
	// lays out only itself when its children change, not the containers around it).
	relayout bool
	// shown: the page is in the window (from the first time its tab was opened); until then
	// update leaves its widgets alone, so that they get no renderers.
	shown bool
}

func newWrappedLabel(s string) *widget.Label {
	l := widget.NewLabel(s)
	l.Wrapping = fyne.TextWrapWord
	return l
}

func newFilesPage(a *App) *filesPage {
	f := &filesPage{a: a}
	f.send = widget.NewButtonWithIcon(lang.L(filesSend), theme.UploadIcon(), a.chooseFileToSend)
	f.dest = newWrappedLabel("")
	f.note = newWrappedLabel("")
	f.note.Importance = widget.WarningImportance
	f.note.Hide()
	f.idle = newWrappedLabel(lang.L(filesIdle))
	f.idle.Importance = widget.LowImportance
	f.active = container.NewVBox()
	f.noHistory = widget.NewLabel(lang.L(filesNoHistory))
	f.noHistory.Importance = widget.LowImportance
	f.history = container.NewVBox()
	heading := func(s string) *widget.Label {
		l := widget.NewLabel(s)
		l.TextStyle = fyne.TextStyle{Bold: true}
		return l
	}
	body := container.NewVBox(
		container.NewBorder(nil, nil, nil, container.NewCenter(f.send), f.dest),
		f.note,
		widget.NewSeparator(),
		heading(lang.L("Transfers")), f.idle, f.active,
		widget.NewSeparator(),
		heading(lang.L("Recent")), f.noHistory, f.history,
	)
	f.scroll = container.NewVScroll(container.NewPadded(body))
	f.content = f.scroll
	return f
}

// setShown shows or hides o and tells whether that changed anything.
func setShown(o fyne.CanvasObject, show bool) bool {
	if o.Visible() == show {
		return false
	}
	if show {
		o.Show()
	} else {
		o.Hide()
	}
	return true
}

func (f *filesPage) update(a *App) {
	if !f.shown {
		return
	}
	v := &a.v
	if v.reachable && v.st.State == ipc.StateRunning {
		f.send.Enable()
	} else {
		f.send.Disable()
	}
	if t := a.receiveDirText(); t != f.dest.Text {
		f.dest.SetText(t)
		f.relayout = true
	}
	if a.filesNote != f.note.Text {
		f.note.SetText(a.filesNote)
		f.relayout = true
	}
	f.relayout = setShown(f.note, a.filesNote != "") || f.relayout
	f.relayout = setShown(f.idle, len(a.xfers) == 0) || f.relayout
	if f.historyChanged {
		f.historyChanged, f.relayout = false, true
		f.history.Objects = f.history.Objects[:0]
		for _, e := range a.hist {
			f.history.Objects = append(f.history.Objects, historyRow(a, e))
		}
		f.history.Refresh()
	}
	f.relayout = setShown(f.noHistory, len(a.hist) == 0) || f.relayout
	if f.relayout {
		f.relayout = false
		f.scroll.Refresh()
	}
}

// addRow shows a new transfer.
func (f *filesPage) addRow(t *transfer) {
	t.row = newTransferRow(t)
	t.row.update(t)
	f.active.Add(t.row.content)
	f.relayout = true
	f.update(f.a)
}

// removeRow drops a finished transfer's row.
func (f *filesPage) removeRow(t *transfer) {
	if t.row != nil {
		f.active.Remove(t.row.content)
		t.row = nil
		f.relayout = true
	}
}

// transferRow is one transfer in progress.
type transferRow struct {
	content *fyne.Container
	title   *widget.Label
	bar     *widget.ProgressBar
	detail  *widget.Label
	cancel  *widget.Button
}

// transferTitle is "report.pdf to air" or "report.pdf from air".
func transferTitle(dir direction, name, peer string) string {
	data := map[string]any{"Name": name, "Peer": peer}
	if dir == dirSend {
		return lang.L("{{.Name}} to {{.Peer}}", data)
	}
	return lang.L("{{.Name}} from {{.Peer}}", data)
}

func newTransferRow(t *transfer) *transferRow {
	r := &transferRow{
		title:  widget.NewLabel(transferTitle(t.dir, t.name, t.peer)),
		bar:    widget.NewProgressBar(),
		detail: widget.NewLabel(""),
	}
	r.title.Truncation = fyne.TextTruncateEllipsis
	r.detail.SizeName = theme.SizeNameCaptionText
	r.cancel = widget.NewButtonWithIcon(lang.L(filesCancel), theme.CancelIcon(), func() {
		t.cancel()
		r.cancel.Disable()
		r.detail.SetText(lang.L("Cancelling…"))
	})
	icon := theme.UploadIcon()
	if t.dir == dirRecv {
		icon = theme.DownloadIcon()
	}
	r.content = container.NewBorder(nil, nil, widget.NewIcon(icon), container.NewCenter(r.cancel),
		container.NewVBox(r.title, r.bar, r.detail))
	return r
}

func (r *transferRow) update(t *transfer) {
	if t.ctx.Err() != nil {
		return // "Cancelling…" stays until the transfer ends
	}
	r.bar.SetValue(t.fraction())
	r.detail.SetText(t.progressText())
}

// historyRow is one finished transfer: what, with whom, what happened, when.
func historyRow(a *App, e historyEntry) fyne.CanvasObject {
	title := widget.NewLabel(transferTitle(e.dir, e.name, e.peer))
	title.Truncation = fyne.TextTruncateEllipsis
	result := newWrappedLabel(e.text)
	result.SizeName = theme.SizeNameCaptionText
	if e.failed {
		result.Importance = widget.DangerImportance
	}
	when := widget.NewLabel(e.at.Format("15:04"))
	when.SizeName = theme.SizeNameCaptionText
	when.Importance = widget.LowImportance
	icon := theme.UploadIcon()
	if e.dir == dirRecv {
		icon = theme.DownloadIcon()
	}
	right := []fyne.CanvasObject{container.NewCenter(when)}
	if e.folder != "" && !e.failed {
		dir := e.folder
		open := widget.NewButtonWithIcon(lang.L(filesOpen), theme.FolderOpenIcon(), func() { a.openFolder(dir) })
		open.Importance = widget.LowImportance
		right = append(right, open)
	}
	return container.NewBorder(nil, nil, widget.NewIcon(icon), container.NewHBox(right...),
		container.NewVBox(title, result))
}

// newTargetList is the picker's devices, one button each; offline ones are disabled.
func newTargetList(targets []ipc.FileTarget, pick func(ipc.FileTarget)) *fyne.Container {
	box := container.NewVBox()
	for _, t := range targets {
		label := t.Name
		if label == "" {
			label = t.StableID
		}
		if !t.Online {
			label += " " + lang.L("(offline)")
		}
		b := widget.NewButtonWithIcon(label, theme.ComputerIcon(), func() { pick(t) })
		b.Alignment = widget.ButtonAlignLeading
		if !t.Online {
			b.Disable()
		}
		box.Add(b)
	}
	return box
}

// pickerContent lays the picker out: what is sent, a note, and the devices in a scroll.
func pickerContent(top []fyne.CanvasObject, list *fyne.Container) fyne.CanvasObject {
	scroll := container.NewVScroll(list)
	h := float32(len(list.Objects)) * 44
	scroll.SetMinSize(fyne.NewSize(340, min(max(h, 44), 320)))
	return container.NewBorder(container.NewVBox(top...), nil, nil, nil, scroll)
}

// Choices of the "Received files" setting.
const (
	recvOptDownloads = "Save in Downloads"
	recvOptFolder    = "Save in another folder"
	recvOptAsk       = "Ask before saving"
)

// receiveSection is the Settings tab's "Received files".
type receiveSection struct {
	content *fyne.Container
	radio   *widget.RadioGroup
	closed  *widget.Check
	closedN *widget.Label
	folder  *widget.Label
	change  *widget.Button
	note    *widget.Label
	loading bool
}

func newReceiveSection(a *App) *receiveSection {
	s := &receiveSection{folder: widget.NewLabel(""), note: newWrappedLabel("")}
	s.note.SizeName = theme.SizeNameCaptionText
	s.radio = widget.NewRadioGroup([]string{lang.L(recvOptDownloads), lang.L(recvOptFolder), lang.L(recvOptAsk)}, func(sel string) {
		if s.loading {
			return
		}
		switch sel {
		case lang.L(recvOptDownloads):
			a.setReceiveMode(recvDownloads, "")
		case lang.L(recvOptAsk):
			a.setReceiveMode(recvAsk, "")
		case lang.L(recvOptFolder):
			a.chooseReceiveFolder()
		default:
			a.refresh() // a radio cannot be emptied: show the mode again
		}
	})
	s.change = widget.NewButtonWithIcon(lang.L("Change…"), theme.FolderOpenIcon(), a.chooseReceiveFolder)
	s.closed = widget.NewCheck(lang.L("Save received files while Skein is closed"), func(on bool) {
		if !s.loading {
			a.setReceiveWhileClosed(on)
		}
	})
	s.closedN = newWrappedLabel("")
	s.closedN.SizeName = theme.SizeNameCaptionText
	s.content = container.NewVBox(s.radio, container.NewHBox(s.folder, s.change), s.note, s.closed, s.closedN)
	return s
}

func (s *receiveSection) update(a *App) {
	s.loading = true
	defer func() { s.loading = false }()
	sel := lang.L(recvOptDownloads)
	switch a.recvMode {
	case recvFolder:
		sel = lang.L(recvOptFolder)
	case recvAsk:
		sel = lang.L(recvOptAsk)
	}
	if s.radio.Selected != sel {
		s.radio.SetSelected(sel)
	}
	if a.recvMode == recvFolder {
		s.folder.SetText(tildePath(a.recvFolder))
		s.folder.Show()
		s.change.Show()
	} else {
		s.folder.Hide()
		s.change.Hide()
	}
	s.note.SetText(a.receiveDirText() + " " + lang.L("Files are taken from skeind as they arrive, also those that came while Skein was closed."))
	if on := a.receiveWhileClosed(); s.closed.Checked != on {
		s.closed.SetChecked(on)
	}
	switch {
	case a.receiverNote != "":
		setText(s.closedN, a.receiverNote)
		s.closedN.Importance = widget.WarningImportance
	case a.recvMode == recvAsk:
		setText(s.closedN, lang.L("A small service tells you about files that arrive while Skein is closed; they wait in skeind until you accept them."))
		s.closedN.Importance = widget.MediumImportance
	default:
		setText(s.closedN, lang.L("A small service saves files that arrive while Skein is closed and tells you; it steps aside while Skein runs."))
		s.closedN.Importance = widget.MediumImportance
	}
	s.closedN.Refresh()
}

// chooseReceiveFolder asks for the folder for received files; cancelling keeps the setting.
func (a *App) chooseReceiveFolder() {
	d := dialog.NewFolderOpen(func(u fyne.ListableURI, err error) {
		if err != nil || u == nil || u.Path() == "" {
			a.refresh()
			return
		}
		a.setReceiveMode(recvFolder, u.Path())
	}, a.win)
	d.Resize(fyne.NewSize(800, 550))
	d.Show()
}
