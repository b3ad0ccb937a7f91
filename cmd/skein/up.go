package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/skeinvpn/skein/ipc"
)

func cmdUp(c *cli, args []string) int {
	return upOrLogin(c, args, "up", `
Connect to the tailnet. When this machine is not logged in yet, log in first: with --auth-key
without asking anyone, otherwise by printing a URL to visit, then waiting until the login is
done (see --timeout). The preference flags work as in 'skein set': only those given change
anything; the exit node is chosen once connected, since skeind needs the tailnet's map for it.`)
}

func cmdLogin(c *cli, args []string) int {
	return upOrLogin(c, args, "login", `
Log in to another account or login server as a new profile, keeping the logins this machine
has (see 'skein switch'), then connect with it. Without --auth-key, prints a URL to visit and
waits until the login is done (see --timeout); if the login fails, the profile in use stays.
To log in again with the profile in use, use 'skein up --force-reauth'.`)
}

func upOrLogin(c *cli, args []string, name, desc string) int {
	f := c.newFlagSet(name, "", desc)
	var req ipc.UpRequest
	f.StringVar(&req.LoginServer, "login-server", "", "base URL of the control server, e.g. https://headscale.example.com (default: the stored one)")
	authKey := f.String("auth-key", "", "pre-auth key to log in without a browser; file:PATH reads it from a file")
	f.StringVar(&req.Hostname, "hostname", "", "name to register this machine under (default: the OS hostname)")
	if name == "up" {
		f.BoolVar(&req.ForceReauth, "force-reauth", false, "log in again even if already logged in")
	} else {
		req.ForceReauth, req.NewProfile = true, true
		f.StringVar(&req.Nickname, "nickname", "", "name of the new profile, for 'skein switch' (default: the login name)")
	}
	timeout := f.Duration("timeout", 0, "give up after this long (e.g. 2m); 0 waits forever for an interactive login")
	asJSON := f.Bool("json", false, `print JSON on standard output, as the official client does: {"AuthURL", "BackendState": "NeedsLogin"} when a login URL is to be visited, then {"BackendState": "Running"} (or {"BackendState", "Error"} on failure)`)
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
	// Choosing an exit node needs the netmap, so it waits until skeind is Running. Everything
	// else (clearing the exit node included) is sent before connecting, so that a bad value
	// stops here and the new settings are in force from the first packet. A new profile gets
	// every setting once it runs: before, they would change the profile in use.
	var after ipc.PrefsPatch
	if patch.ExitNode != nil && strings.TrimSpace(*patch.ExitNode) != "" {
		after.ExitNode, patch.ExitNode = patch.ExitNode, nil
	}
	if req.NewProfile {
		if after.ExitNode != nil {
			patch.ExitNode = after.ExitNode
		}
		after, patch = patch, ipc.PrefsPatch{}
	}
	if *timeout < 0 {
		return c.usageError(f, "--timeout must not be negative")
	}
	key, err := readAuthKey(*authKey)
	if err != nil {
		return c.usageError(f, "%v", err)
	}
	req.AuthKey = key

	ctx := c.ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	state := ipc.State("") // the last state skeind reported, for --json
	timedOut := func(err error, what string) int {
		if errors.Is(err, context.DeadlineExceeded) {
			err = &ipc.Error{
				Code:    ipc.ErrInternal,
				Message: fmt.Sprintf("timed out after %v %s", *timeout, what),
				Fix:     "skein status",
			}
		}
		if *asJSON {
			msg := err.Error()
			var e *ipc.Error
			if errors.As(err, &e) {
				msg = e.Message
			}
			c.printJSON(upJSON{BackendState: string(state), Error: msg})
		}
		return c.fail(err)
	}

	cl := c.client()
	if patch != (ipc.PrefsPatch{}) {
		if _, err := cl.SetPrefs(ctx, patch); err != nil {
			return timedOut(err, "waiting for skeind to change the preferences")
		}
	}
	// connected runs once skeind is Running.
	connected := func() int {
		if after != (ipc.PrefsPatch{}) {
			if _, err := cl.SetPrefs(ctx, after); err != nil {
				return timedOut(err, "waiting for skeind to set the exit node")
			}
		}
		if *asJSON {
			return c.printJSON(upJSON{BackendState: string(ipc.StateRunning)})
		}
		return exitOK
	}
	resp, err := cl.Up(ctx, req)
	if e := (*ipc.Error)(nil); errors.As(err, &e) && e.Code == ipc.ErrNeedsConfirmation && !*asJSON && c.confirm(e.Message) {
		req.ForceReauth = true
		resp, err = cl.Up(ctx, req)
	}
	if err != nil {
		return timedOut(err, "waiting for skeind to connect")
	}
	state = resp.State
	printed := ""
	printURL := func(url string) {
		if url == "" || url == printed {
			return
		}
		printed = url
		if *asJSON {
			c.printJSON(upJSON{AuthURL: url, BackendState: string(ipc.StateNeedsLogin)})
			return
		}
		// Like the official client: stderr, so that stdout stays clean for scripts.
		fmt.Fprintf(c.stderr, "\nTo authenticate, visit:\n\n\t%s\n\n", url)
	}
	printURL(resp.AuthURL)
	if resp.State == ipc.StateRunning && resp.AuthURL == "" {
		return connected()
	}

	// Wait for the login to finish. The stream's first event is the current status, so a
	// transition that happened before the watch started is not missed.
	errRunning := errors.New("running")
	err = cl.Watch(ctx, func(ev ipc.Event) error {
		if ev.Error != nil {
			return ev.Error
		}
		st := ev.Status
		if st == nil {
			return nil
		}
		state = st.State
		printURL(st.AuthURL)
		// A pending AuthURL means a (re)login is still open, even if the old session still runs.
		if st.State == ipc.StateRunning && st.AuthURL == "" {
			return errRunning
		}
		return nil
	})
	if err == errRunning {
		if printed != "" && !*asJSON {
			fmt.Fprintln(c.stderr, "Success.")
		}
		return connected()
	}
	if printed != "" {
		return timedOut(err, "waiting for the login to complete")
	}
	return timedOut(err, "waiting for skeind to connect")
}

// confirm asks the user on the terminal whether to go on; false without a terminal (then the
// error and its fix are shown instead).
func (c *cli) confirm(what string) bool {
	if !c.stdinIsTerminal() || !c.isTerminal(c.stderr) {
		return false
	}
	fmt.Fprintf(c.stderr, "%s.\nGo on? [y/N] ", what)
	line, _ := bufio.NewReader(c.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// stdinIsTerminal reports whether the user can answer a question.
func (c *cli) stdinIsTerminal() bool {
	if c.isTTY != nil {
		return c.isTTY(nil)
	}
	f, ok := c.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// upJSON is what `skein up --json` prints: the official client's field names, so that scripts
// that read AuthURL or BackendState from `tailscale up --json` work unchanged.
type upJSON struct {
	AuthURL      string `json:",omitempty"`
	BackendState string `json:",omitempty"`
	Error        string `json:",omitempty"`
}

// readAuthKey resolves the --auth-key value: "file:PATH" reads the key from PATH, so it need
// not appear in the process list or shell history.
func readAuthKey(v string) (string, error) {
	path, ok := strings.CutPrefix(v, "file:")
	if !ok {
		return v, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading --auth-key file: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("--auth-key file %s is empty", path)
	}
	return key, nil
}

func cmdDown(c *cli, args []string) int {
	f := c.newFlagSet("down", "", "Disconnect from the tailnet. The login is kept: 'skein up' reconnects without logging in.")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	if _, err := c.client().Down(c.ctx); err != nil {
		return c.fail(err)
	}
	return exitOK
}

func cmdLogout(c *cli, args []string) int {
	f := c.newFlagSet("logout", "", "Disconnect from the tailnet and forget the login; the next 'skein up' logs in again.")
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	if f.NArg() > 0 {
		return c.usageError(f, "unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	if _, err := c.client().Logout(c.ctx); err != nil {
		return c.fail(err)
	}
	return exitOK
}
