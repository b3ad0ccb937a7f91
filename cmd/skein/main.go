// Command skein is the command-line front end of skeind, modelled on the official client's CLI
// so that muscle memory and scripts carry over.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	iversion "github.com/skeinvpn/skein/internal/version"
	"github.com/skeinvpn/skein/ipc"
)

// version is the build version (the Makefile sets internal/version.Version).
var version = iversion.Version

// Exit codes, the same for every command.
const (
	exitOK    = 0 // success
	exitFail  = 1 // the command ran and failed (or, for status, skein is not running)
	exitUsage = 2 // the command line is wrong: unknown command or flag, bad value, bad args
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type command struct {
	name    string
	summary string
	run     func(c *cli, args []string) int
}

// commands lists the commands in the order the usage shows them.
var commands = []command{
	{"up", "Connect to the tailnet, logging in first if needed", cmdUp},
	{"login", "Log in to another account as a new profile, then connect", cmdLogin},
	{"switch", "Switch to another login (profile), list or remove profiles", cmdSwitch},
	{"down", "Disconnect from the tailnet, keeping the login", cmdDown},
	{"logout", "Disconnect and forget the login", cmdLogout},
	{"status", "Show the connection state and the tailnet's machines", cmdStatus},
	{"ip", "Show this machine's (or a peer's) tailnet addresses", cmdIP},
	{"ping", "Ping a peer at the disco layer and show the path (direct or DERP)", cmdPing},
	{"netcheck", "Show UDP, public address, NAT type and DERP latencies", cmdNetcheck},
	{"why", "Explain why a peer is relayed rather than direct, and how to fix it", cmdWhy},
	{"set", "Change preferences (exit node, routes, operator, hostname, ...)", cmdSet},
	{"exit-node", "Show the tailnet's exit nodes (exit-node list) or the recommended one (suggest)", cmdExitNode},
	{"dns", "Show the DNS configuration (dns status) or ask the resolver (dns query)", cmdDNS},
	{"file", "Send files to peers (file cp) or take the files they sent (file get)", cmdFile},
	{"serve", "Share a local port, file or folder with the tailnet (HTTP, TCP)", cmdServe},
	{"funnel", "Share with the internet: needs Tailscale's service (not offered)", cmdFunnel},
	{"version", "Print the version", cmdVersion},
}

// cli is what every command gets: where to write and how to reach skeind.
type cli struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	socket string
	// isTTY, when set, replaces the terminal check of isTerminal (tests).
	isTTY func(io.Writer) bool
}

func (c *cli) client() *ipc.Client { return ipc.NewClient(c.socket) }

// run is main without the process: it returns the exit code, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{ctx: context.Background(), stdin: os.Stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("skein", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.socket, "socket", "", "path of skeind's socket (default $"+ipc.SocketEnv+" or "+ipc.DefaultSocket+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			mainUsage(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "skein: %v\n\n", err)
		mainUsage(stderr, fs)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		mainUsage(stderr, fs)
		return exitUsage
	}
	name, cmdArgs := rest[0], rest[1:]
	if name == "help" {
		if len(cmdArgs) == 0 {
			mainUsage(stdout, fs)
			return exitOK
		}
		name, cmdArgs = cmdArgs[0], []string{"--help"}
	}
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd.run(c, cmdArgs)
		}
	}
	fmt.Fprintf(stderr, "skein: unknown command %q\n\n", name)
	mainUsage(stderr, fs)
	return exitUsage
}

func mainUsage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprintf(w, "usage: skein [--socket PATH] COMMAND [flags] [args]\n\nCommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags:\n")
	printDefaults(w, global)
	fmt.Fprintf(w, "\nRun 'skein COMMAND --help' for a command's flags.\n")
	fmt.Fprint(w, exitCodesHelp)
}

const exitCodesHelp = `
Exit status: 0 on success; 1 when the command failed (for status: when skein is not
running); 2 for a usage error (unknown command or flag, bad flag value or arguments).
`

// flagSet is a command's flags plus what its usage says.
type flagSet struct {
	*flag.FlagSet
	name, argsUsage, desc string
}

func (c *cli) newFlagSet(name, argsUsage, desc string) *flagSet {
	fs := flag.NewFlagSet("skein "+name, flag.ContinueOnError)
	// parse reports errors and prints usage itself, to the right stream.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, name: name, argsUsage: argsUsage, desc: desc}
}

func (f *flagSet) usage(w io.Writer) {
	line := "usage: skein " + f.name
	hasFlags := false
	f.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		line += " [flags]"
	}
	if f.argsUsage != "" {
		line += " " + f.argsUsage
	}
	fmt.Fprintf(w, "%s\n\n%s\n", line, strings.TrimSpace(f.desc))
	if hasFlags {
		fmt.Fprintf(w, "\nFlags:\n")
		printDefaults(w, f.FlagSet)
	}
	fmt.Fprint(w, exitCodesHelp)
}

// parse parses args; when it returns false the command must return code (0 after --help).
func (c *cli) parse(f *flagSet, args []string) (ok bool, code int) {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.usage(c.stdout)
			return false, exitOK
		}
		return false, c.usageError(f, "%v", err)
	}
	return true, 0
}

// usageError reports a command-line mistake.
func (c *cli) usageError(f *flagSet, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "skein %s: %s\nRun 'skein %s --help' for usage.\n", f.name, fmt.Sprintf(format, args...), f.name)
	return exitUsage
}

// fail renders err for a person: the message, then the fix when skeind knows one.
func (c *cli) fail(err error) int {
	var e *ipc.Error
	if errors.As(err, &e) {
		fmt.Fprintf(c.stderr, "skein: %s\n", e.Message)
		if e.Fix != "" {
			fmt.Fprintf(c.stderr, "  fix: %s\n", e.Fix)
		}
		return exitFail
	}
	fmt.Fprintf(c.stderr, "skein: %v\n", err)
	return exitFail
}

// printJSON writes v as indented JSON, the form of every --json output.
func (c *cli) printJSON(v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s\n", b)
	return exitOK
}

func printDefaults(w io.Writer, fs *flag.FlagSet) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}
