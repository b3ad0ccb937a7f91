package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/skeinvpn/skein/ipc"
)

func cmdStatus(c *cli, args []string) int {
	f := c.newFlagSet("status", "", `
Show the connection state and, when connected, one line per machine (tailnet IP, name, owner,
OS and connection state), then the login server. The connection state is "-" (no traffic), "idle", "offline", or "active; direct IP:PORT" /
"active; relay "CODE"" with the bytes sent and received. Machines that offer to be an exit node
say "offers exit node", the one in use "exit node"; those that run Tailscale SSH (this one too,
after 'skein set --ssh') "offers SSH". Exits 1 when skein is not running.`)
	asJSON := f.Bool("json", false, "print the full status as JSON (exit status 0 in every state)")
	showPeers := f.Bool("peers", true, "show the other machines of the tailnet")
	showSelf := f.Bool("self", true, "show this machine")
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
		return c.printJSON(st)
	}
	if msg, ok := describeNotRunning(st); !ok {
		fmt.Fprintln(c.stdout, msg)
		printHealth(c.stdout, st)
		return exitFail
	}
	var rows [][]string
	if *showSelf && st.Self != nil {
		rows = append(rows, peerRow(st, st.Self, true))
	}
	if *showPeers {
		peers := slices.Clone(st.Peers)
		slices.SortStableFunc(peers, func(a, b ipc.Peer) int {
			return cmp.Or(cmp.Compare((&a).ShortName(), (&b).ShortName()), cmp.Compare((&a).FirstIP(), (&b).FirstIP()))
		})
		for i := range peers {
			rows = append(rows, peerRow(st, &peers[i], false))
		}
	}
	printColumns(c.stdout, rows, statusMinWidths)
	printExitNodeWarning(c.stdout, st)
	if st.LoginServer != "" {
		// Who controls this machine's tailnet is part of the connection (issue 14, hole 6).
		fmt.Fprintf(c.stdout, "# Login server: %s\n", st.LoginServer)
	}
	printHealth(c.stdout, st)
	return exitOK
}

// describeNotRunning explains a state in which there is nothing to list, in the official
// client's words so that scripts grepping for them keep working.
func describeNotRunning(st ipc.Status) (string, bool) {
	switch st.State {
	case ipc.StateRunning, ipc.StateStarting:
		return "", true
	case ipc.StateStopped:
		return "Skein is stopped.", false
	case ipc.StateNeedsLogin:
		if st.AuthURL != "" {
			return "Logged out.\nLog in at: " + st.AuthURL, false
		}
		if st.AuthURLHidden {
			return "Logged out.\nA login is waiting for approval in a browser; only root and skeind's operator may see its URL.", false
		}
		return "Logged out.\nRun 'skein up' to log in.", false
	case ipc.StateNoState:
		return "Skein is starting up.", false
	}
	return fmt.Sprintf("Unexpected state: %s", st.State), false
}

// statusMinWidths are the official client's column widths (IP, name, owner, OS): a table whose
// cells fit looks exactly like its output, and a column grows when a cell is longer (an IPv6
// address, "tagged-devices", a long host name) so that the columns stay aligned.
var statusMinWidths = []int{15, 20, 12, 7}

// peerRow is one line of the status table: IP, name, owner, OS and the connection.
func peerRow(st ipc.Status, p *ipc.Peer, self bool) []string {
	return []string{orDash(p.FirstIP()), orDash(p.ShortName()), owner(st, p), orDash(p.OS), peerState(st, p, self)}
}

// printColumns prints rows with each column but the last padded to the wider of its minimum
// and its longest cell, one space between columns; the last column is not padded.
func printColumns(w io.Writer, rows [][]string, minWidths []int) {
	widths := slices.Clone(minWidths)
	for _, r := range rows {
		for i := 0; i < len(r)-1 && i < len(widths); i++ {
			widths[i] = max(widths[i], utf8.RuneCountInString(r[i]))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for i, cell := range r {
			b.WriteString(cell)
			if i == len(r)-1 {
				break
			}
			pad := 1
			if i < len(widths) {
				pad += widths[i] - utf8.RuneCountInString(cell)
			}
			b.WriteString(strings.Repeat(" ", max(pad, 1)))
		}
		b.WriteByte('\n')
		io.WriteString(w, b.String())
	}
}

// peerState is the last column, worded as the official client words it: "-", "idle",
// "offline", or "active; direct IP:PORT" / "active; relay \"code\"", then the byte counts;
// exit nodes are marked "exit node" (the one in use) or "offers exit node". Which of them is
// ipc's path rule, the one every front end follows.
func peerState(st ipc.Status, p *ipc.Peer, self bool) string {
	ssh := ""
	if len(p.SSHHostKeys) > 0 {
		ssh = "offers SSH"
	}
	if self {
		return cmp.Or(ssh, "-")
	}
	path := p.Path()
	if path.Kind == ipc.PathExpired {
		return "expired"
	}
	traffic := p.TxBytes > 0 || p.RxBytes > 0
	exitNode, offersExit := isExitNode(st, p), p.ExitNodeOption
	offline := ""
	if !p.Online {
		offline = "; offline"
	}
	var b strings.Builder
	switch {
	case !path.Active() && exitNode:
		b.WriteString("idle; exit node" + offline)
	case !path.Active() && offersExit:
		b.WriteString("idle; offers exit node" + offline)
	case !path.Active() && traffic:
		b.WriteString("idle" + offline)
	case path.Kind == ipc.PathOffline:
		b.WriteString("offline")
	case path.Kind == ipc.PathIdle && ssh != "":
		b.WriteString(ssh)
		ssh = ""
	case path.Kind == ipc.PathIdle:
		b.WriteString("-")
	default:
		b.WriteString("active; ")
		if exitNode {
			b.WriteString("exit node; ")
		} else if offersExit {
			b.WriteString("offers exit node; ")
		}
		if path.Kind == ipc.PathDirect {
			b.WriteString("direct " + path.Addr)
		} else if path.Region != "" {
			fmt.Fprintf(&b, "relay %q", path.Region)
		}
		b.WriteString(offline)
	}
	if ssh != "" {
		b.WriteString("; " + ssh)
	}
	if traffic {
		fmt.Fprintf(&b, ", tx %d rx %d", p.TxBytes, p.RxBytes)
	}
	return b.String()
}

// printExitNodeWarning says, in the style of the official client's "#" notes, that the exit
// node in use is gone or offline, since skeind then blocks internet traffic rather than let it
// out unprotected.
func printExitNodeWarning(w io.Writer, st ipc.Status) {
	name, offline := "", false
	if en := st.ExitNode; en != nil {
		offline = !en.Online
		name = strings.TrimSuffix(en.Name, ".")
		if en.IP.IsValid() {
			if name == "" {
				name = en.IP.String()
			} else {
				name += " (" + en.IP.String() + ")"
			}
		}
		if name == "" {
			name = en.ID
		}
	}
	for i := range st.Peers {
		p := &st.Peers[i]
		if !isExitNode(st, p) {
			continue
		}
		offline = offline || !p.Online
		if st.ExitNode == nil || strings.TrimSuffix(st.ExitNode.Name, ".") == "" {
			name = p.ShortName()
			if ip := p.FirstIP(); ip != "" {
				name += " (" + ip + ")"
			}
		}
	}
	if !offline {
		return
	}
	fmt.Fprintf(w, "\n# Exit node %s is offline: internet traffic is blocked until it is back.\n", orDash(name))
	fmt.Fprintf(w, "# To use another one, see `skein exit-node list`; to stop using one, run `skein set --exit-node=`.\n")
}

func printHealth(w io.Writer, st ipc.Status) {
	if len(st.Health) == 0 {
		return
	}
	fmt.Fprintf(w, "\n# Health check:\n")
	for _, h := range st.Health {
		fmt.Fprintf(w, "#     - %s\n", h.Message)
		if h.Fix != "" && h.Code != ipc.IssueExitNodeOffline {
			fmt.Fprintf(w, "#       fix: %s\n", h.Fix)
		}
	}
}

// owner is the login name cut after its "@" ("alice@"), as the official client shows it.
func owner(st ipc.Status, p *ipc.Peer) string {
	if len(p.Tags) > 0 {
		return "tagged-devices"
	}
	for _, u := range st.Users {
		if u.ID == p.UserID {
			if i := strings.Index(u.LoginName, "@"); i >= 0 {
				return u.LoginName[:i+1]
			}
			return orDash(u.LoginName)
		}
	}
	return strconv.FormatInt(p.UserID, 10)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdIP(c *cli, args []string) int {
	f := c.newFlagSet("ip", "[PEER]", `
Print this machine's tailnet addresses, one per line, or those of PEER, given by its short
name, MagicDNS name, host name or one of its addresses.`)
	only4 := f.Bool("4", false, "only the IPv4 address")
	only6 := f.Bool("6", false, "only the IPv6 address")
	asJSON := f.Bool("json", false, `print {"name", "dnsName", "addresses": [...]} as JSON (-4 and -6 still filter)`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if *only4 && *only6 {
		return c.usageError(f, "-4 and -6 are mutually exclusive")
	}
	if f.NArg() > 1 {
		return c.usageError(f, "at most one peer, got %d", f.NArg())
	}
	st, err := c.client().Status(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	var p *ipc.Peer
	if f.NArg() == 0 {
		if p = st.Self; p == nil || len(p.Addresses) == 0 {
			return c.fail(&ipc.Error{Message: fmt.Sprintf("no tailnet addresses yet (state: %s)", st.State), Fix: "skein up"})
		}
	} else if p = findPeer(st, f.Arg(0)); p == nil {
		return c.fail(&ipc.Error{Message: fmt.Sprintf("no peer found with name or IP %q", f.Arg(0)), Fix: "skein status"})
	}
	var shown []netip.Addr
	for _, a := range p.Addresses {
		if (*only4 && !a.Is4()) || (*only6 && !a.Is6()) {
			continue
		}
		shown = append(shown, a)
	}
	if len(shown) == 0 {
		family := "IPv4"
		if *only6 {
			family = "IPv6"
		}
		return c.fail(&ipc.Error{Message: fmt.Sprintf("%s has no %s address", orDash(p.ShortName()), family)})
	}
	if *asJSON {
		return c.printJSON(ipJSON{Name: p.ShortName(), DNSName: p.DNSName, Addresses: shown})
	}
	for _, a := range shown {
		fmt.Fprintln(c.stdout, a)
	}
	return exitOK
}

// ipJSON is `skein ip --json`.
type ipJSON struct {
	Name      string       `json:"name"`
	DNSName   string       `json:"dnsName,omitempty"`
	Addresses []netip.Addr `json:"addresses"`
}

// findPeer looks q up among this machine and its peers, in the helper's order (ipc.LookupPeer).
func findPeer(st ipc.Status, q string) *ipc.Peer {
	cands := make([]*ipc.Peer, 0, len(st.Peers)+1)
	if st.Self != nil {
		cands = append(cands, st.Self)
	}
	for i := range st.Peers {
		cands = append(cands, &st.Peers[i])
	}
	i, err := ipc.LookupPeer(q, len(cands), func(i int) ipc.PeerNames { return cands[i].Names() })
	if err != nil {
		return nil
	}
	return cands[i]
}
