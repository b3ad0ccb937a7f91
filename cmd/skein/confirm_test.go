package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

// TestUpAsksBeforeChangingServer (hole 6): skeind refuses to move a logged-in machine to
// another login server unless told to; on a terminal skein asks, elsewhere it shows the fix.
func TestUpAsksBeforeChangingServer(t *testing.T) {
	e := newEnv(t, runningStatus())
	e.b.OnUp(func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
		if req.LoginServer != "https://other.example" || req.ForceReauth {
			return ipc.UpResponse{State: ipc.StateRunning}, nil
		}
		return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrNeedsConfirmation,
			Message: "this machine is logged in to https://hs.example; logging in to https://other.example replaces that login",
			Fix:     "skein up --login-server=https://other.example --force-reauth"}
	})
	run := func(tty bool, answer string) (int, string) {
		var out, errb bytes.Buffer
		c := &cli{ctx: context.Background(), stdin: strings.NewReader(answer), stdout: &out, stderr: &errb, socket: e.sock}
		if tty {
			c.isTTY = func(io.Writer) bool { return true }
		}
		return cmdUp(c, []string{"--login-server", "https://other.example"}), errb.String()
	}
	forced := func() int {
		n := 0
		for _, r := range e.b.UpRequests() {
			if r.ForceReauth {
				n++
			}
		}
		return n
	}

	code, errs := run(false, "y\n")
	if code != exitFail || strings.Contains(errs, "Go on?") || !strings.Contains(errs, "--force-reauth") || forced() != 0 {
		t.Errorf("without a terminal: code %d, stderr %q, %d forced", code, errs, forced())
	}
	code, errs = run(true, "n\n")
	if code != exitFail || !strings.Contains(errs, "replaces that login.\nGo on? [y/N]") || forced() != 0 {
		t.Errorf("answered no: code %d, stderr %q, %d forced", code, errs, forced())
	}
	code, errs = run(true, "y\n")
	if code != exitOK || forced() != 1 {
		t.Errorf("answered yes: code %d, stderr %q, %d forced", code, errs, forced())
	}
}
