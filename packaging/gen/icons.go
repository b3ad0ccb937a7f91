package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
)

// IconSizes are the hicolor sizes the packages install; the source icon is the largest.
var IconSizes = []int{16, 24, 32, 48, 64, 128, 256}

// Icons writes DIR/hicolor/NxN/apps/ID.png for each size from the square PNG src.
func Icons(src, dir, id string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	b := img.Bounds()
	if b.Dx() != b.Dy() {
		return fmt.Errorf("%s: icon is %dx%d, not square", src, b.Dx(), b.Dy())
	}
	rgba := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(rgba, rgba.Bounds(), img, b.Min, draw.Src)
	for _, n := range IconSizes {
		if n > b.Dx() {
			return fmt.Errorf("%s: %d px is smaller than the %d px icon wanted", src, b.Dx(), n)
		}
		out := filepath.Join(dir, "hicolor", fmt.Sprintf("%dx%d", n, n), "apps", id+".png")
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := writePNG(out, shrink(rgba, n)); err != nil {
			return err
		}
	}
	return nil
}

func writePNG(path string, img image.Image) error {
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

// shrink scales the square premultiplied image src down to n×n by area averaging: each
// output pixel is the mean of the source area it covers, partly covered pixels weighted by
// the covered fraction. Deterministic, so packages built twice hold the same bytes.
func shrink(src *image.RGBA, n int) *image.RGBA {
	size := src.Bounds().Dx()
	dst := image.NewRGBA(image.Rect(0, 0, n, n))
	if n == size {
		copy(dst.Pix, src.Pix)
		return dst
	}
	scale := float64(size) / float64(n)
	weights := func(i int) (first int, w []float64) {
		lo, hi := float64(i)*scale, float64(i+1)*scale
		first = int(lo)
		for p := first; float64(p) < hi && p < size; p++ {
			a, z := max(lo, float64(p)), min(hi, float64(p+1))
			w = append(w, (z-a)/scale)
		}
		return first, w
	}
	for y := 0; y < n; y++ {
		y0, wy := weights(y)
		for x := 0; x < n; x++ {
			x0, wx := weights(x)
			var acc [4]float64
			for j, fy := range wy {
				for i, fx := range wx {
					off := src.PixOffset(x0+i, y0+j)
					for k := 0; k < 4; k++ {
						acc[k] += float64(src.Pix[off+k]) * fx * fy
					}
				}
			}
			dst.SetRGBA(x, y, color.RGBA{round8(acc[0]), round8(acc[1]), round8(acc[2]), round8(acc[3])})
		}
	}
	return dst
}

func round8(v float64) uint8 {
	v += 0.5
	if v > 255 {
		return 255
	}
	if v < 0 {
		return 0
	}
	return uint8(v)
}
