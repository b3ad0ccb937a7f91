package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/skeinvpn/skein/ipc"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// magicDNSAddr is where skeind's resolver answers, shown when the status does not say.
var magicDNSAddr = tsaddr.MagicDNSv4.String()

func cmdDNS(c *cli, args []string) int {
	f := c.newFlagSet("dns", "status [--all] [--json] | query NAME [TYPE]", `
Look into skeind's DNS resolver (`+magicDNSAddr+`) and how this machine uses it.

  status  whether this machine's resolver goes through Skein (--accept-dns), the tailnet's
          MagicDNS settings: search domains, split DNS routes, upstream resolvers, and how
          the system resolver was configured, with any warnings
  query   ask skeind's resolver for NAME (record type A unless TYPE is given) and show
          which resolver answered, the response code and the answers

To stop or start sending this machine's DNS queries to Skein: skein set --accept-dns=false|true`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() == 0 {
		return c.usageError(f, "missing subcommand: status or query")
	}
	switch sub := f.Arg(0); sub {
	case "status":
		return cmdDNSStatus(c, f.Args()[1:])
	case "query":
		return cmdDNSQuery(c, f.Args()[1:])
	default:
		return c.usageError(f, "unknown subcommand %q", sub)
	}
}

func cmdDNSStatus(c *cli, args []string) int {
	f := c.newFlagSet("dns status", "", `
Show the DNS settings skeind uses: whether this machine's resolver sends its queries to Skein
(--accept-dns), the tailnet's MagicDNS settings (suffix, resolvers, split DNS routes, search
domains), and how the system resolver was configured (systemd-resolved or /etc/resolv.conf,
and why), followed by any warnings. Exits 1 when skein is not connected.`)
	all := f.Bool("all", false, "also show how many names and extra records skeind answers itself")
	asJSON := f.Bool("json", false, "print the DNS status as JSON")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	st, err := c.client().Status(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		if st.DNS == nil {
			return c.fail(&ipc.Error{Message: fmt.Sprintf("no DNS status: skein is not connected (state: %s)", st.State), Fix: "skein up"})
		}
		return c.printJSON(st.DNS)
	}
	if msg, ok := describeNotRunning(st); !ok {
		fmt.Fprintln(c.stdout, msg)
		fmt.Fprintln(c.stdout, "DNS status is only available while connected.")
		return exitFail
	}
	if st.DNS == nil {
		fmt.Fprintln(c.stdout, "No DNS configuration yet: skein is still connecting. Try again in a moment.")
		return exitFail
	}
	printDNSStatus(c.stdout, st, *all)
	return exitOK
}

func printDNSStatus(w io.Writer, st ipc.Status, all bool) {
	d := st.DNS
	resolver := magicDNSAddr
	if len(d.Resolver) > 0 {
		rs := make([]string, len(d.Resolver))
		for i, a := range d.Resolver {
			rs[i] = a.String()
		}
		resolver = strings.Join(rs, ", ")
	}

	fmt.Fprintf(w, "\n=== 'Use Skein DNS' status ===\n\n")
	if d.AcceptDNS {
		fmt.Fprintf(w, "Skein DNS: enabled.\n\n")
		fmt.Fprintf(w, "This machine's DNS queries go to Skein's resolver at %s.\n", resolver)
		fmt.Fprintf(w, "To go back to the system's own resolver, run 'skein set --accept-dns=false'.\n")
	} else {
		fmt.Fprintf(w, "Skein DNS: disabled.\n\n")
		fmt.Fprintf(w, "The system resolver is left alone; Skein's resolver at %s only answers queries\n", resolver)
		fmt.Fprintf(w, "sent to it directly (see 'skein dns query').\n")
		fmt.Fprintf(w, "To send this machine's DNS queries to Skein, run 'skein set --accept-dns=true'.\n")
	}

	fmt.Fprintf(w, "\n=== MagicDNS configuration ===\n\n")
	fmt.Fprintf(w, "The tailnet's DNS settings, as the coordination server sent them to this machine.\n\n")
	if d.MagicDNS {
		if st.MagicDNS != "" {
			fmt.Fprintf(w, "MagicDNS: enabled tailnet-wide (suffix = %s)\n", st.MagicDNS)
		} else {
			fmt.Fprintf(w, "MagicDNS: enabled tailnet-wide\n")
		}
		if st.Self != nil && st.Self.DNSName != "" {
			fmt.Fprintf(w, "\nOther machines of the tailnet reach this one as %s\n", st.Self.DNSName)
		}
	} else {
		fmt.Fprintf(w, "MagicDNS: disabled tailnet-wide.\n")
	}

	fmt.Fprintf(w, "\nResolvers (in preference order):\n")
	if d.UpstreamsFrom == "tailnet" && len(d.Upstreams) > 0 {
		for _, u := range d.Upstreams {
			fmt.Fprintf(w, "  - %s\n", u)
		}
	} else {
		fmt.Fprintf(w, "  (none from the tailnet: other names go to the system's own resolvers, see 'System DNS configuration' below)\n")
	}

	fmt.Fprintf(w, "\nSplit DNS Routes:\n")
	if len(d.SplitRoutes) == 0 {
		fmt.Fprintf(w, "  (no routes configured: split DNS disabled)\n")
	}
	for _, suffix := range slices.Sorted(maps.Keys(d.SplitRoutes)) {
		rs := slices.DeleteFunc(slices.Clone(d.SplitRoutes[suffix]), func(r string) bool { return strings.TrimSpace(r) == "" })
		if len(rs) == 0 {
			fmt.Fprintf(w, "  - %-30s -> (answered locally by Skein)\n", suffix)
		}
		for _, r := range rs {
			fmt.Fprintf(w, "  - %-30s -> %s\n", suffix, r)
		}
	}

	fmt.Fprintf(w, "\nSearch Domains:\n")
	if len(d.SearchDomains) == 0 {
		fmt.Fprintf(w, "  (no search domains configured)\n")
	}
	for _, s := range d.SearchDomains {
		fmt.Fprintf(w, "  - %s\n", s)
	}

	if all {
		fmt.Fprintf(w, "\nAnswered locally:\n")
		fmt.Fprintf(w, "  - %d tailnet %s\n", d.Hosts, plural(d.Hosts, "name", "names"))
		fmt.Fprintf(w, "  - %d extra %s from the coordination server\n", d.ExtraRecords, plural(d.ExtraRecords, "record", "records"))
	}

	fmt.Fprintf(w, "\n=== System DNS configuration ===\n\n")
	fmt.Fprintf(w, "How Skein set up this machine's resolver.\n\n")
	switch {
	case d.Mode != "":
		fmt.Fprintf(w, "Configured through: %s\n", d.Mode)
	case d.AcceptDNS:
		fmt.Fprintf(w, "Configured through: (nothing yet)\n")
	default:
		fmt.Fprintf(w, "Configured through: (nothing: --accept-dns=false)\n")
	}
	if d.ModeReason != "" {
		fmt.Fprintf(w, "Why: %s\n", d.ModeReason)
	}
	switch {
	case d.Applied:
		fmt.Fprintf(w, "Applied: yes, the system resolver sends its queries to %s\n", resolver)
	case d.AcceptDNS:
		fmt.Fprintf(w, "Applied: no, the system resolver does not use Skein (see the warnings below)\n")
	default:
		fmt.Fprintf(w, "Applied: no, the system resolver is left alone\n")
	}
	if d.UpstreamsFrom != "tailnet" {
		fmt.Fprintf(w, "\nSystem nameservers (Skein forwards other names to them):\n")
		if len(d.Upstreams) == 0 {
			fmt.Fprintf(w, "  (none found: names outside the tailnet may not resolve)\n")
		}
		for _, u := range d.Upstreams {
			fmt.Fprintf(w, "  - %s\n", u)
		}
	}

	if len(d.Warnings) > 0 {
		fmt.Fprintf(w, "\n# Warnings:\n")
		for _, m := range d.Warnings {
			fmt.Fprintf(w, "#     - %s\n", m)
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// dnsTypes are the record types dns query takes by name, with their numbers.
var dnsTypes = []struct {
	name string
	num  uint16
}{
	{"A", 1}, {"AAAA", 28}, {"PTR", 12}, {"CNAME", 5}, {"MX", 15}, {"TXT", 16},
	{"SRV", 33}, {"NS", 2}, {"SOA", 6}, {"ANY", 255},
}

// parseDNSType turns TYPE into what skeind takes: a name from dnsTypes (any case) or a type
// number, sent by name when it has one.
func parseDNSType(s string) (string, bool) {
	for _, t := range dnsTypes {
		if strings.EqualFold(s, t.name) {
			return t.name, true
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return "", false
	}
	for _, t := range dnsTypes {
		if uint64(t.num) == n {
			return t.name, true
		}
	}
	return strconv.FormatUint(n, 10), true
}

func dnsTypeNames() string {
	names := make([]string, len(dnsTypes))
	for i, t := range dnsTypes {
		names[i] = t.name
	}
	return strings.Join(names, ", ")
}

func cmdDNSQuery(c *cli, args []string) int {
	f := c.newFlagSet("dns query", "NAME [TYPE]", `
Ask skeind's resolver (`+magicDNSAddr+`) for NAME, as any program on this machine would, and
show who answered (Skein itself from the tailnet's names, or the resolver it forwarded to),
the response code and the answers. TYPE is A (the default), AAAA, PTR, CNAME, MX, TXT, SRV,
NS, SOA, ANY, or a type number. Exits 1 unless the response code is NOERROR (with --json too,
after printing {"name", "type", "rcode", "answers", "via", "latencyMs"}).`)
	asJSON := f.Bool("json", false, "print the result as JSON")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() < 1 || f.NArg() > 2 {
		return c.usageError(f, "want a name and an optional record type, got %d arguments", f.NArg())
	}
	name := strings.TrimSpace(f.Arg(0))
	if name == "" || len(name) > 255 {
		return c.usageError(f, "invalid name %q", f.Arg(0))
	}
	qtype := "A"
	if f.NArg() == 2 {
		t, ok := parseDNSType(strings.TrimSpace(f.Arg(1)))
		if !ok {
			return c.usageError(f, "invalid record type %q: want one of %s, or a number (1-65535)", f.Arg(1), dnsTypeNames())
		}
		qtype = t
	}
	cl := c.client()
	res, err := cl.DNSQuery(c.ctx, name, qtype)
	if err != nil {
		return c.fail(err)
	}
	shownType := res.Type
	if shownType == "" {
		shownType = qtype
	}
	if *asJSON {
		res.Name, res.Type = cmp.Or(res.Name, name), shownType
		if code := c.printJSON(res); code != exitOK {
			return code
		}
		if !strings.EqualFold(res.Rcode, "NOERROR") {
			return exitFail
		}
		return exitOK
	}
	w := c.stdout
	fmt.Fprintf(w, "DNS query for %q (%s) using Skein's resolver:\n\n", name, shownType)

	// Which resolver: the status knows the addresses behind "upstream" and "split:SUFFIX".
	var dnsSt *ipc.DNSStatus
	if res.Via == "upstream" || strings.HasPrefix(res.Via, "split:") {
		if st, err := cl.Status(c.ctx); err == nil {
			dnsSt = st.DNS
		}
	}
	printVia(w, res.Via, dnsSt)

	rcode := res.Rcode
	if rcode == "" {
		rcode = "(none)"
	}
	fmt.Fprintf(w, "Response code: %s\n", rcode)
	fmt.Fprintf(w, "Query time: %s\n\n", fmtMs(res.LatencyMs))
	if !strings.EqualFold(res.Rcode, "NOERROR") {
		fmt.Fprintf(w, "No answers were returned.\n")
		return exitFail
	}
	if len(res.Answers) == 0 {
		fmt.Fprintf(w, "  (no answers found)\n")
		return exitOK
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name\tTTL\tClass\tType\tBody\n")
	fmt.Fprintf(tw, "----\t---\t-----\t----\t----\n")
	for _, a := range res.Answers {
		fmt.Fprintf(tw, "%s\n", strings.Join(splitRR(a), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

// printVia says who answered: "local", "upstream" or "split:SUFFIX", with the resolvers the
// status lists for the latter two when it was available.
func printVia(w io.Writer, via string, d *ipc.DNSStatus) {
	resolvers := func(list []string, what string) {
		switch len(list) {
		case 0:
			fmt.Fprintf(w, "Forwarded to: %s\n\n", what)
		case 1:
			fmt.Fprintf(w, "Forwarded to: %s (%s)\n\n", list[0], what)
		default:
			fmt.Fprintf(w, "Forwarded to one of (%s):\n", what)
			for _, r := range list {
				fmt.Fprintf(w, "  - %s\n", r)
			}
			fmt.Fprintln(w)
		}
	}
	switch {
	case via == "":
	case via == "local":
		fmt.Fprintf(w, "Answered by: Skein (the tailnet's names)\n\n")
	case via == "upstream":
		var list []string
		what := "upstream resolver"
		if d != nil {
			list = d.Upstreams
			switch d.UpstreamsFrom {
			case "tailnet":
				what = "the tailnet's resolver"
			case "system":
				what = "the system's resolver"
			}
		}
		resolvers(list, what)
	case strings.HasPrefix(via, "split:"):
		suffix := strings.TrimPrefix(via, "split:")
		var list []string
		if d != nil {
			list = slices.DeleteFunc(slices.Clone(d.SplitRoutes[suffix]), func(r string) bool { return strings.TrimSpace(r) == "" })
		}
		resolvers(list, "split DNS for "+suffix)
	default:
		fmt.Fprintf(w, "Answered by: %s\n\n", via)
	}
}

// splitRR cuts a record in presentation format ("name TTL class type data") into the five
// columns of the answer table, keeping the data as it is. Anything else is one cell, its
// blanks squeezed so that it cannot shift the columns.
func splitRR(rr string) []string {
	rest := strings.TrimSpace(rr)
	cols := make([]string, 0, 5)
	for range 4 {
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			return []string{strings.Join(strings.Fields(rr), " ")}
		}
		cols = append(cols, rest[:i])
		rest = strings.TrimLeft(rest[i:], " \t")
	}
	if _, err := strconv.ParseUint(cols[1], 10, 32); err != nil || rest == "" {
		return []string{strings.Join(strings.Fields(rr), " ")}
	}
	return append(cols, rest)
}

func fmtMs(ms float64) string {
	if ms < 10 {
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}
