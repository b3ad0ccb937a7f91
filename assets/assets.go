// Package assets holds Skein's icons, drawn by ./gen (go generate ./assets) and embedded here.
package assets

//go:generate go run ./gen -out .

import (
	"embed"

	"fyne.io/fyne/v2"
)

//go:embed *.png
var files embed.FS

// State is what a tray icon shows.
type State string

const (
	Connected    State = "connected"
	Disconnected State = "disconnected"
	NeedsLogin   State = "needslogin"
	Error        State = "error"
	// Warning: connected, but a health issue needs attention (e.g. the key expires soon).
	Warning State = "warning"
)

// States lists every icon state.
var States = []State{Connected, Disconnected, NeedsLogin, Error, Warning}

// AppIcon is the application icon (256×256).
func AppIcon() fyne.Resource { return load("skein.png") }

// Tray returns the tray icon for s; dark selects the variant drawn for dark panels.
func Tray(s State, dark bool) fyne.Resource {
	v := "light"
	if dark {
		v = "dark"
	}
	return load("tray-" + string(s) + "-" + v + ".png")
}

func load(name string) fyne.Resource {
	b, err := files.ReadFile(name)
	if err != nil {
		panic("assets: " + err.Error()) // the names are fixed; a miss is a build mistake
	}
	return fyne.NewStaticResource(name, b)
}
