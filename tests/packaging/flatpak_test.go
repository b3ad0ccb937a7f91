package packaging

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const manifestPath = "packaging/flatpak/" + appID + ".yml"

// Every permission the Flatpak asks for, and why. A new one must be added here on purpose.
var allowedFinishArgs = map[string]string{
	"--socket=x11":               "display: GLFW is built for X11 (XWayland on Wayland sessions)",
	"--share=ipc":                "X11 shared memory",
	"--device=dri":               "OpenGL",
	"--filesystem=/run/skein:ro": "skeind's socket",
	"--talk-name=org.kde.StatusNotifierWatcher": "the tray icon",
	"--talk-name=org.freedesktop.Notifications": "notifications",
	"--filesystem=xdg-download":                 "received files (Taildrop)",
	"--socket=wayland":                          "only with a Wayland (-tags wayland) build",
	"--socket=fallback-x11":                     "only with a Wayland (-tags wayland) build",
}

// The manifest parses with flatpak-builder, builds with the flatpak tag from local sources,
// and asks for no more than the app needs.
func TestFlatpakManifest(t *testing.T) {
	needPackageTest(t)
	m := showManifest(t, filepath.Join(repo(t), manifestPath))
	id := m.ID
	if id == "" {
		id = m.AppID
	}
	if id != appID || m.Command != "skein-gui" {
		t.Errorf("manifest id %q command %q, want %s and skein-gui", id, m.Command, appID)
	}
	if m.Runtime != "org.freedesktop.Platform" || m.SDK != "org.freedesktop.Sdk" {
		t.Errorf("runtime %s, sdk %s: want the freedesktop runtime and SDK", m.Runtime, m.SDK)
	}
	if !slices.Contains(m.SDKExtensions, "org.freedesktop.Sdk.Extension.golang") {
		t.Errorf("sdk-extensions %q lacks org.freedesktop.Sdk.Extension.golang", m.SDKExtensions)
	}
	if m.BuildOptions.Env["GOFLAGS"] == "" || !strings.Contains(m.BuildOptions.Env["GOFLAGS"], "-mod=vendor") || m.BuildOptions.Env["GOPROXY"] != "off" {
		t.Errorf("build env %v: want GOFLAGS with -mod=vendor and GOPROXY=off (offline build)", m.BuildOptions.Env)
	}
	if len(m.Modules) != 1 {
		t.Fatalf("want one module, have %d", len(m.Modules))
	}
	mod := m.Modules[0]
	cmds := strings.Join(mod.BuildCommands, "\n")
	if !strings.Contains(cmds, "-tags flatpak") {
		t.Errorf("build-commands do not build with Fyne's flatpak tag:\n%s", cmds)
	}
	for _, s := range mod.Sources {
		if s.URL != "" || s.Type != "dir" {
			t.Errorf("source %+v: want only the local directory prepare.sh makes (offline)", s)
		}
	}
	for _, a := range append(m.BuildOptions.BuildArgs, mod.BuildOptions.BuildArgs...) {
		if strings.Contains(a, "network") {
			t.Errorf("build-args %q: the build must not need the network", a)
		}
	}

	args := m.FinishArgs
	for _, p := range finishArgProblems(args, cmds) {
		t.Error(p)
	}
	t.Logf("finish-args: %s", strings.Join(args, " "))
}

// finishArgProblems says what is wrong with a manifest's finish-args, given its build commands.
func finishArgProblems(args []string, buildCommands string) []string {
	var bad []string
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--filesystem=host"), strings.HasPrefix(a, "--filesystem=home"),
			a == "--filesystem=/", strings.HasPrefix(a, "--filesystem=~"):
			bad = append(bad, a+": no host or home filesystem")
		case a == "--device=all":
			bad = append(bad, a+": only dri")
		case a == "--socket=session-bus" || a == "--socket=system-bus":
			bad = append(bad, a+": talk to named services only")
		case strings.HasPrefix(a, "--own-name="):
			bad = append(bad, a+": the app owns only its app ID (single instance), which Flatpak grants without --own-name; the tray registers by object path")
		case a == "--share=network":
			bad = append(bad, a+": the app talks to skeind over its socket only")
		case strings.HasPrefix(a, "--system-talk-name="):
			bad = append(bad, a+": no system bus")
		case strings.HasPrefix(a, "--talk-name="):
			if _, ok := allowedFinishArgs[a]; !ok {
				bad = append(bad, a+": session bus names are limited to the tray watcher and notifications")
			}
		default:
			if _, ok := allowedFinishArgs[a]; !ok {
				bad = append(bad, a+" is new: add it to allowedFinishArgs with its reason")
			}
		}
	}
	for _, want := range []string{"--filesystem=/run/skein:ro", "--filesystem=xdg-download", "--device=dri",
		"--talk-name=org.kde.StatusNotifierWatcher", "--share=ipc"} {
		if !slices.Contains(args, want) {
			bad = append(bad, "missing "+want)
		}
	}
	// fallback-x11 grants X11 only where there is no Wayland: then the binary has to be a
	// Wayland build, or it gets no display at all on Wayland sessions.
	if !slices.Contains(args, "--socket=x11") &&
		(!slices.Contains(args, "--socket=wayland") || !strings.Contains(buildCommands, "wayland")) {
		bad = append(bad, "an X11 build needs --socket=x11; wayland + fallback-x11 needs a -tags wayland build")
	}
	return bad
}

// The finish-args check itself catches what it should (runs in every go test).
func TestFinishArgProblems(t *testing.T) {
	good := []string{"--socket=x11", "--share=ipc", "--device=dri", "--filesystem=/run/skein:ro",
		"--talk-name=org.kde.StatusNotifierWatcher", "--filesystem=xdg-download"}
	if p := finishArgProblems(good, "go build -tags flatpak"); len(p) != 0 {
		t.Errorf("good finish-args flagged: %q", p)
	}
	for _, extra := range []string{"--filesystem=host", "--filesystem=home:ro", "--device=all", "--socket=session-bus",
		"--own-name=org.kde.StatusNotifierItem-2-1", "--share=network", "--talk-name=org.freedesktop.secrets",
		"--system-talk-name=org.freedesktop.NetworkManager", "--env=FOO=1"} {
		if p := finishArgProblems(append(slices.Clone(good), extra), "go build -tags flatpak"); len(p) == 0 {
			t.Errorf("%s not flagged", extra)
		}
	}
	wl := []string{"--socket=wayland", "--socket=fallback-x11", "--share=ipc", "--device=dri", "--filesystem=/run/skein:ro",
		"--talk-name=org.kde.StatusNotifierWatcher", "--filesystem=xdg-download"}
	if p := finishArgProblems(wl, "go build -tags flatpak"); len(p) == 0 {
		t.Errorf("wayland + fallback-x11 with an X11 build not flagged")
	}
	if p := finishArgProblems(wl, "go build -tags flatpak,wayland"); len(p) != 0 {
		t.Errorf("wayland build flagged: %q", p)
	}
}

// prepare.sh lays out an offline build directory (sources + vendor/) without touching the
// repository, and the manifest's own build commands build and install the app from it with
// no module downloads: GOPROXY=off, an empty module cache, -mod=vendor.
func TestFlatpakOfflineBuild(t *testing.T) {
	needPackageTest(t)
	need(t, "go", "desktop-file-validate", "appstreamcli")
	r := repo(t)
	m := showManifest(t, filepath.Join(r, manifestPath))
	dir := t.TempDir()
	run(t, r, "packaging/flatpak/prepare.sh", dir)
	if exists(filepath.Join(r, "vendor")) {
		t.Fatalf("prepare.sh left a vendor/ directory in the repository")
	}
	src := filepath.Join(dir, m.Modules[0].Sources[0].Path)
	if !exists(filepath.Join(src, "vendor/modules.txt")) || !exists(filepath.Join(dir, appID+".yml")) {
		t.Fatalf("prepare.sh: no vendor/modules.txt in %s or no manifest in %s", src, dir)
	}
	app := filepath.Join(t.TempDir(), "app")
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := m.BuildOptions.Env[k]; !set && k != "GOMODCACHE" && k != "GOFLAGS" {
			env = append(env, kv)
		}
	}
	for k, v := range m.BuildOptions.Env {
		if k == "GOCACHE" || k == "GOPATH" {
			continue // the host's build cache keeps this fast; it holds no modules
		}
		env = append(env, k+"="+v)
	}
	env = append(env, "GOMODCACHE="+t.TempDir(), "FLATPAK_DEST="+app, "FLATPAK_ID="+appID)
	for _, c := range m.Modules[0].BuildCommands {
		out, err := runErr(src, env, "sh", "-ec", c)
		if err != nil {
			t.Fatalf("build command %q: %v\n%s", c, err, tail(out, 30))
		}
	}
	bin := filepath.Join(app, "bin/skein-gui")
	info := run(t, "", "go", "version", "-m", bin)
	if !strings.Contains(info, "-tags=flatpak") {
		t.Errorf("skein-gui was not built with the flatpak tag:\n%s", info)
	}
	if out := run(t, "", bin, "--version"); !strings.Contains(out, "skein-gui") {
		t.Errorf("skein-gui --version: %q", out)
	}
	checkCopyright(t, filepath.Join(app, "share/doc/skein-desktop/copyright"), bin)
	// Exported by flatpak (which rewrites Exec to flatpak run): the desktop file is
	// DBusActivatable, so the bus must be able to start the app.
	checkDBusService(t, filepath.Join(app, "share/dbus-1/services", appID+".service"), filepath.Join(app, "bin"))
	for _, f := range []string{
		"share/applications/" + appID + ".desktop",
		"share/metainfo/" + appID + ".metainfo.xml",
		"share/icons/hicolor/128x128/apps/" + appID + ".png",
		"share/icons/hicolor/256x256/apps/" + appID + ".png",
	} {
		if !exists(filepath.Join(app, f)) {
			t.Errorf("the Flatpak build installs no /app/%s", f)
		}
	}
	if out, err := runErr("", nil, "desktop-file-validate", filepath.Join(app, "share/applications", appID+".desktop")); err != nil {
		t.Errorf("desktop-file-validate (Flatpak): %v\n%s", err, out)
	}
	if out, err := runErr("", nil, "appstreamcli", "validate", "--no-net", filepath.Join(app, "share/metainfo", appID+".metainfo.xml")); err != nil {
		t.Errorf("appstreamcli validate (Flatpak): %v\n%s", err, out)
	}
	t.Logf("built /app/bin/skein-gui offline from %s (vendored modules, -tags flatpak)", filepath.Base(src))
}
