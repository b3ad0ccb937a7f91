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
		return exitFail
	}
	return exitOK
}

func fmtLatency(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	return d.Round(time.Millisecond / 10).String()
}

func cmdNetcheck(c *cli, args []string) int {
	f := c.newFlagSet("netcheck", "", `
Report what the helper learns about the network from its tunnel socket: whether UDP works,
the public addresses, whether the NAT maps differently per destination (hard NAT), and the
latency to each DERP region.`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments")
	}
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	rep, err := c.client().Netcheck(ctx)
	if err != nil {
		return c.fail(err)
	}
	w := c.stdout
	fmt.Fprintf(w, "\nReport:\n")
	fmt.Fprintf(w, "\t* UDP: %v\n", rep.UDP)
	if rep.GlobalV4 != "" {
		fmt.Fprintf(w, "\t* IPv4: yes, %s\n", rep.GlobalV4)
	} else {
		fmt.Fprintf(w, "\t* IPv4: (no addr found)\n")
	}
	if rep.GlobalV6 != "" {
		fmt.Fprintf(w, "\t* IPv6: yes, %s\n", rep.GlobalV6)
	} else {
		fmt.Fprintf(w, "\t* IPv6: no\n")
	}
	switch {
	case rep.MappingVariesByDestIP == nil:
		fmt.Fprintf(w, "\t* MappingVariesByDestIP: \n")
	default:
		fmt.Fprintf(w, "\t* MappingVariesByDestIP: %v\n", *rep.MappingVariesByDestIP)
	}
	if rep.PreferredDERP != 0 {
		fmt.Fprintf(w, "\t* Nearest DERP: %s\n", regionName(rep, rep.PreferredDERP))
	} else {
		fmt.Fprintf(w, "\t* Nearest DERP: unknown (no response to latency probes)\n")
	}
	fmt.Fprintf(w, "\t* DERP latency:\n")
	for id, code := range rep.RegionCodes {
		if l, ok := rep.RegionLatency[id]; ok {
			fmt.Fprintf(w, "\t\t- %s: %s\n", code, fmtLatency(l))
		} else {
			fmt.Fprintf(w, "\t\t- %s: (no response)\n", code)
		}
	}
	return exitOK
}

func regionName(rep ipc.NetcheckReport, id int) string {
	if code, ok := rep.RegionCodes[id]; ok {
		return code
	}
	return fmt.Sprint(id)
}
