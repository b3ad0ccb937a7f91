package ui

import (
	"bytes"
	"image"
	"image/color"
	"testing"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/test"
)

// glyphImage draws s alone, large, with the app's text font (Fyne falls back to the desktop's
// fonts for runes its own font lacks, as in the real window) and returns the pixels.
func glyphImage(t *testing.T, s string) image.Image {
	t.Helper()
	txt := canvas.NewText(s, color.Black)
	txt.TextSize = 40
	w := test.NewWindow(txt)
	defer w.Close()
	w.SetPadded(false)
	w.Resize(fyne.NewSize(64, 64))
	return w.Canvas().Capture()
}

// ink counts the pixels drawn darker than the background.
func ink(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if (r+g+bl)/3 < 0x8000 {
				n++
			}
		}
	}
	return n
}

func pixels(img image.Image) []byte {
	var buf bytes.Buffer
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			buf.Write([]byte{byte(r >> 8), byte(g >> 8), byte(bl >> 8), byte(a >> 8)})
		}
	}
	return buf.Bytes()
}

// The Chinese of the window is drawn with real glyphs, not the empty box ("tofu") a font draws
// for a rune it lacks: with the fonts `make deps` installs, every Han character of the tray
// menu's words draws differently from the others and from a rune no font has. Without a CJK
// font they would all be the same box, and this fails.
func TestChineseGlyphsNotTofu(t *testing.T) {
	test.NewTempApp(t)
	useLanguage(t, "zh-TW")
	var runes []rune
	seen := map[rune]bool{}
	for _, key := range []string{"Connected", "Disconnect", "Exit node", "Account", "Quit"} {
		for _, r := range lang.L(key) {
			if hasHan(string(r)) && !seen[r] {
				seen[r] = true
				runes = append(runes, r)
			}
		}
	}
	if len(runes) < 8 {
		t.Fatalf("only %d Han characters in the tray's words: %q", len(runes), string(runes))
	}
	// U+10FFFD (private use, plane 16): no font draws it, so it shows the box.
	tofu := pixels(glyphImage(t, "\U0010FFFD"))
	drawn := map[string]rune{}
	for _, r := range runes {
		img := glyphImage(t, string(r))
		p := pixels(img)
		if n := ink(img); n < 40 {
			t.Errorf("%q draws %d dark pixels: no glyph", r, n)
			continue
		}
		if bytes.Equal(p, tofu) {
			t.Errorf("%q is drawn as the box of a missing glyph (no CJK font? make deps installs fonts-noto-cjk)", r)
			continue
		}
		if o, dup := drawn[string(p)]; dup {
			t.Errorf("%q and %q draw the same picture: boxes, not glyphs", o, r)
		}
		drawn[string(p)] = r
	}
	t.Logf("%d Han characters drawn as distinct glyphs: %s", len(drawn), string(runes))
}
