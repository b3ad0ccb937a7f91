package forwarding

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read-only inspection of legacy (x_tables) iptables filter tables, which
// nftables netlink does not show. Only tables the namespace already has are
// queried: asking for a missing one would make the kernel create it.

const (
	xtGetInfo    = 64 // IPT_SO_GET_INFO / IP6T_SO_GET_INFO
	xtGetEntries = 65 // IPT_SO_GET_ENTRIES / IP6T_SO_GET_ENTRIES
	xtNameLen    = 32
	xtHooks      = 5
	hookForward  = 2

	// Offsets inside struct ipt_entry / ip6t_entry.
	v4Iniface, v4IniMask, v4Invflags, v4TargetOff, v4EntrySize = 16, 48, 83, 88, 112
	v6Iniface, v6IniMask, v6Invflags, v6TargetOff, v6EntrySize = 64, 96, 133, 140, 168
	// The out-interface and its mask follow the in-interface ones.
	ifaceLen = 16
	invViaIn = 0x01
	invOut   = 0x02

	verdictAccept = -2 // -NF_ACCEPT - 1
	verdictDrop   = -1 // -NF_DROP - 1
)

// legacyTable is what we learn from one legacy filter table.
type legacyTable struct {
	fam          string // famV4 or famV6
	forwardDrop  bool   // FORWARD policy is DROP
	chains       []string
	acceptIn     bool // some rule accepts -i tun
	acceptOut    bool // some rule accepts -o tun
	acceptCtOnly bool // some rule accepts by conntrack state alone
}

func legacyTableNames(fam string) []string {
	f := "/proc/thread-self/net/ip_tables_names"
	if fam == famV6 {
		f = "/proc/thread-self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func getsockopt(fd, level, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// readLegacyFilter inspects the legacy filter table of fam, if the
// namespace has one.
func readLegacyFilter(fam, tun string) (*legacyTable, error) {
	found := false
	for _, n := range legacyTableNames(fam) {
		found = found || n == "filter"
	}
	if !found {
		return nil, nil
	}
	af, level := unix.AF_INET, unix.SOL_IP
	if fam == famV6 {
		af, level = unix.AF_INET6, unix.SOL_IPV6
	}
	fd, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)

	for range 5 { // the table can change size between the two calls
		info := make([]byte, xtNameLen+4+4*xtHooks*2+4+4)
		copy(info, "filter")
		if err := getsockopt(fd, level, xtGetInfo, info); err != nil {
			return nil, fmt.Errorf("get %s legacy filter info: %w", fam, err)
		}
		le := binary.NativeEndian
		validHooks := le.Uint32(info[xtNameLen:])
		underflow := func(h int) uint32 { return le.Uint32(info[xtNameLen+4+4*xtHooks+4*h:]) }
		size := le.Uint32(info[xtNameLen+4+4*xtHooks*2+4:])

		const hdr = xtNameLen + 8 // name, size, padding to the 8-byte aligned entries
		buf := make([]byte, hdr+int(size))
		copy(buf, "filter")
		le.PutUint32(buf[xtNameLen:], size)
		if err := getsockopt(fd, level, xtGetEntries, buf); err != nil {
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			return nil, fmt.Errorf("get %s legacy filter entries: %w", fam, err)
		}
		lt := parseLegacy(fam, tun, buf[hdr:])
		if validHooks&(1<<hookForward) != 0 {
			lt.forwardDrop = lt.policyAt(buf[hdr:], underflow(hookForward)) == verdictDrop
		}
		return lt, nil
	}
	return nil, fmt.Errorf("%s legacy filter table keeps changing", fam)
}

type entryLayout struct{ iniface, iniMask, invflags, targetOff, size int }

func layout(fam string) entryLayout {
	if fam == famV6 {
		return entryLayout{v6Iniface, v6IniMask, v6Invflags, v6TargetOff, v6EntrySize}
	}
	return entryLayout{v4Iniface, v4IniMask, v4Invflags, v4TargetOff, v4EntrySize}
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ifaceIs reports whether an iptables interface field is an exact,
// non-inverted match of name.
func ifaceIs(name []byte, mask []byte, inverted bool, want string) bool {
	if inverted || cstr(name) != want {
		return false
	}
	return len(want) < len(mask) && mask[len(want)] != 0 // NUL covered: not a "+" wildcard
}

func parseLegacy(fam, tun string, ents []byte) *legacyTable {
	lt := &legacyTable{fam: fam}
	l := layout(fam)
	le := binary.NativeEndian
	for off := 0; off+l.size <= len(ents); {
		e := ents[off:]
		tOff := int(le.Uint16(e[l.targetOff:]))
		next := int(le.Uint16(e[l.targetOff+2:]))
		if next < l.size || tOff < l.size || tOff+36 > next || off+next > len(ents) {
			break
		}
		tgt := e[tOff:next]
		tname := cstr(tgt[2 : 2+29])
		switch tname {
		case "ERROR":
			if c := cstr(tgt[32:min(len(tgt), 32+xtNameLen)]); c != "ERROR" {
				lt.chains = append(lt.chains, c)
			}
		case "": // standard target: a verdict or a jump
			if int32(le.Uint32(tgt[32:])) == verdictAccept {
				inv := e[l.invflags]
				in := ifaceIs(e[l.iniface:l.iniface+ifaceLen], e[l.iniMask:l.iniMask+ifaceLen], inv&invViaIn != 0, tun)
				out := ifaceIs(e[l.iniface+ifaceLen:l.iniface+2*ifaceLen], e[l.iniMask+ifaceLen:l.iniMask+2*ifaceLen], inv&invOut != 0, tun)
				lt.acceptIn = lt.acceptIn || in
				lt.acceptOut = lt.acceptOut || out
				if !in && !out && cstr(e[l.iniface:l.iniface+ifaceLen]) == "" && cstr(e[l.iniface+ifaceLen:l.iniface+2*ifaceLen]) == "" {
					for _, m := range legacyMatches(e[l.size:tOff]) {
						if m == "conntrack" || m == "state" {
							lt.acceptCtOnly = true
						}
					}
				}
			}
		}
		off += next
	}
	return lt
}

func legacyMatches(b []byte) []string {
	var names []string
	for len(b) >= 32 {
		sz := int(binary.NativeEndian.Uint16(b))
		if sz < 32 || sz > len(b) {
			break
		}
		names = append(names, cstr(b[2:2+29]))
		b = b[sz:]
	}
	return names
}

// policyAt returns the verdict of the standard target of the entry at off.
func (lt *legacyTable) policyAt(ents []byte, off uint32) int32 {
	l := layout(lt.fam)
	if int(off)+l.size > len(ents) {
		return 0
	}
	e := ents[off:]
	tOff := int(binary.NativeEndian.Uint16(e[l.targetOff:]))
	if tOff+36 > len(e) || cstr(e[tOff+2:tOff+2+29]) != "" {
		return 0
	}
	return int32(binary.NativeEndian.Uint32(e[tOff+32:]))
}
