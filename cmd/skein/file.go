package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/skeinvpn/skein/ipc"
)

func cmdFile(c *cli, args []string) int {
	f := c.newFlagSet("file", "cp|get ...", `
Send files to other machines of the tailnet, and take the files they sent to this one.

  cp   skein file cp [--name=NAME] [--verbose] FILE... TARGET:
       send files to TARGET, a machine's name, tailnet IP or ID followed by a colon;
       skein file cp --targets lists the machines that can receive files
  get  skein file get [--wait] [--loop] [--verbose] [--conflict=skip|overwrite|rename] DIR
       move the files waiting in skeind's inbox into the directory DIR

Run 'skein file cp --help' or 'skein file get --help' for the details.`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() == 0 {
		return c.usageError(f, "missing subcommand: cp or get")
	}
	switch sub := f.Arg(0); sub {
	case "cp":
		return cmdFileCp(c, f.Args()[1:])
	case "get":
		return cmdFileGet(c, f.Args()[1:])
	default:
		return c.usageError(f, "unknown subcommand %q", sub)
	}
}

// fileSource is one FILE argument of file cp.
type fileSource struct {
	arg  string // as given; "-" is standard input
	name string // the name the receiver gets
	pipe bool   // a named pipe: read to the end before sending, like standard input
}

func cmdFileCp(c *cli, args []string) int {
	f := c.newFlagSet("file cp", "FILE... TARGET:", `
Send files to TARGET: a machine of the tailnet given by its name, MagicDNS name, tailnet IP
or ID, followed by a colon (an IPv6 address goes in brackets: [fd7a:115c:a1e0::4]:). Each
file keeps its own name unless --name gives another one (a single file only).

"-" as FILE sends standard input, alone and with --name. skeind needs to know the size before
it sends, so skein first reads standard input to the end, into a temporary file that is
deleted afterwards (when standard input is a regular file, it is sent as is).

While a file is sent, a progress bar on standard error shows the bytes sent, the rate and the
time left, then one line for the file ("resumed at" when the receiver already had the start
of it); when standard error is not a terminal, skein says nothing unless --verbose.

--targets lists the machines that can receive files: tailnet IP, name and "offline" for the
ones that are not connected right now (with --json: an array of {"stableID", "name",
"dnsName", "ip", "os", "online"}).

Directories cannot be sent (pack them first, e.g. with tar). A FILE that does not exist, cannot
be read or is a directory is a usage error (exit status 2).`)
	name := f.String("name", "", `name the receiver gets for the file instead of FILE's own name (needed for "-", standard input)`)
	targets := f.Bool("targets", false, "list the machines that can receive files, instead of sending")
	verbose := f.Bool("verbose", false, "say what is sent to which machine, and each file once sent")
	asJSON := f.Bool("json", false, "with --targets: print the machines as JSON")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if *targets {
		if f.NArg() > 0 {
			return c.usageError(f, "--targets takes no arguments, got: %s", strings.Join(f.Args(), " "))
		}
		return listFileTargets(c, *asJSON)
	}
	if *asJSON {
		return c.usageError(f, "--json goes with --targets")
	}
	if f.NArg() < 2 {
		return c.usageError(f, "want one or more files and a target, e.g.: skein file cp photo.jpg phone:")
	}
	files, target := f.Args()[:f.NArg()-1], f.Arg(f.NArg()-1)
	target, err := parseCpTarget(target)
	if err != nil {
		return c.usageError(f, "%v", err)
	}
	if len(files) > 1 {
		if *name != "" {
			return c.usageError(f, "--name works with a single file, got %d", len(files))
		}
		if slices.Contains(files, "-") {
			return c.usageError(f, `"-" (standard input) can only be sent alone`)
		}
	}
	if *name != "" {
		if err := checkSendName(*name); err != nil {
			return c.usageError(f, "--name: %v", err)
		}
	}
	srcs := make([]fileSource, 0, len(files))
	for _, arg := range files {
		src, err := checkCpSource(arg, *name)
		if err != nil {
			return c.usageError(f, "%v", err)
		}
		srcs = append(srcs, src)
	}

	cl := c.client()
	ts, err := cl.FileTargets(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	// The peer is passed on by its ID when it is a known target; otherwise as given, and
	// skeind says why it cannot receive (unknown, offline, not allowed, ...).
	peer := target
	if t := matchFileTarget(ts, target); t != nil {
		if t.StableID != "" {
			peer = t.StableID
		}
		if !t.Online {
			fmt.Fprintf(c.stderr, "# warning: %s is offline\n", target)
		}
	}
	for _, src := range srcs {
		if code := c.sendFile(cl, src, peer, target, *verbose); code != exitOK {
			return code
		}
	}
	return exitOK
}

// parseCpTarget checks the last argument of file cp and returns the peer it names.
func parseCpTarget(arg string) (string, error) {
	t, ok := strings.CutSuffix(arg, ":")
	if !ok {
		return "", fmt.Errorf("the target must end with a colon (e.g. %q), got %q", arg+":", arg)
	}
	bracketed := false
	if inner, ok := strings.CutPrefix(t, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			t, bracketed = inner, true
		}
	}
	ip, err := netip.ParseAddr(t)
	switch {
	case t == "":
		return "", fmt.Errorf("missing target before the colon")
	case err == nil && ip.Is6() && !bracketed:
		return "", fmt.Errorf("an IPv6 address must be written in brackets: [%s]:", t)
	case bracketed && (err != nil || !ip.Is6()):
		return "", fmt.Errorf("only an IPv6 address goes in brackets, got %q", arg)
	}
	return t, nil
}

// checkSendName checks a --name: the receiver gets a plain file name, not a path.
func checkSendName(n string) error {
	switch {
	case strings.TrimSpace(n) == "":
		return errors.New("empty file name")
	case n == "." || n == "..", strings.ContainsAny(n, "/\x00"):
		return fmt.Errorf("%q is not a file name (no paths)", n)
	}
	return nil
}

// checkCpSource checks one FILE argument before anything is sent.
func checkCpSource(arg, name string) (fileSource, error) {
	if arg == "-" {
		if name == "" {
			return fileSource{}, errors.New(`sending standard input ("-") needs --name=NAME`)
		}
		return fileSource{arg: arg, name: name}, nil
	}
	fi, err := os.Stat(arg)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fileSource{}, fmt.Errorf("%s: %v", arg, err)
	}
	src := fileSource{arg: arg, name: name}
	switch m := fi.Mode(); {
	case m.IsDir():
		return fileSource{}, fmt.Errorf("%s is a directory: only files can be sent (pack it first, e.g. tar czf dir.tgz dir)", arg)
	case m&fs.ModeNamedPipe != 0:
		src.pipe = true
	case !m.IsRegular():
		return fileSource{}, fmt.Errorf("%s is not a regular file", arg)
	}
	if src.name == "" {
		src.name = filepath.Base(arg)
	}
	if err := checkSendName(src.name); err != nil {
		return fileSource{}, fmt.Errorf("%s: %v", arg, err)
	}
	return src, nil
}

// matchFileTarget finds q among the targets by ID, IP, short name or MagicDNS name.
func matchFileTarget(ts []ipc.FileTarget, q string) *ipc.FileTarget {
	if ip, err := netip.ParseAddr(q); err == nil {
		for i := range ts {
			if a, err := netip.ParseAddr(ts[i].IP); err == nil && a == ip.Unmap() {
				return &ts[i]
			}
		}
		return nil
	}
	for i := range ts {
		if ts[i].StableID != "" && ts[i].StableID == q {
			return &ts[i]
		}
	}
	q = strings.TrimSuffix(q, ".")
	for i := range ts {
		if strings.EqualFold(q, ts[i].Name) || strings.EqualFold(q, strings.TrimSuffix(ts[i].DNSName, ".")) {
			return &ts[i]
		}
	}
	return nil
}

// listFileTargets prints the machines that can receive files the official client's way: one
// line each, "IP<TAB>name", with "<TAB>offline" for the ones not connected.
func listFileTargets(c *cli, asJSON bool) int {
	ts, err := c.client().FileTargets(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	slices.SortStableFunc(ts, func(a, b ipc.FileTarget) int {
		return cmp.Or(strings.Compare(a.DNSName, b.DNSName), strings.Compare(a.Name, b.Name), strings.Compare(a.IP, b.IP))
	})
	if asJSON {
		if ts == nil {
			ts = []ipc.FileTarget{}
		}
		return c.printJSON(ts)
	}
	if len(ts) == 0 {
		fmt.Fprintln(c.stderr, "# no machine of the tailnet can receive files right now")
		return exitOK
	}
	for _, t := range ts {
		name := cmp.Or(t.Name, strings.TrimSuffix(t.DNSName, "."), t.StableID)
		detail := ""
		if !t.Online {
			detail = "\toffline"
		}
		fmt.Fprintf(c.stdout, "%s\t%s%s\n", orDash(t.IP), displayName(name), detail)
	}
	return exitOK
}

// sendFile sends one file to peer (target is how the user named it).
func (c *cli) sendFile(cl *ipc.Client, src fileSource, peer, target string, verbose bool) int {
	body, size, closeBody, err := c.openSource(src)
	if err != nil {
		return c.fail(err)
	}
	defer closeBody()
	shown := displayName(src.name)
	if verbose {
		fmt.Fprintf(c.stderr, "sending %s (%s) to %s ...\n", shown, fmtBytes(size), target)
	}

	tty := c.isTerminal(c.stderr)
	var sent atomic.Int64
	var bar *sendProgress
	if tty {
		bar = startSendProgress(c.stderr, shown, size, sent.Load)
	}
	er := &exactReader{r: body, left: size, what: src.arg}
	if src.arg == "-" {
		er.what = "standard input"
	}
	// Only now does Ctrl-C cancel instead of kill: reading a pipe above must stay killable.
	ctx, stop := signal.NotifyContext(c.ctx, os.Interrupt, syscall.SIGTERM)
	start := time.Now()
	res, err := cl.PutFile(ctx, peer, src.name, size, er, sent.Store)
	interrupted := ctx.Err() != nil
	stop()
	elapsed := time.Since(start)
	if bar != nil {
		bar.stop()
	}
	if err != nil {
		if rerr := er.err(); rerr != nil {
			return c.fail(rerr)
		}
		if interrupted {
			return c.fail(fmt.Errorf("interrupted: %s was not sent completely", shown))
		}
		return c.fail(annotate(err, fmt.Sprintf("can't send %s to %s", shown, target)))
	}
	if tty || verbose {
		fmt.Fprintf(c.stderr, "sent %s to %s (%s in %s", shown, target, fmtBytes(size), fmtElapsed(elapsed))
		if res.ResumedAt > 0 {
			fmt.Fprintf(c.stderr, ", resumed at %s", fmtBytes(res.ResumedAt))
		}
		if res.Name != "" && res.Name != src.name {
			fmt.Fprintf(c.stderr, ", received as %s", displayName(res.Name))
		}
		fmt.Fprintln(c.stderr, ")")
	}
	return exitOK
}

// openSource opens what is sent and returns its size. Standard input and named pipes are read
// to the end into an unlinked temporary file first, since skeind needs the size up front.
func (c *cli) openSource(src fileSource) (r io.Reader, size int64, closeFn func(), err error) {
	if src.arg == "-" {
		if f, ok := c.stdin.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				if off, err := f.Seek(0, io.SeekCurrent); err == nil && off <= fi.Size() {
					return f, fi.Size() - off, func() {}, nil
				}
			}
		}
		return spool(c.stdin, "standard input")
	}
	f, err := os.Open(src.arg)
	if err != nil {
		return nil, 0, nil, err
	}
	if src.pipe {
		defer f.Close()
		return spool(f, src.arg)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, nil, fmt.Errorf("%s is not a regular file", src.arg)
	}
	return f, fi.Size(), func() { f.Close() }, nil
}

// spool copies r into a temporary file that is already unlinked, so nothing is left behind.
func spool(r io.Reader, what string) (io.Reader, int64, func(), error) {
	tmp, err := os.CreateTemp("", "skein-send-*")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("buffering %s: %v", what, err)
	}
	os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		tmp.Close()
		return nil, 0, nil, fmt.Errorf("buffering %s: %v", what, err)
	}
	return tmp, n, func() { tmp.Close() }, nil
}

// exactReader hands out exactly left bytes and remembers why it could not (the file shrank or
// a read failed), to report that rather than the broken request that follows. The HTTP
// transport may still read after PutFile returned, hence the lock.
type exactReader struct {
	r    io.Reader
	what string
	mu   sync.Mutex
	left int64
	rerr error
}

func (e *exactReader) Read(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rerr != nil {
		return 0, e.rerr
	}
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		e.rerr = fmt.Errorf("reading %s: it got shorter while being sent (%d bytes missing)", e.what, e.left)
		return n, e.rerr
	case err != nil && err != io.EOF:
		e.rerr = fmt.Errorf("reading %s: %v", e.what, err)
		return n, e.rerr
	}
	return n, nil
}

func (e *exactReader) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rerr
}

// sendProgress draws a progress bar for one file from the byte count PutFile reports.
type sendProgress struct {
	bar  *progressbar.ProgressBar
	done chan struct{}
	wg   sync.WaitGroup
}

func startSendProgress(w io.Writer, name string, size int64, sent func() int64) *sendProgress {
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(barLabel(name, 28)),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionUseANSICodes(true),
		progressbar.OptionSetRenderBlankState(true),
	)
	p := &sendProgress{bar: bar, done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				p.bar.Set64(min(sent(), size))
			}
		}
	}()
	return p
}

// stop ends the updates and erases the bar, for the line that replaces it.
func (p *sendProgress) stop() {
	close(p.done)
	p.wg.Wait()
	p.bar.Exit()
	p.bar.Clear()
}

// barLabel is name cut or padded to width columns (runes), then a space.
func barLabel(name string, width int) string {
	r := []rune(name)
	if len(r) > width {
		r = append(r[:width-1], '…')
	}
	return string(r) + strings.Repeat(" ", width-len(r)+1)
}

// fmtBytes is n in IEC units: "512 B", "1.5 KiB", "12.0 MiB".
func fmtBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

func fmtElapsed(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// displayName is a name that came from a file system or a peer, quoted when it holds
// characters a terminal should not get raw (control characters, invalid UTF-8).
func displayName(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// annotate puts prefix before err's message, keeping skeind's fix.
func annotate(err error, prefix string) error {
	var e *ipc.Error
	if errors.As(err, &e) {
		return &ipc.Error{Code: e.Code, Message: prefix + ": " + e.Message, Fix: e.Fix}
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: interrupted", prefix)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// isTerminal reports whether w is a terminal (for progress bars).
func (c *cli) isTerminal(w io.Writer) bool {
	if c.isTTY != nil {
		return c.isTTY(w)
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
