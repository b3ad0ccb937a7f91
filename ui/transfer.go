package ui

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// Taildrop in the app. Sending: files dropped on a peer row, or picked with "Send file…" (tray,
// Files tab, `skein-gui --send`), go to a peer that FileTargets offers, one file at a time per
// batch, with progress and cancel in the Files tab. Receiving: every file that arrives in
// skeind's inbox (EventFile, and at start the files that waited) is streamed into a new file in
// the chosen folder, checked and synced, then deleted in the helper, and announced with a
// desktop notification; or, in "ask" mode, only after the user accepts it.
//
// Everything on App is touched on the UI goroutine; a transfer's byte counters are atomics that
// its goroutine writes and the progress ticker reads.

// direction tells a sent file from a received one.
type direction int

const (
	dirSend direction = iota
	dirRecv
)

// transfer is one file on its way.
type transfer struct {
	dir    direction
	name   string // the file's name, as sent or as the sender named it
	peer   string // the other device's name
	path   string // dirSend: the local file
	ctx    context.Context
	cancel context.CancelFunc
	size   atomic.Int64 // -1 until known
	done   atomic.Int64 // bytes so far
	// UI goroutine only below.
	samples []progressSample
	row     *transferRow
}

type progressSample struct {
	t time.Time
	n int64
}

// historyEntry is one finished transfer in the Files tab's "Recent" list.
type historyEntry struct {
	dir    direction
	name   string
	peer   string
	size   int64
	at     time.Time
	text   string // what happened: "Sent 2.0 MiB", "Saved to ~/Downloads/a.pdf", "Cancelled", …
	failed bool
	folder string // a received file's folder, for "Open folder"
}

// historyMax is how many finished transfers the Files tab remembers.
const historyMax = 20

// progressEvery is how often the Files tab redraws progress while something moves.
const progressEvery = 250 * time.Millisecond

// rateWindow is the span over which the transfer rate is measured.
const rateWindow = 3 * time.Second

// Receive modes (the "Received files" setting).
const (
	recvDownloads = "downloads"
	recvFolder    = "folder"
	recvAsk       = "ask"
)

// Preference keys of the app's own Taildrop settings.
const (
	prefRecvMode   = "files.receiveMode"
	prefRecvFolder = "files.receiveFolder"
)

// noticeFunc shows a desktop notification; open, when set, is the "Open folder" action.
type noticeFunc func(summary, body string, open func()) error

// loadFilePrefs reads the "Received files" setting.
func (a *App) loadFilePrefs() {
	p := a.fa.Preferences()
	a.recvMode = p.StringWithFallback(prefRecvMode, recvDownloads)
	a.recvFolder = p.String(prefRecvFolder)
	switch {
	case a.recvMode == recvFolder && a.recvFolder == "":
		a.recvMode = recvDownloads
	case a.recvMode != recvFolder && a.recvMode != recvAsk:
		a.recvMode = recvDownloads
	}
}

// setReceiveMode changes the "Received files" setting (folder only for recvFolder).
func (a *App) setReceiveMode(mode, folder string) {
	a.recvMode = mode
	if mode == recvFolder {
		a.recvFolder = folder
	}
	p := a.fa.Preferences()
	p.SetString(prefRecvMode, a.recvMode)
	p.SetString(prefRecvFolder, a.recvFolder)
	a.refresh()
}

// downloads is the Downloads folder.
func (a *App) downloads() string {
	if a.opts.DownloadsDir != "" {
		return a.opts.DownloadsDir
	}
	return downloadsDir()
}

// receiveDir is where the next received file goes.
func (a *App) receiveDir() string {
	if a.recvMode == recvFolder && a.recvFolder != "" {
		return a.recvFolder
	}
	return a.downloads()
}

// receiveDirText says where received files go, for the Files tab and Settings.
func (a *App) receiveDirText() string {
	switch a.recvMode {
	case recvAsk:
		return lang.L("Skein asks before saving a received file; accepted files go to {{.Dir}}.", map[string]any{"Dir": tildePath(a.downloads())})
	case recvFolder:
		return lang.L("Received files are saved in {{.Dir}}.", map[string]any{"Dir": tildePath(a.receiveDir())})
	}
	return lang.L("Received files are saved in {{.Dir}} (Downloads).", map[string]any{"Dir": tildePath(a.downloads())})
}

// ---- receiving ----

// takeWaiting handles the files that waited in the inbox while the app was away (at start and
// after every reconnect to skeind).
func (a *App) takeWaiting() {
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	files, err := a.client.WaitingFiles(ctx, 0)
	if a.ctx.Err() != nil {
		return
	}
	a.do(func() {
		if err != nil {
			a.filesNote = receiveProblem(asError(err))
		} else {
			a.filesNote = ""
			for _, f := range files {
				a.fileArrived(f)
			}
		}
		a.refreshFiles()
	})
}

// receiveProblem explains why the app cannot take received files ("" when nothing to say).
func receiveProblem(e *ipc.Error) string {
	switch e.Code {
	case ipc.ErrNeedsOperator, ipc.ErrNeedsRoot:
		fix := fixCommand(&ipc.Error{Code: ipc.ErrNeedsOperator})
		return lang.L("Received files cannot be saved: your user may not take them from skeind. Run once:") + " " + fix
	case ipc.ErrNotFound:
		return lang.L("This skeind does not receive files.")
	case ipc.ErrHelperUnreachable:
		return ""
	}
	return lang.L("Could not list received files: {{.Err}}", map[string]any{"Err": e.Message})
}

// fileArrived is called for each file in the inbox (EventFile, or the list at start). Until
// the app holds the receive lock the receiver may be taking files: they are left to it, and
// what remains is taken once the lock is the app's.
func (a *App) fileArrived(f ipc.WaitingFile) {
	if f.Name == "" || a.inFlight[f.Name] || a.ctx.Err() != nil || !a.canTake {
		return
	}
	a.inFlight[f.Name] = true
	if a.recvMode == recvAsk {
		a.askQueue = append(a.askQueue, f)
		a.nextAsk()
		return
	}
	a.startReceive(f, a.receiveDir(), a.recvMode == recvDownloads)
}

// senderName names the device that sent f.
func (a *App) senderName(f ipc.WaitingFile) string {
	if f.From != "" {
		return f.From
	}
	if f.FromID != "" {
		for i := range a.v.st.Peers {
			if a.v.st.Peers[i].StableID == f.FromID {
				return shortName(&a.v.st.Peers[i])
			}
		}
		return f.FromID
	}
	return lang.L("a device")
}

// nextAsk shows the Accept/Decline dialog for the next file waiting for an answer.
func (a *App) nextAsk() {
	if a.askDlg != nil || len(a.askQueue) == 0 {
		return
	}
	f := a.askQueue[0]
	a.askQueue = a.askQueue[1:]
	from := a.senderName(f)
	a.ShowWindow()
	content := newWrappedLabel(lang.L("{{.From}} wants to send you “{{.Name}}” ({{.Size}}).", map[string]any{"From": from, "Name": f.Name, "Size": sizeText(f.Size)}) +
		"\n" + lang.L("Accepted files are saved in {{.Dir}}.", map[string]any{"Dir": tildePath(a.downloads())}))
	d := dialog.NewCustomConfirm(lang.L("File from {{.From}}", map[string]any{"From": from}), lang.L(askAccept), lang.L(askDecline), content, func(ok bool) {
		a.askDlg = nil
		if ok {
			a.startReceive(f, a.downloads(), true)
		} else {
			a.declineFile(f, from)
		}
		a.nextAsk()
	}, a.win)
	a.askDlg = d
	d.Resize(fyne.NewSize(420, 0))
	d.Show()
}

// Labels of the ask-before-saving dialog.
const (
	askAccept  = "Accept"
	askDecline = "Decline"
)

// declineFile deletes f in the helper without saving it.
func (a *App) declineFile(f ipc.WaitingFile, from string) {
	a.goXfer(func() {
		ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
		defer cancel()
		err := a.client.DeleteFile(ctx, f.Name)
		if a.ctx.Err() != nil {
			return
		}
		e := historyEntry{dir: dirRecv, name: f.Name, peer: from, size: f.Size, at: time.Now(), text: lang.L("Declined")}
		if err != nil && !isNotFound(err) {
			e.text, e.failed = lang.L("Declined, but skeind kept it: {{.Err}}", map[string]any{"Err": asError(err).Message}), true
		}
		a.do(func() {
			delete(a.inFlight, f.Name)
			a.addHistory(e)
			a.refreshFiles()
		})
	})
}

// startReceive saves f into dir (created first when mkdir, i.e. Downloads).
func (a *App) startReceive(f ipc.WaitingFile, dir string, mkdir bool) {
	t := a.newTransfer(dirRecv, f.Name, a.senderName(f))
	t.size.Store(f.Size)
	a.goXfer(func() { a.runReceive(t, f, dir, mkdir) })
}

func (a *App) runReceive(t *transfer, f ipc.WaitingFile, dir string, mkdir bool) {
	e := historyEntry{dir: dirRecv, name: f.Name, peer: t.peer, size: f.Size}
	fail := func(err error) {
		if a.ctx.Err() != nil {
			return // quitting: the file stays in the inbox for the next start
		}
		e.at, e.failed = time.Now(), true
		switch {
		case errors.Is(err, context.Canceled):
			e.text = lang.L("Cancelled; it stays in skeind's inbox until the next start")
		default:
			e.text = lang.L("Not saved: {{.Err}}", map[string]any{"Err": errText(err)})
			a.notifyUser(lang.L("Could not save {{.Name}} from {{.Peer}}", map[string]any{"Name": f.Name, "Peer": t.peer}), errText(err), nil)
		}
		a.finishLater(t, &e)
	}
	if mkdir {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			fail(err)
			return
		}
	}
	rc, size, err := a.client.OpenFile(t.ctx, f.Name)
	if err != nil {
		if isNotFound(err) {
			// Taken meanwhile (by another front end, or an earlier run of ours): nothing to do.
			a.finishLater(t, nil)
			return
		}
		fail(err)
		return
	}
	t.size.Store(size)
	e.size = size
	path, err := saveInto(dir, f.Name, rc, size, t.done.Store)
	rc.Close()
	if err != nil {
		fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	derr := a.client.DeleteFile(ctx, f.Name)
	cancel()
	e.at, e.folder = time.Now(), dir
	e.text = lang.L("Saved to {{.Path}}", map[string]any{"Path": tildePath(path)})
	if derr != nil && !isNotFound(derr) {
		e.text += " " + lang.L("(skeind kept its copy: {{.Err}})", map[string]any{"Err": asError(derr).Message})
	}
	open := func() { a.do(func() { a.showInFolder(dir, path) }) }
	a.notifyUser(lang.L("{{.Name}} from {{.Peer}}", map[string]any{"Name": f.Name, "Peer": t.peer}),
		lang.L("Saved to {{.Path}}", map[string]any{"Path": tildePath(path)}), open)
	a.finishLater(t, &e)
}

func isNotFound(err error) bool {
	var e *ipc.Error
	return errors.As(err, &e) && e.Code == ipc.ErrNotFound
}

// errText is an error for people: an ipc error's message, or the error itself.
func errText(err error) string {
	var e *ipc.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// notifyUser sends a desktop notification (from any goroutine), falling back to Fyne's.
func (a *App) notifyUser(summary, body string, open func()) {
	send := a.opts.notify
	if send == nil {
		send = a.notifier.send
	}
	if err := send(summary, body, open); err != nil {
		a.opts.Logf("notification over D-Bus: %v; using Fyne's", err)
		a.do(func() { a.fallbackNotify(summary, body) })
	}
}

// fallbackNotify sends a notification through Fyne, which passes the body on as it is: servers
// that read markup would take a file or peer name's tags as theirs (a link, an image), so
// markup characters are replaced by look-alikes that need no escaping (UI goroutine).
func (a *App) fallbackNotify(summary, body string) {
	a.fa.SendNotification(fyne.NewNotification(noMarkup(summary), noMarkup(body)))
}

// openFolder shows dir in the file manager.
func (a *App) openFolder(dir string) { a.showInFolder(dir, "") }

// showInFolder opens dir in the file manager (UI goroutine). Outside a sandbox that is
// xdg-open of its file:// URL. In a Flatpak the OpenURI portal refuses file:// URLs, so it gets
// a descriptor instead: of file, when given and still there, which the file manager shows
// selected in its folder, else of dir itself.
func (a *App) showInFolder(dir, file string) {
	failed := func(err error) {
		a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrInternal, Message: lang.L("cannot open {{.Path}}: {{.Err}}", map[string]any{"Path": tildePath(dir), "Err": err.Error()})}, true
		a.refresh()
	}
	if !usePortals() {
		if err := a.openURI(&url.URL{Scheme: "file", Path: dir}); err != nil {
			failed(err)
		}
		return
	}
	go func() {
		err := errors.New("no file")
		if file != "" {
			err = portalShow(file)
		}
		if err != nil {
			err = portalShow(dir)
		}
		if err != nil {
			a.do(func() { failed(err) })
		}
	}()
}

// ---- sending ----

// SendFiles offers to send files to a device: it shows the window and the peer picker
// (`skein-gui --send FILE...`, and a second launch with files).
func (a *App) SendFiles(paths []string) {
	a.ShowWindow()
	if len(paths) > 0 {
		a.pickPeer(paths, nil, "")
	}
}

// dropped handles files dropped on the window: onto a peer row that can receive files they go
// to that peer, anywhere else the peer picker opens.
func (a *App) dropped(pos fyne.Position, uris []fyne.URI) {
	var paths, other []string
	for _, u := range uris {
		if u != nil && u.Scheme() == "file" && u.Path() != "" {
			paths = append(paths, u.Path())
		} else if u != nil {
			other = append(other, u.String())
		}
	}
	if len(other) > 0 {
		a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrBadRequest, Message: lang.L("only files can be sent; not {{.What}}", map[string]any{"What": strings.Join(other, ", ")})}, true
		a.refresh()
	}
	if len(paths) == 0 {
		return
	}
	var onto *ipc.Peer
	if p := a.peers.peerAt(pos); p != nil {
		cp := *p
		onto = &cp
	}
	a.pickPeer(paths, onto, "")
}

// pickPeer fetches the peers that can receive files, then sends to onto when it is one of
// them and online, or else shows the picker.
func (a *App) pickPeer(paths []string, onto *ipc.Peer, note string) {
	var targets []ipc.FileTarget
	a.call(15*time.Second, func(ctx context.Context) error {
		var err error
		targets, err = a.client.FileTargets(ctx)
		return err
	}, func(err error) {
		if err != nil {
			return // the banner shows it
		}
		if onto != nil {
			for _, t := range targets {
				if sameDevice(t, onto) {
					if t.Online {
						a.sendTo(t, paths)
						return
					}
					note = lang.L("{{.Name}} is offline; choose another device.", map[string]any{"Name": shortName(onto)})
					break
				}
			}
			if note == "" {
				note = lang.L("{{.Name}} cannot receive files; choose another device.", map[string]any{"Name": shortName(onto)})
			}
		}
		a.showPicker(paths, targets, note)
	})
}

// sameDevice tells whether target is peer p.
func sameDevice(t ipc.FileTarget, p *ipc.Peer) bool {
	if t.StableID != "" && p.StableID != "" {
		return t.StableID == p.StableID
	}
	return t.Name != "" && t.Name == p.ShortName()
}

// Texts of the peer picker.
const (
	pickerTitle   = "Send to…"
	pickerNoPeers = "No device can receive files right now."
)

// showPicker asks which device gets the files: every FileTarget, online ones first; offline
// ones are shown greyed out.
func (a *App) showPicker(paths []string, targets []ipc.FileTarget, note string) {
	if a.picker != nil {
		a.picker.Hide()
	}
	a.ShowWindow()
	targets = slices.Clone(targets)
	slices.SortStableFunc(targets, func(x, y ipc.FileTarget) int {
		if x.Online != y.Online {
			if x.Online {
				return -1
			}
			return 1
		}
		return cmp.Compare(strings.ToLower(x.Name), strings.ToLower(y.Name))
	})
	what := newWrappedLabel(filesSummary(paths))
	what.TextStyle = fyne.TextStyle{Bold: true}
	top := []fyne.CanvasObject{what}
	if note != "" {
		n := newWrappedLabel(note)
		n.Importance = widget.WarningImportance
		top = append(top, n)
	}
	var d dialog.Dialog
	list := newTargetList(targets, func(t ipc.FileTarget) {
		d.Hide()
		a.picker = nil
		a.sendTo(t, paths)
	})
	if len(targets) == 0 {
		top = append(top, newWrappedLabel(lang.L(pickerNoPeers)))
	}
	d = dialog.NewCustom(lang.L(pickerTitle), lang.L("Cancel"), pickerContent(top, list), a.win)
	d.SetOnClosed(func() {
		if a.picker == d {
			a.picker = nil
		}
	})
	a.picker = d
	d.Resize(fyne.NewSize(380, 0))
	d.Show()
}

// filesSummary names what is being sent: "report.pdf" or "3 files: a, b, c".
func filesSummary(paths []string) string {
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = filepath.Base(p)
	}
	if len(names) == 1 {
		return names[0]
	}
	list := names
	if len(list) > 3 {
		list = append(slices.Clone(list[:3]), "…")
	}
	return lang.L("{{.N}} files: {{.Names}}", map[string]any{"N": strconv.Itoa(len(names)), "Names": strings.Join(list, ", ")})
}

// sendTo sends the files to target, one after the other.
func (a *App) sendTo(target ipc.FileTarget, paths []string) {
	batch := make([]*transfer, len(paths))
	for i, p := range paths {
		t := a.newTransfer(dirSend, filepath.Base(p), cmp.Or(target.Name, target.StableID))
		t.path = p
		batch[i] = t
	}
	a.tabs.selectFiles()
	peer := cmp.Or(target.StableID, target.Name)
	a.goXfer(func() {
		for _, t := range batch {
			a.runSend(t, peer)
		}
	})
}

func (a *App) runSend(t *transfer, peer string) {
	e := historyEntry{dir: dirSend, name: t.name, peer: t.peer, size: -1}
	finish := func(err error) {
		e.at = time.Now()
		if err != nil {
			e.failed = true
			if errors.Is(err, context.Canceled) {
				e.text = lang.L("Cancelled")
			} else {
				e.text = lang.L("Not sent: {{.Err}}", map[string]any{"Err": errText(err)})
			}
		}
		a.finishLater(t, &e)
	}
	if err := t.ctx.Err(); err != nil {
		finish(err)
		return
	}
	f, size, err := openToSend(t.path)
	if err != nil {
		finish(err)
		return
	}
	defer f.Close()
	t.size.Store(size)
	e.size = size
	res, err := a.client.PutFile(t.ctx, peer, t.name, size, io.LimitReader(f, size), t.done.Store)
	if err != nil {
		finish(err)
		return
	}
	e.text = lang.L("Sent {{.Size}}", map[string]any{"Size": sizeText(size)})
	if res.ResumedAt > 0 {
		e.text = lang.L("Sent {{.Size}}, resumed at {{.At}}", map[string]any{"Size": sizeText(size), "At": sizeText(res.ResumedAt)})
	}
	finish(nil)
}

// chooseFileToSend opens a file chooser, then the peer picker ("Send file…").
func (a *App) chooseFileToSend() {
	a.ShowWindow()
	d := dialog.NewFileOpen(func(r fyne.URIReadCloser, err error) {
		if err != nil {
			a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrInternal, Message: lang.L("choosing a file: {{.Err}}", map[string]any{"Err": err.Error()})}, true
			a.refresh()
			return
		}
		if r == nil {
			return // cancelled
		}
		path := r.URI().Path()
		r.Close()
		a.pickPeer([]string{path}, nil, "")
	}, a.win)
	d.Resize(fyne.NewSize(800, 550))
	d.Show()
}

// ---- transfers ----

// newTransfer adds a transfer to the Files tab.
func (a *App) newTransfer(dir direction, name, peer string) *transfer {
	t := &transfer{dir: dir, name: name, peer: peer}
	t.size.Store(-1)
	t.ctx, t.cancel = context.WithCancel(a.ctx)
	a.xfers = append(a.xfers, t)
	a.files.addRow(t)
	a.ensureTicker()
	return t
}

// goXfer runs fn on its own goroutine; Stop waits for it.
func (a *App) goXfer(fn func()) {
	if a.ctx.Err() != nil {
		return
	}
	a.xferWG.Add(1)
	go func() {
		defer a.xferWG.Done()
		fn()
	}()
}

// finishLater ends t on the UI goroutine, adding e (if any) to the history.
func (a *App) finishLater(t *transfer, e *historyEntry) {
	if a.ctx.Err() != nil {
		return
	}
	a.do(func() {
		t.cancel()
		if i := slices.Index(a.xfers, t); i >= 0 {
			a.xfers = slices.Delete(a.xfers, i, i+1)
		}
		a.files.removeRow(t)
		if t.dir == dirRecv {
			delete(a.inFlight, t.name)
		}
		if e != nil {
			a.addHistory(*e)
		}
		a.refreshFiles()
	})
}

func (a *App) addHistory(e historyEntry) {
	if e.at.IsZero() {
		e.at = time.Now()
	}
	a.hist = append([]historyEntry{e}, a.hist...)
	if len(a.hist) > historyMax {
		a.hist = a.hist[:historyMax]
	}
	a.files.historyChanged = true
}

// ensureTicker redraws progress every progressEvery while a transfer is on.
func (a *App) ensureTicker() {
	if a.ticking || a.ctx.Err() != nil {
		return
	}
	a.ticking = true
	go func() {
		tk := time.NewTicker(progressEvery)
		defer tk.Stop()
		for {
			select {
			case <-a.ctx.Done():
				return
			case <-tk.C:
			}
			more := make(chan bool, 1)
			a.do(func() {
				a.tickProgress(time.Now())
				if len(a.xfers) == 0 {
					a.ticking = false
				}
				more <- a.ticking
			})
			select {
			case m := <-more:
				if !m {
					return
				}
			case <-a.ctx.Done():
				return
			}
		}
	}()
}

// tickProgress samples every transfer and redraws its row.
func (a *App) tickProgress(now time.Time) {
	for _, t := range a.xfers {
		n := t.done.Load()
		t.samples = append(t.samples, progressSample{now, n})
		cut := 0
		for cut < len(t.samples)-2 && now.Sub(t.samples[cut].t) > rateWindow {
			cut++
		}
		t.samples = t.samples[cut:]
		if t.row != nil {
			t.row.update(t)
		}
	}
}

// rate is the bytes per second over the samples (0 until there are enough).
func (t *transfer) rate() float64 {
	if len(t.samples) < 2 {
		return 0
	}
	first, last := t.samples[0], t.samples[len(t.samples)-1]
	dt := last.t.Sub(first.t).Seconds()
	if dt < 0.5 {
		return 0
	}
	return float64(last.n-first.n) / dt
}

// progressText is a row's detail line: "1.0 MiB of 4.0 MiB · 2.0 MiB/s · 2 s left".
func (t *transfer) progressText() string {
	size, n := t.size.Load(), t.done.Load()
	if t.dir == dirSend && size < 0 {
		return lang.L("Waiting…")
	}
	parts := []string{lang.L("{{.Done}} of {{.Size}}", map[string]any{"Done": sizeText(n), "Size": sizeText(size)})}
	if n == 0 {
		parts[0] = lang.L("Starting… {{.Size}}", map[string]any{"Size": sizeText(size)})
	}
	if r := t.rate(); r > 0 {
		parts = append(parts, rateText(r))
		if size > n {
			parts = append(parts, etaText(float64(size-n)/r))
		}
	}
	return strings.Join(parts, " · ")
}

// fraction is the progress bar's value.
func (t *transfer) fraction() float64 {
	size, n := t.size.Load(), t.done.Load()
	if size <= 0 {
		return 0
	}
	return min(float64(n)/float64(size), 1)
}

// refreshFiles redraws the Files tab.
func (a *App) refreshFiles() {
	a.files.update(a)
}

// openURIDefault is the app's way of opening a URL (Fyne's: xdg-open or the OpenURI portal).
func (a *App) openURIDefault(u *url.URL) error { return a.fa.OpenURL(u) }
