package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildCLI builds skein and skeind from this tree, so the test reads the real help texts.
func buildCLI(t *testing.T) (skein, skeind string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/skein", "../../cmd/skeind")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "skein"), filepath.Join(dir, "skeind")
}

// The man page and every completion name each command and flag that 'skein help' and the
// commands' --help show, so they cannot fall behind the CLI.
func TestDocsCoverTheCLI(t *testing.T) {
	skein, skeind := buildCLI(t)
	c, err := LoadCLI(skein)
	if err != nil {
		t.Fatal(err)
	}
	d, err := LoadDaemon(skeind)
	if err != nil {
		t.Fatal(err)
	}
	top, _ := runHelp(skein, "help")
	for _, want := range []string{"up", "down", "status", "version"} {
		if !strings.Contains(top, "  "+want+" ") {
			t.Fatalf("'skein help' does not list %q; the parser's fixture is stale:\n%s", want, top)
		}
	}
	man := ManSkein(c, "2026-01-01", "test")
	bash, zsh, fish := Bash(c), Zsh(c), Fish(c)
	esc := func(s string) string { return strings.ReplaceAll(s, "-", `\-`) }
	for _, cmd := range flat(c) {
		if !strings.Contains(man, ".SS skein "+esc(cmd.Name)) {
			t.Errorf("man page has no section for %q", cmd.Name)
		}
		last := cmd.Name[strings.LastIndex(cmd.Name, " ")+1:]
		for name, text := range map[string]string{"bash": bash, "zsh": zsh, "fish": fish} {
			if !strings.Contains(text, last) {
				t.Errorf("%s completion lacks command %q", name, cmd.Name)
			}
		}
		for _, f := range cmd.Flags {
			if !strings.Contains(man, `\fB\-\-`+esc(f.Name)+`\fR`) {
				t.Errorf("man page lacks skein %s --%s", cmd.Name, f.Name)
			}
			for name, text := range map[string]string{"bash": bash, "zsh": zsh} {
				if !strings.Contains(text, "--"+f.Name) {
					t.Errorf("%s completion lacks skein %s --%s", name, cmd.Name, f.Name)
				}
			}
			if !strings.Contains(fish, "-l "+f.Name) {
				t.Errorf("fish completion lacks skein %s --%s", cmd.Name, f.Name)
			}
		}
	}
	dman := ManSkeind(d, "2026-01-01", "test", "/var/lib/skein")
	for _, want := range []string{"cleanup", "statedir", "socket", "tun", "port", "version"} {
		if !strings.Contains(dman, `\fB\-\-`+want+`\fR`) {
			t.Errorf("skeind(8) lacks --%s", want)
		}
	}
	if _, err := exec.LookPath("bash"); err == nil {
		p := filepath.Join(t.TempDir(), "skein.bash")
		os.WriteFile(p, []byte(bash), 0o644)
		out, err := exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(skein exit-node ""); COMP_CWORD=2; _skein; echo "${COMPREPLY[*]}"`, "_", p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "list") {
			t.Errorf("bash completion of 'skein exit-node ': %v %q", err, out)
		}
	}
	for shell, text := range map[string]string{"zsh": zsh, "fish": fish, "bash": bash} {
		if _, err := exec.LookPath(shell); err != nil {
			continue
		}
		p := filepath.Join(t.TempDir(), "completion")
		os.WriteFile(p, []byte(text), 0o644)
		if out, err := exec.Command(shell, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s -n on the %s completion: %v\n%s", shell, shell, err, out)
		}
	}
	if _, err := exec.LookPath("groff"); err == nil {
		for name, text := range map[string]string{"skein.1": man, "skeind.8": dman} {
			cmd := exec.Command("groff", "-man", "-ww", "-z")
			cmd.Stdin = strings.NewReader(text)
			if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("groff warns about %s: %v\n%s", name, err, out)
			}
		}
	}
}

func TestParseFlags(t *testing.T) {
	got := parseFlags(strings.Split("  -c int\n    \tnumber of pings (default 10)\n  -v\tverbose\n  -json\n    \tprint JSON\n    \tsecond line", "\n"))
	want := []Flag{{"c", "int", "number of pings (default 10)"}, {"v", "", "verbose"}, {"json", "", "print JSON second line"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("flag %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := subcommandWords("list [--filter=COUNTRY]"); len(s) != 1 || s[0] != "list" {
		t.Errorf("subcommandWords: %q", s)
	}
	if s := subcommandWords("[PEER]"); len(s) != 0 {
		t.Errorf("subcommandWords([PEER]): %q", s)
	}
}

// Shrinking is area averaging: a 2×2 checker of opaque black and white becomes mid grey, and
// the same input always gives the same bytes.
func TestIcons(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 256, 256))
	for y := 0; y < 256; y++ {
		for x := 0; x < 256; x++ {
			v := uint8(255 * ((x + y) % 2))
			src.SetRGBA(x, y, color.RGBA{v, v, v, 255})
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, src)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "in.png"), buf.Bytes(), 0o644)
	for run := 0; run < 2; run++ {
		out := filepath.Join(dir, "out", string(rune('a'+run)))
		if err := Icons(filepath.Join(dir, "in.png"), out, "x.y.Z"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range IconSizes {
		rel := filepath.Join("hicolor", fmt.Sprintf("%dx%d", n, n), "apps", "x.y.Z.png")
		a, _ := os.ReadFile(filepath.Join(dir, "out", "a", rel))
		b, _ := os.ReadFile(filepath.Join(dir, "out", "b", rel))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s: missing or different between two runs", rel)
		}
		img, err := png.Decode(bytes.NewReader(a))
		if err != nil || img.Bounds().Dx() != n {
			t.Fatalf("%s: %v, %v", rel, err, img.Bounds())
		}
		if n < 256 {
			r, _, _, a := img.At(n/2, n/2).RGBA()
			if a>>8 != 255 || r>>8 < 120 || r>>8 > 135 {
				t.Errorf("%s: centre pixel %d/%d, want mid grey, opaque", rel, r>>8, a>>8)
			}
		}
	}
}
