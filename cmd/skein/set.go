package main

import (
	"flag"
	"fmt"
	"runtime"
	"strings"

	"github.com/skeinvpn/skein/ipc"
)

func cmdSet(c *cli, args []string) int {
	f := c.newFlagSet("set", "", `
Change preferences; only the flags given are changed, the others keep their values. Setting
the operator needs root: the operator may then run up, down, login, logout and set without sudo.
--exit-node takes a name or tailnet IP from 'skein exit-node list'; --exit-node= (empty) stops
using one. Lists (--advertise-routes, --exit-node-bypass) replace the old list; empty clears it.`)
	operator := f.String("operator", "", "local user allowed to control skeind without sudo (empty: nobody)")
	hostname := f.String("hostname", "", "name to register this machine under (empty: the OS hostname)")
	var pf prefsFlags
	pf.register(f)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	patch, err := pf.patch(f)
	if err != nil {
		return c.usageError(f, "%v", err)
	}
	f.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "operator":
			patch.Operator = operator
		case "hostname":
			patch.Hostname = hostname
		}
	})
	if patch == (ipc.PrefsPatch{}) {
		return c.usageError(f, "nothing to set: give at least one flag")
	}
	if _, err := c.client().SetPrefs(c.ctx, patch); err != nil {
		return c.fail(err)
	}
	return exitOK
}

func cmdVersion(c *cli, args []string) int {
	f := c.newFlagSet("version", "", `
Print the version of this skein command. With --json: {"short", "long", "goVersion", "os",
"arch"}; "short" and "long" are named as in the official client's version --json ("long" is the
full build version, "short" without its git suffix).`)
	asJSON := f.Bool("json", false, "print the version as JSON")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	if *asJSON {
		return c.printJSON(versionJSON{Short: shortVersion(version), Long: version,
			GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH})
	}
	fmt.Fprintf(c.stdout, "%s\n  go version: %s\n", version, runtime.Version())
	return exitOK
}

// versionJSON is `skein version --json`.
type versionJSON struct {
	Short     string `json:"short"`
	Long      string `json:"long"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

// shortVersion is the release a build version belongs to: "v0.2.0-3-gabc1234-dirty" and
// "0.2.0~git20260101.abc1234" are "0.2.0".
func shortVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-~+"); i > 0 {
		v = v[:i]
	}
	return v
}
