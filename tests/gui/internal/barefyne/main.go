// Command barefyne is a bare Fyne window: the baseline against which the desktop app's memory
// is measured (tests/gui BenchmarkAppMemory).
package main

import (
	"os"
	"os/signal"
	"syscall"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/app"
	"fyne.io/fyne/v2/widget"
)

func main() {
	a := app.NewWithID("io.github.skeinvpn.Bare")
	w := a.NewWindow("bare")
	w.SetContent(widget.NewLabel("bare Fyne window"))
	w.Resize(fyne.NewSize(900, 600))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		fyne.Do(a.Quit)
	}()
	w.ShowAndRun()
}
