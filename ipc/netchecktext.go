package ipc

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Text is the report as the official `tailscale netcheck` prints it, for people (the CLI and the
// desktop app show the same).
func (rep NetcheckReport) Text() string {
	var b strings.Builder
	w := &b
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
		return b.String()
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
			lat = latencyText(l)
		}
		fmt.Fprintf(w, "\t\t- %3s: %-7s (%s)\n", rep.RegionCodes[id], lat, regionName(rep, id))
	}
	return b.String()
}

// sortedRegions: measured regions first, fastest first; then the rest by ID.
func sortedRegions(rep NetcheckReport) []int {
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
func regionName(rep NetcheckReport, id int) string {
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

func portMappingLine(pm *PortMapping) string {
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

// latencyText is a latency in seconds as the official CLI prints it (to 0.1 ms).
func latencyText(sec float64) string {
	return time.Duration(sec * float64(time.Second)).Round(time.Millisecond / 10).String()
}
