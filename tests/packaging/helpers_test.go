// Package packaging checks what `make package` builds and the files the packages and the
// Flatpak are made from. `make package-test` runs it (as root, for the clean Debian root);
// a plain `go test ./...` skips it.
package packaging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	packageTest = flag.Bool("package-test", false, "run the packaging checks (make package-test)")
	packagesDir = flag.String("packages", "../../bin/packages", "directory with the .deb files from make package")
	rootCache   = flag.String("root-cache", "/var/cache/skein-pkgtest", "where the debootstrap'd Debian root is kept between runs")
	suite       = flag.String("suite", "", "Debian suite of the clean root (default: the host's VERSION_CODENAME)")
	mirror      = flag.String("mirror", "http://deb.debian.org/debian", "Debian mirror for debootstrap and apt in the clean root")
)

const appID = "io.github.skeinvpn.Skein"

// repo is the repository root (the tests run in tests/packaging).
func repo(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func needPackageTest(t *testing.T) {
	t.Helper()
	if !*packageTest {
		t.Skip("run by make package-test")
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this check needs root (chroot, mounts, capabilities); run make package-test as root")
	}
}

// need fails when a tool the checks use is missing: make deps installs them all.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make deps installs it)", tool)
		}
	}
}

// run runs a command and returns its combined output; it fails the test on error.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// debs finds the two packages in -packages.
func debs(t *testing.T) (skein, desktop string) {
	t.Helper()
	find := func(pattern string) string {
		m, _ := filepath.Glob(filepath.Join(*packagesDir, pattern))
		if len(m) != 1 {
			t.Fatalf("want one %s in %s (make package), found %d", pattern, *packagesDir, len(m))
		}
		return m[0]
	}
	return find("skein_*.deb"), find("skein-desktop_*.deb")
}

// extract unpacks a .deb's files into a new temporary directory.
func extract(t *testing.T, deb string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "", "dpkg-deb", "-x", deb, dir)
	return dir
}

// fyneApp reads the keys of FyneApp.toml this test compares (a flat "Key = value" reader is
// enough for that file).
func fyneApp(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repo(t), "FyneApp.toml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "[") {
			section = strings.Trim(l, "[]") + "."
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		kv[section+strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return kv
}

// tomlStrings turns `"a"` or `["a", "b"]` into its strings.
func tomlStrings(v string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(v, -1) {
		out = append(out, m[1])
	}
	return out
}

// desktopEntry reads a .desktop file's [Desktop Entry] group.
func desktopEntry(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[") {
			in = l == "[Desktop Entry]"
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok && in {
			kv[k] = v
		}
	}
	return kv
}

// manifest is the Flatpak manifest as flatpak-builder reads it.
type manifest struct {
	ID             string   `json:"id"`
	AppID          string   `json:"app-id"`
	Runtime        string   `json:"runtime"`
	RuntimeVersion string   `json:"runtime-version"`
	SDK            string   `json:"sdk"`
	SDKExtensions  []string `json:"sdk-extensions"`
	Command        string   `json:"command"`
	FinishArgs     []string `json:"finish-args"`
	BuildOptions   struct {
		AppendPath string            `json:"append-path"`
		Env        map[string]string `json:"env"`
		BuildArgs  []string          `json:"build-args"`
	} `json:"build-options"`
	Modules []struct {
		Name          string   `json:"name"`
		Buildsystem   string   `json:"buildsystem"`
		BuildCommands []string `json:"build-commands"`
		BuildOptions  struct {
			BuildArgs []string `json:"build-args"`
		} `json:"build-options"`
		Sources []struct {
			Type string `json:"type"`
			Path string `json:"path"`
			URL  string `json:"url"`
		} `json:"sources"`
	} `json:"modules"`
}

// showManifest parses the manifest with flatpak-builder itself. It runs in a scratch
// directory because flatpak-builder leaves a .flatpak-builder state directory behind.
func showManifest(t *testing.T, path string) manifest {
	t.Helper()
	need(t, "flatpak-builder")
	out, err := runErr(t.TempDir(), nil, "flatpak-builder", "--show-manifest", path)
	if err != nil {
		t.Fatalf("flatpak-builder --show-manifest %s: %v\n%s", path, err, out)
	}
	// Warnings may precede the JSON on stderr.
	i := strings.Index(out, "{")
	if i < 0 {
		t.Fatalf("flatpak-builder --show-manifest printed no JSON:\n%s", out)
	}
	var m manifest
	if err := json.Unmarshal([]byte(out[i:]), &m); err != nil {
		t.Fatalf("flatpak-builder --show-manifest: %v\n%s", err, out)
	}
	return m
}

// hostCodename is the host's Debian suite (bookworm, trixie, ...).
func hostCodename() string {
	b, _ := os.ReadFile("/etc/os-release")
	if m := regexp.MustCompile(`(?m)^VERSION_CODENAME=(\w+)`).FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return "bookworm"
}

// rootTarball is the cached debootstrap --variant=minbase of the suite, as a tarball in
// -root-cache: the first call downloads it (about two minutes), later ones find it. A lock
// keeps two runs (CI warms the cache in the background with make pkgtest-root) from both
// downloading it.
func rootTarball(t *testing.T) string {
	t.Helper()
	needRoot(t)
	need(t, "debootstrap", "tar")
	s := *suite
	if s == "" {
		s = hostCodename()
	}
	tarball := filepath.Join(*rootCache, s+"-minbase.tar")
	if err := os.MkdirAll(*rootCache, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(*rootCache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tarball); err != nil {
		tmp, err := os.MkdirTemp(*rootCache, "debootstrap-")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("debootstrap --variant=minbase %s from %s (cached afterwards in %s)", s, *mirror, tarball)
		start := time.Now()
		out, err := runErr("", nil, "debootstrap", "--variant=minbase", s, tmp, *mirror)
		if err != nil {
			os.RemoveAll(tmp)
			t.Fatalf("debootstrap: %v\n%s", err, tail(out, 30))
		}
		run(t, "", "tar", "-C", tmp, "--numeric-owner", "-cf", tarball+".part", ".")
		os.Rename(tarball+".part", tarball)
		os.RemoveAll(tmp)
		t.Logf("debootstrap took %s", time.Since(start).Round(time.Second))
	}
	return tarball
}

// cleanRoot gives a fresh minimal Debian root (debootstrap --variant=minbase) with /proc
// mounted, and removes it afterwards.
func cleanRoot(t *testing.T) string {
	t.Helper()
	need(t, "chroot", "mount", "umount")
	tarball := rootTarball(t)
	dir, err := os.MkdirTemp("", "skein-root-")
	if err != nil {
		t.Fatal(err)
	}
	run(t, "", "tar", "-C", dir, "--numeric-owner", "-xf", tarball)
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		os.WriteFile(filepath.Join(dir, "etc/resolv.conf"), b, 0o644)
	}
	run(t, "", "mount", "-t", "proc", "proc", filepath.Join(dir, "proc"))
	t.Cleanup(func() {
		if out, err := runErr("", nil, "umount", filepath.Join(dir, "proc")); err != nil {
			// Never remove a tree that still has a mount in it.
			t.Errorf("umount %s/proc: %v %s; leaving %s in place", dir, err, out, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// inRoot runs a command chrooted into root with a plain environment.
func inRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := inRootErr(root, args...)
	if err != nil {
		t.Fatalf("in the clean root: %s: %v\n%s", strings.Join(args, " "), err, tail(out, 40))
	}
	return out
}

func inRootErr(root string, args ...string) (string, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "HOME=/root"}
	return runErr("", env, "chroot", append([]string{root}, args...)...)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// The clean Debian root is cached (make pkgtest-root runs only this, so that CI downloads it
// in the background while other tests run).
func TestDebianRootCache(t *testing.T) {
	needPackageTest(t)
	tarball := rootTarball(t)
	fi, err := os.Stat(tarball)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < 10<<20 {
		t.Fatalf("%s has %d bytes: not a Debian root", tarball, fi.Size())
	}
	t.Logf("%s: %d MB", tarball, fi.Size()>>20)
}
