package safetext

import (
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"laptop", 0, "laptop"},
		{"Zürich, Schweiz", 0, "Zürich, Schweiz"},
		{"日本語のホスト", 0, "日本語のホスト"},
		{"evil\x1b]52;c;cm0gLXJmIH4=\x07host", 0, "evil]52;c;cm0gLXJmIH4=host"}, // OSC 52 (clipboard)
		{"\x1b[2J\x1b[Hfake", 0, "[2J[Hfake"},
		{"a\u009bb", 0, "ab"},                     // C1 CSI
		{"admin\u202egnp.exe", 0, "admingnp.exe"}, // right-to-left override
		{"zero\u200bwidth", 0, "zerowidth"},
		{"tab\there\nnl", 0, "tab here nl"},
		{"bad\xff\xfeutf8", 0, "badutf8"},
		{"del\x7f", 0, "del"},
		{"héllo", 2, "h"}, // never cuts a character
		{"héllo", 3, "hé"},
	} {
		if got := Clean(tc.in, tc.max); got != tc.want {
			t.Errorf("Clean(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestStrings(t *testing.T) {
	in := []string{"ok", "b\x1bad", "c"}
	out := Strings(in, 2, 0)
	if len(out) != 2 || out[0] != "ok" || out[1] != "bad" || in[1] != "b\x1bad" {
		t.Errorf("Strings = %q (input now %q)", out, in)
	}
	same := []string{"a", "b"}
	if out := Strings(same, 0, 0); &out[0] != &same[0] {
		t.Error("a clean slice was copied")
	}
}

func FuzzClean(f *testing.F) {
	f.Add("host\x1b[31mname\u202e", 64)
	f.Add("日本語", 4)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max %= 512
		got := Clean(s, max)
		if !utf8.ValidString(got) || (max > 0 && len(got) > max) {
			t.Fatalf("Clean(%q, %d) = %q", s, max, got)
		}
		for _, r := range got {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("Clean(%q) kept %U", s, r)
			}
		}
		if again := Clean(got, max); again != got {
			t.Fatalf("not idempotent: %q -> %q", got, again)
		}
	})
}
