// Package safetext makes text from the network safe to show: names, OS strings, locations and
// messages that peers and the control server choose end up in terminals and desktop widgets,
// where an escape sequence could rewrite the screen or the clipboard, and a bidirectional
// override could make one name look like another. skeind cleans such text once, where it
// enters (the network map, control's answers), so every front end gets it clean.
package safetext

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s with every character that is not printable removed (control characters,
// C1 codes, DEL, format characters such as bidirectional overrides and zero-width joiners,
// invalid UTF-8), other white space turned into plain spaces, and the result cut to at most
// maxBytes bytes at a character boundary (maxBytes <= 0: no limit).
func Clean(s string, maxBytes int) string {
	if isClean(s) && (maxBytes <= 0 || len(s) <= maxBytes) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max(maxBytes, 0)+utf8.UTFMax))
	for i, w := 0, 0; i < len(s); i += w {
		r, size := utf8.DecodeRuneInString(s[i:])
		w = size
		switch {
		case r == utf8.RuneError && size <= 1:
			continue
		case r == ' ' || unicode.IsPrint(r):
		case unicode.IsSpace(r):
			r = ' '
		default:
			continue
		}
		if maxBytes > 0 && b.Len()+utf8.RuneLen(r) > maxBytes {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isClean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return isCleanSlow(s)
		}
	}
	return true
}

func isCleanSlow(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || (r != ' ' && !unicode.IsPrint(r)) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// Strings cleans every element of ss (in a new slice when anything changes) and keeps at most
// maxItems of them (maxItems <= 0: all).
func Strings(ss []string, maxItems, maxBytes int) []string {
	if maxItems > 0 && len(ss) > maxItems {
		ss = ss[:maxItems:maxItems]
	}
	var out []string
	for i, s := range ss {
		c := Clean(s, maxBytes)
		if c != s && out == nil {
			out = append(make([]string, 0, len(ss)), ss[:i]...)
		}
		if out != nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return ss
	}
	return out
}
