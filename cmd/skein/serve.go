package main

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/skeinvpn/skein/internal/fileserve"
	"github.com/skeinvpn/skein/internal/unixmsg"
	"github.com/skeinvpn/skein/ipc"
)

func cmdServe(c *cli, args []string) int {
	f := c.newFlagSet("serve", "[flags] TARGET [off] | status [--json] | reset", `
Share something on this machine with the tailnet, as the official client's serve does, over
HTTP or TCP. TARGET is a port (3000), a URL or host:port on this machine
(http://127.0.0.1:3002, localhost:3000), or an absolute path to a file or folder; only this
machine's loopback can be proxied to. The share lasts while the command runs (Ctrl+C stops
it); with --bg it stays, also across restarts, until 'skein serve --http=PORT off' or 'skein
serve reset'. Files are read by you: in the foreground by this command, in the background by
a process that runs as the path's owner (only the owner or root may share a path).

  skein serve --http 3003 http://127.0.0.1:3002
  skein serve --bg --http 8080 --set-path /docs ~/share
  skein serve --tcp 2222 22
  skein serve --http=8080 off
  skein serve status [--json]
  skein serve reset

HTTPS (the default when no port flag is given) needs a certificate from the control server:
Headscale issues none, so use --http PORT.`)
	bg := f.Bool("bg", false, "keep serving in the background, across restarts")
	setPath := f.String("set-path", "", "the path under which to serve (default /)")
	httpPort := f.Uint("http", 0, "serve HTTP on this port")
	httpsPort := f.Uint("https", 0, "serve HTTPS on this port (needs certificates from the control server)")
	tcpPort := f.Uint("tcp", 0, "forward raw TCP on this port")
	tlsPort := f.Uint("tls-terminated-tcp", 0, "forward TLS-terminated TCP on this port (needs certificates)")
	asJSON := false
	if len(args) > 0 {
		switch args[0] {
		case "status":
			sf := c.newFlagSet("serve status", "", "Show what is served (--json: the official client's ServeConfig shape).")
			sf.BoolVar(&asJSON, "json", false, "print the serve config as JSON")
			if ok, code := c.parse(sf, args[1:]); !ok {
				return code
			}
			return serveStatus(c, asJSON)
		case "reset":
			rf := c.newFlagSet("serve reset", "", "Stop serving everything.")
			if ok, code := c.parse(rf, args[1:]); !ok {
				return code
			}
			if _, err := c.client().ResetServe(c.ctx); err != nil {
				return c.fail(err)
			}
			return exitOK
		}
	}
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	req := ipc.ServeRequest{Mount: *setPath, Background: *bg}
	n := 0
	for _, m := range []struct {
		mode string
		port uint
	}{{"http", *httpPort}, {"https", *httpsPort}, {"tcp", *tcpPort}, {"tls-terminated-tcp", *tlsPort}} {
		if m.port != 0 {
			n++
			req.Mode = m.mode
			if m.port > 65535 {
				return c.usageError(f, "port %d is too high", m.port)
			}
			req.Port = uint16(m.port)
		}
	}
	if n > 1 {
		return c.usageError(f, "cannot serve multiple types for a single mount point")
	}
	if n == 0 {
		req.Mode, req.Port = "https", 443
	}
	rest := f.Args()
	if len(rest) > 0 && rest[len(rest)-1] == "off" {
		req.Off, req.Background = true, true
		rest = rest[:len(rest)-1]
	}
	switch {
	case len(rest) > 1:
		return c.usageError(f, "unexpected arguments: %s", strings.Join(rest[1:], " "))
	case len(rest) == 0 && !req.Off:
		return c.usageError(f, "nothing to serve: give a port, a URL or a path")
	case len(rest) == 1:
		req.Target = rest[0]
	}
	// A path is made absolute here (skeind cannot see your directories); a folder gets a
	// trailing slash so that its mount point gets one too and relative links work.
	var local string
	if t := req.Target; strings.HasPrefix(t, "/") || strings.HasPrefix(t, "./") || strings.HasPrefix(t, "../") || t == "." || t == ".." {
		abs, err := filepath.Abs(t)
		if err != nil {
			return c.fail(err)
		}
		fi, err := os.Stat(abs)
		if err != nil && !req.Background {
			return c.fail(fmt.Errorf("cannot serve %s: %v", t, err))
		}
		local, req.Target = abs, abs
		if err == nil && fi.IsDir() && abs != "/" {
			req.Target += "/"
		}
	}
	if req.Background {
		cfg, err := c.client().SetServe(c.ctx, req)
		if err != nil {
			return c.fail(err)
		}
		if !req.Off {
			printServeMessage(c.stdout, cfg, req, true)
		}
		return exitOK
	}
	// Foreground: this command answers for the files itself, as you.
	var files func(stream *unixmsg.Conn) error
	if local != "" {
		h, done, err := fileserve.Handler(local)
		if err != nil {
			return c.fail(fmt.Errorf("cannot serve %s: %v", local, err))
		}
		defer done()
		files = func(s *unixmsg.Conn) error { return fileserve.Serve(s, h) }
	}
	// Ctrl+C (or SIGTERM) ends the share: the stream closes and skeind takes it down.
	ctx, stop := signal.NotifyContext(c.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	stream, cfg, err := c.client().ServeForeground(ctx, req)
	if err != nil {
		return c.fail(err)
	}
	defer stream.Close()
	printServeMessage(c.stdout, cfg, req, false)
	go func() {
		<-ctx.Done()
		stream.Close()
	}()
	if files != nil {
		files(stream)
	} else {
		for {
			if _, _, fds, err := stream.Recv(); err != nil {
				break
			} else {
				for _, f := range fds {
					f.Close()
				}
			}
		}
	}
	if ctx.Err() == nil {
		fmt.Fprintln(c.stderr, "skein: skeind ended the serve")
		return exitFail
	}
	return exitOK
}

// printServeMessage says where the share is, as the official client does.
func printServeMessage(w io.Writer, cfg ipc.ServeConfig, req ipc.ServeRequest, bg bool) {
	fmt.Fprintf(w, "Available within your tailnet:\n\n")
	port := strconv.Itoa(int(req.Port))
	if h := cfg.TCP[req.Port]; h != nil && h.TCPForward != "" {
		fmt.Fprintf(w, "|-- tcp://:%s\n|--> tcp://%s\n\n", port, h.TCPForward)
	}
	for hp, web := range cfg.Web {
		host, p, _ := net.SplitHostPort(hp)
		if p != port {
			continue
		}
		portPart := ":" + p
		if p == "80" {
			portPart = ""
		}
		for _, m := range sortedMounts(web) {
			t, d := handlerDesc(web.Handlers[m])
			fmt.Fprintf(w, "http://%s%s%s\n|-- %-5s %s\n\n", host, portPart, m, t, d)
		}
	}
	if !bg {
		fmt.Fprintln(w, "Press Ctrl+C to exit.")
		return
	}
	fmt.Fprintf(w, "Serve started and running in the background.\nTo disable the proxy, run: skein serve --%s=%d off\n", req.Mode, req.Port)
}

func sortedMounts(w *ipc.WebServerConfig) []string {
	var ms []string
	for m := range w.Handlers {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b string) int { return cmp.Or(cmp.Compare(len(a), len(b)), cmp.Compare(a, b)) })
	return ms
}

func handlerDesc(h *ipc.HTTPHandler) (string, string) {
	switch {
	case h.Path != "":
		return "path", h.Path
	case h.Proxy != "":
		return "proxy", h.Proxy
	case h.Text != "":
		t := h.Text
		if len(t) > 20 {
			t = t[:17] + "..."
		}
		return "text", `"` + t + `"` // quoted as the official tree does, not escaped
	}
	return "", ""
}

// serveStatus prints what is served, as the official client's serve status does (and the
// foreground sessions, which it lists only in --json).
func serveStatus(c *cli, asJSON bool) int {
	cfg, err := c.client().ServeConfig(c.ctx)
	if err != nil {
		return c.fail(err)
	}
	if asJSON {
		return c.printJSON(cfg)
	}
	if cfg.IsEmpty() {
		fmt.Fprintln(c.stdout, "No serve config")
		return exitOK
	}
	var self ipc.Peer
	if st, err := c.client().Status(c.ctx); err == nil && st.Self != nil {
		self = *st.Self
	}
	printServeTree(c.stdout, &cfg, self, "")
	ids := make([]string, 0, len(cfg.Foreground))
	for id := range cfg.Foreground {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		printServeTree(c.stdout, cfg.Foreground[id], self, " (foreground)")
	}
	return exitOK
}

func printServeTree(w io.Writer, cfg *ipc.ServeConfig, self ipc.Peer, note string) {
	ports := make([]int, 0, len(cfg.TCP))
	for p := range cfg.TCP {
		ports = append(ports, int(p))
	}
	slices.Sort(ports)
	forwards := false
	for _, p := range ports {
		if h := cfg.TCP[uint16(p)]; h.TCPForward != "" {
			forwards = true
			fmt.Fprintf(w, "|-- tcp://%s (TLS over TCP, tailnet only)%s\n", net.JoinHostPort(strings.TrimSuffix(self.DNSName, "."), strconv.Itoa(p)), note)
			for _, a := range self.Addresses {
				fmt.Fprintf(w, "|-- tcp://%s\n", net.JoinHostPort(a.String(), strconv.Itoa(p)))
			}
			fmt.Fprintf(w, "|--> tcp://%s\n", h.TCPForward)
		}
	}
	if forwards { // the official tree: TCP forwards together, then a blank line
		fmt.Fprintln(w)
	}
	hps := make([]string, 0, len(cfg.Web))
	for hp := range cfg.Web {
		hps = append(hps, hp)
	}
	slices.Sort(hps)
	for _, hp := range hps {
		host, p, _ := net.SplitHostPort(hp)
		portPart := ":" + p
		if p == "80" {
			portPart = ""
		}
		short, _, _ := strings.Cut(host, ".")
		fmt.Fprintf(w, "http://%s%s (tailnet only)%s\nhttp://%s%s (tailnet only)%s\n", short, portPart, note, host, portPart, note)
		ms := sortedMounts(cfg.Web[hp])
		width := 0
		for _, m := range ms {
			width = max(width, len(m))
		}
		for _, m := range ms {
			t, d := handlerDesc(cfg.Web[hp].Handlers[m])
			fmt.Fprintf(w, "|-- %s%s %-5s %s\n", m, strings.Repeat(" ", width-len(m)), t, d)
		}
		fmt.Fprintln(w)
	}
}

func cmdFunnel(c *cli, args []string) int {
	f := c.newFlagSet("funnel", "...", `
Funnel shares a port with the public internet. It needs Tailscale's ingress relays and the
"funnel" node attribute, which only Tailscale's own service provides; Skein does not offer it.`)
	if ok, code := c.parse(f, args); !ok {
		return code
	}
	fmt.Fprintln(c.stderr, "skein: funnel needs Tailscale's service: its public ingress relays carry the internet's traffic to the node, and its control server must grant the \"funnel\" node attribute. Headscale has neither, and Skein does not implement funnel; use 'skein serve' to share within the tailnet.")
	return exitFail
}
