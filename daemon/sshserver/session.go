package sshserver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/daemon/sshchild"
)

// hangupGrace is how long a session's processes have after SIGHUP before SIGKILL.
const hangupGrace = 3 * time.Second

// ptyDrain is how long output a pty still holds is read after the session's process exits
// (background processes may keep the terminal open; they do not keep the session).
const ptyDrain = 500 * time.Millisecond

// session is one "session" channel: a shell, a command or SFTP.
type session struct {
	c  *conn
	ch ssh.Channel

	env   []string // what the client set and may set
	pty   *ptyRequest
	agent bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	ptmx    *os.File
	started bool
	ended   bool
	reason  string // shown on stderr when the session is ended for the user
	exited  chan struct{}
}

type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

func (c *conn) session(nch ssh.NewChannel) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	s := &session{c: c, ch: ch, exited: make(chan struct{})}
	if !c.addSession(s) {
		if msg := c.endingReason(); msg != "" {
			fmt.Fprintf(ch.Stderr(), "%s\r\n", msg)
		}
		ch.Close()
		return
	}
	defer c.removeSession(s)
	done := make(chan struct{})
	go func() {
		// Requests after the start: window changes, signals, and replies for the rest.
		defer close(done)
		for req := range reqs {
			ok := s.request(req)
			if req.WantReply {
				req.Reply(ok, nil)
			}
		}
	}()
	<-done
	// The client closed the channel (or the connection went): whatever still runs is hung up.
	s.end("")
	<-s.waitDone()
}

// waitDone is closed when the session's process (if one started) has been dealt with.
func (s *session) waitDone() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return s.exited
}

func (s *session) request(req *ssh.Request) bool {
	switch req.Type {
	case "pty-req":
		var p ptyRequest
		if ssh.Unmarshal(req.Payload, &p) != nil || s.isStarted() {
			return false
		}
		s.pty = &p
		return true
	case "env":
		var kv struct{ Name, Value string }
		if ssh.Unmarshal(req.Payload, &kv) != nil || s.isStarted() {
			return false
		}
		if !acceptClientEnv(kv.Name, kv.Value) {
			s.c.s.opts.Logf("ssh: %v: ignored environment variable %q from the client", s.c, kv.Name)
			return false
		}
		s.env = append(s.env, kv.Name+"="+kv.Value)
		return true
	case "auth-agent-req@openssh.com":
		if !s.c.action.AllowAgentForwarding || s.isStarted() {
			return false
		}
		s.agent = true
		return true
	case "window-change":
		var w struct{ Columns, Rows, Width, Height uint32 }
		if ssh.Unmarshal(req.Payload, &w) != nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ptmx != nil {
			pty.Setsize(s.ptmx, &pty.Winsize{Rows: clamp16(w.Rows), Cols: clamp16(w.Columns)})
		} else if s.pty != nil {
			s.pty.Columns, s.pty.Rows = w.Columns, w.Rows
		}
		return true
	case "signal":
		var sig struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &sig) != nil {
			return false
		}
		n, ok := signals[sig.Signal]
		if !ok {
			return false
		}
		s.signalGroup(n)
		return true
	case "shell", "exec", "subsystem":
		return s.start(req)
	}
	// x11-req and whatever else: not offered.
	return false
}

func (s *session) isStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

func clamp16(v uint32) uint16 { return uint16(min(v, 0xffff)) }

var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE, "HUP": syscall.SIGHUP,
	"ILL": syscall.SIGILL, "INT": syscall.SIGINT, "KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE,
	"QUIT": syscall.SIGQUIT, "SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

func signalName(sig syscall.Signal) string {
	for name, n := range signals {
		if n == sig {
			return name
		}
	}
	return "KILL"
}

// start runs what the client asked for: its reply is sent before any output.
func (s *session) start(req *ssh.Request) bool {
	s.mu.Lock()
	if s.started || s.ended {
		s.mu.Unlock()
		return false
	}
	s.started = true
	s.mu.Unlock()

	c := s.c
	var cmd *exec.Cmd
	switch req.Type {
	case "subsystem":
		var sub struct{ Name string }
		if ssh.Unmarshal(req.Payload, &sub) != nil || sub.Name != "sftp" {
			s.fail(req, "only the sftp subsystem is offered")
			return false
		}
		cmd = sshchild.Command(sshchild.ModeSFTP, c.child, "")
	case "exec":
		var e struct{ Command string }
		if ssh.Unmarshal(req.Payload, &e) != nil {
			s.fail(req, "bad exec request")
			return false
		}
		shell := c.user.Shell
		if shell == "" {
			shell = "/bin/sh"
		}
		cmd = sshchild.Command(sshchild.ModeExec, c.child, shell, filepath.Base(shell), "-c", e.Command)
	default: // shell: a login shell, "-sh" by the usual convention
		shell := c.user.Shell
		if shell == "" {
			shell = "/bin/sh"
		}
		cmd = sshchild.Command(sshchild.ModeExec, c.child, shell, "-"+filepath.Base(shell))
	}
	agent := ""
	if s.agent {
		var err error
		if agent, err = c.agentSocket(); err != nil {
			c.s.opts.Logf("ssh: %v: agent forwarding: %v", c, err)
			agent = ""
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var term, tty string
	var toClose []*os.File
	var stdin io.WriteCloser
	var outputs []io.Reader
	var stderr io.Reader
	if s.pty != nil && req.Type != "subsystem" {
		ptmx, t, err := pty.Open()
		if err != nil {
			s.fail(req, "cannot allocate a terminal")
			return false
		}
		// The terminal is the user's while the session lasts.
		t.Chown(int(c.user.UID), -1)
		t.Chmod(0o620)
		pty.Setsize(ptmx, &pty.Winsize{Rows: clamp16(s.pty.Rows), Cols: clamp16(s.pty.Columns)})
		cmd.Stdin, cmd.Stdout, cmd.Stderr = t, t, t
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		term, tty = s.pty.Term, t.Name()
		toClose = append(toClose, t)
		stdin = ptmx
		outputs = []io.Reader{ptmx}
		s.mu.Lock()
		s.ptmx = ptmx
		s.mu.Unlock()
	} else {
		inR, inW, err1 := os.Pipe()
		outR, outW, err2 := os.Pipe()
		errR, errW, err3 := os.Pipe()
		if err := errors.Join(err1, err2, err3); err != nil {
			for _, f := range []*os.File{inR, inW, outR, outW, errR, errW} {
				if f != nil {
					f.Close()
				}
			}
			s.fail(req, "cannot start the session")
			return false
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		toClose = append(toClose, inR, outW, errW)
		stdin, outputs, stderr = inW, []io.Reader{outR}, errR
	}
	cmd.Env = append(append([]string{}, s.env...), loginEnv(c.user, c.id, term, tty, agent)...)
	err := cmd.Start()
	for _, f := range toClose {
		f.Close()
	}
	if err != nil {
		c.s.opts.Logf("ssh: %v: starting the session: %v", c, err)
		s.fail(req, "cannot start the session")
		return false
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	c.s.opts.Logf("ssh: %v: %s started (pid %d)", c, req.Type, cmd.Process.Pid)
	if req.WantReply {
		req.Reply(true, nil)
		req.WantReply = false
	}
	go s.run(cmd, stdin, outputs[0], stderr)
	return true
}

// fail answers a failed start with a message on stderr and ends the channel.
func (s *session) fail(req *ssh.Request, msg string) {
	if req.WantReply {
		req.Reply(false, nil)
		req.WantReply = false
	}
	fmt.Fprintf(s.ch.Stderr(), "skein: %s\r\n", msg)
	s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{1}))
	s.ch.Close()
	s.mu.Lock()
	s.started = false
	s.ended = true
	s.mu.Unlock()
}

// run moves bytes until the process exits and its output is drained, then reports its exit
// status, sends EOF, and closes the channel — in that order, so no output is ever lost.
func (s *session) run(cmd *exec.Cmd, stdin io.WriteCloser, stdout, stderr io.Reader) {
	defer close(s.exited)
	c := s.c
	var timer *time.Timer
	if d := c.action.SessionDuration; d > 0 {
		timer = time.AfterFunc(d, func() { s.end(fmt.Sprintf("Session timeout of %v elapsed.", d)) })
	}
	go func() {
		io.Copy(stdin, s.ch)
		if s.ptmx == nil {
			stdin.Close()
		}
	}()
	var outWG sync.WaitGroup
	outWG.Go(func() { io.Copy(s.ch, stdout) })
	if stderr != nil {
		outWG.Go(func() { io.Copy(s.ch.Stderr(), stderr) })
	}
	err := cmd.Wait()
	if timer != nil {
		timer.Stop()
	}
	drained := make(chan struct{})
	go func() { outWG.Wait(); close(drained) }()
	if s.ptmx != nil {
		// The terminal may stay open in a background process: read what is there, then go.
		s.ptmx.SetReadDeadline(time.Now().Add(ptyDrain))
	}
	<-drained
	if s.ptmx != nil {
		s.ptmx.Close()
	}
	for _, r := range []io.Reader{stdout, stderr} {
		if f, ok := r.(*os.File); ok {
			f.Close()
		}
	}
	s.mu.Lock()
	s.ended = true
	reason := s.reason
	s.mu.Unlock()
	if reason != "" {
		fmt.Fprintf(s.ch.Stderr(), "\r\n\r\n%s\r\n\r\n", reason)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
	case errors.As(err, &ee) && ee.Exited():
		s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(ee.ExitCode())}))
	case errors.As(err, &ee):
		sig := ee.Sys().(syscall.WaitStatus).Signal()
		s.ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{signalName(sig), false, "", ""}))
	default:
		s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{1}))
	}
	s.ch.CloseWrite()
	s.ch.Close()
	c.s.opts.Logf("ssh: %v: session ended (%v)", c, errOrOK(err))
}

func errOrOK(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// end hangs up the session's processes (their whole process group): SIGHUP, then SIGKILL
// if they linger. msg, when set, tells the user why.
func (s *session) end(msg string) {
	s.mu.Lock()
	if msg != "" && s.reason == "" {
		s.reason = msg
	}
	started, ended := s.started, s.ended
	s.mu.Unlock()
	if !started {
		if msg != "" && !ended {
			fmt.Fprintf(s.ch.Stderr(), "%s\r\n", msg)
		}
		s.ch.Close()
		return
	}
	if ended {
		return
	}
	s.signalGroup(syscall.SIGHUP)
	select {
	case <-s.exited:
	case <-time.After(hangupGrace):
		s.signalGroup(syscall.SIGKILL)
		<-s.exited
	}
}

// signalGroup signals the session's process group (its process is a session leader).
func (s *session) signalGroup(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// acceptClientEnv: only the terminal type and the locale come from the client, as OpenSSH's
// default AcceptEnv; never a loader or shell variable.
func acceptClientEnv(name, value string) bool {
	if name == "" || strings.ContainsRune(value, 0) || strings.HasPrefix(name, "LD_") {
		return false
	}
	for _, r := range name {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return name == "TERM" || name == "LANG" || strings.HasPrefix(name, "LC_")
}
