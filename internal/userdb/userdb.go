// Package userdb looks up local users by name and by uid, including users that only the
// system's NSS sources know (SSSD, LDAP, systemd-homed, extrausers).
//
// skeind is built without cgo, so Go's os/user reads nothing but /etc/passwd. When that file
// does not know a user, userdb asks getent(1), which goes through glibc's NSS exactly as a
// cgo build would. Names are validated before they reach getent, and its answer is parsed
// strictly: one passwd line whose name and uid match what was asked.
package userdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// User is one passwd entry.
type User struct {
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
}

// ErrUnknown is returned (wrapped) when neither /etc/passwd nor NSS knows the user.
var ErrUnknown = errors.New("no such user")

const (
	// maxName bounds a user name; glibc and systemd accept up to 256 bytes (LOGIN_NAME_MAX).
	maxName = 256
	// maxAnswer bounds what is read from getent: one passwd line is far smaller.
	maxAnswer = 64 << 10
	// nobodyUID is (uid_t)-1, which no real user has and which means "no change" to chown.
	nobodyUID = 1<<32 - 1
)

// getentPath is the program asked (looked up in PATH); getentTimeout bounds one NSS look-up,
// since a network source (LDAP, SSSD offline) may hang. Tests change both.
var (
	getentPath    = "getent"
	getentTimeout = 5 * time.Second
)

// ValidName tells whether name may be looked up: what useradd, systemd and SSSD's fully
// qualified names (user@domain) produce, and nothing getent could read as an option or a uid.
func ValidName(name string) error {
	if name == "" || len(name) > maxName {
		return fmt.Errorf("user name must be 1 to %d bytes", maxName)
	}
	digits := true
	for i, r := range name {
		switch {
		case r >= '0' && r <= '9':
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
			digits = false
		case i > 0 && (r == '.' || r == '-' || r == '@'):
			digits = false
		case r == '$' && i == len(name)-1 && i > 0: // Samba machine accounts
			digits = false
		default:
			return fmt.Errorf("user name %q: character %q is not allowed", name, r)
		}
	}
	if digits {
		return fmt.Errorf("user name %q is a number (give the name, not the uid)", name)
	}
	return nil
}

// LookupName finds the user called name.
func LookupName(name string) (User, error) {
	if err := ValidName(name); err != nil {
		return User{}, err
	}
	if u, err := user.Lookup(name); err == nil {
		return fromOS(u)
	}
	u, err := getent(name)
	if err != nil {
		return User{}, err
	}
	if !strings.EqualFold(u.Name, name) {
		return User{}, fmt.Errorf("getent passwd %s answered for %q", name, u.Name)
	}
	return u, nil
}

// LookupUID finds the user with uid.
func LookupUID(uid uint32) (User, error) {
	if uid == nobodyUID {
		return User{}, fmt.Errorf("uid %d: %w", uid, ErrUnknown)
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return fromOS(u)
	}
	u, err := getent(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return User{}, err
	}
	if u.UID != uid {
		return User{}, fmt.Errorf("getent passwd %d answered for uid %d", uid, u.UID)
	}
	return u, nil
}

func fromOS(u *user.User) (User, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %s: uid %q: %v", u.Username, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %s: gid %q: %v", u.Username, u.Gid, err)
	}
	return User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir, Shell: passwdShell(u.Username)}, nil
}

// getent asks NSS for key (a validated name or a uid) with `getent passwd KEY`.
func getent(key string) (User, error) {
	ctx, cancel := context.WithTimeout(context.Background(), getentTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, getentPath, "passwd", key)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	// On timeout kill its whole process group, and stop waiting for output a straggler still
	// holds open: the helper must not hang on a stuck NSS module.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out, errOut bytes.Buffer
	stdout := &limitedWriter{w: &out, n: maxAnswer}
	cmd.Stdout, cmd.Stderr = stdout, &limitedWriter{w: &errOut, n: 4096}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() == 2: // "key not found"
		return User{}, fmt.Errorf("user %s: %w", key, ErrUnknown)
	case ctx.Err() != nil:
		return User{}, fmt.Errorf("getent passwd %s: no answer in %v", key, getentTimeout)
	case errors.Is(err, exec.ErrNotFound):
		// No getent (a minimal container): /etc/passwd was all there is to ask.
		return User{}, fmt.Errorf("user %s: %w", key, ErrUnknown)
	default:
		return User{}, fmt.Errorf("getent passwd %s: %v %s", key, err, strings.TrimSpace(errOut.String()))
	}
	if stdout.over {
		return User{}, fmt.Errorf("getent passwd %s: more than %d bytes of answer", key, maxAnswer)
	}
	return parsePasswd(out.String())
}

// parsePasswd reads exactly one passwd(5) line: name:password:uid:gid:gecos:home:shell.
func parsePasswd(s string) (User, error) {
	line := strings.TrimSuffix(s, "\n")
	if line == "" || strings.ContainsAny(line, "\n\x00") {
		return User{}, fmt.Errorf("getent passwd: want one line, got %q", truncate(s))
	}
	f := strings.Split(line, ":")
	if len(f) != 7 {
		return User{}, fmt.Errorf("getent passwd: %d fields in %q, want 7", len(f), truncate(line))
	}
	if err := ValidName(f[0]); err != nil {
		return User{}, fmt.Errorf("getent passwd: %v", err)
	}
	uid, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil || uid == nobodyUID {
		return User{}, fmt.Errorf("getent passwd: bad uid %q", truncate(f[2]))
	}
	gid, err := strconv.ParseUint(f[3], 10, 32)
	if err != nil || gid == nobodyUID {
		return User{}, fmt.Errorf("getent passwd: bad gid %q", truncate(f[3]))
	}
	return User{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6]}, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// limitedWriter keeps the first n bytes and drops the rest (noting that it did), so a runaway
// child cannot make the helper buffer without bound.
type limitedWriter struct {
	w    io.Writer
	n    int
	over bool
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	k := min(len(p), l.n)
	l.w.Write(p[:k])
	l.n -= k
	l.over = l.over || k < len(p)
	return len(p), nil
}
