// Command skein-gui is Skein's desktop app: a window and a system tray menu for skeind.
//
//	skein-gui [--minimized] [--page PAGE] [--socket PATH] [--tray-theme auto|light|dark]
//	skein-gui --send FILE...
//
// It talks to skeind over its socket (--socket, else $SKEIN_SOCKET, else /run/skein/skeind.sock).
// Only one instance runs per user: it owns io.github.skeinvpn.Skein on the session bus and
// implements org.freedesktop.Application, so a second launch shows the first one's window and
// exits; with --send (the desktop file's "Exec=skein-gui --send %F") it hands the files to the
// running instance, which asks which device gets them. The desktop (DBusActivatable=true) and
// the bus (the D-Bus service file) call the same interface. Without a session bus the instances
// meet on a Unix socket instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/app"

	"github.com/skeinvpn/skein/internal/version"
	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ui"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("skein-gui", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: skein-gui [flags]\n       skein-gui --send FILE...\n\nSkein's desktop app: tailnet status and control in a window and the system tray.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	minimized := fs.Bool("minimized", false, "start hidden in the tray (the window opens from the tray's \"Open Skein\")")
	socket := fs.String("socket", "", "skeind's socket (default $"+ipc.SocketEnv+" or "+ipc.DefaultSocket+")")
	trayTheme := fs.String("tray-theme", "auto", "tray icon variant: auto (follow the app theme), light (for light panels) or dark")
	instanceSock := fs.String("instance-socket", "", "single-instance socket instead of the session bus (default without a bus: $XDG_RUNTIME_DIR/skein-gui.sock)")
	verbose := fs.Bool("verbose", false, "log the connection to skeind on stderr")
	showVersion := fs.Bool("version", false, "print the version")
	send := fs.Bool("send", false, "send the FILEs given after the flags to a device (a picker asks which one)")
	page := fs.String("page", "", "open the window on this page: "+strings.Join(ui.Pages, ", "))
	receive := fs.Bool("receive", false, "run only the receiver: save files that arrive while the app is closed, and notify (no window; the systemd user unit "+ui.ReceiverUnit+" runs this)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 && !*send {
		fmt.Fprintf(os.Stderr, "skein-gui: unexpected arguments: %v (files to send go after --send)\n", fs.Args())
		return 2
	}
	// The running instance has another working directory: hand it absolute paths.
	var files []string
	for _, f := range fs.Args() {
		abs, err := filepath.Abs(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "skein-gui: %s: %v\n", f, err)
			return 2
		}
		files = append(files, abs)
	}
	if *showVersion {
		fmt.Println("skein-gui", version.Version)
		return 0
	}
	switch *trayTheme {
	case "auto", "light", "dark":
	default:
		fmt.Fprintf(os.Stderr, "skein-gui: --tray-theme must be auto, light or dark\n")
		return 2
	}
	if *page != "" && !slices.Contains(ui.Pages, *page) {
		fmt.Fprintf(os.Stderr, "skein-gui: --page must be one of %s\n", strings.Join(ui.Pages, ", "))
		return 2
	}
	if *receive {
		return runReceiver(*socket, *verbose)
	}
	inst, err := ui.ClaimInstance(*instanceSock, files...)
	if errors.Is(err, ui.ErrRunning) {
		if len(files) > 0 {
			fmt.Fprintf(os.Stderr, "skein-gui: already running; handed it %d file(s) to send\n", len(files))
		} else {
			fmt.Fprintln(os.Stderr, "skein-gui: already running; showed its window")
		}
		return 0
	}
	if errors.Is(err, ui.ErrCannotSend) {
		fmt.Fprintln(os.Stderr, "skein-gui:", err)
		return 1
	}
	if err != nil {
		// Not fatal: without the socket a second launch just opens a second app.
		fmt.Fprintf(os.Stderr, "skein-gui: single instance: %v\n", err)
	}

	app.SetMetadata(fyne.AppMetadata{ID: ui.AppID, Name: "Skein", Version: version.Version, Build: 1})
	fa := app.NewWithID(ui.AppID)
	if err := ui.SetupLanguage(ui.ChosenLanguage(fa)); err != nil {
		fmt.Fprintf(os.Stderr, "skein-gui: translations: %v\n", err)
	}
	tt := *trayTheme
	if tt == "auto" {
		tt = ""
	}
	// The tray host may come later (autostart races the panel): the app follows it.
	opts := ui.Options{Socket: *socket, TrayTheme: tt, NoTrayHost: !ui.TrayHostPresent(), WatchTrayHost: true}
	opts.Logf = func(string, ...any) {}
	if *verbose {
		opts.Logf = log.New(os.Stderr, "skein-gui: ", log.LstdFlags|log.Lmicroseconds).Printf
	}
	a := ui.New(fa, opts)
	if inst != nil {
		go inst.ServeHandlers(ui.Handlers{
			Show: func() {
				opts.Logf("asked to show the window")
				fyne.Do(a.ShowWindow)
			},
			Send: func(paths []string) {
				opts.Logf("handed %d file(s) to send", len(paths))
				fyne.Do(func() { a.SendFiles(paths) })
			},
			Quit: func() {
				opts.Logf("asked to quit")
				fyne.Do(fa.Quit)
			},
		})
		defer inst.Close()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fyne.Do(fa.Quit)
	}()
	// An idle tray app should stay small: collect more often than Go's default, and hand the
	// start-up garbage (font tables parsed while laying out the window) back to the OS.
	debug.SetGCPercent(50)
	time.AfterFunc(3*time.Second, debug.FreeOSMemory)
	a.Start()
	// Without a tray host a hidden window could never be opened again: show it anyway.
	if !*minimized || a.NoTray() {
		a.Window().Show()
	}
	if *page != "" {
		a.ShowPage(*page)
	}
	if len(files) > 0 {
		a.SendFiles(files)
	}
	fa.Run()
	a.Stop()
	return 0
}

// runReceiver is skein-gui --receive: the receiver alone, until SIGINT or SIGTERM.
func runReceiver(socket string, verbose bool) int {
	if err := ui.SetupLanguage(ui.ChosenLanguageFromFile()); err != nil {
		fmt.Fprintf(os.Stderr, "skein-gui: translations: %v\n", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := ui.ReceiverOptions{Socket: socket, Logf: func(string, ...any) {}}
	if verbose {
		opts.Logf = log.New(os.Stderr, "skein-gui: ", log.LstdFlags|log.Lmicroseconds).Printf
	}
	if err := ui.RunReceiver(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "skein-gui:", err)
		return 1
	}
	return 0
}
