package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/ipc"
)

// TestStateDirProblems (issue 14, S7): a state directory skeind cannot write, or a full one,
// stops it with a clear message, or (once running) fails the change that could not be saved and
// keeps the old state; it never runs on with state it could not keep. Each case runs skeind in
// a child process with its own mount and network namespaces (a tmpfs as the state directory).
func TestStateDirProblems(t *testing.T) {
	if c := os.Getenv("SKEIN_STATEDIR_CHILD"); c != "" {
		stateDirChild(t, c, os.Getenv("SKEIN_STATEDIR"))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount and network namespaces")
	}
	for _, tc := range []struct {
		name string
		want []string // in the child's output
	}{
		{"readonly", []string{"exit 1", "is not writable", "read-only file system"}},
		{"full-at-start", []string{"exit 1", "no space left on device"}},
		{"full-later", []string{"cannot save state", "prefs kept", "stopped cleanly"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestStateDirProblems$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "SKEIN_STATEDIR_CHILD="+tc.name, "SKEIN_STATEDIR="+t.TempDir(), "GORACE=atexit_sleep_ms=0")
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			t.Logf("child:\n%s", out)
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("child output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func stateDirChild(t *testing.T, which, dir string) {
	size := "size=64k"
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, size+",mode=0700"); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	sockDir := t.TempDir()
	args := []string{"--statedir", dir, "--socket", filepath.Join(sockDir, "skeind.sock"), "--tun", "skst0", "--port", "0"}
	fill := func() {
		f, err := os.Create(filepath.Join(dir, "filler"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for {
			if _, err := f.Write(make([]byte, 4096)); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				return
			}
		}
	}
	switch which {
	case "readonly":
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount: %v", err)
		}
		var stderr bytes.Buffer
		code := run(args, &bytes.Buffer{}, &stderr)
		fmt.Printf("exit %d\n%s", code, stderr.String())
	case "full-at-start":
		fill()
		var stderr bytes.Buffer
		code := run(args, &bytes.Buffer{}, &stderr)
		fmt.Printf("exit %d\n%s", code, stderr.String())
		if _, err := os.Stat(filepath.Join(dir, "skeind.state")); err == nil {
			fmt.Println("a state file was left behind")
		}
	case "full-later":
		var stderr syncBuffer
		done := make(chan int, 1)
		go func() { done <- run(args, &bytes.Buffer{}, &stderr) }()
		c := ipc.NewClient(args[3])
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for {
			if _, err := c.Status(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("skeind did not start: %s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		name := "before"
		if _, err := c.SetPrefs(ctx, ipc.PrefsPatch{Hostname: &name}); err != nil {
			t.Fatalf("first change: %v", err)
		}
		fill()
		name = "after"
		_, err := c.SetPrefs(ctx, ipc.PrefsPatch{Hostname: &name})
		fmt.Printf("second change: %v\n", err)
		if p, err := c.Prefs(ctx); err == nil && p.Hostname == "before" {
			fmt.Println("prefs kept")
		}
		// The file on disk still holds the last state that could be saved.
		if b, err := os.ReadFile(filepath.Join(dir, "skeind.state")); err != nil || !strings.Contains(string(b), `"before"`) {
			t.Errorf("state file: %v %s", err, b)
		}
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case code := <-done:
			if code == 0 {
				fmt.Println("stopped cleanly")
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("skeind did not stop: %s", stderr.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
