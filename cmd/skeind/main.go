// Command skeind is Skein's privileged helper: it joins the tailnet and serves the local IPC
// socket that the skein CLI and the desktop app use.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/skeinvpn/skein/daemon/backend"
	"github.com/skeinvpn/skein/daemon/dataplane"
	"github.com/skeinvpn/skein/daemon/sessionhelper"
	"github.com/skeinvpn/skein/daemon/sshchild"
	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/internal/version"
	"github.com/skeinvpn/skein/ipc"
)

func main() {
	// The children of the session helper: a session's process as its user, or a helper this
	// skeind started. They share the binary, never the flags.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case sshchild.Arg:
			os.Exit(sshchild.Main(os.Args[2:]))
		case sessionhelper.ChildArg:
			os.Exit(sessionhelper.ServeChild(log.New(os.Stderr, "", 0).Printf))
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("skeind", flag.ContinueOnError)
	fs.SetOutput(stderr)
	statedir := fs.String("statedir", state.DefaultDir, "directory for keys and prefs")
	socket := fs.String("socket", ipc.DefaultSocket, "path of the local IPC socket")
	tun := fs.String("tun", "skein0", "name of the TUN device")
	port := fs.Int("port", 41641, "UDP port for WireGuard and disco (0 = random)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	verbose := fs.Bool("verbose", false, "log more")
	cleanup := fs.Bool("cleanup", false, "undo what a crashed skeind left on the system (routes, rules, TUN device, nftables, forwarding) and exit")
	helperMode := fs.Bool("session-helper", false, "run the session helper instead: the privileged component that runs Tailscale SSH sessions as local users (systemd socket activation, or listens on --session-helper-socket)")
	helperSocket := fs.String("session-helper-socket", sessionhelper.DefaultSocket, "the session helper's socket (root only)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: skeind [flags]\n\nSkein's privileged helper. Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "skeind: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "%s\n  go version: %s\n", version.Version, runtime.Version())
		return 0
	}
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(stderr, "skeind: --port %d out of range 0-65535\n", *port)
		return 2
	}
	if *tun == "" || len(*tun) > 15 {
		fmt.Fprintf(stderr, "skeind: --tun must be 1 to 15 characters\n")
		return 2
	}
	flags, prefix := logFlags(stderr)
	logger := log.New(stderr, prefix, flags)
	log.SetOutput(stderr) // stray log.Printf calls look the same
	log.SetFlags(flags)
	log.SetPrefix(prefix)
	logf := logger.Printf
	if *helperMode {
		return runSessionHelper(*helperSocket, logf)
	}
	sd := newNotifier(logf)
	defer sd.close()

	// A crashed earlier run may have left its routes, rules, TUN device, firewall and resolver
	// changes behind: undo them before anything else.
	if err := dataplane.Cleanup(*tun, *statedir, logf); err != nil {
		logger.Printf("undoing what an earlier run left: %v", err)
		if *cleanup {
			return 1
		}
	}
	if *cleanup {
		return 0
	}
	if err := startPprof(logf); err != nil {
		logger.Printf("%v", err)
		return 2
	}
	store, err := state.Open(*statedir)
	if err != nil {
		logger.Printf("%v", err)
		return 1
	}
	b, err := backend.New(backend.Options{
		Store:   store,
		Version: version.Version,
		Logf:    logf,
		TunName: *tun,
		Port:    uint16(*port),
		Verbose: *verbose,
		// SKEIN_HOSTNAME_POLL (a duration) makes tests see a renamed host sooner.
		HostnamePoll:        envDuration("SKEIN_HOSTNAME_POLL"),
		SessionHelperSocket: *helperSocket,
	})
	if err != nil {
		logger.Printf("%v", err)
		return 1
	}
	ln, err := ipc.Listen(*socket)
	if err != nil {
		logger.Printf("%v", err)
		return 1
	}
	srv := ipc.NewServer(b, ipc.ServerOptions{Logf: logf})
	logger.Printf("version %s; state %s; socket %s", version.Version, *statedir, *socket)
	b.Start()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	// The socket listens (connections queue until Serve accepts them): systemd may start what
	// depends on skeind. From here on, each change of state updates `systemctl status`.
	sd.ready(b.Status())
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		sd.follow(ctx, b.Watch)
	}()
	code := 0
	select {
	case <-ctx.Done():
		logger.Printf("shutting down")
	case err := <-serveErr:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			logger.Printf("ipc: %v", err)
			code = 1
		}
	}
	stop()
	<-followed
	sd.stopping()
	srv.Close()
	b.Close()
	os.Remove(*socket)
	return code
}

// envDuration reads a duration from the environment (0 when unset or not a duration).
func envDuration(name string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(name))
	return d
}
