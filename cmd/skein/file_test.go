//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

func fileTargets() []ipc.FileTarget {
	return []ipc.FileTarget{
		{StableID: "nZETA", Name: "zeta", DNSName: "zeta.tail.example.", IP: "100.64.0.4", OS: "windows"},
		{StableID: "nALPHA", Name: "alpha", DNSName: "alpha.tail.example.", IP: "100.64.0.2", OS: "macOS", Online: true},
		{StableID: "nBETA", Name: "beta", DNSName: "beta.tail.example.", IP: "100.64.0.6", OS: "linux", Online: true},
	}
}

// fileHooks wraps the fake backend to script OpenFile and DeleteFile.
type fileHooks struct {
	*ipctest.Backend
	openFile   func(ctx context.Context, name string) (io.ReadCloser, int64, error)
	deleteFile func(ctx context.Context, name string) error
}

func (h *fileHooks) OpenFile(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	if h.openFile != nil {
		return h.openFile(ctx, name)
	}
	return h.Backend.OpenFile(ctx, name)
}

func (h *fileHooks) DeleteFile(ctx context.Context, name string) error {
	if h.deleteFile != nil {
		return h.deleteFile(ctx, name)
	}
	return h.Backend.DeleteFile(ctx, name)
}

func newFileEnv(t *testing.T) *env {
	e := newEnv(t, runningStatus())
	e.b.SetFileTargets(fileTargets())
	return e
}

// newHookedFileEnv serves h (set its hooks before) around a fresh fake backend.
func newHookedFileEnv(t *testing.T, h *fileHooks) *env {
	st := runningStatus()
	h.Backend = ipctest.NewBackend(st, ipc.Prefs{LoginServer: st.LoginServer, WantRunning: true})
	h.Backend.SetFileTargets(fileTargets())
	sock, _ := ipctest.Serve(t, h, ipc.ServerOptions{})
	return &env{t: t, b: h.Backend, sock: sock}
}

type fileRunOpts struct {
	ctx   context.Context
	stdin io.Reader
	tty   bool
}

// runFile runs "skein file ARGS" with a given context, standard input and terminal-ness.
func (e *env) runFile(o fileRunOpts, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	c := &cli{ctx: o.ctx, stdin: o.stdin, stdout: &out, stderr: &errb, socket: e.sock}
	if c.ctx == nil {
		c.ctx = context.Background()
	}
	if c.stdin == nil {
		c.stdin = strings.NewReader("")
	}
	if o.tty {
		c.isTTY = func(io.Writer) bool { return true }
	}
	code = cmdFile(c, args)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// recordPuts makes PutFile record the peer it was asked for, then behave as the default.
func recordPuts(e *env, res func(peer, name string, data []byte) (ipc.FilePutResult, error)) func() []string {
	var mu sync.Mutex
	var peers []string
	e.b.OnPutFile(func(_ context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
		data, err := io.ReadAll(io.LimitReader(body, size))
		if err != nil {
			return ipc.FilePutResult{}, err
		}
		mu.Lock()
		peers = append(peers, peer+"/"+name+"="+string(data))
		mu.Unlock()
		if res != nil {
			return res(peer, name, data)
		}
		return ipc.FilePutResult{Name: name, Size: int64(len(data))}, nil
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(peers)
	}
}

func TestFileHelp(t *testing.T) {
	code, out, _ := runCLI("help")
	if code != 0 || !strings.Contains(out, "\n  file      Send files") {
		t.Errorf("help: code %d, %q", code, out)
	}
	for _, sub := range []string{"cp", "get"} {
		code, out, errs := runCLI("file", sub, "--help")
		if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: skein file "+sub+" [flags] ") || !strings.Contains(out, "Exit status") {
			t.Errorf("file %s --help: code %d, stdout %q, stderr %q", sub, code, out, errs)
		}
	}
}

// Command-line mistakes exit 2 before skeind is asked anything.
func TestFileUsageErrors(t *testing.T) {
	tmp := t.TempDir()
	a := writeFile(t, filepath.Join(tmp, "a.txt"), "hello")
	sub := filepath.Join(tmp, "sub")
	os.Mkdir(sub, 0o755)
	missing := filepath.Join(tmp, "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"file"}, "missing subcommand"},
		{[]string{"file", "frob"}, `unknown subcommand "frob"`},
		{[]string{"file", "cp"}, "want one or more files and a target"},
		{[]string{"file", "cp", a}, "want one or more files and a target"},
		{[]string{"file", "cp", a, "alpha"}, "must end with a colon"},
		{[]string{"file", "cp", a, ":"}, "missing target"},
		{[]string{"file", "cp", a, "fd7a:115c:a1e0::4:"}, "must be written in brackets: [fd7a:115c:a1e0::4]:"},
		{[]string{"file", "cp", a, "[alpha]:"}, "only an IPv6 address goes in brackets"},
		{[]string{"file", "cp", a, "[100.64.0.2]:"}, "only an IPv6 address goes in brackets"},
		{[]string{"file", "cp", "-", "alpha:"}, `sending standard input ("-") needs --name=NAME`},
		{[]string{"file", "cp", "--name=x", a, a, "alpha:"}, "--name works with a single file"},
		{[]string{"file", "cp", "--name=x", "-", a, "alpha:"}, "--name works with a single file"},
		{[]string{"file", "cp", "-", a, "alpha:"}, "can only be sent alone"},
		{[]string{"file", "cp", "--name=a/b", a, "alpha:"}, "not a file name"},
		{[]string{"file", "cp", "--name=..", a, "alpha:"}, "not a file name"},
		{[]string{"file", "cp", sub, "alpha:"}, sub + " is a directory: only files can be sent"},
		{[]string{"file", "cp", a, sub, "alpha:"}, sub + " is a directory"},
		{[]string{"file", "cp", missing, "alpha:"}, missing + ": no such file or directory"},
		{[]string{"file", "cp", "/dev/null", "alpha:"}, "/dev/null is not a regular file"},
		{[]string{"file", "cp", "--targets", "alpha:"}, "--targets takes no arguments"},
		{[]string{"file", "cp", "--nope", a, "alpha:"}, "flag provided but not defined"},
		{[]string{"file", "get"}, "want exactly one directory"},
		{[]string{"file", "get", tmp, tmp}, "want exactly one directory"},
		{[]string{"file", "get", "--conflict=bogus", tmp}, `"bogus" is not one of skip, overwrite, rename`},
		{[]string{"file", "get", missing}, missing + ": no such file or directory"},
		{[]string{"file", "get", a}, a + " is not a directory"},
		{[]string{"file", "get", "--wait", "/dev/null"}, "cannot be used with /dev/null"},
		{[]string{"file", "get", "--loop", "/dev/null"}, "cannot be used with /dev/null"},
	} {
		code, out, errs := runCLI(append([]string{"--socket", "/nonexistent/skeind.sock"}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "--help' for usage") || strings.Contains(errs, "cannot reach skeind") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errs, tc.want)
		}
	}
}

func TestFileCpTargets(t *testing.T) {
	e := newFileEnv(t)
	code, out, errs := e.run("file", "cp", "--targets")
	want := "100.64.0.2\talpha\n100.64.0.6\tbeta\n100.64.0.4\tzeta\toffline\n"
	if code != 0 || out != want || errs != "" {
		t.Errorf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}
	e.b.SetFileTargets(nil)
	code, out, errs = e.run("file", "cp", "--targets")
	if code != 0 || out != "" || !strings.Contains(errs, "no machine of the tailnet can receive files") {
		t.Errorf("no targets: code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestFileCpSends(t *testing.T) {
	e := newFileEnv(t)
	puts := recordPuts(e, nil)
	tmp := t.TempDir()
	a := writeFile(t, filepath.Join(tmp, "a.txt"), "hello")
	b := writeFile(t, filepath.Join(tmp, "b.bin"), "\x00\x01\x02")
	empty := writeFile(t, filepath.Join(tmp, "empty"), "")

	// Known targets go by their ID; the rest as given, for skeind to resolve.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{a, b, "alpha:"}, []string{"nALPHA/a.txt=hello", "nALPHA/b.bin=\x00\x01\x02"}},
		{[]string{a, "100.64.0.2:"}, []string{"nALPHA/a.txt=hello"}},
		{[]string{a, "Beta.tail.example.:"}, []string{"nBETA/a.txt=hello"}},
		{[]string{a, "nBETA:"}, []string{"nBETA/a.txt=hello"}},
		{[]string{"--name=greeting.txt", a, "alpha:"}, []string{"nALPHA/greeting.txt=hello"}},
		{[]string{a, "[fd7a:115c:a1e0::4]:"}, []string{"fd7a:115c:a1e0::4/a.txt=hello"}},
		{[]string{a, "elsewhere:"}, []string{"elsewhere/a.txt=hello"}},
	} {
		before := len(puts())
		code, out, errs := e.run(append([]string{"file", "cp"}, tc.args...)...)
		if got := puts()[before:]; code != 0 || out != "" || errs != "" || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: code %d, stdout %q, stderr %q, sent %q; want %q", tc.args, code, out, errs, got, tc.want)
		}
	}

	// Empty files are sent like any other (an empty body, Content-Length 0).
	before := len(puts())
	code, out, errs := e.run("file", "cp", empty, "alpha:")
	if code != 0 || out != "" || errs != "" || len(puts()) != before+1 {
		t.Errorf("empty: code %d, stdout %q, stderr %q", code, out, errs)
	}

	// An offline target gets the official warning; skeind decides.
	code, _, errs = e.run("file", "cp", a, "zeta:")
	if code != 0 || errs != "# warning: zeta is offline\n" || puts()[len(puts())-1] != "nZETA/a.txt=hello" {
		t.Errorf("offline: code %d, stderr %q, %q", code, errs, puts())
	}
}

func TestFileCpVerbose(t *testing.T) {
	e := newFileEnv(t)
	recordPuts(e, func(peer, name string, data []byte) (ipc.FilePutResult, error) {
		return ipc.FilePutResult{Name: "a (1).txt", Size: int64(len(data)), ResumedAt: 2}, nil
	})
	a := writeFile(t, filepath.Join(t.TempDir(), "a.txt"), "hello")
	code, out, errs := e.run("file", "cp", "--verbose", a, "alpha:")
	re := regexp.MustCompile(`^sending a\.txt \(5 B\) to alpha \.\.\.\nsent a\.txt to alpha \(5 B in [0-9.]+m?s, resumed at 2 B, received as a \(1\)\.txt\)\n$`)
	if code != 0 || out != "" || !re.MatchString(errs) {
		t.Errorf("code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestFileCpStdin(t *testing.T) {
	e := newFileEnv(t)
	puts := recordPuts(e, nil)
	big := strings.Repeat("0123456789", 100_000)
	code, out, errs := e.runFile(fileRunOpts{stdin: strings.NewReader(big)}, "cp", "--name=big.txt", "-", "alpha:")
	if code != 0 || out != "" || errs != "" || len(puts()) != 1 || puts()[0] != "nALPHA/big.txt="+big {
		t.Fatalf("pipe: code %d, stdout %q, stderr %q, %d sends", code, out, errs, len(puts()))
	}

	// A regular file as standard input is sent from where it is read.
	f, err := os.Open(writeFile(t, filepath.Join(t.TempDir(), "in"), "skipped|sent"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Seek(int64(len("skipped|")), io.SeekStart)
	code, _, errs = e.runFile(fileRunOpts{stdin: f}, "cp", "--name=part", "-", "alpha:")
	if code != 0 || errs != "" || puts()[1] != "nALPHA/part=sent" {
		t.Fatalf("file: code %d, stderr %q, %q", code, errs, puts())
	}

	// So is a named pipe given as FILE.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			w.WriteString("through a pipe")
			w.Close()
		}
	}()
	code, _, errs = e.run("file", "cp", fifo, "alpha:")
	if code != 0 || errs != "" || puts()[2] != "nALPHA/fifo=through a pipe" {
		t.Fatalf("fifo: code %d, stderr %q, %q", code, errs, puts())
	}
}

// skeind's refusals come through with its message and fix, naming file and target.
func TestFileCpErrors(t *testing.T) {
	e := newFileEnv(t)
	e.b.OnPutFile(func(_ context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
		switch peer {
		case "ghost":
			return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrNotFound, Message: `unknown target "ghost": not in your tailnet`, Fix: "skein file cp --targets"}
		case "nZETA":
			return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "zeta is offline"}
		case "ci":
			return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "ci cannot receive files: it belongs to another user"}
		}
		return ipc.FilePutResult{}, errors.New("unexpected peer " + peer)
	})
	a := writeFile(t, filepath.Join(t.TempDir(), "a.txt"), strings.Repeat("x", 1<<20))
	for _, tc := range []struct{ target, want string }{
		{"ghost:", "skein: can't send a.txt to ghost: unknown target \"ghost\": not in your tailnet\n  fix: skein file cp --targets\n"},
		{"zeta:", "# warning: zeta is offline\nskein: can't send a.txt to zeta: zeta is offline\n"},
		{"ci:", "skein: can't send a.txt to ci: ci cannot receive files: it belongs to another user\n"},
	} {
		code, out, errs := e.run("file", "cp", a, tc.target)
		if code != 1 || out != "" || errs != tc.want {
			t.Errorf("%s: code %d, stdout %q, stderr %q; want 1, %q", tc.target, code, out, errs, tc.want)
		}
	}
	if len(e.b.Sent()) != 0 {
		t.Errorf("sent %d files", len(e.b.Sent()))
	}

	code, _, errs := runCLI("--socket", "/nonexistent/skeind.sock", "file", "cp", a, "alpha:")
	if code != 1 || !strings.Contains(errs, "cannot reach skeind") {
		t.Errorf("no skeind: code %d, stderr %q", code, errs)
	}
}

// A file that shrinks while it is sent is reported as such, not as a broken connection.
func TestFileCpShrinks(t *testing.T) {
	e := newFileEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "log"), strings.Repeat("x", 1<<20))
	e.b.OnPutFile(func(_ context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
		os.Truncate(path, 1000)
		_, err := io.Copy(io.Discard, io.LimitReader(body, size))
		return ipc.FilePutResult{}, err
	})
	code, _, errs := e.run("file", "cp", path, "alpha:")
	if code != 1 || !strings.Contains(errs, "skein: reading "+path+": it got shorter while being sent") {
		t.Errorf("code %d, stderr %q", code, errs)
	}
}

func TestFileCpProgress(t *testing.T) {
	e := newFileEnv(t)
	e.b.OnPutFile(func(_ context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
		if _, err := io.CopyN(io.Discard, body, size/2); err != nil {
			return ipc.FilePutResult{}, err
		}
		time.Sleep(300 * time.Millisecond)
		io.Copy(io.Discard, io.LimitReader(body, size))
		return ipc.FilePutResult{Name: name, Size: size, ResumedAt: 1536}, nil
	})
	// Big enough that socket buffers cannot take it all while skeind pauses half-way.
	big := writeFile(t, filepath.Join(t.TempDir(), "big.bin"), strings.Repeat("y", 16<<20))
	code, out, errs := e.runFile(fileRunOpts{tty: true}, "cp", big, "alpha:")
	if code != 0 || out != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	// A bar while sending (name, percentage, bytes of the total, time left), erased, then
	// the line for the file.
	for _, want := range []string{"\rbig.bin ", " 0% |", "/16 MiB", "\x1b[2K\r", "sent big.bin to alpha (16.0 MiB in "} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%q", want, errs)
		}
	}
	if !regexp.MustCompile(` [1-9][0-9]?% \|[^|]*\| \([0-9.]+/16 MiB, [0-9.]+ [KMG]iB/s\) \[[0-9.ms]+:[0-9.ms]+\]`).MatchString(errs) {
		t.Errorf("no bar with bytes, rate and time left half-way:\n%q", errs)
	}
	if !strings.HasSuffix(errs, ", resumed at 1.5 KiB)\n") {
		t.Errorf("stderr does not end with the resume offset: %q", errs)
	}
}

func TestFileCpInterrupted(t *testing.T) {
	e := newFileEnv(t)
	started := make(chan struct{})
	e.b.OnPutFile(func(ctx context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
		close(started)
		<-ctx.Done()
		return ipc.FilePutResult{}, ctx.Err()
	})
	a := writeFile(t, filepath.Join(t.TempDir(), "a.txt"), "hello")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	code, _, errs := e.runFile(fileRunOpts{ctx: ctx}, "cp", a, "alpha:")
	if code != 1 || errs != "skein: interrupted: a.txt was not sent completely\n" {
		t.Errorf("code %d, stderr %q", code, errs)
	}
}

func TestFileGet(t *testing.T) {
	e := newFileEnv(t)
	dir := t.TempDir()
	if code, out, errs := e.run("file", "get", dir); code != 0 || out != "" || errs != "" {
		t.Errorf("empty inbox: code %d, stdout %q, stderr %q", code, out, errs)
	}
	e.b.AddFile("a.txt", "alpha", []byte("hello"))
	e.b.AddFile("b.bin", "alpha", []byte{0, 1, 2})
	code, out, errs := e.run("file", "get", "--verbose", dir)
	want := "wrote a.txt as " + dir + "/a.txt (5 bytes)\nwrote b.bin as " + dir + "/b.bin (3 bytes)\nmoved 2/2 files\n"
	if code != 0 || out != want || errs != "" {
		t.Fatalf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}
	if got := dirNames(t, dir); !reflect.DeepEqual(got, []string{"a.txt", "b.bin"}) {
		t.Errorf("dir holds %q", got)
	}
	if readFile(t, filepath.Join(dir, "a.txt")) != "hello" || readFile(t, filepath.Join(dir, "b.bin")) != "\x00\x01\x02" {
		t.Error("wrong contents")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "a.txt")); fi.Mode().Perm()&0o133 != 0 {
		t.Errorf("mode %v", fi.Mode())
	}
	if in := e.b.Inbox(); len(in) != 0 {
		t.Errorf("inbox still holds %q", in)
	}
	if code, out, _ := e.run("file", "get", "--verbose", dir); code != 0 || out != "moved 0/0 files\n" {
		t.Errorf("empty again: code %d, stdout %q", code, out)
	}
}

func TestFileGetConflictSkip(t *testing.T) {
	e := newFileEnv(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "old")
	e.b.AddFile("a.txt", "alpha", []byte("new"))
	e.b.AddFile("c.txt", "alpha", []byte("see"))
	code, out, errs := e.run("file", "get", dir)
	// The file that stays says until when (skeind removes what nobody takes).
	until := time.Now().Add(7 * 24 * time.Hour).Format("2006-01-02")
	want := "skein: " + dir + "/a.txt already exists: a.txt stays in the inbox (until " + until
	wantFix := "\n  fix: skein file get --conflict=rename (or --conflict=overwrite) " + dir + "\n"
	if code != 1 || out != "" || !strings.HasPrefix(errs, want) || !strings.HasSuffix(errs, ", then skeind removes it)"+wantFix) {
		t.Errorf("code %d, stdout %q, stderr %q; want %q", code, out, errs, want)
	}
	if readFile(t, filepath.Join(dir, "a.txt")) != "old" || readFile(t, filepath.Join(dir, "c.txt")) != "see" {
		t.Error("wrong contents")
	}
	if in := e.b.Inbox(); !reflect.DeepEqual(in, []string{"a.txt"}) {
		t.Errorf("inbox %q", in)
	}
	// Nothing could be moved at all: said so at the end, as the official client does.
	code, _, errs = e.run("file", "get", "--conflict=skip", dir)
	if code != 1 || !strings.HasSuffix(errs, "\nskein: moved 0/1 files\n") {
		t.Errorf("again: code %d, stderr %q", code, errs)
	}
}

func TestFileGetConflictRename(t *testing.T) {
	e := newFileEnv(t)
	dir := t.TempDir()
	for _, n := range []string{"a.txt", "a (1).txt", ".bashrc", "x.tar.gz", "noext"} {
		writeFile(t, filepath.Join(dir, n), "old "+n)
	}
	for _, n := range []string{"a.txt", ".bashrc", "x.tar.gz", "noext"} {
		e.b.AddFile(n, "alpha", []byte("new "+n))
	}
	code, out, errs := e.run("file", "get", "--conflict=rename", "--verbose", dir)
	if code != 0 || errs != "" || !strings.Contains(out, "wrote a.txt as "+dir+"/a (2).txt (9 bytes)\n") || !strings.HasSuffix(out, "moved 4/4 files\n") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	for name, want := range map[string]string{
		"a.txt": "old a.txt", "a (1).txt": "old a (1).txt", "a (2).txt": "new a.txt",
		".bashrc": "old .bashrc", ".bashrc (1)": "new .bashrc",
		"x.tar.gz": "old x.tar.gz", "x (1).tar.gz": "new x.tar.gz",
		"noext": "old noext", "noext (1)": "new noext",
	} {
		if got := readFile(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if n := len(dirNames(t, dir)); n != 9 {
		t.Errorf("%d files in dir: %q", n, dirNames(t, dir))
	}
}

func TestFileGetConflictOverwrite(t *testing.T) {
	e := newFileEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("old and longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.b.AddFile("a.txt", "alpha", []byte("new"))
	e.b.AddFile("b.txt", "alpha", []byte("bee"))
	if code, out, errs := e.run("file", "get", "--conflict=overwrite", dir); code != 0 || out != "" || errs != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	if readFile(t, filepath.Join(dir, "a.txt")) != "new" || readFile(t, filepath.Join(dir, "b.txt")) != "bee" {
		t.Error("wrong contents")
	}
	if got := dirNames(t, dir); !reflect.DeepEqual(got, []string{"a.txt", "b.txt"}) {
		t.Errorf("dir holds %q (temporary files left?)", got)
	}
	// A directory in the way is an error, and the temporary file goes away.
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	e.b.AddFile("d", "alpha", []byte("x"))
	code, _, errs := e.run("file", "get", "--conflict=overwrite", dir)
	if code != 1 || !strings.Contains(errs, "skein: replacing "+dir+"/d: ") {
		t.Errorf("dir in the way: code %d, stderr %q", code, errs)
	}
	if got := dirNames(t, dir); !reflect.DeepEqual(got, []string{"a.txt", "b.txt", "d"}) {
		t.Errorf("dir holds %q", got)
	}
}

// A symlink in DIR is never followed, whatever --conflict says.
func TestFileGetSymlinks(t *testing.T) {
	for _, mode := range []string{"skip", "rename", "overwrite"} {
		t.Run(mode, func(t *testing.T) {
			e := newFileEnv(t)
			outside, dir := t.TempDir(), t.TempDir()
			secret := writeFile(t, filepath.Join(outside, "secret"), "secret")
			planted := filepath.Join(outside, "planted")
			os.Symlink(secret, filepath.Join(dir, "a.txt"))
			os.Symlink(planted, filepath.Join(dir, "b.txt")) // dangling
			e.b.AddFile("a.txt", "alpha", []byte("evil a"))
			e.b.AddFile("b.txt", "alpha", []byte("evil b"))
			code, _, errs := e.run("file", "get", "--conflict="+mode, dir)
			if readFile(t, secret) != "secret" {
				t.Error("the symlink's target was written")
			}
			if _, err := os.Lstat(planted); err == nil {
				t.Error("the dangling symlink's target was created")
			}
			switch mode {
			case "skip":
				if code != 1 || strings.Count(errs, "already exists") != 2 || len(e.b.Inbox()) != 2 {
					t.Errorf("code %d, stderr %q, inbox %q", code, errs, e.b.Inbox())
				}
				for _, n := range []string{"a.txt", "b.txt"} {
					if fi, err := os.Lstat(filepath.Join(dir, n)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
						t.Errorf("%s is no longer a symlink", n)
					}
				}
			case "rename":
				if code != 0 || readFile(t, filepath.Join(dir, "a (1).txt")) != "evil a" || readFile(t, filepath.Join(dir, "b (1).txt")) != "evil b" {
					t.Errorf("code %d, stderr %q, dir %q", code, errs, dirNames(t, dir))
				}
			case "overwrite":
				// The symlinks themselves are replaced by the received files.
				for _, n := range []string{"a.txt", "b.txt"} {
					fi, err := os.Lstat(filepath.Join(dir, n))
					if code != 0 || err != nil || !fi.Mode().IsRegular() {
						t.Errorf("code %d, stderr %q: %s is %v", code, errs, n, fi)
					}
				}
				if readFile(t, filepath.Join(dir, "a.txt")) != "evil a" {
					t.Error("wrong contents")
				}
			}
		})
	}
}

func TestFileGetUnsafeName(t *testing.T) {
	e := newFileEnv(t)
	parent := t.TempDir()
	dir := filepath.Join(parent, "dl")
	os.Mkdir(dir, 0o755)
	e.b.AddFile("../evil", "alpha", []byte("x"))
	code, _, errs := e.run("file", "get", "--conflict=overwrite", dir)
	if code != 1 || !strings.Contains(errs, `skein: refusing inbox file "../evil": not a plain file name`) {
		t.Errorf("code %d, stderr %q", code, errs)
	}
	if got := dirNames(t, parent); !reflect.DeepEqual(got, []string{"dl"}) || len(dirNames(t, dir)) != 0 {
		t.Errorf("written: %q / %q", got, dirNames(t, dir))
	}
}

// A short transfer leaves nothing behind, the file stays in the inbox, and an existing file
// is untouched under --conflict=overwrite.
func TestFileGetShortRead(t *testing.T) {
	h := &fileHooks{}
	h.openFile = func(ctx context.Context, name string) (io.ReadCloser, int64, error) {
		return io.NopCloser(strings.NewReader("only half")), 18, nil
	}
	e := newHookedFileEnv(t, h)
	for _, mode := range []string{"skip", "overwrite"} {
		dir := t.TempDir()
		if mode == "overwrite" {
			writeFile(t, filepath.Join(dir, "a.txt"), "keep me")
		}
		e.b.AddFile("a.txt", "alpha", []byte("only half and more"))
		code, _, errs := e.run("file", "get", "--conflict="+mode, dir)
		if code != 1 || !strings.Contains(errs, "skein: receiving a.txt: ") {
			t.Errorf("%s: code %d, stderr %q", mode, code, errs)
		}
		if in := e.b.Inbox(); !reflect.DeepEqual(in, []string{"a.txt"}) {
			t.Errorf("%s: inbox %q", mode, in)
		}
		got := dirNames(t, dir)
		if mode == "skip" && len(got) != 0 || mode == "overwrite" && (!reflect.DeepEqual(got, []string{"a.txt"}) || readFile(t, filepath.Join(dir, "a.txt")) != "keep me") {
			t.Errorf("%s: dir holds %q", mode, got)
		}
	}
}

func TestFileGetDeleteFails(t *testing.T) {
	h := &fileHooks{}
	h.deleteFile = func(ctx context.Context, name string) error {
		return &ipc.Error{Code: ipc.ErrInternal, Message: "inbox is read-only"}
	}
	e := newHookedFileEnv(t, h)
	dir := t.TempDir()
	e.b.AddFile("a.txt", "alpha", []byte("hello"))
	code, _, errs := e.run("file", "get", dir)
	want := "skein: wrote " + dir + "/a.txt but could not delete it from the inbox: inbox is read-only\nskein: moved 0/1 files\n"
	if code != 1 || errs != want {
		t.Errorf("code %d, stderr %q; want %q", code, errs, want)
	}
}

func TestFileGetDevNull(t *testing.T) {
	e := newFileEnv(t)
	e.b.AddFile("a.txt", "alpha", []byte("a"))
	e.b.AddFile("b.txt", "alpha", []byte("b"))
	code, out, errs := e.run("file", "get", "--verbose", "/dev/null")
	if code != 0 || errs != "" || out != "deleting a.txt ...\ndeleting b.txt ...\ndeleted 2 files\n" || len(e.b.Inbox()) != 0 {
		t.Errorf("code %d, stdout %q, stderr %q, inbox %q", code, out, errs, e.b.Inbox())
	}
}

func TestFileGetWait(t *testing.T) {
	e := newFileEnv(t)
	dir := t.TempDir()
	go func() {
		time.Sleep(200 * time.Millisecond)
		e.b.AddFile("late.txt", "alpha", []byte("finally"))
	}()
	code, out, errs := e.run("file", "get", "--wait", "--verbose", dir)
	if code != 0 || errs != "" || !strings.HasPrefix(out, "waiting for files...\n") || !strings.HasSuffix(out, "moved 1/1 files\n") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	if readFile(t, filepath.Join(dir, "late.txt")) != "finally" {
		t.Error("wrong contents")
	}

	// Interrupted while waiting: exit 1, nothing said.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if code, out, errs := e.runFile(fileRunOpts{ctx: ctx}, "get", "--wait", dir); code != 1 || out != "" || errs != "" {
		t.Errorf("interrupted: code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestFileGetLoop(t *testing.T) {
	old := fileGetRetry
	fileGetRetry = 50 * time.Millisecond
	t.Cleanup(func() { fileGetRetry = old })

	e := newFileEnv(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "taken.txt"), "mine")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := e.runFile(fileRunOpts{ctx: ctx}, "get", "--loop", "--verbose", dir)
		done <- result{code, out, errs}
	}()
	e.b.AddFile("one.txt", "alpha", []byte("1"))
	waitFor(t, "one.txt", func() bool { _, err := os.Stat(filepath.Join(dir, "one.txt")); return err == nil })
	e.b.AddFile("two.txt", "alpha", []byte("2"))
	waitFor(t, "two.txt", func() bool { _, err := os.Stat(filepath.Join(dir, "two.txt")); return err == nil })

	// A conflict is retried, but reported once; once the name is free, the file comes.
	e.b.AddFile("taken.txt", "alpha", []byte("theirs"))
	time.Sleep(300 * time.Millisecond)
	os.Rename(filepath.Join(dir, "taken.txt"), filepath.Join(dir, "mine.txt"))
	waitFor(t, "taken.txt", func() bool { return len(e.b.Inbox()) == 0 })
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("--loop did not stop when interrupted")
	}
	if r.code != 0 || strings.Count(r.err, "already exists") != 1 {
		t.Errorf("code %d, stderr %q", r.code, r.err)
	}
	if readFile(t, filepath.Join(dir, "taken.txt")) != "theirs" || readFile(t, filepath.Join(dir, "mine.txt")) != "mine" {
		t.Error("wrong contents")
	}
	for _, want := range []string{"wrote one.txt as ", "wrote two.txt as ", "wrote taken.txt as "} {
		if !strings.Contains(r.out, want) {
			t.Errorf("stdout lacks %q: %q", want, r.out)
		}
	}
}

// Interrupted in the middle of a file: nothing is left in DIR, the file stays in the inbox.
func TestFileGetInterrupted(t *testing.T) {
	opened := make(chan struct{}, 1)
	h := &fileHooks{}
	h.openFile = func(ctx context.Context, name string) (io.ReadCloser, int64, error) {
		opened <- struct{}{}
		return io.NopCloser(io.MultiReader(strings.NewReader(strings.Repeat("x", 100<<10)), ctxReader{ctx})), 1 << 20, nil
	}
	e := newHookedFileEnv(t, h)
	dir := t.TempDir()
	e.b.AddFile("big.bin", "alpha", make([]byte, 1<<20))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-opened; time.Sleep(100 * time.Millisecond); cancel() }()
	code, _, errs := e.runFile(fileRunOpts{ctx: ctx}, "get", dir)
	if code != 1 || errs != "skein: interrupted: big.bin stays in the inbox\n" {
		t.Errorf("code %d, stderr %q", code, errs)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("dir holds %q", got)
	}
	if in := e.b.Inbox(); !reflect.DeepEqual(in, []string{"big.bin"}) {
		t.Errorf("inbox %q", in)
	}
}

// ctxReader blocks until ctx is done.
type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

func TestNumberedName(t *testing.T) {
	for in, want := range map[string]string{
		"photo.jpg": "photo (3).jpg", "noext": "noext (3)", ".bashrc": ".bashrc (3)", "a.": "a. (3)",
		"x.tar.gz": "x (3).tar.gz", "x.gz": "x (3).gz", "my.backup.gz": "my.backup (3).gz", "..hidden": "..hidden (3)",
	} {
		if got := numberedName(in, 3); got != want {
			t.Errorf("numberedName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFileHelpers(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 256 << 10: "256.0 KiB", 5 << 30: "5.0 GiB"} {
		if got := fmtBytes(in); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"/home/al/Downloads": "/home/al/Downloads", "/tmp/my files": "'/tmp/my files'", "it's": `'it'\''s'`} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"a b.txt": "a b.txt", "héllo": "héllo", "evil\x1b[2J": `"evil\x1b[2J"`, "bad\xff": `"bad\xff"`} {
		if got := displayName(in); got != want {
			t.Errorf("displayName(%q) = %q, want %q", in, got, want)
		}
	}
}
