package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/skeinvpn/skein/ipc"
)

func cmdSwitch(c *cli, args []string) int {
	f := c.newFlagSet("switch", "NAME | --list | --remove NAME", `
Switch to another login (profile) this machine keeps: NAME is the profile's ID, name, login
name or tailnet, as --list shows them. The tunnel of the profile in use goes down (its routes
and DNS settings with it) before the other one connects. 'skein login --nickname NAME' adds a
profile; --remove forgets one that is not in use.`)
	list := f.Bool("list", false, "list the profiles (ID, tailnet, account, login server; * marks the one in use)")
	remove := f.Bool("remove", false, "forget the profile NAME (its keys and settings) instead of switching to it")
	asJSON := f.Bool("json", false, `with --list: print a JSON array of {"id", "name", "loginServer", "loginName", "tailnet", "loggedIn", "current"}`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	switch {
	case *list && (*remove || f.NArg() > 0):
		return c.usageError(f, "--list takes no profile")
	case *list:
		return switchList(c, *asJSON)
	case *asJSON:
		return c.usageError(f, "--json goes with --list")
	case f.NArg() != 1:
		return c.usageError(f, "want one profile (see skein switch --list)")
	}
	name := f.Arg(0)
	cl := c.client()
	if *remove {
		if _, err := cl.RemoveProfile(c.ctx, name); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	st, err := cl.SwitchProfile(c.ctx, name)
	if err != nil {
		return c.fail(err)
	}
	who := name
	if st.Profile != nil {
		who = st.Profile.Name
	}
	switch st.State {
	case ipc.StateRunning:
		fmt.Fprintf(c.stderr, "Switched to %s.\n", who)
	case ipc.StateNeedsLogin:
		fmt.Fprintf(c.stderr, "Switched to %s, which is logged out. To log in, run:\n  skein up\n", who)
	case ipc.StateStopped:
		fmt.Fprintf(c.stderr, "Switched to %s, which is disconnected. To connect, run:\n  skein up\n", who)
	default:
		fmt.Fprintf(c.stderr, "Switched to %s (%s).\n", who, st.State)
	}
	return exitOK
}

func switchList(c *cli, asJSON bool) int {
	st, err := c.client().Status(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	if asJSON {
		out := st.Profiles
		if out == nil {
			out = []ipc.Profile{}
		}
		return c.printJSON(out)
	}
	// The official client's columns, and the login server (which tells Headscales apart).
	tw := tabwriter.NewWriter(c.stdout, 2, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTailnet\tAccount\tLogin server")
	for _, p := range st.Profiles {
		name := p.Name
		if p.Current {
			name += "*"
		}
		if !p.LoggedIn {
			name += " (logged out)"
		}
		fmt.Fprintln(tw, strings.Join([]string{p.ID, orDash(p.Tailnet), name, orDash(p.LoginServer)}, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return exitOK
}
