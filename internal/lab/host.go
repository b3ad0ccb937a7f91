package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Host is a namespace plugged into the lab's internet bridge with a public
// address (198.18.X.N/24 on eth0, default route via 198.18.X.1), or, for a
// host behind a NAT, into the NAT's LAN bridge with a private address.
type Host struct {
	lab    *Lab
	name   string
	netns  string
	dir    string
	uplink string     // "eth0"; "" for the inet router
	gw     netip.Addr // default route of the uplink

	mu         sync.Mutex
	addr       netip.Addr // changes for a NAT router (ChangePublicAddr)
	udpAll     bool       // BlockUDP() state, reapplied as one table
	udpBlocked []netip.Addr
}

// AddHost creates a host namespace named skl<id>-<name>. name must be 2..32
// characters of [a-z0-9-] (Headscale rejects one-letter hostnames; use the
// same name for the tailscale hostname where it matters). "inet" and "ctl"
// are reserved.
func (l *Lab) AddHost(name string) (*Host, error) {
	if !hostRE.MatchString(name) || reserved[name] {
		return nil, fmt.Errorf("AddHost(%q): want 2-32 chars of [a-z0-9-], not inet/ctl", name)
	}
	l.mu.Lock()
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("AddHost(%q): host exists", name)
	}
	last, err := l.allocAddrLocked()
	if err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("AddHost(%q): %w", name, err)
	}
	h := &Host{lab: l, name: name, netns: l.nsName(name), addr: l.addrAt(last), dir: filepath.Join(l.dir, name)}
	l.hosts[name] = h
	l.mu.Unlock()
	if err := l.plugHost(h, last); err != nil {
		return nil, fmt.Errorf("AddHost(%q): %w", name, err)
	}
	return h, nil
}

// plugHost creates h's namespace and connects it to the internet bridge.
func (l *Lab) plugHost(h *Host, last int) error {
	return l.plug(h, l.inet.netns, "br0", fmt.Sprintf("vh%d", last), l.addrAt(1))
}

// plug creates h's namespace and connects its eth0 to bridge in the router
// namespace through a veth named veth there (unique per router), with a /24
// and a default route via gw.
func (l *Lab) plug(h *Host, router, bridge, veth string, gw netip.Addr) error {
	h.uplink, h.gw = "eth0", gw
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		return err
	}
	if err := l.addNetns(h.netns); err != nil {
		return err
	}
	return ipCmds(
		[]string{"-n", router, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns},
		[]string{"-n", router, "link", "set", veth, "master", bridge, "up"},
		[]string{"-n", h.netns, "addr", "add", netip.PrefixFrom(h.addr, 24).String(), "dev", "eth0"},
		[]string{"-n", h.netns, "link", "set", "eth0", "up"},
		[]string{"-n", h.netns, "route", "add", "default", "via", gw.String()},
	)
}

// Host returns a host added with AddHost, AddNAT (the router) or
// NAT.AddHost, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// Name is the name given to AddHost ("ctl" for the control host, "inet" for
// the router).
func (h *Host) Name() string { return h.name }

// Netns is the namespace name, for `ip netns exec NETNS ...`.
func (h *Host) Netns() string { return h.netns }

// Addr is the host's address on its uplink: public, or private for a host
// behind a NAT (a NAT router's is its current public address).
func (h *Host) Addr() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// Dir is the host's own directory inside the lab dir.
func (h *Host) Dir() string { return h.dir }

// Lab returns the lab the host belongs to.
func (h *Host) Lab() *Lab { return h.lab }

// Env is the environment of commands run in the lab: the current one
// without proxy settings, with SSL_CERT_FILE set to the lab CA.
func (l *Lab) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "SSL_CERT_FILE="+l.CACertFile())
}

// Command returns a command that runs name inside the namespace (through
// `ip netns exec`, so /etc/netns/NS files apply) with the lab environment.
// ctx may be nil.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if ctx == nil {
		ctx = context.Background()
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.netns, name}, args...)...)
	cmd.Env = h.lab.Env()
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	return cmd
}

// Run runs a command in the namespace with a 2-minute timeout and returns
// its stdout. On failure the error includes stderr.
func (h *Host) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runCmd(h.Command(ctx, name, args...))
}

func runCmd(cmd *exec.Cmd) (string, error) {
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s%s", strings.Join(cmd.Args, " "), err,
			strings.TrimSpace(stderr.String()), trimmedOut(stdout.String()))
	}
	return stdout.String(), nil
}

func trimmedOut(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return " (stdout: " + s + ")"
}

// StartProcess starts name in the background inside the namespace with the
// lab environment plus env (later entries win). Stdout and stderr go to a
// log file in the host's dir. The process is in its own process group, gets
// Pdeathsig=SIGKILL and is stopped (and waited for) by the lab's cleanup.
func (h *Host) StartProcess(name string, env []string, args ...string) (*Process, error) {
	base := filepath.Base(name)
	label := h.name + "/" + base
	logPath := filepath.Join(h.dir, base+".log")
	h.lab.mu.Lock()
	for i := 2; ; i++ {
		if _, err := os.Stat(logPath); err != nil {
			break
		}
		label = fmt.Sprintf("%s/%s-%d", h.name, base, i)
		logPath = filepath.Join(h.dir, fmt.Sprintf("%s-%d.log", base, i))
	}
	// Reserve the log name before unlocking.
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	h.lab.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f.Close()
	return h.startProcess(label, logPath, env, name, args...)
}

func (h *Host) startProcess(label, logPath string, env []string, name string, args ...string) (*Process, error) {
	l := h.lab
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("lab is closed")
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== lab: %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), name, strings.Join(args, " "))
	cmd := h.Command(nil, name, args...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setpgid = true
	cmd.Dir = h.dir
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := startOnSpawnerThread(cmd); err != nil {
		return nil, fmt.Errorf("starting %s in %s: %w", name, h.netns, err)
	}
	p := &Process{name: label, host: h, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	closed = l.closed
	l.mu.Unlock()
	if closed { // raced with Close: don't leave it behind
		p.stop(time.Second)
		return nil, errors.New("lab is closed")
	}
	return p, nil
}

// Process is a background process started in a lab namespace.
type Process struct {
	name    string
	host    *Host
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid after done is closed

	signaled atomic.Bool // we sent SIGTERM/SIGKILL
}

// Name is "host/program" (with a -N suffix for repeats).
func (p *Process) Name() string { return p.name }

// Host is the host the process runs on.
func (p *Process) Host() *Host { return p.host }

// Pid is the process ID (that of the program itself: `ip netns exec`
// execs it).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file receiving stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Log returns the log file's content so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	return string(b)
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return errors.New("process exited")
	}
	return syscall.Kill(-p.Pid(), sig)
}

// Stop sends SIGTERM to the process group, waits up to 10s, then sends
// SIGKILL. It returns nil if the process exited with status 0 or because of
// our signal, and the exit error otherwise (e.g. a race report's exit 66).
func (p *Process) Stop() error { return p.stop(10 * time.Second) }

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Process) Kill() error { return p.stop(0) }

func (p *Process) stop(grace time.Duration) error {
	if !p.Exited() {
		p.signaled.Store(true)
		if grace > 0 {
			syscall.Kill(-p.Pid(), syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(grace):
			}
		}
		if !p.Exited() {
			syscall.Kill(-p.Pid(), syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("%s (pid %d) does not die", p.name, p.Pid())
			}
		}
	}
	if p.err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && p.signaled.Load() {
			return nil
		}
	}
	return fmt.Errorf("%s exited: %w", p.name, p.err)
}

// inNetns runs fn on an OS thread that has joined the namespace, then
// moves the thread back (or, if that fails, lets it die with the
// goroutine). Sockets created by fn belong to the namespace for their whole
// life. fn must not start goroutines that create sockets.
func inNetns(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return // thread discarded
		}
		defer orig.Close()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return // thread discarded
		}
		fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}

// spawner is a goroutine locked to an OS thread that never exits, which
// starts background processes. Pdeathsig fires when the *thread* that forked
// a child exits, and Go discards threads whose locked goroutine exits (as
// inNetns may do), so children forked from arbitrary threads could be
// killed at random.
var spawner struct {
	once sync.Once
	reqs chan func()
}

func startOnSpawnerThread(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // forever
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// Dial connects from inside the namespace. address must be a literal
// IP:port (name resolution would run outside the namespace).
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	var err error
	if nerr := inNetns(h.netns, func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
	}); nerr != nil {
		return nil, nerr
	}
	return c, err
}

// Listen listens inside the namespace (address a literal IP:port).
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	var err error
	if nerr := inNetns(h.netns, func() { ln, err = net.Listen(network, address) }); nerr != nil {
		return nil, nerr
	}
	return ln, err
}

// ListenPacket is Listen for UDP and other packet sockets.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	var err error
	if nerr := inNetns(h.netns, func() { pc, err = net.ListenPacket(network, address) }); nerr != nil {
		return nil, nerr
	}
	return pc, err
}

// HTTPClient returns a client whose connections are made from inside the
// namespace and which trusts the lab CA (and only it). URLs must use IP
// addresses.
func (h *Host) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(h.lab.ca.cert)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:       h.Dial,
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: true,
			Proxy:             nil,
		},
	}
}
