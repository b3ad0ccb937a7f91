package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

func cmdNetcheck(c *cli, args []string) int {
	f := c.newFlagSet("netcheck", "", `
Report what the helper learns about the network from its tunnel socket: whether UDP works,
the public addresses, whether the NAT maps differently per destination (hard NAT), which port
mapping protocols the router offers, and the latency to each DERP region. Root and the
operator get a new run; other users get the helper's last report.`)
	format := f.String("format", "", `output format: empty (for people), "json" or "json-line"`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments")
	}
	switch *format {
	case "", "json", "json-line":
	default:
		return c.usageError(f, "unknown output format %q", *format)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	rep, err := c.client().Netcheck(ctx)
	if err != nil {
		return c.fail(err)
	}
	if rep.Cached {
		when := "none yet"
		if !rep.Time.IsZero() {
			when = "from " + rep.Time.Local().Format(time.TimeOnly)
		}
		fmt.Fprintf(c.stderr, "# the helper's last report (%s): a new run needs root or the operator\n", when)
	}
	if *format != "" {
		var b []byte
		if *format == "json" {
			b, err = json.MarshalIndent(officialJSON(rep), "", "\t")
		} else {
			b, err = json.Marshal(officialJSON(rep))
		}
		if err != nil {
			return c.fail(err)
		}
		c.stdout.Write(append(b, '\n'))
		return exitOK
	}
	io.WriteString(c.stdout, rep.Text())
	return exitOK
}

// officialJSON is the report in the official CLI's JSON shape: its field names, durations in
// nanoseconds, optional booleans as "true", "false" or "".
func officialJSON(rep ipc.NetcheckReport) any {
	type report struct {
		Now                   time.Time     `json:"Now,omitzero"`
		UDP                   bool          `json:"UDP"`
		IPv6                  bool          `json:"IPv6"`
		IPv4                  bool          `json:"IPv4"`
		OSHasIPv6             bool          `json:"OSHasIPv6"`
		MappingVariesByDestIP string        `json:"MappingVariesByDestIP"`
		UPnP                  string        `json:"UPnP"`
		PMP                   string        `json:"PMP"`
		PCP                   string        `json:"PCP"`
		PreferredDERP         int           `json:"PreferredDERP"`
		RegionLatency         map[int]int64 `json:"RegionLatency"`
		RegionV4Latency       map[int]int64 `json:"RegionV4Latency"`
		RegionV6Latency       map[int]int64 `json:"RegionV6Latency"`
		GlobalV4              string        `json:"GlobalV4"`
		GlobalV6              string        `json:"GlobalV6"`
	}
	ns := func(m map[int]float64) map[int]int64 {
		out := make(map[int]int64, len(m))
		for id, s := range m {
			out[id] = int64(s * float64(time.Second))
		}
		return out
	}
	r := report{
		Now: rep.Time, UDP: rep.UDP, IPv6: rep.IPv6, IPv4: rep.IPv4, OSHasIPv6: rep.OSHasIPv6,
		MappingVariesByDestIP: optBoolJSON(rep.MappingVariesByDestIP),
		PreferredDERP:         rep.PreferredDERP,
		RegionLatency:         ns(rep.RegionLatency),
		RegionV4Latency:       ns(rep.RegionV4Latency),
		RegionV6Latency:       ns(rep.RegionV6Latency),
		GlobalV4:              rep.GlobalV4,
		GlobalV6:              rep.GlobalV6,
	}
	if pm := rep.PortMapping; pm != nil {
		r.UPnP, r.PMP, r.PCP = fmt.Sprint(pm.UPnP), fmt.Sprint(pm.NATPMP), fmt.Sprint(pm.PCP)
	}
	return r
}

// optBoolJSON is an optional boolean as the official JSON has it: "true", "false" or "".
func optBoolJSON(b *bool) string {
	if b == nil {
		return ""
	}
	return fmt.Sprint(*b)
}
