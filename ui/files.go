package ui

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"fyne.io/fyne/v2/lang"
)

// This file holds the file-system side of Taildrop in the app: where received files go, how
// they are written there, and how a file to send is opened. Nothing here touches Fyne.

// downloadsDir is the user's download folder: XDG_DOWNLOAD_DIR from user-dirs.dirs, else
// ~/Downloads.
func downloadsDir() string {
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/"
	}
	cfgs := []string{}
	if c := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(c) {
		cfgs = append(cfgs, c)
	}
	// In a Flatpak, XDG_CONFIG_HOME is the app's own directory (Flatpak places the host's
	// user-dirs.dirs there); ~/.config is the desktop's.
	cfgs = append(cfgs, filepath.Join(home, ".config"))
	for _, c := range cfgs {
		b, err := os.ReadFile(filepath.Join(c, "user-dirs.dirs"))
		if err != nil {
			continue
		}
		if d := userDir(b, "XDG_DOWNLOAD_DIR", home); d != "" {
			return d
		}
	}
	return filepath.Join(home, "Downloads")
}

// userDir reads key from the contents of a user-dirs.dirs file: a shell-style assignment of a
// double-quoted "$HOME/..." or absolute path. "" when the key is missing, malformed, or set to
// the home directory itself (which the format uses to say "none").
func userDir(file []byte, key, home string) string {
	found := ""
	sc := bufio.NewScanner(bytes.NewReader(file))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") || strings.TrimSpace(k) != key {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			continue
		}
		v = unescapeShell(v[1 : len(v)-1])
		switch {
		case v == "$HOME" || strings.HasPrefix(v, "$HOME/"):
			v = filepath.Join(home, strings.TrimPrefix(v, "$HOME"))
		case filepath.IsAbs(v):
			v = filepath.Clean(v)
		default:
			continue
		}
		found = v // the last assignment wins, as in a shell
	}
	if found == filepath.Clean(home) {
		return ""
	}
	return found
}

// unescapeShell removes the backslashes of a double-quoted shell word.
func unescapeShell(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tildePath shows a path under the home directory as ~/...
func tildePath(p string) string {
	home, err := os.UserHomeDir()
	if err != nil || home == "" || home == "/" {
		return p
	}
	if p == home {
		return "~"
	}
	if rest, ok := strings.CutPrefix(p, home+"/"); ok {
		return "~/" + rest
	}
	return p
}

// nameMax bounds a saved file's name in bytes (Linux's NAME_MAX is 255; " (999)" must fit).
const nameMax = 240

// safeFileName turns the name a peer gave a file into one that is safe to create in a folder:
// no directory parts, no control characters, not hidden, not empty, not too long.
func safeFileName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || isBidiControl(r) {
			return '_'
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if name == "" || name == "." || name == ".." {
		return "received file"
	}
	// A file should not arrive unseen: a leading dot would hide it.
	if strings.HasPrefix(name, ".") {
		name = "_" + name[1:]
	}
	if len(name) > nameMax {
		stem, ext := splitExt(name)
		if len(ext) > 32 {
			stem, ext = name, ""
		}
		stem = stem[:nameMax-len(ext)]
		for !utf8.ValidString(stem) {
			stem = stem[:len(stem)-1]
		}
		name = stem + ext
	}
	return name
}

// isBidiControl tells the characters that reorder text: in a file name they can make
// "invoice_fdp.exe" look like "invoice_exe.pdf".
func isBidiControl(r rune) bool {
	return r == 0x061C || r == 0x200E || r == 0x200F || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// splitExt splits "report.pdf" into "report" and ".pdf", keeping compound archive extensions
// (".tar.gz") whole.
func splitExt(name string) (stem, ext string) {
	lower := strings.ToLower(name)
	if i := strings.LastIndex(lower, ".tar."); i > 0 && !strings.Contains(lower[i+5:], ".") {
		return name[:i], name[i:]
	}
	ext = filepath.Ext(name)
	if ext == name || ext == "." {
		return name, ""
	}
	return name[:len(name)-len(ext)], ext
}

// numberedName is name for n = 0, else "stem (n).ext".
func numberedName(name string, n int) string {
	if n == 0 {
		return name
	}
	stem, ext := splitExt(name)
	return stem + " (" + strconv.Itoa(n) + ")" + ext
}

// maxNumbered is how many "name (n).ext" are tried before giving up.
const maxNumbered = 1000

// errShort is returned when fewer (or more) bytes arrived than announced.
var errShort = errors.New("the file arrived incomplete")

// saveInto writes the size bytes of r (size < 0: unknown) to a new file in dir, named after
// name, or "name (1).ext" and so on when that is taken. It never replaces anything and never
// follows a symbolic link in dir: the file is created with O_CREAT|O_EXCL|O_NOFOLLOW relative to
// dir. The byte count is checked and the file and dir are synced before it returns the path.
// On failure nothing is left behind. progress, if set, gets the bytes written so far.
func saveInto(dir, name string, r io.Reader, size int64, progress func(int64)) (string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return "", err
	}
	defer d.Close()
	if fi, err := d.Stat(); err != nil {
		return "", err
	} else if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a folder", dir)
	}
	dfd := int(d.Fd())
	base := safeFileName(name)
	var f *os.File
	var created string
	for n := 0; n < maxNumbered && f == nil; n++ {
		cand := numberedName(base, n)
		fd, err := unix.Openat(dfd, cand, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		switch {
		case err == nil:
			f, created = os.NewFile(uintptr(fd), filepath.Join(dir, cand)), cand
		case errors.Is(err, unix.EEXIST), errors.Is(err, unix.ELOOP):
			// Taken (a file, a folder, or a link, dangling or not): try the next number.
		default:
			return "", &os.PathError{Op: "create", Path: filepath.Join(dir, cand), Err: err}
		}
	}
	if f == nil {
		return "", fmt.Errorf("%s: too many files named like %q", dir, base)
	}
	fail := func(err error) (string, error) {
		f.Close()
		unix.Unlinkat(dfd, created, 0)
		return "", err
	}
	var w io.Writer = f
	if progress != nil {
		w = &countingWriter{w: f, f: progress}
	}
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size+1) // one byte more tells a longer stream
	}
	n, err := io.Copy(w, src)
	if err != nil {
		return fail(err)
	}
	if size >= 0 && n != size {
		return fail(fmt.Errorf("%w: %d of %d bytes", errShort, n, size))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		unix.Unlinkat(dfd, created, 0)
		return "", err
	}
	d.Sync() // the new name is durable too (some file systems cannot sync a folder: no matter)
	return filepath.Join(dir, created), nil
}

type countingWriter struct {
	w io.Writer
	n int64
	f func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.f(c.n)
	return n, err
}

// openToSend opens a file the user chose (by path, which also works for Flatpak's document
// portal paths, /run/user/UID/doc/...) and returns it with its size, taken from the opened
// file itself so that it matches what will be read.
func openToSend(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, 0, fmt.Errorf("%s is a folder; only files can be sent", filepath.Base(path))
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", filepath.Base(path))
	}
	return f, fi.Size(), nil
}

// sizeText is a file size for people ("1.5 MiB"); bytesText is the same for counters.
func sizeText(n int64) string {
	if n < 0 {
		return "?"
	}
	return bytesText(uint64(n))
}

// rateText is a transfer rate ("2.1 MiB/s").
func rateText(bytesPerSec float64) string {
	return bytesText(uint64(bytesPerSec)) + "/s"
}

// etaText is the time left ("12 s left", "3 min left").
func etaText(secs float64) string {
	switch {
	case secs < 1:
		return lang.L("{{.N}} s left", map[string]any{"N": "1"})
	case secs < 90:
		return lang.L("{{.N}} s left", map[string]any{"N": fmt.Sprintf("%.0f", secs)})
	case secs < 90*60:
		return lang.L("{{.N}} min left", map[string]any{"N": fmt.Sprintf("%.0f", secs/60)})
	}
	return lang.L("{{.N}} h left", map[string]any{"N": fmt.Sprintf("%.1f", secs/3600)})
}

// markupEscape makes text safe for a notification body on servers that read it as markup.
func markupEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
