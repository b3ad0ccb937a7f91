package userdb

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeGetent puts a getent on PATH that knows one NSS-only user, nssalice (uid 4242), logs
// every call to the returned file, and otherwise says "not found" (exit 2) like the real one.
func fakeGetent(t *testing.T, body string) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls")
	if body == "" {
		body = `case "$2" in
nssalice|4242) echo 'nssalice:x:4242:4243:NSS Alice:/home/nssalice:/bin/sh' ;;
*) exit 2 ;;
esac`
	}
	script := "#!/bin/sh\necho \"$@\" >> '" + log + "'\n[ \"$1\" = passwd ] || exit 1\n" + body + "\n"
	if err := os.WriteFile(filepath.Join(dir, "getent"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return log
}

func calls(t *testing.T, log string) string {
	b, err := os.ReadFile(log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A user only NSS knows is found through getent, by name and by uid; /etc/passwd users never
// reach getent; unknown users are ErrUnknown.
func TestNSSFallback(t *testing.T) {
	log := fakeGetent(t, "")
	u, err := LookupName("nssalice")
	if err != nil || u != (User{Name: "nssalice", UID: 4242, GID: 4243, Home: "/home/nssalice", Shell: "/bin/sh"}) {
		t.Fatalf("LookupName(nssalice) = %+v, %v", u, err)
	}
	if u, err := LookupUID(4242); err != nil || u.Name != "nssalice" {
		t.Fatalf("LookupUID(4242) = %+v, %v", u, err)
	}
	if got := calls(t, log); got != "passwd nssalice\npasswd 4242" {
		t.Errorf("getent calls %q", got)
	}
	os.Remove(log)
	if u, err := LookupName("root"); err != nil || u.UID != 0 {
		t.Fatalf("LookupName(root) = %+v, %v", u, err)
	}
	if u, err := LookupUID(0); err != nil || u.Name != "root" {
		t.Fatalf("LookupUID(0) = %+v, %v", u, err)
	}
	if got := calls(t, log); got != "" {
		t.Errorf("root is in /etc/passwd, yet getent was asked: %q", got)
	}
	if _, err := LookupName("nosuchskeinuser"); !errors.Is(err, ErrUnknown) {
		t.Errorf("LookupName(nosuchskeinuser) = %v, want ErrUnknown", err)
	}
	if _, err := LookupUID(4294967295); !errors.Is(err, ErrUnknown) {
		t.Errorf("LookupUID(-1) = %v, want ErrUnknown", err)
	}
}

// Names that are options, numbers, paths or passwd syntax never reach getent.
func TestInvalidNamesNeverReachGetent(t *testing.T) {
	log := fakeGetent(t, "")
	for _, name := range []string{"", "-s", "--service=files", "4242", "0", "a:b", "a b", "../etc",
		"alice\n", "alice\x00", "$", "alice$x", ".alice", "-alice", strings.Repeat("a", 257), "ålice"} {
		if _, err := LookupName(name); err == nil || errors.Is(err, ErrUnknown) {
			t.Errorf("LookupName(%q) = %v, want a validation error", name, err)
		}
	}
	for _, name := range []string{"alice", "Alice_1", "alice.smith", "alice-2", "alice@example.com", "host$", "_apt", "a"} {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q): %v", name, err)
		}
	}
	if got := calls(t, log); got != "" {
		t.Errorf("getent was called with %q", got)
	}
}

// getent's answer is believed only when it is one well-formed line for the user asked.
func TestGetentAnswersChecked(t *testing.T) {
	for name, body := range map[string]string{
		"someone else":  `echo 'mallory:x:0:0::/root:/bin/sh'`,
		"two lines":     `echo 'nssbob:x:1:1::/:/bin/sh'; echo 'nssbob:x:0:0::/:/bin/sh'`,
		"six fields":    `echo 'nssbob:x:1:1::/'`,
		"bad uid":       `echo 'nssbob:x:-1:1::/:/bin/sh'`,
		"uid -1":        `echo 'nssbob:x:4294967295:1::/:/bin/sh'`,
		"huge uid":      `echo 'nssbob:x:99999999999:1::/:/bin/sh'`,
		"empty":         `exit 0`,
		"failure":       `echo boom >&2; exit 1`,
		"endless":       `yes 'nssbob:x:1:1::/:/bin/sh'`,
		"slow (hangs)":  `exec sleep 30`,
		"bad name back": `echo 'nss bob:x:1:1::/:/bin/sh'`,
	} {
		t.Run(name, func(t *testing.T) {
			fakeGetent(t, body)
			old := getentTimeout
			getentTimeout = 300 * time.Millisecond
			defer func() { getentTimeout = old }()
			start := time.Now()
			u, err := LookupName("nssbob")
			if err == nil {
				t.Fatalf("LookupName(nssbob) = %+v, want an error", u)
			}
			if errors.Is(err, ErrUnknown) {
				t.Errorf("error %v should not read as a plain unknown user", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			t.Logf("%v", err)
		})
	}
}

// Without getent at all (a minimal container), /etc/passwd is the only source.
func TestNoGetent(t *testing.T) {
	old := getentPath
	getentPath = "skein-no-such-getent"
	defer func() { getentPath = old }()
	if _, err := LookupName("nssalice"); !errors.Is(err, ErrUnknown) {
		t.Errorf("LookupName without getent = %v, want ErrUnknown", err)
	}
	if u, err := LookupName("root"); err != nil || u.UID != 0 {
		t.Errorf("LookupName(root) = %+v, %v", u, err)
	}
}

// The real getent (glibc NSS) agrees with /etc/passwd about root.
func TestRealGetent(t *testing.T) {
	if _, err := exec.LookPath("getent"); err != nil {
		t.Skip("no getent")
	}
	u, err := getent("root")
	if err != nil || u.UID != 0 || u.Name != "root" {
		t.Fatalf("getent passwd root = %+v, %v", u, err)
	}
	if _, err := getent("nosuchskeinuser"); !errors.Is(err, ErrUnknown) {
		t.Errorf("getent passwd nosuchskeinuser = %v, want ErrUnknown", err)
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add("alice:x:1000:1000:Alice:/home/alice:/bin/bash\n")
	f.Add("a:b:c:d:e:f:g")
	f.Add("root:x:0:0::/root:/bin/sh\nroot:x:0:0::/root:/bin/sh\n")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parsePasswd(s)
		if err != nil {
			return
		}
		if ValidName(u.Name) != nil || u.UID == nobodyUID || strings.Contains(strings.TrimSuffix(s, "\n"), "\n") {
			t.Fatalf("parsePasswd(%q) accepted %+v", s, u)
		}
	})
}

// Login names from the network: short, no options, no numbers, no syntax; the account found
// must carry exactly the name asked for.
func TestLookupLogin(t *testing.T) {
	fakeGetent(t, `case "$2" in
Folded) echo 'folded:x:4300:4300::/home/folded:/bin/sh' ;;
*) exit 2 ;;
esac`)
	for _, bad := range []string{"", "0", "4242", "-oProxyCommand=x", "a;b", "a b", "../x", strings.Repeat("a", 33)} {
		if _, err := LookupLogin(bad); err == nil {
			t.Errorf("LookupLogin(%q) accepted", bad)
		}
	}
	if _, err := LookupLogin("Folded"); err == nil {
		t.Error("an NSS answer for another name was accepted")
	}
	u, err := LookupLogin("root")
	if err != nil || u.UID != 0 || u.Shell == "" || u.Home == "" {
		t.Fatalf("root: %+v %v", u, err)
	}
	gs, err := Groups(u)
	if err != nil || len(gs) == 0 || gs[0] != u.GID {
		t.Fatalf("groups of root: %v %v", gs, err)
	}
}

// Groups of a user only NSS knows come from getent initgroups.
func TestGroupsFromNSS(t *testing.T) {
	fakeGetent(t, "")
	dir := t.TempDir()
	script := "#!/bin/sh\n[ \"$1\" = initgroups ] && [ \"$2\" = nssalice ] && echo 'nssalice 4243 27 100' && exit 0\nexit 2\n"
	os.WriteFile(filepath.Join(dir, "getent"), []byte(script), 0o755)
	old := getentPath
	getentPath = filepath.Join(dir, "getent")
	defer func() { getentPath = old }()
	gs, err := Groups(User{Name: "nssalice", UID: 4242, GID: 4243})
	if err != nil || len(gs) != 3 || gs[0] != 4243 || gs[1] != 27 || gs[2] != 100 {
		t.Fatalf("groups %v %v", gs, err)
	}
}
