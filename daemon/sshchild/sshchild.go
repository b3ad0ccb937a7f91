// Package sshchild is the part of Tailscale SSH that runs as the local user: the session
// helper (root) starts `skeind ssh-child MODE ...` for every shell, command, SFTP session and
// for each connection's forwarding, and the child's first act is to give up root —
// supplementary groups, then the group, then the user — and to check that it cannot take it
// back. Everything that touches the user's files (the shell, SFTP, the agent socket) or opens
// sockets for them (forwarded ports) happens here, with the user's own rights, never in the
// helper.
package sshchild

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pkg/sftp"
	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/internal/fileserve"
	"github.com/skeinvpn/skein/internal/unixmsg"
)

// Arg is the first argument that makes skeind run as a child (cmd/skeind checks for it).
const Arg = "ssh-child"

// Exe is the program the helper starts children from: this very binary (tests replace it).
var Exe = "/proc/self/exe"

// Modes of the child.
const (
	ModeExec = "exec" // drop, then exec the command (a shell) with the environment given
	ModeSFTP = "sftp" // drop, then serve SFTP on stdin/stdout
	ModeUser = "user" // drop, then open sockets for the helper on request (fd 3)
	// ModeFiles: drop, then serve the files at the path given after "--" over the
	// connections skeind passes on fd 3 (`skein serve --bg PATH`).
	ModeFiles = "files"
)

// Identity is who the child becomes.
type Identity struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups (the primary group may be among them)
	Home     string
}

// Command is the child for mode as id; for ModeExec, argv is the program and its arguments
// (argv[0] as the program should see it, path the file to run).
func Command(mode string, id Identity, path string, argv ...string) *exec.Cmd {
	gs := make([]string, len(id.Groups))
	for i, g := range id.Groups {
		gs[i] = strconv.FormatUint(uint64(g), 10)
	}
	args := []string{Arg, mode,
		"--uid=" + strconv.FormatUint(uint64(id.UID), 10),
		"--gid=" + strconv.FormatUint(uint64(id.GID), 10),
		"--groups=" + strings.Join(gs, ","),
		"--home=" + id.Home,
	}
	switch mode {
	case ModeExec:
		args = append(append(args, "--", path), argv...)
	case ModeFiles:
		args = append(args, "--", path)
	}
	cmd := exec.Command(Exe, args...)
	cmd.Args[0] = "skeind"
	return cmd
}

// Main runs a child; args are what follows Arg. It returns the exit code (ModeExec does not
// return on success).
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "skeind ssh-child: no mode")
		return 2
	}
	mode := args[0]
	fs := flag.NewFlagSet(Arg, flag.ContinueOnError)
	uid := fs.Uint("uid", 1<<32-1, "")
	gid := fs.Uint("gid", 1<<32-1, "")
	groups := fs.String("groups", "", "")
	home := fs.String("home", "/", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	id := Identity{UID: uint32(*uid), GID: uint32(*gid), Home: *home}
	if *uid >= 1<<32-1 || *gid >= 1<<32-1 {
		fmt.Fprintln(os.Stderr, "skeind ssh-child: --uid and --gid are required")
		return 2
	}
	for _, g := range strings.Split(*groups, ",") {
		if g == "" {
			continue
		}
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			fmt.Fprintf(os.Stderr, "skeind ssh-child: bad group %q\n", g)
			return 2
		}
		id.Groups = append(id.Groups, uint32(n))
	}
	if err := Drop(id); err != nil {
		fmt.Fprintf(os.Stderr, "skein: cannot become the user: %v\r\n", err)
		return 1
	}
	// Files made in a session get the usual permissions, whatever the helper's unit says.
	unix.Umask(0o022)
	if os.Chdir(id.Home) != nil {
		os.Chdir("/")
	}
	switch mode {
	case ModeExec:
		rest := fs.Args()
		if len(rest) < 2 {
			fmt.Fprintln(os.Stderr, "skeind ssh-child exec: want PATH ARGV0 [ARGS...]")
			return 2
		}
		err := syscall.Exec(rest[0], rest[1:], os.Environ())
		fmt.Fprintf(os.Stderr, "skein: cannot run %s: %v\r\n", rest[0], err)
		return 127
	case ModeSFTP:
		srv, err := sftp.NewServer(stdio{})
		if err != nil {
			fmt.Fprintf(os.Stderr, "skein: sftp: %v\n", err)
			return 1
		}
		if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(os.Stderr, "skein: sftp: %v\n", err)
			return 1
		}
		return 0
	case ModeUser:
		return serveUser(os.NewFile(3, "helper"))
	case ModeFiles:
		return serveFiles(os.NewFile(3, "skeind"), fs.Args())
	}
	fmt.Fprintf(os.Stderr, "skeind ssh-child: unknown mode %q\n", mode)
	return 2
}

type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { os.Stdin.Close(); return os.Stdout.Close() }

// Drop gives up root for id in the one safe order — supplementary groups, then the group,
// then the user (after setuid the others could no longer be changed) — and Verify checks the
// result. Run as the user already (the same ids), it only verifies.
func Drop(id Identity) error {
	groups := make([]int, len(id.Groups))
	for i, g := range id.Groups {
		groups[i] = int(g)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Setgroups(groups); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
	}
	if err := syscall.Setgid(int(id.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", id.GID, err)
	}
	if err := syscall.Setuid(int(id.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", id.UID, err)
	}
	return Verify(id)
}

// Verify checks that the process is exactly id: real, effective and saved user and group,
// the supplementary groups; and, for anyone but root, that it has no capabilities and
// cannot become root again.
func Verify(id Identity) error {
	r, e, s := unix.Getresuid()
	if r != int(id.UID) || e != int(id.UID) || s != int(id.UID) {
		return fmt.Errorf("uids are %d/%d/%d, want %d", r, e, s, id.UID)
	}
	r, e, s = unix.Getresgid()
	if r != int(id.GID) || e != int(id.GID) || s != int(id.GID) {
		return fmt.Errorf("gids are %d/%d/%d, want %d", r, e, s, id.GID)
	}
	have, err := unix.Getgroups()
	if err != nil {
		return err
	}
	want := make([]int, len(id.Groups))
	for i, g := range id.Groups {
		want[i] = int(g)
	}
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(slices.Compact(have), slices.Compact(want)) {
		return fmt.Errorf("groups are %v, want %v", have, want)
	}
	if id.UID == 0 {
		return nil
	}
	if err := unix.Setuid(0); err == nil {
		return errors.New("could become root again")
	}
	if id.GID != 0 {
		if err := unix.Setgid(0); err == nil {
			return errors.New("could take group 0 again")
		}
	}
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(st), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "CapEff" || k == "CapPrm") && strings.Trim(strings.TrimSpace(v), "0") != "" {
			return fmt.Errorf("%s is %s", k, strings.TrimSpace(v))
		}
	}
	return nil
}

// serveFiles is ModeFiles: the files at args[0], read with the user's own rights.
func serveFiles(f *os.File, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "skeind ssh-child files: want one path")
		return 2
	}
	c, err := unixmsg.FromFile(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "skeind ssh-child files: %v\n", err)
		return 1
	}
	defer c.Close()
	h, done, err := fileserve.Handler(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "skeind ssh-child files: %v\n", err)
		return 1
	}
	defer done()
	if err := fileserve.Serve(c, h); err != nil {
		fmt.Fprintf(os.Stderr, "skeind ssh-child files: %v\n", err)
		return 1
	}
	return 0
}
