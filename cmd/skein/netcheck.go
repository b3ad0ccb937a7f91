package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
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
	printNetcheck(c.stdout, rep)
	return exitOK
}

// printNetcheck prints the report the way the official `tailscale netcheck` does.
func printNetcheck(w io.Writer, rep ipc.NetcheckReport) {
	fmt.Fprintf(w, "\nReport:\n")
	if !rep.Time.IsZero() {
		fmt.Fprintf(w, "\t* Time: %v\n", rep.Time.UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintf(w, "\t* UDP: %v\n", rep.UDP)
	if rep.GlobalV4 != "" {
		fmt.Fprintf(w, "\t* IPv4: yes, %s\n", rep.GlobalV4)
	} else {
		fmt.Fprintf(w, "\t* IPv4: (no addr found)\n")
	}
	switch {
	case rep.GlobalV6 != "":
		fmt.Fprintf(w, "\t* IPv6: yes, %s\n", rep.GlobalV6)
	case rep.IPv6:
		fmt.Fprintf(w, "\t* IPv6: (no addr found)\n")
	case rep.OSHasIPv6:
		fmt.Fprintf(w, "\t* IPv6: no, but OS has support\n")
	default:
		fmt.Fprintf(w, "\t* IPv6: no, unavailable in OS\n")
	}
	fmt.Fprintf(w, "\t* MappingVariesByDestIP: %s\n", optBool(rep.MappingVariesByDestIP))
	fmt.Fprintf(w, "\t* PortMapping: %s\n", portMappingLine(rep.PortMapping))
	if len(rep.RegionLatency) == 0 {
		fmt.Fprintf(w, "\t* Nearest DERP: unknown (no response to latency probes)\n")
		return
	}
	if rep.PreferredDERP != 0 {
		fmt.Fprintf(w, "\t* Nearest DERP: %s\n", regionName(rep, rep.PreferredDERP))
	} else {
		fmt.Fprintf(w, "\t* Nearest DERP: [none]\n")
	}
	fmt.Fprintf(w, "\t* DERP latency:\n")
	for _, id := range sortedRegions(rep) {
		lat := ""
		if l, ok := rep.RegionLatency[id]; ok {
			lat = fmtLatency(l)
		}
		fmt.Fprintf(w, "\t\t- %3s: %-7s (%s)\n", rep.RegionCodes[id], lat, regionName(rep, id))
	}
}

// sortedRegions: measured regions first, fastest first; then the rest by ID.
func sortedRegions(rep ipc.NetcheckReport) []int {
	ids := make([]int, 0, len(rep.RegionCodes))
	for id := range rep.RegionCodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		li, oki := rep.RegionLatency[ids[i]]
		lj, okj := rep.RegionLatency[ids[j]]
		if oki != okj {
			return oki
		}
		if !oki || li == lj {
			return ids[i] < ids[j]
		}
		return li < lj
	})
	return ids
}

// regionName is a region's long name, else its code, else its ID.
func regionName(rep ipc.NetcheckReport, id int) string {
	if n := rep.RegionNames[id]; n != "" {
		return n
	}
	if code, ok := rep.RegionCodes[id]; ok && code != "" {
		return code
	}
	return fmt.Sprint(id)
}

// optBool prints an unknown as the official CLI does: empty.
func optBool(b *bool) string {
	if b == nil {
		return ""
	}
	return fmt.Sprint(*b)
}

func portMappingLine(pm *ipc.PortMapping) string {
	if pm == nil {
		return "not checked"
	}
	var got []string
	if pm.UPnP {
		got = append(got, "UPnP")
	}
	if pm.NATPMP {
		got = append(got, "NAT-PMP")
	}
	if pm.PCP {
		got = append(got, "PCP")
	}
	return strings.Join(got, ", ")
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
		MappingVariesByDestIP: optBool(rep.MappingVariesByDestIP),
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
