package sshserver

import (
	"fmt"

	"github.com/skeinvpn/skein/internal/userdb"
)

// Default PATHs, as Debian's login sets them.
const (
	userPath = "/usr/local/bin:/usr/bin:/bin:/usr/games"
	rootPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// loginEnv is the environment a session starts with: the account's, the connection's and
// the terminal's. It comes after what the client set, so it wins.
func loginEnv(u userdb.User, id Identity, term, tty, agent string) []string {
	shell := u.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	path := userPath
	if u.UID == 0 {
		path = rootPath
	}
	env := []string{
		"USER=" + u.Name,
		"LOGNAME=" + u.Name,
		"HOME=" + u.Home,
		"SHELL=" + shell,
		"PATH=" + path,
		"MAIL=/var/mail/" + u.Name,
		fmt.Sprintf("SSH_CLIENT=%s %d %d", id.Src.Addr(), id.Src.Port(), id.Dst.Port()),
		fmt.Sprintf("SSH_CONNECTION=%s %d %s %d", id.Src.Addr(), id.Src.Port(), id.Dst.Addr(), id.Dst.Port()),
	}
	if tty != "" {
		env = append(env, "SSH_TTY="+tty)
		if term != "" {
			env = append(env, "TERM="+term)
		}
	}
	if agent != "" {
		env = append(env, "SSH_AUTH_SOCK="+agent)
	}
	return env
}
