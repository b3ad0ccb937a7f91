package userdb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Files read for users and groups (tests point them elsewhere).
var (
	passwdFile = "/etc/passwd"
)

// MaxLoginName bounds a name a remote client may ask to log in as: what useradd allows by
// default, and short enough that no NSS module or log line has to truncate it.
const MaxLoginName = 32

// ValidLoginName is ValidName for names that come from the network (an SSH login): at most
// MaxLoginName bytes as well.
func ValidLoginName(name string) error {
	if len(name) > MaxLoginName {
		return fmt.Errorf("user name is longer than %d bytes", MaxLoginName)
	}
	return ValidName(name)
}

// LookupLogin finds the account a remote login names: a valid login name, looked up by name
// only, and the account found must carry exactly that name (an NSS source that folds case or
// maps aliases does not get to pick another account).
func LookupLogin(name string) (User, error) {
	if err := ValidLoginName(name); err != nil {
		return User{}, err
	}
	u, err := LookupName(name)
	if err != nil {
		return User{}, err
	}
	if u.Name != name {
		return User{}, fmt.Errorf("looking up %q found the account %q", name, u.Name)
	}
	return u, nil
}

// Groups lists the group IDs u belongs to, its primary group first: from /etc/group for a
// user of /etc/passwd, else from NSS (`getent initgroups`).
func Groups(u User) ([]uint32, error) {
	ids := []uint32{u.GID}
	add := func(s string) error {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil || g == nobodyUID {
			return fmt.Errorf("groups of %s: bad gid %q", u.Name, truncate(s))
		}
		if !slices.Contains(ids, uint32(g)) {
			ids = append(ids, uint32(g))
		}
		return nil
	}
	if ou, err := user.Lookup(u.Name); err == nil && ou.Uid == strconv.FormatUint(uint64(u.UID), 10) {
		gs, err := ou.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("groups of %s: %w", u.Name, err)
		}
		for _, g := range gs {
			if err := add(g); err != nil {
				return nil, err
			}
		}
		return ids, nil
	}
	if err := ValidName(u.Name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), getentTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, getentPath, "initgroups", u.Name)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = getentTimeout
	var out bytes.Buffer
	lw := &limitedWriter{w: &out, n: maxAnswer}
	cmd.Stdout = lw
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 2 {
			return ids, nil // NSS knows no groups beyond the primary one
		}
		return nil, fmt.Errorf("getent initgroups %s: %v", u.Name, err)
	}
	f := strings.Fields(out.String())
	if lw.over || len(f) == 0 || f[0] != u.Name {
		return nil, fmt.Errorf("getent initgroups %s: unexpected answer %q", u.Name, truncate(out.String()))
	}
	for _, g := range f[1:] {
		if err := add(g); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// passwdShell is the login shell /etc/passwd gives name ("" when it does not list it): Go's
// os/user, which reads the same file, leaves the shell out.
func passwdShell(name string) string {
	f, err := os.Open(passwdFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[0] == name {
			return fields[6]
		}
	}
	return ""
}
