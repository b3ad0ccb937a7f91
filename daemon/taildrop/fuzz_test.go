package taildrop

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzValidateName checks that an accepted name is a safe, local base name that the official
// receiver would accept too, and that every name derived from it (partial file, collision
// alternatives) stays within the inbox and within NAME_MAX.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{
		"foo.txt", "../../etc/passwd", "a/b", ".", "..", ".bashrc", "foo\x00", "foo\x01", " x",
		"x.partial", "x.deleted", "a (1).tar.gz", "新完全マスター　N2　文法.pdf", "🎉", "a\u202eb",
		strings.Repeat("a", 255), strings.Repeat("é", 128), "a" + strings.Repeat(".x", 127),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			return
		}
		if !officialAccepts(name) {
			t.Fatalf("accepted %q, which the official rules refuse", name)
		}
		if name[0] == '.' || len(name) > MaxNameLen || !utf8.ValidString(name) {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if unicode.IsControl(r) || r == '/' || r == 0 {
				t.Fatalf("accepted %q with %U", name, r)
			}
		}
		if j := filepath.Join("/inbox", name); filepath.Dir(j) != "/inbox" || filepath.Base(j) != name {
			t.Fatalf("%q is not a base name", name)
		}
		p := partialName(name, "nSTABLECNTRL")
		if len(p) > MaxNameLen || !utf8.ValidString(p) || strings.Contains(p, "/") || !strings.HasSuffix(p, ".nSTABLECNTRL.partial") {
			t.Fatalf("partialName(%q) = %q", name, p)
		}
		c := candidates(name)
		seen := map[string]bool{}
		for _, alt := range c {
			if err := ValidateName(alt); err != nil {
				t.Fatalf("candidate of %q: %q: %v", name, alt, err)
			}
			if seen[alt] {
				t.Fatalf("candidate of %q: %q repeats", name, alt)
			}
			seen[alt] = true
		}
		if len(c) != maxCollisions+1 || c[0] != name {
			t.Fatalf("candidates(%q) = %q", name, c)
		}
	})
}

var rangeRE = regexp.MustCompile(`^[ \t]*bytes=[, \t]*([0-9]+)-[ \t]*$`)

// FuzzRange checks ParseRange against a regular-expression statement of the accepted form.
func FuzzRange(f *testing.F) {
	for _, s := range []string{
		"bytes=0-", "bytes=123-", " bytes=5- ", "bytes=,5-", "bytes=5-10", "bytes=-5", "bytes=1-,2-",
		"bytes=9223372036854775807-", "bytes=9223372036854775808-", "bytes=+1-", "Bytes=1-", "",
		"bytes=0000000000000000000000001-", "bytes=\t,\t7-\t",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		off, err := ParseRange(h)
		m := rangeRE.FindStringSubmatch(h)
		var want int64
		wantOK := m != nil
		if wantOK {
			v, perr := strconv.ParseInt(m[1], 10, 64)
			if wantOK = perr == nil; wantOK {
				want = v
			}
		}
		if (err == nil) != wantOK || off != want {
			t.Fatalf("ParseRange(%q) = %d, %v; want %d, ok=%v", h, off, err, want, wantOK)
		}
		if err == nil {
			if off < 0 {
				t.Fatalf("negative offset %d", off)
			}
			if again, err := ParseRange("bytes=" + strconv.FormatInt(off, 10) + "-"); err != nil || again != off {
				t.Fatalf("round trip of %d: %d %v", off, again, err)
			}
		}
	})
}

// FuzzMatchHashes feeds the sender a hostile receiver's answer about its partial file (issue
// 14, S22: the sender's parsing of the peer's hash replies): no panic, the offset never passes
// the file, only a prefix whose blocks really match is skipped, and what was read beyond it is
// handed back to be sent.
func FuzzMatchHashes(f *testing.F) {
	file := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160,000 bytes: two full blocks and a bit
	line := func(b []byte) string { return hashLine(b) + "\n" }
	f.Add([]byte(line(file[:hashBlockSize])+line(file[hashBlockSize:2*hashBlockSize])), uint32(len(file)))
	f.Add([]byte(line(file[:hashBlockSize])+`{"checksum":"00","algo":"sha256","size":65536}`+"\n"), uint32(70000))
	f.Add([]byte(`{"checksum":"`+strings.Repeat("0", 64)+`","algo":"sha256","size":-1}`), uint32(10))
	f.Add([]byte(line(file[:100])), uint32(100))
	f.Fuzz(func(t *testing.T, hashes []byte, n uint32) {
		src := file[:int(n)%(len(file)+1)]
		off, pending, err := matchHashes(bytes.NewReader(hashes), bytes.NewReader(src))
		if err != nil {
			t.Fatalf("error without a file read error: %v", err)
		}
		if off < 0 || off+int64(len(pending)) > int64(len(src)) {
			t.Fatalf("offset %d + pending %d past the file (%d)", off, len(pending), len(src))
		}
		if !bytes.Equal(pending, src[off:off+int64(len(pending))]) {
			t.Fatal("pending bytes are not the file's bytes after the offset")
		}
		// The skipped prefix is exactly what the peer's hashes vouch for, block by block.
		var vouched int64
		for _, l := range strings.Split(string(hashes), "\n") {
			var bh blockHash
			if vouched >= off || json.Unmarshal([]byte(l), &bh) != nil || bh.Size <= 0 || vouched+bh.Size > off {
				break
			}
			sum := sha256.Sum256(src[vouched : vouched+bh.Size])
			if got, err := hex.DecodeString(bh.Checksum); err != nil || !bytes.Equal(got, sum[:]) {
				t.Fatalf("block at %d skipped although its hash differs", vouched)
			}
			vouched += bh.Size
		}
		if vouched != off {
			t.Fatalf("skipped %d bytes, the hashes vouch for %d", off, vouched)
		}
	})
}
