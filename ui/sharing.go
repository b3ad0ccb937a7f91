package ui

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
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

// Sharing in Settings: what `skein serve` shares now, each with Stop, and "Share a folder…",
// which shares a folder in the background (`skein serve --bg --http PORT FOLDER`) as you: the
// files are read by a process that runs as the folder's owner.

// Labels.
const (
	sharingShareFolder = "Share a folder…"
	sharingStop        = "Stop"
	sharingNone        = "Nothing is shared with the tailnet."
)

// firstSharePort is where "Share a folder…" starts looking for a free port.
const firstSharePort = 8080

type sharingSection struct {
	a       *App
	content *fyne.Container
	list    *fyne.Container
	share   *widget.Button
	cfg     ipc.ServeConfig
	fetched time.Time
	loading bool
}

func newSharingSection(a *App) *sharingSection {
	s := &sharingSection{a: a, list: container.NewVBox()}
	s.share = widget.NewButtonWithIcon(lang.L(sharingShareFolder), theme.FolderOpenIcon(), func() {
		d := dialog.NewFolderOpen(func(u fyne.ListableURI, err error) {
			if err == nil && u != nil {
				s.shareFolder(u.Path())
			}
		}, a.Window())
		d.Show()
	})
	s.content = container.NewVBox(s.list, container.NewHBox(s.share))
	return s
}

// update re-reads what is shared (at most every two seconds) and redraws it.
func (s *sharingSection) update(a *App) {
	if a.v.reachable && a.v.havePrefs {
		s.share.Enable()
	} else {
		s.share.Disable()
	}
	if !s.loading && time.Since(s.fetched) > 2*time.Second && a.v.reachable {
		s.refresh()
	}
	s.draw()
}

// refresh re-reads the config in the background. Not through a.call: this read is no action of
// the user's, so it must not clear an action's error banner as a successful call does.
func (s *sharingSection) refresh() {
	s.loading = true
	go func() {
		ctx, cancel := context.WithTimeout(s.a.ctx, 10*time.Second)
		defer cancel()
		cfg, err := s.a.client.ServeConfig(ctx)
		s.a.do(func() {
			s.loading, s.fetched = false, time.Now()
			if err == nil { // an old skeind without serve simply shows nothing
				s.cfg = cfg
				s.draw()
			}
		})
	}()
}

// entries are the served ports as "http://host:port/mount → what" lines, background first.
func shareEntries(cfg ipc.ServeConfig) []shareEntry {
	var out []shareEntry
	add := func(c *ipc.ServeConfig, fg bool) {
		for p, h := range c.TCP {
			if h.TCPForward != "" {
				out = append(out, shareEntry{port: p, mode: "tcp", text: lang.L("TCP port {{.Port}} → {{.Target}}", map[string]any{"Port": p, "Target": h.TCPForward}), fg: fg})
			}
		}
		for hp, w := range c.Web {
			host, ps, _ := net.SplitHostPort(hp)
			p, _ := strconv.Atoi(ps)
			for m, h := range w.Handlers {
				what := cmpOr(h.Path, h.Proxy, strconv.Quote(h.Text))
				out = append(out, shareEntry{port: uint16(p), mode: "http", mount: m, text: fmt.Sprintf("http://%s:%d%s → %s", host, p, m, what), fg: fg})
			}
		}
	}
	add(&cfg, false)
	for _, c := range cfg.Foreground {
		add(c, true)
	}
	slices.SortFunc(out, func(a, b shareEntry) int { return strings.Compare(a.text, b.text) })
	return out
}

type shareEntry struct {
	port  uint16
	mode  string
	mount string
	text  string
	fg    bool // a running skein serve command's: stopped there, not here
}

func cmpOr(vals ...string) string {
	for _, v := range vals {
		if v != "" && v != `""` {
			return v
		}
	}
	return ""
}

func (s *sharingSection) draw() {
	entries := shareEntries(s.cfg)
	s.list.RemoveAll()
	if len(entries) == 0 {
		s.list.Add(widget.NewLabel(lang.L(sharingNone)))
		return
	}
	for _, e := range entries {
		l := widget.NewLabel(e.text)
		l.Selectable = true
		if e.fg {
			s.list.Add(container.NewBorder(nil, nil, nil, widget.NewLabel(lang.L("(a running skein serve)")), l))
			continue
		}
		stop := widget.NewButtonWithIcon(lang.L(sharingStop), theme.MediaStopIcon(), func() { s.stop(e) })
		s.list.Add(container.NewBorder(nil, nil, nil, stop, l))
	}
}

func (s *sharingSection) stop(e shareEntry) {
	req := ipc.ServeRequest{Mode: e.mode, Port: e.port, Off: true, Background: true}
	if e.mode == "http" && e.mount != "/" {
		req.Mount = e.mount
	}
	s.a.call(15*time.Second, func(ctx context.Context) error {
		cfg, err := s.a.client.SetServe(ctx, req)
		if err == nil {
			s.a.do(func() { s.cfg, s.fetched = cfg, time.Now(); s.draw() })
		}
		return err
	}, nil)
}

// shareFolder shares dir in the background on the first port nothing serves yet.
func (s *sharingSection) shareFolder(dir string) {
	port := uint16(firstSharePort)
	for s.cfg.TCP[port] != nil {
		port++
	}
	target := strings.TrimSuffix(dir, "/") + "/"
	req := ipc.ServeRequest{Mode: "http", Port: port, Target: target, Background: true}
	s.a.call(30*time.Second, func(ctx context.Context) error {
		cfg, err := s.a.client.SetServe(ctx, req)
		if err == nil {
			s.a.do(func() { s.cfg, s.fetched = cfg, time.Now(); s.draw() })
		}
		return err
	}, nil)
}
