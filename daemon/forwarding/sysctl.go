package forwarding

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// procSys is where sysctls live. Everything below /proc/sys/net belongs to
// the network namespace of the thread that opens the file.
const procSys = "/proc/sys"

const (
	famV4 = "ipv4"
	famV6 = "ipv6"
)

// forwardKey is the global forwarding switch of a family. Writing it also
// overwrites "default" and every interface's forwarding value.
func forwardKey(fam string) string {
	if fam == famV6 {
		return "net/ipv6/conf/all/forwarding"
	}
	return "net/ipv4/ip_forward"
}

func confDir(fam string) string { return "net/" + fam + "/conf" }

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(path.Join(procSys, key))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, val string) error {
	f, err := os.OpenFile(path.Join(procSys, key), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(val)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %s=%s: %w", dotted(key), val, werr)
	}
	return cerr
}

// dotted renders a slash key the way sysctl(8) takes it: dots between
// components, and a dot inside a component (a VLAN name such as eth0.100)
// written as a slash.
func dotted(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}

// familyPresent reports whether the kernel has the family at all (IPv6 can
// be compiled out or disabled with ipv6.disable=1, and then its sysctls do
// not exist).
func familyPresent(fam string) bool {
	_, err := os.Stat(path.Join(procSys, "net", fam))
	return err == nil
}

// snapshotForwarding reads the global switch of fam, then "default" and every
// interface's forwarding value, which writing the global switch overwrites.
func snapshotForwarding(fam string) ([]sysctlValue, error) {
	g, err := readSysctl(forwardKey(fam))
	if err != nil {
		return nil, err
	}
	vals := []sysctlValue{{Key: forwardKey(fam), Value: g}}
	ents, err := os.ReadDir(path.Join(procSys, confDir(fam)))
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Name() == "all" {
			continue
		}
		k := confDir(fam) + "/" + e.Name() + "/forwarding"
		v, err := readSysctl(k)
		if err != nil {
			continue // interface went away
		}
		vals = append(vals, sysctlValue{Key: k, Value: v})
	}
	return vals, nil
}

// restoreForwarding writes back recorded values, global switch first (which
// resets every interface), then the per-interface ones that now differ.
// Interfaces that no longer exist are skipped.
func restoreForwarding(vals []sysctlValue) error {
	var errs []error
	for _, v := range vals {
		cur, err := readSysctl(v.Key)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur == v.Value {
			continue
		}
		if err := writeSysctl(v.Key, v.Value); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
