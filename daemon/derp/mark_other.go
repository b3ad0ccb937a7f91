//go:build !linux

package derp

import "syscall"

// markControl: SO_MARK exists only on Linux.
func markControl(uint32) func(network, address string, c syscall.RawConn) error { return nil }
