package sessionhelper

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/skeinvpn/skein/daemon/sshchild"
	"github.com/skeinvpn/skein/internal/unixmsg"
	"github.com/skeinvpn/skein/internal/userdb"
)

// startFileServer starts the file server of a background share as the owner of the path, and
// answers skeind with its socket. The path is shared only by its owner or by root: a user
// cannot share through the helper what they could not read themselves.
func startFileServer(c *unixmsg.Conn, m filesMsg, logf func(string, ...any)) {
	reply := filesReply{Header: unixmsg.Header{Type: typeFilesReply}, ID: m.ID}
	f, err := fileServerFor(m.UID, m.Path, logf)
	if err != nil {
		reply.Error = err.Error()
		c.Send(reply)
		return
	}
	defer f.Close()
	reply.FDs = 1
	c.Send(reply, f)
}

func fileServerFor(requester uint32, path string, logf func(string, ...any)) (*os.File, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return nil, fmt.Errorf("%q is not a clean absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot share %s: %v", path, err)
	}
	owner := fi.Sys().(*syscall.Stat_t).Uid
	if requester != 0 && owner != requester {
		return nil, fmt.Errorf("cannot share %s: it belongs to uid %d, and only its owner (or root) may share it", path, owner)
	}
	u, err := userdb.LookupUID(owner)
	if err != nil {
		return nil, fmt.Errorf("cannot share %s: its owner: %v", path, err)
	}
	groups, err := userdb.Groups(u)
	if err != nil {
		return nil, fmt.Errorf("cannot share %s: groups of %s: %v", path, u.Name, err)
	}
	parent, child, err := unixmsg.Pair()
	if err != nil {
		return nil, err
	}
	cmd := sshchild.Command(sshchild.ModeFiles, sshchild.Identity{UID: u.UID, GID: u.GID, Groups: groups, Home: "/"}, path)
	cmd.ExtraFiles = []*os.File{child}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		parent.Close()
		child.Close()
		return nil, err
	}
	child.Close()
	go cmd.Wait() // it exits when skeind hangs up on it
	logf("session helper: serving %s as %s (pid %d)", path, u.Name, cmd.Process.Pid)
	f, err := parent.Unix().File()
	parent.Close()
	return f, err
}
