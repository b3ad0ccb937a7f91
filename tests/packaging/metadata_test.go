package packaging

import (
	"encoding/xml"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// metainfo is the part of the AppStream file the checks read.
type metainfo struct {
	ID         string `xml:"id"`
	Name       string `xml:"name"`
	Summary    string `xml:"summary"`
	Launchable struct {
		Type  string `xml:"type,attr"`
		Value string `xml:",chardata"`
	} `xml:"launchable"`
	Screenshots []struct {
		Image struct {
			Width  int    `xml:"width,attr"`
			Height int    `xml:"height,attr"`
			URL    string `xml:",chardata"`
		} `xml:"image"`
	} `xml:"screenshots>screenshot"`
	Releases []struct {
		Version     string `xml:"version,attr"`
		Date        string `xml:"date,attr"`
		Description struct {
			Inner string `xml:",innerxml"`
		} `xml:"description"`
	} `xml:"releases>release"`
	Binaries       []string `xml:"provides>binary"`
	ProjectLicense string   `xml:"project_license"`
}

func readMetainfo(t *testing.T, path string) metainfo {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m metainfo
	if err := xml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// The .desktop file passes desktop-file-validate and says what FyneApp.toml says.
func TestDesktopFile(t *testing.T) {
	needPackageTest(t)
	need(t, "desktop-file-validate")
	path := filepath.Join(repo(t), "packaging/linux", appID+".desktop")
	if out, err := runErr("", nil, "desktop-file-validate", path); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("desktop-file-validate: %v\n%s", err, out)
	}
	e := desktopEntry(t, path)
	f := fyneApp(t)
	want := map[string]string{
		"Name":        strings.Trim(f["Details.Name"], `"`),
		"GenericName": strings.Trim(f["LinuxAndBSD.GenericName"], `"`),
		"Comment":     strings.Trim(f["LinuxAndBSD.Comment"], `"`),
		"Categories":  strings.Join(tomlStrings(f["LinuxAndBSD.Categories"]), ";") + ";",
		"Keywords":    strings.Join(tomlStrings(f["LinuxAndBSD.Keywords"]), ";") + ";",
		"Icon":        appID,
		// %F: a file manager's "Open with Skein" hands the files over to send (a picker asks
		// the peer); launched without files it is a plain start.
		"Exec": "skein-gui --send %F",
		// The desktop starts the app (or reaches the running one) through the session bus: it
		// calls org.freedesktop.Application on the app ID, which the D-Bus service file starts.
		"DBusActivatable": "true",
		"Type":            "Application",
		// Fyne names its windows' X11 class after the app (fyne package writes the same).
		"StartupWMClass": strings.Trim(f["Details.Name"], `"`),
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s.desktop %s=%q, want %q (FyneApp.toml)", appID, k, e[k], v)
		}
	}
}

// The metainfo passes appstreamcli validate and agrees with FyneApp.toml, the .desktop file
// and the screenshot in the repository.
func TestMetainfo(t *testing.T) {
	needPackageTest(t)
	need(t, "appstreamcli")
	path := filepath.Join(repo(t), "packaging/linux", appID+".metainfo.xml")
	out, err := runErr("", nil, "appstreamcli", "validate", "--no-net", "--explain", path)
	if err != nil {
		t.Errorf("appstreamcli validate --no-net: %v\n%s", err, out)
	}
	t.Logf("appstreamcli validate --no-net: %s", lastNonEmpty(out))
	m := readMetainfo(t, path)
	f := fyneApp(t)
	if m.ID != appID || strings.Trim(f["Details.ID"], `"`) != appID {
		t.Errorf("metainfo id %q, FyneApp.toml ID %s, want %s", m.ID, f["Details.ID"], appID)
	}
	if m.Name != strings.Trim(f["Details.Name"], `"`) {
		t.Errorf("metainfo name %q, FyneApp.toml %s", m.Name, f["Details.Name"])
	}
	if m.Launchable.Type != "desktop-id" || m.Launchable.Value != appID+".desktop" {
		t.Errorf("launchable %+v", m.Launchable)
	}
	if len(m.Releases) == 0 {
		t.Fatal("metainfo has no releases")
	}
	if v := strings.Trim(f["Details.Version"], `"`); m.Releases[0].Version != v {
		t.Errorf("newest release in the metainfo is %s, FyneApp.toml's Version is %s", m.Releases[0].Version, v)
	}
	for _, r := range m.Releases {
		if !strings.Contains(r.Description.Inner, "<") {
			t.Errorf("release %s has no release notes", r.Version)
		}
	}
	if len(m.Screenshots) == 0 {
		t.Fatal("metainfo has no screenshots")
	}
	for _, s := range m.Screenshots {
		u := strings.TrimSpace(s.Image.URL)
		mm := regexp.MustCompile(`^https://raw\.githubusercontent\.com/skeinvpn/skein/[^/]+/(.+)$`).FindStringSubmatch(u)
		if mm == nil {
			t.Errorf("screenshot %q is not a file of the repository", u)
			continue
		}
		file, err := os.Open(filepath.Join(repo(t), mm[1]))
		if err != nil {
			t.Errorf("screenshot %s: %v", u, err)
			continue
		}
		cfg, err := png.DecodeConfig(file)
		file.Close()
		if err != nil || cfg.Width != s.Image.Width || cfg.Height != s.Image.Height {
			t.Errorf("screenshot %s: %v, %dx%d, metainfo says %dx%d", mm[1], err, cfg.Width, cfg.Height, s.Image.Width, s.Image.Height)
		}
	}
	if len(m.Binaries) != 1 || m.Binaries[0] != "skein-gui" {
		t.Errorf("provides binaries %q, want skein-gui", m.Binaries)
	}
	// Flathub requires the project's licence; it is the one in LICENSE.
	own, err := os.ReadFile(filepath.Join(repo(t), "LICENSE"))
	if m.ProjectLicense != "BSD-3-Clause" || err != nil || !strings.HasPrefix(string(own), "BSD 3-Clause License\n") {
		t.Errorf("project_license %q (LICENSE: %v), want BSD-3-Clause as in LICENSE", m.ProjectLicense, err)
	}
}

// FyneApp.toml has what `fyne package` needs, and its icon is the packages' icon source.
func TestFyneAppToml(t *testing.T) {
	needPackageTest(t)
	f := fyneApp(t)
	for _, k := range []string{"Details.ID", "Details.Name", "Details.Version", "Details.Icon", "Details.Build"} {
		if f[k] == "" {
			t.Errorf("FyneApp.toml has no %s", k)
		}
	}
	if !regexp.MustCompile(`^"\d+\.\d+\.\d+"$`).MatchString(f["Details.Version"]) {
		t.Errorf("FyneApp.toml Version %s is not X.Y.Z (fyne package wants semver)", f["Details.Version"])
	}
	icon := filepath.Join(repo(t), strings.Trim(f["Details.Icon"], `"`))
	file, err := os.Open(icon)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	cfg, err := png.DecodeConfig(file)
	if err != nil || cfg.Width != cfg.Height || cfg.Width < 256 {
		t.Errorf("%s: %v, %dx%d; want a square PNG of at least 256 px", icon, err, cfg.Width, cfg.Height)
	}
}

// checkDBusService checks the D-Bus service file that starts the app for its DBusActivatable
// desktop file: named after the app ID, running skein-gui from bindir in the tray.
func checkDBusService(t *testing.T, path, bindir string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("no D-Bus service file: %v", err)
		return
	}
	kv := map[string]string{}
	group := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[") {
			group = l
		} else if k, v, ok := strings.Cut(l, "="); ok && group == "[D-BUS Service]" {
			kv[k] = v
		}
	}
	if kv["Name"] != appID || kv["Exec"] != bindir+"/skein-gui --minimized" {
		t.Errorf("%s: Name=%q Exec=%q, want %s and %s/skein-gui --minimized", path, kv["Name"], kv["Exec"], appID, bindir)
	}
}

func lastNonEmpty(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l[len(l)-1])
}
