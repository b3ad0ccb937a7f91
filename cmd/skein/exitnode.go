package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/skeinvpn/skein/ipc"
)

func cmdExitNode(c *cli, args []string) int {
	f := c.newFlagSet("exit-node", "list [--filter=COUNTRY] | suggest", `
Show the machines of the tailnet that offer to be an exit node.

  list     one line per exit node: tailnet IP, host name, country, city and status
           ("selected", "selected but offline", "offline" or "-"); --filter=COUNTRY keeps
           the exit nodes of one country
  suggest  the recommended exit node: online, offering, lowest latency (measured now)

To use an exit node: skein set --exit-node=NAME|IP; to follow the recommended one as it changes:
skein set --exit-node=auto:any; to stop using one: skein set --exit-node=`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() == 0 {
		return c.usageError(f, "missing subcommand: list")
	}
	switch sub := f.Arg(0); sub {
	case "list":
		return cmdExitNodeList(c, f.Args()[1:])
	case "suggest":
		return cmdExitNodeSuggest(c, f.Args()[1:])
	default:
		return c.usageError(f, "unknown subcommand %q", sub)
	}
}

func cmdExitNodeList(c *cli, args []string) int {
	f := c.newFlagSet("exit-node list", "", `
List the machines of the tailnet that offer to be an exit node, sorted by country, city and
name: tailnet IP, host name, country and city ("-" when the machine does not say), and status:
"selected" for the exit node in use, "selected but offline", "offline", or "-".`)
	filter := f.String("filter", "", "only show the exit nodes of this country (case does not matter)")
	asJSON := f.Bool("json", false, `print a JSON array of {"id", "ip", "hostname", "country", "city", "status", "online", "selected"} (empty, and exit status 0, when there are none)`)
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
	rows := exitNodeRows(st)
	if want := strings.TrimSpace(*filter); want != "" {
		rows = slices.DeleteFunc(rows, func(r exitNodeRow) bool { return !strings.EqualFold(r.Country, want) })
	}
	if *asJSON {
		return c.printJSON(rows)
	}
	if len(rows) == 0 {
		if strings.TrimSpace(*filter) != "" {
			return c.fail(&ipc.Error{Message: fmt.Sprintf("no exit nodes found for %q", *filter)})
		}
		return c.fail(&ipc.Error{Message: "no exit nodes found"})
	}

	// The official client's layout: a blank line, then tab-aligned cells each followed by a
	// tab, every line indented by one space; then a blank line and the hints.
	tw := tabwriter.NewWriter(c.stdout, 10, 5, 5, ' ', 0)
	fmt.Fprint(tw, "\n IP\tHOSTNAME\tCOUNTRY\tCITY\tSTATUS\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "\n %s\t%s\t%s\t%s\t%s\t", orDash(r.IP), orDash(r.Host), orDash(r.Country), orDash(r.City), r.Status)
	}
	fmt.Fprint(tw, "\n\n")
	fmt.Fprintln(tw, "# To view the complete list of exit nodes for a country, use `skein exit-node list --filter=` followed by the country name.")
	fmt.Fprintln(tw, "# To use an exit node, use `skein set --exit-node=` followed by the hostname or IP.")
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return exitOK
}

func cmdExitNodeSuggest(c *cli, args []string) int {
	f := c.newFlagSet("exit-node suggest", "", `
Name the exit node skeind recommends: among the machines that are online and offer to be an
exit node, the one with the lowest latency, measured now with disco pings (by name when none
answers). 'skein set --exit-node=auto:any' follows this choice as it changes.`)
	asJSON := f.Bool("json", false, `print {"id", "name", "ip", "latencyMs", "location"}`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	s, err := c.client().SuggestExitNode(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.printJSON(s)
	}
	line := "Suggested exit node: " + s.Name
	if s.Location != "" {
		line += " (" + s.Location + ")"
	}
	if s.LatencyMs > 0 {
		line += fmt.Sprintf(", %.1f ms", s.LatencyMs)
	}
	fmt.Fprintln(c.stdout, line)
	fmt.Fprintf(c.stdout, "To accept the suggestion, use `skein set --exit-node=%s`.\n", s.Name)
	return exitOK
}

// exitNodeRow is one exit node as `exit-node list` shows it (and, with --json, prints it).
type exitNodeRow struct {
	ID       string `json:"id"` // stable node ID
	IP       string `json:"ip"`
	Host     string `json:"hostname"`
	Country  string `json:"country"`
	City     string `json:"city"`
	Status   string `json:"status"` // "selected", "selected but offline", "offline" or "-"
	Online   bool   `json:"online"`
	Selected bool   `json:"selected"`
}

// exitNodeRows are the peers that offer to be an exit node (and the selected one, should it
// have stopped offering), ordered as the official client orders them: by country, then city,
// then MagicDNS name, machines without a location first.
func exitNodeRows(st ipc.Status) []exitNodeRow {
	type row struct {
		exitNodeRow
		dns string
	}
	var rows []row
	for i := range st.Peers {
		p := &st.Peers[i]
		selected := isExitNode(st, p)
		if !p.ExitNodeOption && !selected {
			continue
		}
		city, country := splitLocation(p.Location)
		host := strings.Trim(p.DNSName, ".")
		if host == "" {
			host = p.HostName
		}
		rows = append(rows, row{
			exitNodeRow: exitNodeRow{ID: p.StableID, IP: p.FirstIP(), Host: host, Country: country, City: city,
				Status: exitNodeState(st, p), Online: exitNodeOnline(st, p), Selected: selected},
			dns: p.DNSName,
		})
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(strings.Compare(a.Country, b.Country), strings.Compare(a.City, b.City),
			strings.Compare(a.dns, b.dns), strings.Compare(a.Host, b.Host))
	})
	out := make([]exitNodeRow, len(rows))
	for i, r := range rows {
		out[i] = r.exitNodeRow
	}
	return out
}

// exitNodeState is the STATUS column of exit-node list.
func exitNodeState(st ipc.Status, p *ipc.Peer) string {
	selected := isExitNode(st, p)
	switch {
	case selected && !exitNodeOnline(st, p):
		return "selected but offline"
	case !p.Online:
		return "offline"
	case selected:
		return "selected"
	}
	return "-"
}

// isExitNode reports whether p is the exit node in use, by the peer's flag or by the ID in
// the status's exit-node record.
func isExitNode(st ipc.Status, p *ipc.Peer) bool {
	if p.ExitNode {
		return true
	}
	return st.ExitNode != nil && st.ExitNode.ID != "" && st.ExitNode.ID == p.StableID
}

func exitNodeOnline(st ipc.Status, p *ipc.Peer) bool {
	if st.ExitNode != nil && st.ExitNode.ID != "" && st.ExitNode.ID == p.StableID && !st.ExitNode.Online {
		return false
	}
	return p.Online
}

// splitLocation splits skeind's "City, Country" into its parts; a lone name is the country.
func splitLocation(loc string) (city, country string) {
	loc = strings.TrimSpace(loc)
	if c, co, ok := strings.Cut(loc, ", "); ok {
		return strings.TrimSpace(c), strings.TrimSpace(co)
	}
	return "", loc
}
