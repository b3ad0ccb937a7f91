package ipc

import (
	"net"

	"golang.org/x/sys/unix"
)

func getPeerCred(c *net.UnixConn) (PeerCred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return PeerCred{}, err
	}
	var (
		ucred *unix.Ucred
		gerr  error
	)
	if err := raw.Control(func(fd uintptr) {
		ucred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return PeerCred{}, err
	}
	if gerr != nil {
		return PeerCred{}, gerr
	}
	return PeerCred{PID: ucred.Pid, UID: ucred.Uid, GID: ucred.Gid}, nil
}
