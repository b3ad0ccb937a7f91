//go:build !linux

package ipc

import (
	"errors"
	"net"
)

// Without SO_PEERCRED every caller is unidentified, so only reads are allowed.
func getPeerCred(*net.UnixConn) (PeerCred, error) {
	return PeerCred{}, errors.New("peer credentials not supported on this OS")
}
