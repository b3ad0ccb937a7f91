package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// skeinNode is skeind running in a lab namespace, logged into the lab's tailnet.
type skeinNode struct {
	host     *lab.Host
	proc     *lab.Process
	skein    string
	socket   string
	statedir string
	status   string
}

const demoHostname = "skein-demo"

func startSkein(l *lab.Lab, tn *lab.Tailnet, skeindBin, skeinBin string, peers []string) (*skeinNode, error) {
	for _, p := range []*string{&skeindBin, &skeinBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("%s: %w (run make build)", abs, err)
		}
		*p = abs
	}
	h, err := l.AddHost(demoHostname)
	if err != nil {
		return nil, err
	}
	// The socket directory must be reachable by unprivileged users, as /run/skein is.
	sockDir := filepath.Join(l.Dir(), "run-skein")
	if err := os.MkdirAll(sockDir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(l.Dir(), 0o755)
	n := &skeinNode{
		host:     h,
		skein:    skeinBin,
		socket:   filepath.Join(sockDir, "skeind.sock"),
		statedir: filepath.Join(h.Dir(), "skein-state"),
	}
	n.proc, err = h.StartProcess(skeindBin, nil, "--statedir", n.statedir, "--socket", n.socket)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitFor(20*time.Second, func() error {
		if n.proc.Exited() {
			return fmt.Errorf("skeind exited:\n%s", n.proc.Log())
		}
		_, err := os.Stat(n.socket)
		return err
	}); err != nil {
		return nil, err
	}
	if out, err := n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", demoHostname); err != nil {
		return nil, fmt.Errorf("skein up: %v\n%s", err, out)
	}
	// Show the status once every official peer is in skeind's netmap.
	err = lab.WaitFor(30*time.Second, func() error {
		out, err := n.cli("status")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, p := range peers {
			if !strings.Contains(out, p) {
				return fmt.Errorf("%s not in skein status yet", p)
			}
		}
		n.status = out
		return nil
	})
	return n, err
}

func (n *skeinNode) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, n.skein, append([]string{"--socket", n.socket}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (n *skeinNode) print(w io.Writer) {
	fmt.Fprintf(w, "\nskeind runs in %s (%s), state in %s, log %s.\n", n.host.Netns(), n.host.Addr(), n.statedir, n.proc.LogPath())
	fmt.Fprintf(w, "\n$ skein --socket %s status\n%s", n.socket, n.status)
	fmt.Fprintf(w, "\nTry (any user may read; root changes):\n  %s --socket %s status --json\n  %s --socket %s down\n  %s --socket %s up\n",
		n.skein, n.socket, n.skein, n.socket, n.skein, n.socket)
}
