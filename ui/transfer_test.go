package ui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// filesTailnet is running() with StableIDs, as skeind reports them.
func filesTailnet() ipc.Status {
	st := running()
	for i := range st.Peers {
		st.Peers[i].StableID = "stable-" + st.Peers[i].HostName
	}
	return st
}

// fileTargets: beta and gamma online, delta offline.
func fileTargets() []ipc.FileTarget {
	return []ipc.FileTarget{
		{StableID: "stable-delta", Name: "delta", Online: false},
		{StableID: "stable-gamma", Name: "gamma", Online: true},
		{StableID: "stable-beta", Name: "beta", Online: true},
	}
}

func newFilesHarness(t *testing.T) *harness {
	h := newHarness(t, filesTailnet(), ipc.Prefs{})
	h.be.SetFileTargets(fileTargets())
	h.waitConnected()
	return h
}

// waitConnected waits until the app shows the tailnet (its watch stream is up).
func (h *harness) waitConnected() {
	h.t.Helper()
	h.eventually("connected", func() string { return h.expect("Connected") })
	h.eventually("watching", func() string {
		if h.be.Watchers() == 0 {
			return "no watch stream"
		}
		return ""
	})
}

// writeFile creates dir/name with data and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// rowPos is a point inside the peer row whose name starts with name.
func (h *harness) rowPos(name string) fyne.Position {
	h.t.Helper()
	var pos fyne.Position
	h.ui(func() {
		for _, r := range h.a.peers.rows {
			if r.name.Text == name || strings.HasPrefix(r.name.Text, name+" ") {
				if p := h.fa.Driver().AbsolutePositionForObject(r); !p.IsZero() {
					pos = p.AddXY(10, r.Size().Height/2)
				}
			}
		}
	})
	if pos.IsZero() {
		h.t.Fatalf("no row for %s on screen", name)
	}
	return pos
}

func (h *harness) drop(pos fyne.Position, paths ...string) {
	uris := make([]fyne.URI, len(paths))
	for i, p := range paths {
		uris[i] = storage.NewFileURI(p)
	}
	h.ui(func() { h.a.dropped(pos, uris) })
}

// overlay is what the top dialog shows.
func (h *harness) overlay() seen {
	s := seen{buttons: map[string]*widget.Button{}}
	if top := h.a.Window().Canvas().Overlays().Top(); top != nil {
		walk(top, &s)
	}
	return s
}

func (h *harness) expectOverlay(texts ...string) string {
	s := h.overlay()
	for _, t := range texts {
		if !s.has(t) {
			return fmt.Sprintf("%q not in the dialog; it shows: %s", t, s)
		}
	}
	return ""
}

func (h *harness) tapOverlay(label string) {
	h.t.Helper()
	var b *widget.Button
	h.ui(func() { b = h.overlay().buttons[label] })
	if b == nil {
		h.t.Fatalf("no button %q in the dialog", label)
	}
	h.ui(func() {
		if b.Disabled() {
			h.t.Fatalf("dialog button %q is disabled", label)
		}
		test.Tap(b)
	})
}

// sentTo waits until exactly the files want (name → data) were sent to peer.
func (h *harness) waitSent(peer string, want map[string][]byte) {
	h.t.Helper()
	h.eventually("sent", func() string {
		sent := h.be.Sent()
		if len(sent) != len(want) {
			return fmt.Sprintf("%d files sent, want %d", len(sent), len(want))
		}
		for _, s := range sent {
			if s.Peer != peer {
				return fmt.Sprintf("%s sent to %q, want %q", s.Name, s.Peer, peer)
			}
			if d, ok := want[s.Name]; !ok || !bytes.Equal(d, s.Data) {
				return fmt.Sprintf("%s: unexpected file or bytes (%d bytes)", s.Name, len(s.Data))
			}
		}
		return ""
	})
}

func TestDropOnPeerRowSends(t *testing.T) {
	h := newFilesHarness(t)
	data := pattern(1024)
	path := writeFile(t, t.TempDir(), "notes.txt", data)
	h.drop(h.rowPos("beta"), path)
	h.waitSent("stable-beta", map[string][]byte{"notes.txt": data})
	// The Files tab opened and keeps the finished send in its history.
	h.eventually("history", func() string { return h.expect("notes.txt to beta", "Sent 1.0 KiB") })

	// Two files onto gamma: both go, one after the other.
	h.ui(func() { h.a.tabs.t.Select(h.a.tabs.peers) })
	a, b := pattern(300), pattern(5000)
	dir := t.TempDir()
	h.drop(h.rowPos("gamma"), writeFile(t, dir, "a.bin", a), writeFile(t, dir, "b.bin", b))
	h.eventually("two more", func() string {
		if n := len(h.be.Sent()); n != 3 {
			return fmt.Sprintf("%d sent", n)
		}
		return ""
	})
	for _, s := range h.be.Sent()[1:] {
		if s.Peer != "stable-gamma" || (s.Name == "a.bin" && !bytes.Equal(s.Data, a)) || (s.Name == "b.bin" && !bytes.Equal(s.Data, b)) {
			t.Errorf("sent %s to %s (%d bytes)", s.Name, s.Peer, len(s.Data))
		}
	}
}

func TestDropElsewhereOpensPicker(t *testing.T) {
	h := newFilesHarness(t)
	data := pattern(2000)
	path := writeFile(t, t.TempDir(), "photo.jpg", data)

	// Dropped on the header: the picker lists the file targets, online first, offline greyed.
	h.drop(fyne.NewPos(20, 20), path)
	h.eventually("picker", func() string {
		return h.expectOverlay(pickerTitle, "photo.jpg", "[beta]", "[gamma]", "[delta (offline)]")
	})
	h.ui(func() {
		s := h.overlay()
		if !s.buttons["delta (offline)"].Disabled() {
			t.Error("offline delta can be picked")
		}
		var order []string
		for _, txt := range s.texts {
			if strings.HasPrefix(txt, "[") && txt != "[Cancel]" {
				order = append(order, txt)
			}
		}
		if want := []string{"[beta]", "[gamma]", "[delta (offline)]"}; !slices.Equal(order, want) {
			t.Errorf("picker order %v, want %v", order, want)
		}
	})
	h.tapOverlay("gamma")
	h.waitSent("stable-gamma", map[string][]byte{"photo.jpg": data})

	// Dropped on an offline peer's row: the picker says why.
	h.ui(func() { h.a.tabs.t.Select(h.a.tabs.peers) })
	h.drop(h.rowPos("delta"), path)
	h.eventually("picker with note", func() string {
		return h.expectOverlay("delta is offline; choose another device.", "[beta]")
	})
	h.tapOverlay("Cancel")
	if n := len(h.be.Sent()); n != 1 {
		t.Errorf("%d files sent after Cancel, want 1", n)
	}
}

func TestSendFilesFromCommandLineAndTray(t *testing.T) {
	h := newFilesHarness(t)
	if it := h.menuItem(TraySendFile); it.Disabled {
		t.Error("Send file… disabled while connected")
	}
	dir := t.TempDir()
	one, two := writeFile(t, dir, "one.txt", []byte("one")), writeFile(t, dir, "two.txt", []byte("two"))
	h.ui(func() { h.a.SendFiles([]string{one, two}) })
	h.eventually("picker", func() string { return h.expectOverlay("2 files: one.txt, two.txt", "[beta]") })
	h.tapOverlay("beta")
	h.waitSent("stable-beta", map[string][]byte{"one.txt": []byte("one"), "two.txt": []byte("two")})

	// A file that cannot be read is reported in the history, inline.
	h.ui(func() { h.a.SendFiles([]string{filepath.Join(dir, "missing.txt")}) })
	h.eventually("picker again", func() string { return h.expectOverlay("missing.txt") })
	h.tapOverlay("beta")
	h.eventually("error shown", func() string {
		return h.expect("missing.txt to beta", "Not sent: open "+filepath.Join(dir, "missing.txt")+": no such file or directory")
	})
}

func TestSendProgressCancelResumeAndError(t *testing.T) {
	h := newFilesHarness(t)
	const size = 8 << 20
	cancelled := make(chan error, 1)
	h.be.OnPutFile(func(ctx context.Context, peer, name string, sz int64, body io.Reader) (ipc.FilePutResult, error) {
		switch name {
		case "big.bin":
			// Take half, then trickle until the sender gives up (the body breaks).
			if _, err := io.CopyN(io.Discard, body, sz/2); err != nil {
				return ipc.FilePutResult{}, err
			}
			buf := make([]byte, 8<<10)
			for {
				if _, err := io.ReadFull(body, buf); err != nil {
					cancelled <- err
					return ipc.FilePutResult{}, err
				}
				select {
				case <-ctx.Done():
					cancelled <- ctx.Err()
					return ipc.FilePutResult{}, ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		case "resumed.bin":
			n, err := io.Copy(io.Discard, body)
			return ipc.FilePutResult{Name: name, Size: n, ResumedAt: 4096}, err
		}
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "beta went away"}
	})
	dir := t.TempDir()
	h.drop(h.rowPos("beta"), writeFile(t, dir, "big.bin", pattern(size)))

	// Progress: at least half of it handed over, the rest not, shown as bytes and a bar.
	var tr *transfer
	h.eventually("progress", func() string {
		if len(h.a.xfers) != 1 || h.a.xfers[0].row == nil {
			return "no transfer row"
		}
		tr = h.a.xfers[0]
		r := tr.row
		if !strings.HasSuffix(r.detail.Text, " of 8.0 MiB") && !strings.Contains(r.detail.Text, " of 8.0 MiB · ") {
			return "detail: " + r.detail.Text
		}
		if v := r.bar.Value; v < 0.5 || v >= 1 {
			return fmt.Sprintf("bar at %.2f", v)
		}
		return h.expect("big.bin to beta")
	})
	h.ui(func() {
		if got := tr.row.detail.Text; !strings.HasPrefix(got, "4.") && !strings.HasPrefix(got, "5.") && !strings.HasPrefix(got, "6.") && !strings.HasPrefix(got, "7.") {
			t.Errorf("progress %q, want 4–8 MiB of 8.0 MiB", got)
		}
		test.Tap(tr.row.cancel)
	})
	select {
	case err := <-cancelled:
		t.Logf("the helper saw the send end: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the helper's PutFile was not cancelled")
	}
	h.eventually("cancelled", func() string {
		if len(h.a.xfers) != 0 {
			return "transfer still shown"
		}
		return h.expect("big.bin to beta", "Cancelled", filesIdle)
	})

	// A resumed send says where it resumed.
	h.ui(func() { h.a.tabs.t.Select(h.a.tabs.peers) })
	h.drop(h.rowPos("beta"), writeFile(t, dir, "resumed.bin", pattern(8192)))
	h.eventually("resumed", func() string { return h.expect("resumed.bin to beta", "Sent 8.0 KiB, resumed at 4.0 KiB") })

	// The helper's error is shown inline, in red.
	h.ui(func() { h.a.tabs.t.Select(h.a.tabs.peers) })
	h.drop(h.rowPos("beta"), writeFile(t, dir, "fails.bin", []byte("x")))
	h.eventually("error", func() string { return h.expect("fails.bin to beta", "Not sent: beta went away") })
	h.ui(func() {
		if h.a.hist[0].name != "fails.bin" || !h.a.hist[0].failed {
			t.Errorf("history head %+v", h.a.hist[0])
		}
	})
}

func TestProgressText(t *testing.T) {
	tr := &transfer{dir: dirSend}
	tr.size.Store(-1)
	if got := tr.progressText(); got != "Waiting…" {
		t.Errorf("before open: %q", got)
	}
	tr.size.Store(10 << 20)
	tr.done.Store(2 << 20)
	t0 := time.Now()
	tr.samples = []progressSample{{t0, 0}, {t0.Add(2 * time.Second), 2 << 20}}
	if got, want := tr.progressText(), "2.0 MiB of 10.0 MiB · 1.0 MiB/s · 8 s left"; got != want {
		t.Errorf("progress %q, want %q", got, want)
	}
	if f := tr.fraction(); f != 0.2 {
		t.Errorf("fraction %v", f)
	}
}

// waitFile waits until path holds data.
func (h *harness) waitFile(path string, data []byte) {
	h.t.Helper()
	h.eventually("file "+path, func() string {
		got, err := os.ReadFile(path)
		if err != nil {
			return err.Error()
		}
		if !bytes.Equal(got, data) {
			return fmt.Sprintf("%d bytes, want %d", len(got), len(data))
		}
		return ""
	})
}

func (h *harness) waitInboxEmpty() {
	h.t.Helper()
	h.eventually("inbox emptied", func() string {
		if in := h.be.Inbox(); len(in) > 0 {
			return fmt.Sprintf("inbox still holds %v", in)
		}
		return ""
	})
}

func TestReceiveSavesToDownloads(t *testing.T) {
	h := &harness{t: t, be: ipctest.NewBackend(filesTailnet(), ipc.Prefs{})}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	var opened []string
	h.before = func(a *App) {
		a.openURI = func(u *url.URL) error { opened = append(opened, u.String()); return nil }
	}
	h.start()
	h.waitConnected()
	data := pattern(100 << 10)
	h.be.AddFile("report.pdf", "air", data)
	h.waitFile(filepath.Join(h.downloads, "report.pdf"), data)
	h.waitInboxEmpty()
	if fi, err := os.Stat(h.downloads); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Downloads created as %v (%v), want 0700", fi.Mode(), err)
	}
	h.ui(func() { h.a.tabs.selectFiles() })
	h.eventually("history", func() string {
		return h.expect("report.pdf from air", "Saved to "+tildePath(filepath.Join(h.downloads, "report.pdf")))
	})
	n := h.sentNotices()
	if len(n) != 1 || n[0].summary != "report.pdf from air" || !strings.Contains(n[0].body, "report.pdf") || n[0].open == nil {
		t.Fatalf("notifications %+v, want one for report.pdf from air with an action", n)
	}
	// The notification's action opens the folder.
	n[0].open()
	h.ui(func() {
		want := (&url.URL{Scheme: "file", Path: h.downloads}).String()
		if !slices.Equal(opened, []string{want}) {
			t.Errorf("opened %v, want %s", opened, want)
		}
	})
}

func TestReceiveCollisionAndSymlinks(t *testing.T) {
	h := newFilesHarness(t)
	if err := os.MkdirAll(h.downloads, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	victim := writeFile(t, outside, "victim.txt", []byte("victim"))
	writeFile(t, h.downloads, "report.pdf", []byte("older report"))
	// "report (1).pdf" is a link to a file elsewhere; "notes.txt" a dangling one.
	if err := os.Symlink(victim, filepath.Join(h.downloads, "report (1).pdf")); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(outside, "created-through-link.txt")
	if err := os.Symlink(dangling, filepath.Join(h.downloads, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	data := pattern(4096)
	h.be.AddFile("report.pdf", "air", data)
	h.waitFile(filepath.Join(h.downloads, "report (2).pdf"), data)
	h.waitInboxEmpty()
	h.be.AddFile("notes.txt", "air", []byte("notes"))
	h.waitFile(filepath.Join(h.downloads, "notes (1).txt"), []byte("notes"))
	h.waitInboxEmpty()

	if b, _ := os.ReadFile(victim); string(b) != "victim" {
		t.Errorf("the link's target was written: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(h.downloads, "report.pdf")); string(b) != "older report" {
		t.Errorf("the older report.pdf was replaced: %q", b)
	}
	if _, err := os.Lstat(dangling); !os.IsNotExist(err) {
		t.Errorf("a file was created through the dangling link: %v", err)
	}
	for _, l := range []string{"report (1).pdf", "notes.txt"} {
		if fi, err := os.Lstat(filepath.Join(h.downloads, l)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer the planted link: %v", l, err)
		}
	}
}

func TestReceiveWaitingAtStart(t *testing.T) {
	h := &harness{t: t, be: ipctest.NewBackend(filesTailnet(), ipc.Prefs{})}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	// Arrived while the app was closed: nobody watched, so there was no event.
	h.be.AddFile("early.txt", "gamma", []byte("waited"))
	h.start()
	h.waitFile(filepath.Join(h.downloads, "early.txt"), []byte("waited"))
	h.waitInboxEmpty()
	// The notification follows the inbox's delete: wait for it, then make sure it is the only one.
	h.waitNotices(1, "early.txt from gamma")
}

// waitNotices waits until n notifications were sent, the last with summary, and checks that
// no more follow.
func (h *harness) waitNotices(n int, summary string) {
	h.t.Helper()
	h.eventually("notifications", func() string {
		if got := h.sentNotices(); len(got) != n || got[n-1].summary != summary {
			return fmt.Sprintf("notifications %+v, want %d, the last %q", got, n, summary)
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond)
	if got := h.sentNotices(); len(got) != n {
		h.t.Errorf("notifications %+v, want %d", got, n)
	}
}

func TestReceiveToChosenFolder(t *testing.T) {
	folder := t.TempDir()
	h := &harness{t: t, be: ipctest.NewBackend(filesTailnet(), ipc.Prefs{})}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	h.before = func(a *App) { a.setReceiveMode(recvFolder, folder) }
	h.start()
	h.waitConnected()
	h.ui(func() {
		if h.a.recv.radio.Selected != recvOptFolder {
			t.Errorf("setting shows %q", h.a.recv.radio.Selected)
		}
		if got := h.fa.Preferences().String(prefRecvMode); got != recvFolder {
			t.Errorf("stored mode %q", got)
		}
	})
	h.be.AddFile("a.txt", "beta", []byte("a"))
	h.waitFile(filepath.Join(folder, "a.txt"), []byte("a"))
	if _, err := os.Stat(h.downloads); !os.IsNotExist(err) {
		t.Errorf("Downloads touched: %v", err)
	}
}

func TestReceiveAskAcceptDecline(t *testing.T) {
	h := &harness{t: t, be: ipctest.NewBackend(filesTailnet(), ipc.Prefs{})}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	h.before = func(a *App) { a.setReceiveMode(recvAsk, "") }
	h.start()
	h.waitConnected()

	h.be.AddFile("run-me.sh", "air", []byte("#!/bin/sh\n"))
	h.eventually("asked", func() string {
		return h.expectOverlay("File from air", "air wants to send you “run-me.sh” (10 B).\nAccepted files are saved in "+tildePath(h.downloads)+".", "[Accept]", "[Decline]")
	})
	h.tapOverlay(askDecline)
	h.waitInboxEmpty()
	h.ui(func() { h.a.tabs.selectFiles() })
	h.eventually("declined", func() string { return h.expect("run-me.sh from air", "Declined") })
	if _, err := os.Stat(filepath.Join(h.downloads, "run-me.sh")); !os.IsNotExist(err) {
		t.Errorf("declined file saved: %v", err)
	}

	data := pattern(3000)
	h.be.AddFile("photo.jpg", "air", data)
	h.eventually("asked again", func() string { return h.expectOverlay("File from air", "[Accept]") })
	h.tapOverlay(askAccept)
	h.waitFile(filepath.Join(h.downloads, "photo.jpg"), data)
	h.waitInboxEmpty()
	h.waitNotices(1, "photo.jpg from air")
}

func TestUserDirs(t *testing.T) {
	const home = "/home/ann"
	file := []byte(`# written by xdg-user-dirs-update
XDG_DESKTOP_DIR="$HOME/Desktop"
XDG_DOWNLOAD_DIR="$HOME/Téléchargements"
XDG_MUSIC_DIR="/srv/music"
`)
	for _, c := range []struct{ key, want string }{
		{"XDG_DOWNLOAD_DIR", "/home/ann/Téléchargements"},
		{"XDG_MUSIC_DIR", "/srv/music"},
		{"XDG_VIDEOS_DIR", ""},
	} {
		if got := userDir(file, c.key, home); got != c.want {
			t.Errorf("%s = %q, want %q", c.key, got, c.want)
		}
	}
	for in, want := range map[string]string{
		`XDG_DOWNLOAD_DIR="$HOME/"`:                        "", // "none"
		`XDG_DOWNLOAD_DIR=relative/dir`:                    "",
		`XDG_DOWNLOAD_DIR="relative/dir"`:                  "",
		`XDG_DOWNLOAD_DIR="$HOME/My \"Files\""`:            `/home/ann/My "Files"`,
		"XDG_DOWNLOAD_DIR=\"/a\"\nXDG_DOWNLOAD_DIR=\"/b\"": "/b",
	} {
		if got := userDir([]byte(in), "XDG_DOWNLOAD_DIR", home); got != want {
			t.Errorf("%s → %q, want %q", in, got, want)
		}
	}

	tmp := t.TempDir()
	t.Setenv("HOME", tmp)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "cfg"))
	if got := downloadsDir(); got != filepath.Join(tmp, "Downloads") {
		t.Errorf("without user-dirs.dirs: %q", got)
	}
	os.MkdirAll(filepath.Join(tmp, "cfg"), 0o755)
	writeFile(t, filepath.Join(tmp, "cfg"), "user-dirs.dirs", []byte(`XDG_DOWNLOAD_DIR="$HOME/Incoming"`))
	if got := downloadsDir(); got != filepath.Join(tmp, "Incoming") {
		t.Errorf("with user-dirs.dirs: %q", got)
	}
}

func TestFileNames(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":           "report.pdf",
		"../../etc/passwd":     "passwd",
		"dir/a.txt":            "a.txt",
		".bashrc":              "_bashrc",
		"..":                   "received file",
		"":                     "received file",
		"a\nb\x00c.txt":        "a_b_c.txt",
		"  spaced  ":           "spaced",
		"invoice\u202Efdp.exe": "invoice_fdp.exe",
	} {
		if got := safeFileName(in); got != want {
			t.Errorf("safeFileName(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("é", 200) + ".pdf"
	if got := safeFileName(long); len(got) > nameMax || !strings.HasSuffix(got, ".pdf") || !utf8Valid(got) {
		t.Errorf("long name → %d bytes %q", len(got), got)
	}
	for _, c := range []struct {
		name string
		n    int
		want string
	}{
		{"report.pdf", 0, "report.pdf"},
		{"report.pdf", 1, "report (1).pdf"},
		{"backup.tar.gz", 2, "backup (2).tar.gz"},
		{"Makefile", 3, "Makefile (3)"},
		{"v1.2.3.zip", 1, "v1.2.3 (1).zip"},
	} {
		if got := numberedName(c.name, c.n); got != c.want {
			t.Errorf("numberedName(%q, %d) = %q, want %q", c.name, c.n, got, c.want)
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestSaveIntoChecksLength(t *testing.T) {
	dir := t.TempDir()
	// Fewer bytes than announced: nothing is left behind.
	if _, err := saveInto(dir, "short.bin", bytes.NewReader([]byte("abc")), 10, nil); !errors.Is(err, errShort) {
		t.Errorf("short stream: %v", err)
	}
	// More bytes than announced: refused too.
	if _, err := saveInto(dir, "long.bin", bytes.NewReader([]byte("abcdef")), 3, nil); !errors.Is(err, errShort) {
		t.Errorf("long stream: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	var last int64
	p, err := saveInto(dir, "ok.bin", bytes.NewReader([]byte("abc")), 3, func(n int64) { last = n })
	if err != nil || p != filepath.Join(dir, "ok.bin") || last != 3 {
		t.Errorf("saveInto = %q, %v (progress %d)", p, err, last)
	}
	// A folder in the way of a name counts as taken.
	os.Mkdir(filepath.Join(dir, "x.txt"), 0o755)
	if p, err := saveInto(dir, "x.txt", strings.NewReader("x"), 1, nil); err != nil || filepath.Base(p) != "x (1).txt" {
		t.Errorf("past a folder: %q, %v", p, err)
	}
}

func TestOpenToSend(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "a.bin", pattern(1234))
	f, size, err := openToSend(p)
	if err != nil || size != 1234 {
		t.Fatalf("openToSend = %d, %v", size, err)
	}
	f.Close()
	if _, _, err := openToSend(dir); err == nil || !strings.Contains(err.Error(), "is a folder") {
		t.Errorf("folder: %v", err)
	}
}

func TestSingleInstanceSend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gui.sock")
	first, err := Claim(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	got := make(chan []string, 1)
	go first.ServeSend(func() { got <- nil }, func(p []string) { got <- p })
	files := []string{"/home/ann/a file.pdf", "/run/user/1000/doc/1a2b3c/b\nc.txt"}
	if _, err := Claim(path, files...); err != ErrRunning {
		t.Fatalf("second Claim: %v, want ErrRunning", err)
	}
	select {
	case p := <-got:
		if !slices.Equal(p, files) {
			t.Errorf("first instance got %q, want %q", p, files)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first instance got no files")
	}
}

func TestSingleInstanceSendToOlderInstance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gui.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// An instance that only knows "show".
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			n, _ := c.Read(buf)
			if string(buf[:n]) == "show\n" {
				c.Write([]byte("ok\n"))
			}
			c.Close()
		}
	}()
	if _, err := Claim(path, "/tmp/a.txt"); err != ErrCannotSend {
		t.Fatalf("Claim with files: %v, want ErrCannotSend", err)
	}
}
