//go:build !linux

package sockmark

import "errors"

func set(uintptr, uint32) error { return errors.New("SO_MARK exists only on Linux") }
