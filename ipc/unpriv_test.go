package ipc_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// childEnv, when set, makes the test binary act as an unprivileged client of the socket it
// names instead of running tests.
const childEnv = "SKEIN_IPC_TEST_CHILD_SOCKET"

type childReport struct {
	UID       int        `json:"uid"`
	State     ipc.State  `json:"state"`
	StatusErr *ipc.Error `json:"statusErr"`
	UpErr     *ipc.Error `json:"upErr"`
	DownErr   *ipc.Error `json:"downErr"`
	PrefsErr  *ipc.Error `json:"prefsErr"`
	// NetcheckCached: the helper answered netcheck with its last report, not a new run.
	NetcheckCached bool       `json:"netcheckCached"`
	SwitchErr      *ipc.Error `json:"switchErr"`
	RemoveErr      *ipc.Error `json:"removeErr"`
	SuggestOK      bool       `json:"suggestOK"`
}

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		// A child of the tests below, running as another user.
		if reqs := os.Getenv(childRoutesEnv); reqs != "" {
			os.Exit(runRouteChild(path, reqs))
		}
		if n := os.Getenv(childFloodEnv); n != "" {
			os.Exit(runFloodChild(path, n))
		}
		os.Exit(runChild(path))
	}
	code := m.Run()
	if childDir != "" {
		os.RemoveAll(childDir)
	}
	os.Exit(code)
}

func runChild(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := ipc.NewClient(path)
	asErr := func(err error) *ipc.Error {
		if err == nil {
			return nil
		}
		var e *ipc.Error
		if errors.As(err, &e) {
			return e
		}
		return &ipc.Error{Code: "not_typed", Message: err.Error()}
	}
	rep := childReport{UID: os.Getuid()}
	st, err := c.Status(ctx)
	rep.State, rep.StatusErr = st.State, asErr(err)
	_, err = c.Up(ctx, ipc.UpRequest{})
	rep.UpErr = asErr(err)
	_, err = c.Down(ctx)
	rep.DownErr = asErr(err)
	op := "nobody"
	_, err = c.SetPrefs(ctx, ipc.PrefsPatch{Operator: &op})
	rep.PrefsErr = asErr(err)
	nc, _ := c.Netcheck(ctx)
	rep.NetcheckCached = nc.Cached
	_, err = c.SwitchProfile(ctx, "work")
	rep.SwitchErr = asErr(err)
	_, err = c.RemoveProfile(ctx, "old")
	rep.RemoveErr = asErr(err)
	_, err = c.SuggestExitNode(ctx)
	rep.SuggestOK = err == nil
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// TestUnprivilegedClient runs a real client as uid 65534 against the socket: reads work,
// changes are refused with needs_operator, all decided from SO_PEERCRED.
func TestUnprivilegedClient(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to switch to uid 65534")
	}
	dir := t.TempDir()
	// t.TempDir and its parent are 0700; the unprivileged child must reach the socket and
	// exec its copy of the test binary.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "ipc.test")
	copyFile(t, bin)
	sock := filepath.Join(dir, "run", "skeind.sock")

	st := testStatus()
	st.Profiles = []ipc.Profile{{ID: "a", Name: "home", Current: true}, {ID: "b", Name: "work"}, {ID: "c", Name: "old"}}
	st.SuggestedExitNode = &ipc.ExitNodeSuggestion{ID: "x", Name: "x"}
	b := ipctest.NewBackend(st, ipc.Prefs{})
	b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		t.Error("backend Up called for an unprivileged caller")
		return ipc.UpResponse{}, nil
	})
	b.OnNetcheck(func(ctx context.Context) (ipc.NetcheckReport, error) {
		return ipc.NetcheckReport{Cached: !ipc.CallerMayChange(ctx)}, nil
	})
	ipctest.ServeAt(t, sock, b, ipc.ServerOptions{})

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = []string{childEnv + "=" + sock, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
			t.Skipf("cannot switch to uid 65534 here: %v", err)
		}
		t.Fatalf("child: %v\n%s", err, out)
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if rep.UID != 65534 {
		t.Fatalf("child ran as uid %d", rep.UID)
	}
	if rep.StatusErr != nil || rep.State != ipc.StateRunning {
		t.Errorf("status as nobody: %s, %+v", rep.State, rep.StatusErr)
	}
	for name, e := range map[string]*ipc.Error{"up": rep.UpErr, "down": rep.DownErr, "switch": rep.SwitchErr, "remove profile": rep.RemoveErr} {
		if e == nil || e.Code != ipc.ErrNeedsOperator || e.Fix != "sudo skein set --operator=$USER" {
			t.Errorf("%s as nobody: %+v, want needs_operator", name, e)
		}
	}
	if rep.PrefsErr == nil || rep.PrefsErr.Code != ipc.ErrNeedsOperator {
		t.Errorf("set operator as nobody: %+v", rep.PrefsErr)
	}
	if !rep.NetcheckCached {
		t.Error("a plain user started a netcheck run; only root and the operator may")
	}
	if !rep.SuggestOK {
		t.Error("an exit-node suggestion (a read) refused to nobody")
	}
	if len(b.Switches()) != 0 || len(b.Status().Profiles) != 3 {
		t.Errorf("nobody's requests changed the profiles: switches %v, %d profiles", b.Switches(), len(b.Status().Profiles))
	}

	// Once nobody is the operator, changes are allowed, but changing the operator still is not.
	op := "nobody"
	if _, err := b.SetPrefs(context.Background(), ipc.PrefsPatch{Operator: &op}); err != nil {
		t.Fatal(err)
	}
	b.OnUp(nil)
	out, err = cmd2(cmd).Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	rep = childReport{}
	json.Unmarshal(out, &rep)
	if rep.UpErr != nil || rep.DownErr != nil || rep.SwitchErr != nil || rep.RemoveErr != nil {
		t.Errorf("operator up/down/switch/remove: %+v %+v %+v %+v", rep.UpErr, rep.DownErr, rep.SwitchErr, rep.RemoveErr)
	}
	if rep.NetcheckCached {
		t.Error("the operator got the last netcheck report, not a new run")
	}
	if rep.PrefsErr == nil || rep.PrefsErr.Code != ipc.ErrNeedsRoot {
		t.Errorf("operator setting operator: %+v, want needs_root", rep.PrefsErr)
	}
}

// cmd2 is a fresh copy of an exec.Cmd, which cannot be run twice.
func cmd2(c *exec.Cmd) *exec.Cmd {
	n := exec.Command(c.Path, c.Args[1:]...)
	n.Dir, n.Env, n.SysProcAttr = c.Dir, c.Env, c.SysProcAttr
	return n
}

func copyFile(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
