package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/portmap"
	"github.com/skeinvpn/skein/daemon/router"
	"github.com/skeinvpn/skein/internal/atomicfile"
)

// The portmap lab tests run daemon/portmap inside a lab namespace: this
// test binary is started again there (Host.StartProcess) with
// SKEIN_LAB_PORTMAP_HELPER set, and runs portmapHelper instead of the
// tests. It reports through a status file and obeys signals: SIGUSR1
// probes, SIGTERM closes (deleting the mapping) and exits.
func TestMain(m *testing.M) {
	switch os.Getenv("SKEIN_LAB_PORTMAP_HELPER") {
	case "":
		os.Exit(m.Run())
	case "cleanup":
		if err := portmap.Cleanup(os.Getenv("SKEIN_LAB_PORTMAP_STATEDIR"), router.ControlBypass, logStderr); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		os.Exit(portmapHelper())
	}
}

func logStderr(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// helperOptions are passed as JSON in SKEIN_LAB_PORTMAP_HELPER.
type helperOptions struct {
	LocalPort     uint16
	DisableUPnP   bool
	DisableNATPMP bool
	DisablePCP    bool
	CheckInterval time.Duration
	StateDir      string
	StatusFile    string
}

// helperStatus is what the helper writes to its status file.
type helperStatus struct {
	Status   portmap.Status
	Mapping  *portmap.Mapping
	Offers   string // the last Probe's answer, as netcheck prints it
	Changes  int
	Closed   bool
	CloseErr string
}

func portmapHelper() int {
	var o helperOptions
	if err := json.Unmarshal([]byte(os.Getenv("SKEIN_LAB_PORTMAP_HELPER")), &o); err != nil {
		fmt.Fprintln(os.Stderr, "helper options:", err)
		return 2
	}
	c, err := portmap.New(portmap.Options{
		LocalPort:     o.LocalPort,
		Control:       router.ControlBypass, // as skeind marks its sockets
		DisableUPnP:   o.DisableUPnP,
		DisableNATPMP: o.DisableNATPMP,
		DisablePCP:    o.DisablePCP,
		CheckInterval: o.CheckInterval,
		StateDir:      o.StateDir,
		Logf:          logStderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1)
	var st helperStatus
	write := func() {
		st.Status = c.Status()
		st.Mapping = nil
		if m, ok := c.Mapping(); ok {
			st.Mapping = &m
		}
		b, _ := json.Marshal(st)
		if err := atomicfile.Write(o.StatusFile, b, 0o644); err != nil {
			logStderr("status: %v", err)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		write()
		select {
		case <-c.Changes():
			st.Changes++
		case <-tick.C:
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				offers, err := c.Probe(ctx)
				cancel()
				st.Offers = offers.String()
				if err != nil {
					st.Offers = "error: " + err.Error()
				}
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := c.Close(ctx)
			cancel()
			st.Closed = true
			if err != nil {
				st.CloseErr = err.Error()
			}
			write()
			return 0
		}
	}
}

// portmapProc is the helper running on a lab host.
type portmapProc struct {
	t      *testing.T
	host   *Host
	proc   *Process
	opts   helperOptions
	status string
}

func startPortmap(t *testing.T, h *Host, o helperOptions) *portmapProc {
	t.Helper()
	if o.LocalPort == 0 {
		o.LocalPort = 41641
	}
	dir := filepath.Join(h.Dir(), "portmap")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if o.StateDir == "" {
		o.StateDir = dir
	}
	o.StatusFile = filepath.Join(dir, "status.json")
	os.Remove(o.StatusFile)
	b, _ := json.Marshal(o)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.StartProcess(exe, []string{"SKEIN_LAB_PORTMAP_HELPER=" + string(b)})
	if err != nil {
		t.Fatal(err)
	}
	return &portmapProc{t: t, host: h, proc: p, opts: o, status: o.StatusFile}
}

func (p *portmapProc) read() (helperStatus, error) {
	var st helperStatus
	b, err := os.ReadFile(p.status)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// wait polls the helper's status until ok accepts it.
func (p *portmapProc) wait(what string, timeout time.Duration, ok func(helperStatus) error) helperStatus {
	p.t.Helper()
	var st helperStatus
	err := WaitFor(timeout, func() error {
		if p.proc.Exited() {
			return stopWaiting(fmt.Errorf("portmap helper exited: %v", p.proc.Wait()))
		}
		var err error
		if st, err = p.read(); err != nil {
			return err
		}
		return ok(st)
	})
	if err != nil {
		p.t.Fatalf("portmap helper on %s: %s: %v\nstatus: %+v\nlog:\n%s", p.host.Name(), what, err, st, tailLines(p.proc.Log(), 40))
	}
	return st
}

// close sends SIGTERM and waits for the helper to delete its mapping.
func (p *portmapProc) close() helperStatus {
	p.t.Helper()
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	if err := p.proc.Wait(); err != nil {
		p.t.Fatalf("portmap helper: %v\n%s", err, tailLines(p.proc.Log(), 40))
	}
	st, err := p.read()
	if err != nil || !st.Closed {
		p.t.Fatalf("portmap helper did not close: %+v %v", st, err)
	}
	return st
}
