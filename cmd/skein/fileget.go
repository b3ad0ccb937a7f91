package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// conflictMode is --conflict: what file get does when DIR already has the name.
type conflictMode string

const (
	conflictSkip      conflictMode = "skip"      // leave the file in the inbox, report it
	conflictOverwrite conflictMode = "overwrite" // replace what is there
	conflictRename    conflictMode = "rename"    // write "name (1).ext", the first free number
)

func (m *conflictMode) String() string { return string(*m) }

func (m *conflictMode) Set(s string) error {
	switch v := conflictMode(strings.ToLower(s)); v {
	case "":
		*m = conflictSkip
	case conflictSkip, conflictOverwrite, conflictRename:
		*m = v
	default:
		return fmt.Errorf("%q is not one of skip, overwrite, rename", s)
	}
	return nil
}

// Tunables of file get; variables so that tests can shorten them.
var (
	// fileGetRetry is the pause of --loop after a round with errors (e.g. a conflicting name
	// that stays in the inbox), so that it does not spin.
	fileGetRetry = 5 * time.Second
	// fileGetPoll is how long one long-poll for new files lasts (skeind caps it at 10 minutes).
	fileGetPoll = 10 * time.Minute
)

// maxRenames bounds the "name (N).ext" tries of --conflict=rename.
const maxRenames = 1000

func cmdFileGet(c *cli, args []string) int {
	f := c.newFlagSet("file get", "DIR", `
Move the files other machines sent to this one out of skeind's inbox into DIR, an existing
directory: each file is written as you, checked to have the size it was sent with, and only
then deleted from the inbox. skein never writes through a symlink: a name in DIR that is a
symlink counts as taken (--conflict=overwrite replaces the symlink, not what it points to).

When DIR already has a file of the same name, --conflict decides: skip (the default) leaves
the file in the inbox and reports it; rename writes "name (1).ext" (the first free number);
overwrite writes a temporary file in DIR and then puts it in place of the old one.

Files nobody takes are removed from skeind's inbox 7 days after they arrived; until then they
count towards its quota (a quarter of the file system, and half of that per sender), beyond
which senders are refused. Without --wait and --loop, an empty inbox is not an error. "/dev/null" as DIR deletes every
waiting file. Exits 1 when a file could not be moved (it stays in the inbox); --loop carries
on after errors, and exits 0 when interrupted.`)
	wait := f.Bool("wait", false, "wait for a file to arrive when the inbox is empty")
	loop := f.Bool("loop", false, "keep moving files as they arrive, until interrupted")
	verbose := f.Bool("verbose", false, "say which file is written where, and how many were moved")
	conflict := conflictSkip
	f.Var(&conflict, "conflict", "`mode` when DIR already has a file of that name: skip, overwrite or rename")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() != 1 {
		return c.usageError(f, "want exactly one directory, got %d arguments", f.NArg())
	}
	dir := f.Arg(0)
	if dir == "/dev/null" {
		if *wait || *loop {
			return c.usageError(f, "--wait and --loop cannot be used with /dev/null")
		}
		return c.wipeInbox(*verbose)
	}
	if fi, err := os.Stat(dir); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return c.usageError(f, "%s: %v", dir, err)
	} else if !fi.IsDir() {
		return c.usageError(f, "%s is not a directory", dir)
	}

	ctx, stop := signal.NotifyContext(c.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &fileGetter{c: c, ctx: ctx, cl: c.client(), dir: dir, conflict: conflict, verbose: *verbose}
	if *loop {
		return g.loop()
	}
	r := g.batch(*wait)
	for _, e := range r.errs {
		c.fail(e.err)
	}
	if r.interrupted {
		if r.stopped != "" {
			return c.fail(fmt.Errorf("interrupted: %s stays in the inbox", displayName(r.stopped)))
		}
		return exitFail
	}
	if r.moved == 0 && r.total > 0 {
		return c.fail(fmt.Errorf("moved %d/%d files", r.moved, r.total))
	}
	if *verbose {
		fmt.Fprintf(c.stdout, "moved %d/%d files\n", r.moved, r.total)
	}
	if len(r.errs) > 0 {
		return exitFail
	}
	return exitOK
}

type fileGetter struct {
	c        *cli
	ctx      context.Context
	cl       *ipc.Client
	dir      string
	conflict conflictMode
	verbose  bool
}

// fileErr is an error about one inbox file (name "" for the inbox as a whole).
type fileErr struct {
	name string
	err  error
}

type batchResult struct {
	total, moved int
	errs         []fileErr
	interrupted  bool
	stopped      string // the file being moved when interrupted
}

// loop runs batches until interrupted. An error that repeats (the same file with the same
// problem) is reported once, not every few seconds.
func (g *fileGetter) loop() int {
	reported := map[string]string{}
	for {
		r := g.batch(true)
		if r.interrupted {
			return exitOK
		}
		now := map[string]string{}
		fresh := false
		for _, e := range r.errs {
			msg := e.err.Error()
			now[e.name] = msg
			if reported[e.name] != msg {
				g.c.fail(e.err)
				fresh = true
			}
		}
		reported = now
		if g.verbose && (r.moved > 0 || fresh) {
			fmt.Fprintf(g.c.stdout, "moved %d/%d files\n", r.moved, r.total)
		}
		if len(r.errs) > 0 {
			select {
			case <-g.ctx.Done():
				return exitOK
			case <-time.After(fileGetRetry):
			}
		}
	}
}

// batch moves every file waiting now, first waiting for one when wait is set.
func (g *fileGetter) batch(wait bool) (r batchResult) {
	files, err := g.cl.WaitingFiles(g.ctx, 0)
	for err == nil && len(files) == 0 && wait {
		if g.verbose {
			fmt.Fprintln(g.c.stdout, "waiting for files...")
		}
		files, err = g.cl.WaitingFiles(g.ctx, fileGetPoll)
	}
	if err != nil {
		if g.ctx.Err() != nil {
			r.interrupted = true
		} else {
			r.errs = append(r.errs, fileErr{err: err})
		}
		return r
	}
	r.total = len(files)
	if r.total == 0 {
		return r
	}
	d, err := openDestDir(g.dir)
	if err != nil {
		r.errs = append(r.errs, fileErr{err: err})
		return r
	}
	defer d.close()
	for _, wf := range files {
		if g.ctx.Err() != nil {
			r.interrupted = true
			return r
		}
		written, n, err := g.receive(d, wf)
		if err != nil {
			if g.ctx.Err() != nil {
				r.interrupted, r.stopped = true, wf.Name
				return r
			}
			r.errs = append(r.errs, fileErr{wf.Name, staysUntil(err, wf)})
			continue
		}
		if g.verbose {
			fmt.Fprintf(g.c.stdout, "wrote %s as %s (%d bytes)\n", displayName(wf.Name), displayName(written), n)
		}
		// The file is safe in DIR: finish the move even when interrupted right now, or the
		// next get would take it a second time.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), 15*time.Second)
		err = g.cl.DeleteFile(dctx, wf.Name)
		cancel()
		if err != nil {
			r.errs = append(r.errs, fileErr{wf.Name, annotate(err, fmt.Sprintf("wrote %s but could not delete it from the inbox", displayName(written)))})
			continue
		}
		r.moved++
	}
	return r
}

// staysUntil adds to the error of a file left in the inbox when skeind will remove it.
func staysUntil(err error, wf ipc.WaitingFile) error {
	if wf.Expires.IsZero() {
		return err
	}
	suffix := fmt.Sprintf(" (until %s, then skeind removes it)", wf.Expires.Local().Format("2006-01-02 15:04"))
	var e *ipc.Error
	if errors.As(err, &e) {
		return &ipc.Error{Code: e.Code, Message: e.Message + suffix, Fix: e.Fix}
	}
	return fmt.Errorf("%w%s", err, suffix)
}

// receive writes one inbox file into the directory and returns the path written and the size.
// On any error nothing is left in the directory and the file stays in the inbox.
func (g *fileGetter) receive(d *destDir, wf ipc.WaitingFile) (string, int64, error) {
	shown := displayName(wf.Name)
	if err := checkInboxName(wf.Name); err != nil {
		return "", 0, err
	}
	var (
		f     *os.File
		id    fileID
		final string // the name in DIR the file ends up with
		temp  string // --conflict=overwrite: where it is written first
		err   error
	)
	if g.conflict == conflictOverwrite {
		final = wf.Name
		f, id, temp, err = d.createTemp()
	} else {
		f, id, final, err = g.createTarget(d, wf.Name)
	}
	if err != nil {
		return "", 0, err
	}
	written := temp
	if written == "" {
		written = final
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			d.removeIf(written, id)
		}
	}()

	rc, size, err := g.cl.OpenFile(g.ctx, wf.Name)
	if err != nil {
		return "", 0, annotate(err, "opening "+shown+" in the inbox")
	}
	defer rc.Close()
	if size < 0 {
		size = wf.Size
	}
	n, err := io.Copy(f, io.LimitReader(rc, size+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) { // writing failed (disk full, ...)
			return "", 0, fmt.Errorf("writing %s: %v", filepath.Join(g.dir, written), pe.Err)
		}
		return "", 0, annotate(err, "receiving "+shown)
	}
	if n != size {
		return "", 0, fmt.Errorf("receiving %s: got %d bytes, want %d", shown, n, size)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("writing %s: %v", filepath.Join(g.dir, written), err)
	}
	if err := f.Close(); err != nil {
		return "", 0, fmt.Errorf("writing %s: %v", filepath.Join(g.dir, written), err)
	}
	if temp != "" {
		if err := d.rename(temp, final); err != nil {
			return "", 0, fmt.Errorf("replacing %s: %v", filepath.Join(g.dir, final), err)
		}
	}
	done = true
	d.sync()
	return filepath.Join(g.dir, final), n, nil
}

// createTarget creates the file for name in d, never through a symlink, following --conflict
// skip or rename.
func (g *fileGetter) createTarget(d *destDir, name string) (*os.File, fileID, string, error) {
	f, id, err := d.create(name)
	if err == nil {
		return f, id, name, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, id, "", err
	}
	if g.conflict != conflictRename {
		return nil, id, "", &ipc.Error{
			Message: fmt.Sprintf("%s already exists: %s stays in the inbox", displayName(filepath.Join(g.dir, name)), displayName(name)),
			Fix:     "skein file get --conflict=rename (or --conflict=overwrite) " + shellQuote(g.dir),
		}
	}
	for i := 1; i <= maxRenames; i++ {
		alt := numberedName(name, i)
		f, id, err = d.create(alt)
		if err == nil {
			return f, id, alt, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, id, "", err
		}
	}
	return nil, id, "", fmt.Errorf("%s: no free name up to %q", displayName(filepath.Join(g.dir, name)), numberedName(name, maxRenames))
}

// compressionExts are extensions that stay with the one before them: "a.tar.gz" becomes
// "a (1).tar.gz", not "a.tar (1).gz".
var compressionExts = map[string]bool{".gz": true, ".bz2": true, ".xz": true, ".zst": true, ".z": true, ".lz": true, ".lzma": true, ".br": true}

// numberedName is name with " (i)" before its extension; a leading dot is no extension.
func numberedName(name string, i int) string {
	stem, ext := splitExt(name)
	if compressionExts[strings.ToLower(ext)] {
		if s2, e2 := splitExt(stem); e2 != "" && len(e2) <= 5 {
			stem, ext = s2, e2+ext
		}
	}
	return fmt.Sprintf("%s (%d)%s", stem, i, ext)
}

func splitExt(name string) (stem, ext string) {
	ext = path.Ext(name)
	if ext == "." || strings.TrimLeft(name, ".") == ext[min(1, len(ext)):] { // "a.", ".bashrc"
		return name, ""
	}
	return strings.TrimSuffix(name, ext), ext
}

// checkInboxName refuses names that are not a single plain file name. skeind checks what
// peers send; this keeps a mistake there from writing outside DIR.
func checkInboxName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("refusing inbox file %q: not a plain file name", name)
	}
	return nil
}

// wipeInbox is file get /dev/null: delete every waiting file.
func (c *cli) wipeInbox(verbose bool) int {
	cl := c.client()
	files, err := cl.WaitingFiles(c.ctx, 0)
	if err != nil {
		return c.fail(err)
	}
	for _, wf := range files {
		if verbose {
			fmt.Fprintf(c.stdout, "deleting %s ...\n", displayName(wf.Name))
		}
		if err := cl.DeleteFile(c.ctx, wf.Name); err != nil {
			return c.fail(annotate(err, "deleting "+displayName(wf.Name)))
		}
	}
	if verbose {
		fmt.Fprintf(c.stdout, "deleted %d files\n", len(files))
	}
	return exitOK
}

// shellQuote quotes s for a command line to copy, when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tempName is a fresh name for the temporary file of --conflict=overwrite.
func tempName() string {
	return fmt.Sprintf(".skein-get-%016x.tmp", rand.Uint64())
}
