// Command skein-lab runs Skein's network test lab by hand.
//
//	skein-lab up [-user lab] [-peers alpha-ts,beta-ts] [-skeind PATH -skein PATH] [-exit]
//	skein-lab sweep
//
// "up" starts a lab (internal/lab): Headscale over TLS with DERP and STUN,
// and official tailscaled peers logged in with a pre-auth key; with -skeind
// and -skein it also starts skeind in one more namespace and logs it in with
// `skein up` (this is `make demo`). It prints how to reach everything, then
// waits for SIGINT/SIGTERM (or, with -exit, stops at once) and cleans up. It
// builds nothing: run scripts/lab-peers.sh first. "sweep" removes the
// leftovers of lab runs whose process is gone. Both need root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

func main() {
	flag.Usage = usage
	flag.Parse()
	if flag.NArg() < 1 {
		usage()
		os.Exit(2)
	}
	var err error
	switch cmd, args := flag.Arg(0), flag.Args()[1:]; cmd {
	case "up":
		err = up(args)
	case "sweep":
		err = sweep(args)
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "skein-lab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  skein-lab up [-user NAME] [-peers HOST,HOST...]   start a lab, print its details, clean up on Ctrl-C
  skein-lab sweep                                  remove leftovers of dead lab runs
`)
}

func sweep(args []string) error {
	fs := flag.NewFlagSet("sweep", flag.ExitOnError)
	fs.Parse(args)
	removed, err := lab.Sweep()
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	if err == nil && len(removed) == 0 {
		fmt.Println("nothing to sweep")
	}
	return err
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	user := fs.String("user", "lab", "Headscale user for the peers")
	peers := fs.String("peers", "alpha-ts,beta-ts", "comma-separated hostnames of official tailscaled peers")
	skeindBin := fs.String("skeind", "", "also run this skeind binary in a namespace of its own, logged in")
	skeinBin := fs.String("skein", "", "the skein CLI binary to log skeind in with (needed with -skeind)")
	exit := fs.Bool("exit", false, "clean up and exit once everything is shown, instead of waiting for Ctrl-C")
	fs.Parse(args)
	if (*skeindBin == "") != (*skeinBin == "") {
		return errors.New("-skeind and -skein go together")
	}
	var hostnames []string
	for _, h := range strings.Split(*peers, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hostnames = append(hostnames, h)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	l, err := lab.NewStandalone("skein-lab up")
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "skein-lab: cleaning up")
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "skein-lab: cleanup:", err)
		}
	}()

	// Start in the background so that Ctrl-C during startup still cleans up.
	type result struct {
		tn  *lab.Tailnet
		key string
		sk  *skeinNode
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.tn, r.err = l.StartTailnet(*user, hostnames...)
		if r.err == nil {
			r.key, r.err = r.tn.Control.PreAuthKey(*user, true, false)
		}
		if r.err == nil && *skeindBin != "" {
			r.sk, r.err = startSkein(l, r.tn, *skeindBin, *skeinBin, hostnames)
		}
		done <- r
	}()
	var r result
	select {
	case <-ctx.Done():
		return errors.New("interrupted during startup")
	case r = <-done:
	}
	if r.err != nil {
		return r.err
	}
	printLab(os.Stdout, l, r.tn, r.key, time.Since(start))
	if r.sk != nil {
		r.sk.print(os.Stdout)
	}
	if *exit {
		return nil
	}
	fmt.Fprintln(os.Stdout, "\nPress Ctrl-C to stop and clean up.")
	<-ctx.Done()
	return nil
}

func printLab(w io.Writer, l *lab.Lab, tn *lab.Tailnet, key string, took time.Duration) {
	c := tn.Control
	fmt.Fprintf(w, "Skein lab %s is up (%v).\n\n", l.ID(), took.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  control URL\t%s  (embedded DERP region 999 on :443, STUN on udp :3478)\n", c.URL())
	fmt.Fprintf(tw, "  CA file\t%s  (clients: SSL_CERT_FILE=...)\n", l.CACertFile())
	fmt.Fprintf(tw, "  pre-auth key\t%s  (fresh, reusable, user %q)\n", key, tn.User)
	fmt.Fprintf(tw, "  lab dir\t%s  (logs, state)\n", l.Dir())
	fmt.Fprintf(tw, "  subnet\t%s  (router %s)\n", l.Subnet(), l.Internet().Addr())
	tw.Flush()

	fmt.Fprintln(w, "\nNamespaces:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\t%s\t%s\n", l.Internet().Netns(), l.Internet().Addr(), "internet router (bridge br0)")
	fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Host().Netns(), c.Addr(), "headscale")
	for _, p := range tn.Peers {
		desc := "tailscaled " + p.Version()
		if st, err := p.Status(); err == nil && st.Self != nil {
			desc += fmt.Sprintf(", %s %v", st.BackendState, st.Self.TailscaleIPs)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Host().Netns(), p.Host().Addr(), desc)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nRun a command in a namespace:\n  ip netns exec NAMESPACE env SSL_CERT_FILE=%s COMMAND...\n", l.CACertFile())
	if len(tn.Peers) > 0 {
		p := tn.Peers[0]
		fmt.Fprintf(w, "\nOfficial tailscale CLI of %s:\n  ip netns exec %s %s --socket=%s status\n",
			p.Hostname(), p.Host().Netns(), p.CLIPath(), p.Socket())
	}
	fmt.Fprintf(w, "\nHeadscale CLI:\n  ip netns exec %s %s -c %s nodes list\n", c.Host().Netns(), lab.HeadscaleBinary(), c.ConfigFile())
	fmt.Fprintf(w, "\nLog in another client:\n  ... up --login-server=%s --authkey=%s\n", c.URL(), key)
}
