package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

func cmdPing(c *cli, args []string) int {
	f := c.newFlagSet("ping", "PEER", `
Send disco pings to PEER (short name, MagicDNS name or address) and print the path each pong
took: "via DERP(region)" while relayed, "via IP:PORT" once direct. Stops at the first direct
pong unless --until-direct=false. Exits 1 when no pong came or no direct path was found.`)
	count := f.Int("c", 10, "number of pings (0 = until interrupted)")
	untilDirect := f.Bool("until-direct", true, "stop once a direct path answers")
	timeout := f.Duration("timeout", 5*time.Second, "how long to wait for each pong")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() != 1 {
		return c.usageError(f, "want exactly one peer")
	}
	if *count < 0 {
		return c.usageError(f, "-c must be >= 0")
	}
	peer := f.Arg(0)
	cl := c.client()
	anyPong, direct := false, false
	for i := 0; *count == 0 || i < *count; i++ {
		ctx, cancel := context.WithTimeout(c.ctx, *timeout+2*time.Second)
		res, err := cl.Ping(ctx, peer)
		cancel()
		if err != nil {
			return c.fail(err)
		}
		if res.Err != "" {
			if strings.Contains(res.Err, "offline") {
				return c.fail(&ipc.Error{Message: fmt.Sprintf("%s is offline", peer)})
			}
			fmt.Fprintf(c.stdout, "ping %q timed out\n", peer)
		} else {
			anyPong = true
			via := res.Endpoint
			if via == "" {
				via = fmt.Sprintf("DERP(%s)", res.DERPRegionCode)
			} else {
				direct = true
			}
			fmt.Fprintf(c.stdout, "pong from %s (%s) via %s in %s\n", res.NodeName, res.NodeIP, via, fmtLatency(res.LatencySeconds))
			if direct && *untilDirect {
				return exitOK
			}
		}
		if *count == 0 || i+1 < *count {
			select {
			case <-c.ctx.Done():
				return exitFail
			case <-time.After(time.Second):
			}
		}
	}
	if !anyPong {
		return c.fail(&ipc.Error{Message: "no reply"})
	}
	if *untilDirect && !direct {
		fmt.Fprintln(c.stderr, "direct connection not established")
		c.printTopCause(peer)
		return exitFail
	}
	return exitOK
}

// printTopCause names the most likely reason a peer is not reached directly, and its fix.
func (c *cli) printTopCause(peer string) {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	rep, err := c.client().Why(ctx, peer)
	if err != nil || rep.Path == "direct" || len(rep.Causes) == 0 {
		return
	}
	top := rep.Causes[0]
	fmt.Fprintf(c.stderr, "  cause: %s\n", top.Summary)
	if top.Fix != "" {
		fmt.Fprintf(c.stderr, "  fix: %s\n", top.Fix)
	}
	fmt.Fprintf(c.stderr, "  (skein why %s explains more)\n", peer)
}

func fmtLatency(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	return d.Round(time.Millisecond / 10).String()
}
