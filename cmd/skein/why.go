package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

func cmdWhy(c *cli, args []string) int {
	f := c.newFlagSet("why", "PEER", `
Explain how PEER (short name, MagicDNS name or address) is reached and, when it goes over a
DERP relay, why: one round of pings to each of its addresses, then the causes found, most
likely first, each with its evidence and the one command or setting that fixes it.`)
	asJSON := f.Bool("json", false, "print the report as JSON")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() != 1 {
		return c.usageError(f, "want exactly one peer")
	}
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	rep, err := c.client().Why(ctx, f.Arg(0))
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return c.fail(err)
		}
		c.stdout.Write(append(b, '\n'))
		return exitOK
	}
	printWhy(c.stdout, rep)
	return exitOK
}

// printWhy renders a report for people: the path, the pings, then each cause with its
// evidence and fix.
func printWhy(w io.Writer, rep ipc.WhyReport) {
	who := rep.Peer
	if rep.PeerIP.IsValid() {
		who = fmt.Sprintf("%s (%s)", rep.Peer, rep.PeerIP)
	}
	switch rep.Path {
	case "direct":
		fmt.Fprintf(w, "%s: direct via %s", who, rep.Direct)
		if rep.LatencyMs > 0 {
			fmt.Fprintf(w, " in %s", fmtLatency(rep.LatencyMs/1000))
		}
		fmt.Fprintln(w)
	case "relay":
		fmt.Fprintf(w, "%s: relayed through DERP %q\n", who, rep.Relay)
	default:
		fmt.Fprintf(w, "%s: no path\n", who)
	}
	if len(rep.Pings) > 0 {
		var parts []string
		for _, p := range rep.Pings {
			s := fmt.Sprintf("%s %d/%d", p.To, p.Answered, p.Sent)
			if p.Answered > 0 && p.LatencyMs > 0 {
				s += " in " + fmtLatency(p.LatencyMs/1000)
			}
			parts = append(parts, s)
		}
		fmt.Fprintf(w, "pings answered: %s\n", strings.Join(parts, ", "))
	}
	if rep.Path == "direct" {
		return
	}
	if len(rep.Causes) == 0 {
		fmt.Fprintln(w, "no cause found")
		return
	}
	fmt.Fprintln(w)
	for i, cs := range rep.Causes {
		fmt.Fprintf(w, "%d. %s [%s]\n", i+1, cs.Summary, cs.Code)
		for _, e := range cs.Evidence {
			fmt.Fprintf(w, "   - %s\n", e)
		}
		if cs.Fix != "" {
			fmt.Fprintf(w, "   fix: %s\n", cs.Fix)
		}
	}
}
