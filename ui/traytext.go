package ui

import (
	"time"

	"fyne.io/systray"
)

// The tray item's title and tooltip. Fyne sets the title to the app's name once, from its own
// goroutine, when the tray starts, and has no API for either; the app sets them through
// fyne.io/systray, which Fyne's tray is built on.
//
// The StatusNotifierItem's Id is taken from the title when the item is first put on the bus, and
// hosts remember an item's placement by that Id. So a title other than "Skein" is held back until
// trayTextDelay after the tray was started (by then the item is on the bus and Fyne has set its
// own title, which this then replaces); the tooltip goes out at once.

// trayTextDelay is how long after the tray starts the app takes over the title.
const trayTextDelay = 2 * time.Second

// setTrayTitle and setTrayTooltip are fyne.io/systray's setters (replaced in tests).
var (
	setTrayTitle   = systray.SetTitle
	setTrayTooltip = systray.SetTooltip
)

// updateTrayText recomputes the title and tooltip and sends them when either changed. The
// tooltip has no change signal of its own: setting the title (even to the same text) emits
// NewTitle, on which hosts read the item's properties again.
func (a *App) updateTrayText() {
	title, tip := a.v.trayTitle(), a.v.trayTooltip()
	if title == a.trayTitle && tip == a.trayTip {
		return
	}
	a.trayTitle, a.trayTip = title, tip
	if !a.hasTray {
		return
	}
	setTrayTooltip(tip)
	if a.trayTextLive {
		setTrayTitle(title)
	}
}

// startTrayText takes the title over once the tray is up.
func (a *App) startTrayText() {
	time.AfterFunc(trayTextDelay, func() {
		if a.ctx.Err() != nil {
			return
		}
		a.do(func() {
			a.trayTextLive = true
			// Ours again, after Fyne's title.
			setTrayTooltip(a.trayTip)
			setTrayTitle(a.trayTitle)
		})
	})
}
