//go:build !linux

package portmap

import (
	"errors"
	"net/netip"
)

func defaultGateway() (netip.Addr, error) {
	return netip.Addr{}, errors.New("finding the default gateway is implemented for Linux only; set Options.Gateway")
}
