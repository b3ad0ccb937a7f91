// Package taildrop implements Taildrop for skeind: the receiving side (the /v0/put/ peer API and
// the root-owned inbox where files wait until the desktop user takes them) and the sending side
// (a resume-aware PUT to a peer's peer API). It interoperates with the official clients; the
// wire facts are in docs/protocol.md section 8.
//
// Security stance (docs/reliability-security.md S8, S10–S14):
//   - every file-system operation is relative to one directory descriptor, with O_NOFOLLOW and
//     no-replace renames, so a symlink or hard link planted in the inbox is never followed,
//     truncated or replaced;
//   - a file only ever appears under its final name after it was completely received and
//     fsync'ed (partials end in ".partial" and are never listed);
//   - names are checked by [ValidateName], which is stricter than the official rules;
//   - the peer API refuses DNS-rebinding requests (Host/Origin/Referer), unknown source
//     addresses and unauthorised peers, and bounds headers, body rate, connections, concurrent
//     transfers and disk use.
package taildrop

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest file name accepted, in bytes (NAME_MAX on Linux and the official
// limit).
const MaxNameLen = 255

// hashBlockSize is the block size of the resume hashes.
const hashBlockSize = 64 << 10

// ErrInvalidName is wrapped by every error of [ValidateName]. Its text is the one the official
// receiver answers with, so the sender's user sees a familiar message.
var ErrInvalidName = errors.New("invalid filename")

// Suffixes a received name may not end in: ours mark files in progress; the official client uses
// both and refuses them as well.
const (
	partialSuffix = ".partial"
	deletedSuffix = ".deleted"
)

// ValidateName reports whether name may be used as the base name of a received file.
//
// It accepts a subset of what the official receiver accepts (protocol.md 8.4): valid UTF-8, at
// most 255 bytes, no leading or trailing white space, only graphic characters (so no control
// characters, NUL or invisible format characters such as bidirectional overrides), none of
// / \ : * " < > |, not "." or "..", not ending in ".partial" or ".deleted" (in any letter case).
//
// Stricter than the official rules: a name may not start with ".". The official client accepts
// ".bashrc"; we refuse it so that a peer can never drop a hidden file (or a dot-file that a
// desktop or shell would pick up as configuration) and so that names of our own never collide
// with received ones. Unicode is kept as sent (no normalisation).
func ValidateName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrInvalidName, why) }
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxNameLen:
		return bad("longer than 255 bytes")
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case name == "." || name == "..":
		return bad("not a file name")
	case name[0] == '.':
		return bad("starts with '.' (hidden files are refused)")
	case strings.TrimSpace(name) != name:
		return bad("leading or trailing white space")
	}
	lower := strings.ToLower(name)
	if strings.HasSuffix(lower, partialSuffix) || strings.HasSuffix(lower, deletedSuffix) {
		return bad("reserved suffix")
	}
	for _, r := range name {
		switch r {
		case '/', '\\', ':', '*', '"', '<', '>', '|':
			return bad(fmt.Sprintf("contains %q", r))
		}
		if r == utf8.RuneError || !unicode.IsGraphic(r) {
			return bad(fmt.Sprintf("contains the non-graphic character %U", r))
		}
	}
	// Belt and braces: with '/' and a leading '.' excluded these cannot fail, but they are the
	// properties the callers rely on.
	if !filepath.IsLocal(name) || filepath.Base(name) != name {
		return bad("not a local base name")
	}
	return nil
}

// PeerAPIPort is the port the official client prefers for its peer API listener on addr, for
// attempt try (0..4; after that it takes a random port): 0x8000 with the low 15 bits of the
// CRC-32 (IEEE) of the address's last three bytes, the first of them increased by try. IPv4
// addresses are taken in their 16-byte (v4-mapped) form, so an IPv4 and an IPv6 tailnet address
// sharing the low bytes get the same port.
func PeerAPIPort(addr netip.Addr, try int) uint16 {
	a := addr.As16()
	b := [3]byte{a[13] + byte(try), a[14], a[15]}
	return 0x8000 | uint16(crc32.ChecksumIEEE(b[:]))
}

// clientID turns a peer's StableID into the token used in partial-file names. StableIDs from
// control are short ASCII words ("n1234CNTRL"); anything else (empty, dots, slashes, very long)
// is replaced by a hash so that it can never act as a path element, make two peers' suffixes
// overlap, or push a partial name past NAME_MAX.
func clientID(stableID string) string {
	ok := stableID != "" && len(stableID) <= 64
	for i := 0; ok && i < len(stableID); i++ {
		c := stableID[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if ok {
		return stableID
	}
	return "x" + shortHash(stableID)
}

// partialName is where a transfer of name from the peer with client id waits until complete:
// "<name>.<id>.partial" as the official client names it. When that would exceed NAME_MAX the
// name is cut (at a rune boundary) and a hash of the whole name keeps it unique.
func partialName(name, id string) string {
	suffix := "." + id + partialSuffix
	if len(name)+len(suffix) <= MaxNameLen {
		return name + suffix
	}
	tag := "~" + shortHash(name)
	return cutUTF8(name, MaxNameLen-len(suffix)-len(tag)) + tag + suffix
}

// nextName returns the n-th alternative (n ≥ 1) for a name that is taken: "a.tar.gz" becomes
// "a (n).tar.gz", "a (3).txt" becomes "a (n).txt". The extension is the longest run of trailing
// ".xyz" segments the official client would treat as one (1–7 ASCII letters and digits, with a
// letter at most three characters from either end). The result fits in MaxNameLen and is a
// valid name whenever the input is.
func nextName(name string, n int) string {
	base, ext := splitExt(name)
	if len(ext) > MaxNameLen/2 {
		base, ext = name, "" // a pathological run of extensions: keep only its start
	}
	if i := strings.LastIndex(base, " ("); i > 0 && strings.HasSuffix(base, ")") {
		if d := base[i+2 : len(base)-1]; d != "" && strings.Trim(d, "0123456789") == "" {
			base = base[:i]
		}
	}
	tag := " (" + strconv.Itoa(n) + ")"
	if over := len(base) + len(tag) + len(ext) - MaxNameLen; over > 0 {
		base = cutUTF8(base, max(len(base)-over, 0))
		base = strings.TrimRight(base, " ")
	}
	return base + tag + ext
}

// maxCollisions is how many alternative names ("a (1).txt" … "a (10).txt") are tried when a
// name is taken.
const maxCollisions = 10

// candidates lists the names a received file may get: name, then maxCollisions distinct
// alternatives.
func candidates(name string) []string {
	out := []string{name}
	for n := 1; len(out) <= maxCollisions; n++ {
		if c := nextName(name, n); c != name {
			out = append(out, c)
		}
	}
	return out
}

// splitExt splits name into base and extension per nextName. The base is never empty.
func splitExt(name string) (base, ext string) {
	end := len(name)
	for {
		dot := strings.LastIndexByte(name[:end], '.')
		if dot <= 0 || !extSegment(name[dot+1:end]) {
			break
		}
		end = dot
	}
	return name[:end], name[end:]
}

func extSegment(s string) bool {
	if len(s) < 1 || len(s) > 7 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	for i := 0; i < len(s) && i <= 3; i++ {
		c := s[i] | 0x20
		if c >= 'a' && c <= 'z' && len(s)-1-i <= 3 {
			return true
		}
	}
	return false
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not split a rune.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ParseRange parses the Range header of a resumed PUT: exactly one range "bytes=<offset>-" with
// no end (RFC 9110 optional white space and leading empty list elements are tolerated, as the
// official receiver does). It returns the offset, or an error for anything else, including an
// end position, several ranges, suffix ranges, signs and offsets beyond int64.
func ParseRange(h string) (int64, error) {
	bad := errors.New("invalid Range header")
	const ows = " \t"
	h = strings.Trim(h, ows)
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, bad
	}
	spec = strings.TrimLeft(spec, ","+ows)
	spec = strings.TrimRight(spec, ows)
	digits, ok := strings.CutSuffix(spec, "-")
	if !ok {
		return 0, bad
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, bad
	}
	off, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || off < 0 {
		return 0, bad
	}
	return off, nil
}

// shortHash is 16 hex digits of the SHA-256 of s.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}
