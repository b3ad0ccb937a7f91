package router

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
)

// Cleanup removes what a previous skeind that did not Close left behind, in
// the calling thread's network namespace: our rules at prefs 5210/5230/5250/
// 5260/5270 (IPv4 and IPv6), the table-52 routes via tunName and the throw routes
// (all of table 52 if tunName no longer exists), and the tunName link itself.
// Call it at start, before creating the TUN device.
func Cleanup(tunName string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	k, err := newKernel()
	if err != nil {
		return err
	}
	defer k.close()

	var link netlink.Link
	if tunName != "" {
		l, err := k.h.LinkByName(tunName)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil:
			link = l
		case !errors.As(err, &nf):
			return fmt.Errorf("router: cleanup: link %q: %w", tunName, err)
		}
	}
	fams := []int{netlink.FAMILY_V4}
	// Rules and routes survive disable_ipv6, so only a kernel without IPv6
	// at all skips the v6 pass.
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		fams = append(fams, netlink.FAMILY_V6)
	}
	n, err := k.removeOwned(fams, link, link == nil)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if link != nil {
		if err := k.h.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("del link %s: %w", tunName, err))
		} else {
			logf("router: cleanup: deleted leftover link %s", tunName)
		}
	}
	if n > 0 {
		logf("router: cleanup: removed %d leftover rules and table-%d routes", n, Table)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("router: cleanup: %w", err)
	}
	return nil
}
