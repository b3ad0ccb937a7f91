// Command gen draws Skein's icons into the assets directory: the app icon and one tray icon per
// connection state, each in a light variant (dark glyph, for light panels) and a dark variant
// (light glyph, for dark panels). Run it with `go generate ./assets`.
//
// The shapes are computed from signed distances and supersampled, so the PNGs are crisp at any
// size without an image editor or a font.
package main

import (
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

// shape returns the colour at (x, y) in the unit square [0,1]², or a zero alpha for none.
type shape func(x, y float64) color.NRGBA

func main() {
	out := flag.String("out", ".", "directory to write the PNGs into")
	flag.Parse()
	type variant struct {
		name                         string
		fg, muted, green, amber, red color.NRGBA
	}
	variants := []variant{
		// light panels: dark neutral glyphs
		{"light", rgb(0x2b, 0x2f, 0x36), rgb(0x5f, 0x66, 0x70), rgb(0x18, 0x8f, 0x4b), rgb(0xc7, 0x85, 0x00), rgb(0xc6, 0x28, 0x28)},
		// dark panels: light neutral glyphs and brighter hues
		{"dark", rgb(0xf2, 0xf4, 0xf7), rgb(0xb8, 0xbe, 0xc7), rgb(0x3c, 0xd0, 0x7e), rgb(0xf5, 0xb8, 0x2e), rgb(0xf0, 0x5a, 0x5a)},
	}
	for _, v := range variants {
		green, amber, red := v.green, v.amber, v.red
		icons := map[string]shape{
			// connected: a solid disc with the skein "knot" ring knocked out
			"connected": layers(disc(0.5, 0.5, 0.46, green), ring(0.5, 0.5, 0.24, 0.075, rgb(0xff, 0xff, 0xff)), disc(0.5, 0.5, 0.075, rgb(0xff, 0xff, 0xff))),
			// disconnected: an outline ring in the panel's neutral colour
			"disconnected": layers(ring(0.5, 0.5, 0.40, 0.07, v.muted), disc(0.5, 0.5, 0.09, v.muted)),
			// needs login: an amber ring with a keyhole-like dot and stem
			"needslogin": layers(ring(0.5, 0.5, 0.40, 0.075, amber), disc(0.5, 0.42, 0.11, amber), bar(0.5, 0.62, 0.045, 0.14, amber)),
			// error: a red disc with a white bar
			"error": layers(disc(0.5, 0.5, 0.46, red), bar(0.5, 0.5, 0.26, 0.07, rgb(0xff, 0xff, 0xff))),
			// warning: connected, with an amber "!" badge (something needs attention soon)
			"warning": layers(disc(0.45, 0.45, 0.41, green), ring(0.45, 0.45, 0.21, 0.07, rgb(0xff, 0xff, 0xff)), disc(0.45, 0.45, 0.065, rgb(0xff, 0xff, 0xff)),
				disc(0.74, 0.74, 0.25, rgb(0xff, 0xff, 0xff)), disc(0.74, 0.74, 0.21, amber),
				bar(0.74, 0.69, 0.035, 0.1, rgb(0xff, 0xff, 0xff)), disc(0.74, 0.86, 0.04, rgb(0xff, 0xff, 0xff))),
		}
		for name, s := range icons {
			if err := write(filepath.Join(*out, fmt.Sprintf("tray-%s-%s.png", name, v.name)), s, 64); err != nil {
				fail(err)
			}
		}
	}
	// The app icon: a rounded square with the connected glyph.
	green := variants[1].green
	app := layers(roundRect(0.5, 0.5, 0.44, 0.2, rgb(0x24, 0x29, 0x33)),
		ring(0.5, 0.5, 0.27, 0.065, green), ring(0.5, 0.5, 0.14, 0.05, rgb(0xf2, 0xf4, 0xf7)), disc(0.5, 0.5, 0.05, green))
	if err := write(filepath.Join(*out, "skein.png"), app, 256); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gen:", err)
	os.Exit(1)
}

func rgb(r, g, b uint8) color.NRGBA { return color.NRGBA{r, g, b, 0xff} }

// coverage turns a signed distance (negative inside, in unit-square units) into a hard
// inside/outside test; antialiasing comes from supersampling.
func inside(d float64) bool { return d <= 0 }

func disc(cx, cy, r float64, c color.NRGBA) shape {
	return func(x, y float64) color.NRGBA {
		if inside(math.Hypot(x-cx, y-cy) - r) {
			return c
		}
		return color.NRGBA{}
	}
}

func ring(cx, cy, r, w float64, c color.NRGBA) shape {
	return func(x, y float64) color.NRGBA {
		if inside(math.Abs(math.Hypot(x-cx, y-cy)-r) - w/2) {
			return c
		}
		return color.NRGBA{}
	}
}

// bar is an axis-aligned rectangle with round ends: half-width hw, half-height hh.
func bar(cx, cy, hw, hh float64, c color.NRGBA) shape {
	r := math.Min(hw, hh)
	return roundRect(cx, cy, math.Max(hw, hh), r, c, hw, hh)
}

// roundRect is a rounded rectangle centred at (cx, cy); by default a square of half-size h.
func roundRect(cx, cy, h, r float64, c color.NRGBA, halfWH ...float64) shape {
	hw, hh := h, h
	if len(halfWH) == 2 {
		hw, hh = halfWH[0], halfWH[1]
	}
	return func(x, y float64) color.NRGBA {
		qx := math.Abs(x-cx) - (hw - r)
		qy := math.Abs(y-cy) - (hh - r)
		d := math.Hypot(math.Max(qx, 0), math.Max(qy, 0)) + math.Min(math.Max(qx, qy), 0) - r
		if inside(d) {
			return c
		}
		return color.NRGBA{}
	}
}

// layers paints shapes in order; a later opaque sample covers an earlier one.
func layers(ss ...shape) shape {
	return func(x, y float64) color.NRGBA {
		var out color.NRGBA
		for _, s := range ss {
			if c := s(x, y); c.A != 0 {
				out = c
			}
		}
		return out
	}
}

// write renders s at size×size with 4×4 supersampling (premultiplied averaging).
func write(path string, s shape, size int) error {
	const ss = 4
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	for py := 0; py < size; py++ {
		for px := 0; px < size; px++ {
			var r, g, b, a float64
			for sy := 0; sy < ss; sy++ {
				for sx := 0; sx < ss; sx++ {
					x := (float64(px) + (float64(sx)+0.5)/ss) / float64(size)
					y := (float64(py) + (float64(sy)+0.5)/ss) / float64(size)
					c := s(x, y)
					fa := float64(c.A) / 255
					r += float64(c.R) * fa
					g += float64(c.G) * fa
					b += float64(c.B) * fa
					a += fa
				}
			}
			n := float64(ss * ss)
			if a == 0 {
				continue
			}
			img.SetNRGBA(px, py, color.NRGBA{uint8(r/a + 0.5), uint8(g/a + 0.5), uint8(b/a + 0.5), uint8(a/n*255 + 0.5)})
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
