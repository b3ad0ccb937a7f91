package taildrop

import (
	"errors"
	"hash/crc32"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestValidateName(t *testing.T) {
	good := []string{
		"foo", "foo.txt", "foo bar.pdf", "a (1).tar.gz", "trailing.", "x.partial.txt",
		"新完全マスター　N2　文法.pdf", "emoji 🎉.png", "ünïcödé", "caf\u0065\u0301", // combining mark kept
		strings.Repeat("a", 255), strings.Repeat("é", 127),
		"dash-and_underscore", "foo..bar", "foo.", "100%.txt", "#hash", "a'b", "a;b", "a?b",
	}
	bad := []string{
		"", ".", "..", "./foo", "../foo", "../../etc/passwd", "foo/bar", "foo/../bar", "/abs",
		".hidden", ".bashrc", "..foo", " foo", "foo ", "\tfoo", "foo\n",
		"foo\x00bar", "foo\x01", "\x7f", "foo\u0085", "a\u202eb", "a\u200bb", "\ufefffoo",
		"foo\\bar", "foo:bar", "nul:", "a*b", `a"b`, "a<b", "a>b", "a|b",
		"foo.partial", "foo.PARTIAL", "foo.Partial", "foo.deleted", "foo.n123CNTRL.partial",
		strings.Repeat("a", 256), strings.Repeat("a", 10000), strings.Repeat("é", 128),
		"\xff", "a\xc3", "a\xed\xa0\x80b", // invalid UTF-8, surrogate
	}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		err := ValidateName(n)
		if err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", n)
		} else if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, not ErrInvalidName", n, err)
		}
	}
}

// officialAccepts is protocol.md 8.4's file-name rules, written out from the prose, to check
// that ValidateName never accepts more than the official receiver.
func officialAccepts(name string) bool {
	if !utf8.ValidString(name) || strings.TrimSpace(name) != name || len(name) > 255 {
		return false
	}
	if name == "" || name == "." || name == ".." || filepath.Clean(name) != name {
		return false
	}
	if strings.HasSuffix(name, ".partial") || strings.HasSuffix(name, ".deleted") {
		return false
	}
	if strings.ContainsAny(name, `/\:*"<>|`) || !filepath.IsLocal(name) {
		return false
	}
	for _, r := range name {
		if !unicode.IsGraphic(r) {
			return false
		}
	}
	return true
}

func TestPeerAPIPort(t *testing.T) {
	v4 := netip.MustParseAddr("100.101.102.103")
	v6 := netip.MustParseAddr("fd7a:115c:a1e0::3a65:6667") // same last three bytes as v4
	for try := range 5 {
		p4, p6 := PeerAPIPort(v4, try), PeerAPIPort(v6, try)
		if p4 < 0x8000 {
			t.Errorf("try %d: port %d below 32768", try, p4)
		}
		if p4 != p6 {
			t.Errorf("try %d: v4 %d != v6 %d for the same low bytes", try, p4, p6)
		}
		want := 0x8000 | uint16(crc32.ChecksumIEEE([]byte{101 + byte(try), 102, 103}))
		if p4 != want {
			t.Errorf("try %d: %d, want %d", try, p4, want)
		}
	}
	if PeerAPIPort(v4, 0) == PeerAPIPort(v4, 1) && PeerAPIPort(v4, 1) == PeerAPIPort(v4, 2) {
		t.Error("tries do not change the port")
	}
}

func TestNextName(t *testing.T) {
	for _, tt := range []struct{ in, want1, want2 string }{
		{"foo", "foo (1)", "foo (2)"},
		{"foo(1)", "foo(1) (1)", "foo(1) (2)"},
		{"foo.tar", "foo (1).tar", "foo (2).tar"},
		{"foo.tar.gz", "foo (1).tar.gz", "foo (2).tar.gz"},
		{"fizz buzz.torrent", "fizz buzz (1).torrent", "fizz buzz (2).torrent"},
		{"rawr 2023.12.15.txt", "rawr 2023.12.15 (1).txt", "rawr 2023.12.15 (2).txt"},
		{"IMG_7934.JPEG", "IMG_7934 (1).JPEG", "IMG_7934 (2).JPEG"},
		{"archive.7z", "archive (1).7z", "archive (2).7z"},
		{"a (3).txt", "a (1).txt", "a (2).txt"},
		{"a (x).txt", "a (x) (1).txt", "a (x) (2).txt"},
		{"tar.gz", "tar (1).gz", "tar (2).gz"},
		{"photo.verylongext", "photo.verylongext (1)", "photo.verylongext (2)"},
		{"新完全マスター　N2　文法.pdf", "新完全マスター　N2　文法 (1).pdf", "新完全マスター　N2　文法 (2).pdf"},
	} {
		if got := nextName(tt.in, 1); got != tt.want1 {
			t.Errorf("nextName(%q, 1) = %q, want %q", tt.in, got, tt.want1)
		}
		if got := nextName(tt.in, 2); got != tt.want2 {
			t.Errorf("nextName(%q, 2) = %q, want %q", tt.in, got, tt.want2)
		}
	}
	long := strings.Repeat("é", 125) + ".txt" // 254 bytes
	for n := 1; n <= 10; n++ {
		got := nextName(long, n)
		if err := ValidateName(got); err != nil || !strings.HasSuffix(got, ").txt") {
			t.Errorf("nextName(long, %d) = %q (%d bytes): %v", n, got, len(got), err)
		}
	}
}

func TestPartialName(t *testing.T) {
	if got := partialName("a.txt", "n1CNTRL"); got != "a.txt.n1CNTRL.partial" {
		t.Errorf("partialName = %q", got)
	}
	long := strings.Repeat("ü", 127) // 254 bytes
	p1, p2 := partialName(long, "n1CNTRL"), partialName(long[:252]+"x", "n1CNTRL")
	for _, p := range []string{p1, p2} {
		if len(p) > MaxNameLen || !utf8.ValidString(p) || !strings.HasSuffix(p, ".n1CNTRL.partial") {
			t.Errorf("partialName(long) = %q (%d bytes)", p, len(p))
		}
	}
	if p1 == p2 {
		t.Error("two long names share a partial name")
	}
	for _, id := range []string{"", "a/b", "..", "a.b", strings.Repeat("x", 100), "nAb_-9"} {
		c := clientID(id)
		if strings.ContainsAny(c, "./\x00") || c == "" || len(c) > 64 {
			t.Errorf("clientID(%q) = %q", id, c)
		}
	}
	if clientID("a.b") == clientID("a/b") {
		t.Error("clientID collides")
	}
}

func TestParseRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"bytes=0-", 0, true},
		{"bytes=123-", 123, true},
		{"bytes=007-", 7, true},
		{" bytes=5- ", 5, true},
		{"bytes=,5-", 5, true},
		{"bytes=, 5-", 5, true},
		{"bytes=9223372036854775807-", 1<<63 - 1, true},
		{"bytes=9223372036854775808-", 0, false},
		{"bytes=5-10", 0, false},
		{"bytes=-5", 0, false},
		{"bytes=5-,6-", 0, false},
		{"bytes=5-,", 0, false},
		{"bytes=+5-", 0, false},
		{"bytes=-", 0, false},
		{"bytes=5 -", 0, false},
		{"bytes=5", 0, false},
		{"bytes=a-", 0, false},
		{"Bytes=5-", 0, false},
		{"items=5-", 0, false},
		{"bytes5-", 0, false},
		{"", 0, false},
	} {
		got, err := ParseRange(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRange(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
