// Package gui_test holds the desktop app's end-to-end tests: skein-gui started under Xvfb with a
// private D-Bus session bus, whose tray (StatusNotifierItem + com.canonical.dbusmenu) the test
// reads and clicks through its own StatusNotifierWatcher, against skeind in the lab. They need
// root (the lab), Xvfb, dbus-daemon and xwd (scripts/deps.sh installs them).
package gui_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ui/portaltest"
)

// Binaries under test, built by TestMain.
var skeindBin, skeinBin, guiBin, bareBin string

func TestMain(m *testing.M) {
	dir, err := lab.BuildForTest("skein-gui-bin-", func(dir string) [][]string {
		skeindBin, skeinBin = filepath.Join(dir, "skeind"), filepath.Join(dir, "skein")
		guiBin, bareBin = filepath.Join(dir, "skein-gui"), filepath.Join(dir, "bare-fyne")
		return [][]string{
			{"build", "-o", skeindBin, "github.com/skeinvpn/skein/cmd/skeind"},
			{"build", "-o", skeinBin, "github.com/skeinvpn/skein/cmd/skein"},
			{"build", "-o", guiBin, "github.com/skeinvpn/skein"},
			{"build", "-o", bareBin, "github.com/skeinvpn/skein/tests/gui/internal/barefyne"},
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "building binaries under test:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// desktop is an X server and a session bus with a tray host, private to one test.
type desktop struct {
	t       testing.TB
	display string
	busAddr string
	home    string
	watcher *watcher
	// extraEnv is added to the environment of the programs started on this desktop.
	extraEnv []string
}

// newDesktop starts Xvfb on a free display, a session bus, and a StatusNotifierWatcher on it.
func newDesktop(t testing.TB) *desktop {
	t.Helper()
	d := &desktop{t: t, home: t.TempDir()}
	d.display = startXvfb(t)
	d.busAddr = startSessionBus(t)
	d.watcher = startWatcher(t, d.busAddr)
	return d
}

func (d *desktop) env() []string {
	env := []string{
		"DISPLAY=" + d.display,
		"DBUS_SESSION_BUS_ADDRESS=" + d.busAddr,
		"HOME=" + d.home,
		"XDG_RUNTIME_DIR=" + d.home,
		"XDG_CONFIG_HOME=" + filepath.Join(d.home, ".config"),
		"LANG=C.UTF-8",
		"PATH=" + os.Getenv("PATH"),
	}
	return append(env, d.extraEnv...)
}

// startXvfb starts Xvfb on the first free display from :90 and returns ":N".
func startXvfb(t testing.TB) string {
	t.Helper()
	for n := 90; n < 190; n++ {
		lock := fmt.Sprintf("/tmp/.X%d-lock", n)
		sock := fmt.Sprintf("/tmp/.X11-unix/X%d", n)
		if _, err := os.Stat(lock); err == nil {
			continue
		}
		if _, err := os.Stat(sock); err == nil {
			continue
		}
		display := fmt.Sprintf(":%d", n)
		cmd := exec.Command("Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset")
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("Xvfb: %v (install xvfb)", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		ok := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				ok = true
				break
			}
			select {
			case <-done:
				deadline = time.Time{}
			default:
			}
		}
		if !ok {
			cmd.Process.Kill()
			<-done
			continue // display taken meanwhile, or Xvfb failed: try the next one
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		return display
	}
	t.Fatal("no free X display")
	return ""
}

// startSessionBus runs a private dbus-daemon and returns its address.
func startSessionBus(t testing.TB) string { return portaltest.StartBus(t) }

// watcher is a minimal org.kde.StatusNotifierWatcher: it records the items that register.
type watcher struct {
	conn  *dbus.Conn
	mu    sync.Mutex
	items []string // "busname/path"
	reg   chan string
}

// RegisterStatusNotifierItem is called by an item with its object path (or bus name).
func (w *watcher) RegisterStatusNotifierItem(sender dbus.Sender, service string) *dbus.Error {
	item := service
	if strings.HasPrefix(service, "/") {
		item = string(sender) + service
	} else if !strings.Contains(service, "/") {
		item = service + "/StatusNotifierItem"
	}
	w.mu.Lock()
	w.items = append(w.items, item)
	w.mu.Unlock()
	select {
	case w.reg <- item:
	default:
	}
	w.conn.Emit("/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher.StatusNotifierItemRegistered", item)
	return nil
}

// RegisterStatusNotifierHost accepts any host.
func (w *watcher) RegisterStatusNotifierHost(service string) *dbus.Error { return nil }

func startWatcher(t testing.TB, addr string) *watcher {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connecting to the session bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	w := &watcher{conn: conn, reg: make(chan string, 16)}
	const path = "/StatusNotifierWatcher"
	const iface = "org.kde.StatusNotifierWatcher"
	if err := conn.Export(w, path, iface); err != nil {
		t.Fatal(err)
	}
	_, err = prop.Export(conn, path, prop.Map{iface: {
		"RegisteredStatusNotifierItems":  {Value: []string{}, Emit: prop.EmitTrue},
		"IsStatusNotifierHostRegistered": {Value: true, Emit: prop.EmitTrue},
		"ProtocolVersion":                {Value: int32(0), Emit: prop.EmitTrue},
	}})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(iface, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning %s: %v (reply %v)", iface, err, reply)
	}
	return w
}

// waitItem waits for an item to register and returns "busname/path".
func (w *watcher) waitItem(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case it := <-w.reg:
		return it
	case <-time.After(timeout):
		t.Fatalf("no StatusNotifierItem registered within %v", timeout)
		return ""
	}
}

// trayItem is a registered tray icon seen over D-Bus.
type trayItem struct {
	conn     *dbus.Conn
	bus      string
	path     dbus.ObjectPath
	menuPath dbus.ObjectPath
}

func (w *watcher) item(t testing.TB, id string) *trayItem {
	t.Helper()
	i := strings.Index(id, "/")
	it := &trayItem{conn: w.conn, bus: id[:i], path: dbus.ObjectPath(id[i:])}
	v, err := w.conn.Object(it.bus, it.path).GetProperty("org.kde.StatusNotifierItem.Menu")
	if err != nil {
		t.Fatalf("reading the item's Menu property: %v", err)
	}
	it.menuPath = v.Value().(dbus.ObjectPath)
	return it
}

func (it *trayItem) prop(name string) (dbus.Variant, error) {
	return it.conn.Object(it.bus, it.path).GetProperty("org.kde.StatusNotifierItem." + name)
}

// menuNode is one dbusmenu item.
type menuNode struct {
	ID       int32
	Label    string
	Enabled  bool
	Visible  bool
	Checked  bool   // a checkmark item that is on
	Type     string // "separator" or ""
	Submenu  bool
	Children []*menuNode
}

// layout reads the whole menu: AboutToShow on every submenu (hosts do that before showing
// one), then GetLayout of the root with full depth.
func (it *trayItem) layout() (*menuNode, error) {
	obj := it.conn.Object(it.bus, it.menuPath)
	get := func() (*menuNode, error) {
		var rev uint32
		var raw struct {
			ID       int32
			Props    map[string]dbus.Variant
			Children []dbus.Variant
		}
		if err := obj.Call("com.canonical.dbusmenu.GetLayout", 0, int32(0), int32(-1), []string{}).Store(&rev, &raw); err != nil {
			return nil, err
		}
		return toNode(raw.ID, raw.Props, raw.Children)
	}
	root, err := get()
	if err != nil {
		return nil, err
	}
	var subs []int32
	root.walk(func(n *menuNode) {
		if n.Submenu {
			subs = append(subs, n.ID)
		}
	})
	for _, id := range subs {
		var needUpdate bool
		if err := obj.Call("com.canonical.dbusmenu.AboutToShow", 0, id).Store(&needUpdate); err != nil {
			return nil, fmt.Errorf("AboutToShow(%d): %w", id, err)
		}
	}
	if len(subs) > 0 {
		return get()
	}
	return root, nil
}

func toNode(id int32, props map[string]dbus.Variant, children []dbus.Variant) (*menuNode, error) {
	n := &menuNode{ID: id, Enabled: true, Visible: true}
	if v, ok := props["label"]; ok {
		n.Label, _ = v.Value().(string)
	}
	if v, ok := props["enabled"]; ok {
		n.Enabled, _ = v.Value().(bool)
	}
	if v, ok := props["visible"]; ok {
		n.Visible, _ = v.Value().(bool)
	}
	if v, ok := props["type"]; ok {
		n.Type, _ = v.Value().(string)
	}
	if v, ok := props["toggle-state"]; ok {
		switch s := v.Value().(type) {
		case int32:
			n.Checked = s == 1
		case int:
			n.Checked = s == 1
		}
	}
	if v, ok := props["children-display"]; ok {
		s, _ := v.Value().(string)
		n.Submenu = s == "submenu"
	}
	for _, c := range children {
		fields, ok := c.Value().([]any)
		if !ok || len(fields) != 3 {
			return nil, fmt.Errorf("menu item %d: unexpected child %T", id, c.Value())
		}
		cid, _ := fields[0].(int32)
		cprops, _ := fields[1].(map[string]dbus.Variant)
		ckids, _ := fields[2].([]dbus.Variant)
		cn, err := toNode(cid, cprops, ckids)
		if err != nil {
			return nil, err
		}
		n.Children = append(n.Children, cn)
	}
	if len(n.Children) > 0 {
		n.Submenu = true
	}
	return n, nil
}

func (n *menuNode) walk(fn func(*menuNode)) {
	for _, c := range n.Children {
		fn(c)
		c.walk(fn)
	}
}

// find returns the visible item whose label has prefix.
func (n *menuNode) find(prefix string) *menuNode {
	var found *menuNode
	n.walk(func(c *menuNode) {
		if found == nil && c.Visible && c.Type != "separator" && strings.HasPrefix(c.Label, prefix) {
			found = c
		}
	})
	return found
}

// String renders the menu as a person reads it.
func (n *menuNode) String() string {
	var b strings.Builder
	var rec func(n *menuNode, indent string)
	rec = func(n *menuNode, indent string) {
		for _, c := range n.Children {
			if !c.Visible {
				continue
			}
			if c.Type == "separator" {
				b.WriteString(indent + "---\n")
				continue
			}
			b.WriteString(indent + c.Label)
			if c.Checked {
				b.WriteString(" ✓")
			}
			if !c.Enabled {
				b.WriteString(" (disabled)")
			}
			if c.Submenu {
				b.WriteString(" ▸")
			}
			b.WriteString("\n")
			rec(c, indent+"    ")
		}
	}
	rec(n, "")
	return b.String()
}

// click sends the dbusmenu "clicked" event to an item, as a tray host does.
func (it *trayItem) click(id int32) error {
	return it.conn.Object(it.bus, it.menuPath).Call("com.canonical.dbusmenu.Event", 0,
		id, "clicked", dbus.MakeVariant(""), uint32(time.Now().Unix())).Err
}

// gui is one running skein-gui.
type gui struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

func (d *desktop) startGUI(t testing.TB, bin string, args ...string) *gui {
	t.Helper()
	g := &gui{log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	g.cmd = exec.Command(bin, args...)
	g.cmd.Env = d.env()
	w := &lockedWriter{mu: g.mu, w: g.log}
	g.cmd.Stdout, g.cmd.Stderr = w, w
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), g.output())
		}
	})
	return g
}

func (g *gui) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

func (g *gui) stop() {
	select {
	case <-g.done:
		return
	default:
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}

// rssKiB is the process's resident set size.
func (g *gui) rssKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, errors.New("no VmRSS")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// screenshot grabs the X screen with xwd and returns the part that is not background.
func (d *desktop) screenshot(t testing.TB) image.Image {
	t.Helper()
	cmd := exec.Command("xwd", "-root", "-silent", "-display", d.display)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xwd: %v (install x11-apps)", err)
	}
	img, err := decodeXWD(out)
	if err != nil {
		t.Fatalf("decoding xwd: %v", err)
	}
	return cropBackground(img)
}

// decodeXWD decodes a 24/32-bit TrueColor ZPixmap X window dump, which is what xwd writes for
// Xvfb's default visual.
func decodeXWD(b []byte) (image.Image, error) {
	if len(b) < 100 {
		return nil, errors.New("short xwd file")
	}
	u := func(i int) uint32 { return binary.BigEndian.Uint32(b[i*4:]) }
	headerSize, format, bpp := int(u(0)), u(2), u(11)
	w, h := int(u(4)), int(u(5))
	byteOrder, bpl, ncolors := u(7), int(u(12)), int(u(19))
	rmask, gmask, bmask := u(14), u(15), u(16)
	// Xvfb's depth-24 screen dumps as 24 bits per pixel, packed (3 bytes), rows bpl apart.
	if format != 2 || (bpp != 24 && bpp != 32) || bpl < w*int(bpp/8) {
		return nil, fmt.Errorf("unsupported xwd: format %d, %d bits per pixel, %d bytes per line", format, bpp, bpl)
	}
	bytesPP := int(bpp / 8)
	off := headerSize + ncolors*12
	if off+h*bpl > len(b) {
		return nil, errors.New("truncated xwd file")
	}
	shift := func(m uint32) uint {
		s := uint(0)
		for m != 0 && m&1 == 0 {
			m >>= 1
			s++
		}
		return s
	}
	rs, gs, bs := shift(rmask), shift(gmask), shift(bmask)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		row := b[off+y*bpl:]
		for x := 0; x < w; x++ {
			var v uint32
			px := row[x*bytesPP : (x+1)*bytesPP]
			for i := range bytesPP {
				if byteOrder == 0 { // LSBFirst
					v |= uint32(px[i]) << (8 * i)
				} else {
					v = v<<8 | uint32(px[i])
				}
			}
			img.SetRGBA(x, y, color.RGBA{uint8((v & rmask) >> rs), uint8((v & gmask) >> gs), uint8((v & bmask) >> bs), 0xff})
		}
	}
	return img, nil
}

// cropBackground cuts the image to the bounding box of pixels that differ from the corner
// pixel (the bare X root, there being no window manager).
func cropBackground(img image.Image) image.Image {
	b := img.Bounds()
	bg := img.At(b.Max.X-1, b.Max.Y-1)
	minX, minY, maxX, maxY := b.Max.X, b.Max.Y, b.Min.X, b.Min.Y
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if img.At(x, y) != bg {
				minX, minY = min(minX, x), min(minY, y)
				maxX, maxY = max(maxX, x+1), max(maxY, y+1)
			}
		}
	}
	if minX >= maxX {
		return img
	}
	return img.(*image.RGBA).SubImage(image.Rect(minX, minY, maxX, maxY))
}

func writePNG(t testing.TB, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
