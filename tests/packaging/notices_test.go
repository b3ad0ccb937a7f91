package packaging

import (
	"debug/buildinfo"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// shippable are the licences a linked module may have; anything else needs a person's look.
var shippable = map[string]bool{"MIT": true, "BSD-2-Clause": true, "BSD-3-Clause": true, "Apache-2.0": true,
	"ISC": true, "Unlicense": true, "Zlib": true, "MPL-2.0": true, "OFL-1.1": true, "Bitstream-Vera": true}

// copyrightParagraphs splits a DEP-5 copyright file into its paragraphs, each a map of field
// to value (continuation lines joined with newlines, " ." read as an empty line).
func copyrightParagraphs(t *testing.T, text string) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, p := range strings.Split(strings.TrimRight(text, "\n"), "\n\n") {
		fields := map[string]string{}
		last := ""
		for _, l := range strings.Split(p, "\n") {
			switch {
			case strings.HasPrefix(l, " ") && last != "":
				l = strings.TrimPrefix(l, " ")
				if l == "." {
					l = ""
				}
				fields[last] += "\n" + l
			case strings.Contains(l, ": "):
				k, v, _ := strings.Cut(l, ": ")
				fields[k], last = v, k
			default:
				t.Fatalf("copyright: not a DEP-5 line: %q", l)
			}
		}
		out = append(out, fields)
	}
	return out
}

// checkCopyright checks a copyright file against the programs it covers: machine-readable,
// Skein's own LICENSE first, the Go standard library, and for every module in each program's
// build info a paragraph with a shippable licence and its text.
func checkCopyright(t *testing.T, file string, programs ...string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no copyright file: %v", err)
	}
	paras := copyrightParagraphs(t, string(b))
	if len(paras) < 3 || paras[0]["Format"] != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" {
		t.Fatalf("%s: no DEP-5 header", file)
	}
	own, err := os.ReadFile(filepath.Join(repo(t), "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	if p := paras[1]; p["Files"] != "*" || p["License"] != "BSD-3-Clause\n"+strings.TrimSpace(string(own)) {
		t.Errorf("%s: the first paragraph is not Skein's LICENSE (BSD-3-Clause):\n%v", file, p)
	}
	byFiles := map[string]map[string]string{}
	for _, p := range paras[2:] {
		byFiles[p["Files"]] = p
		if p["License"] == "" {
			continue // a directory with notices only
		}
		id, text, _ := strings.Cut(p["License"], "\n")
		for _, one := range regexp.MustCompile(` and | OR `).Split(id, -1) {
			if !shippable[one] {
				t.Errorf("%s: %s is under %q, not a licence we ship without a review", file, p["Files"], one)
			}
		}
		if len(strings.TrimSpace(text)) < 100 {
			t.Errorf("%s: %s has no licence text: %q", file, p["Files"], text)
		}
		if p["Copyright"] == "" {
			t.Errorf("%s: %s has no Copyright", file, p["Files"])
		}
	}
	n := 0
	for _, prog := range programs {
		bi, err := buildinfo.ReadFile(prog)
		if err != nil {
			t.Fatal(err)
		}
		if g := byFiles["go/*"]; g == nil || !strings.Contains(g["Comment"], bi.GoVersion) {
			t.Errorf("%s: no paragraph for the Go standard library %s", file, bi.GoVersion)
		}
		for _, d := range bi.Deps {
			p := byFiles["vendor/"+d.Path+"/*"]
			if p == nil || p["License"] == "" {
				t.Errorf("%s: %s links %s %s, which has no licence paragraph", file, filepath.Base(prog), d.Path, d.Version)
				continue
			}
			if !strings.Contains(p["Comment"], d.Path+" "+d.Version+",") || !strings.Contains(p["Comment"], filepath.Base(prog)) {
				t.Errorf("%s: %s's paragraph says %q, want version %s and %s", file, d.Path, p["Comment"], d.Version, filepath.Base(prog))
			}
			n++
		}
	}
	t.Logf("%s: %d paragraphs, a licence for each of the %d modules the programs link", filepath.Base(filepath.Dir(file)), len(paras), n)
}

// Both packages carry /usr/share/doc/PACKAGE/copyright with Skein's licence and the notices of
// everything their programs link.
func TestCopyrightInPackages(t *testing.T) {
	needPackageTest(t)
	need(t, "dpkg-deb")
	skein, desktop := debs(t)
	d := extract(t, skein)
	checkCopyright(t, filepath.Join(d, "usr/share/doc/skein/copyright"), filepath.Join(d, "usr/sbin/skeind"), filepath.Join(d, "usr/bin/skein"))
	d = extract(t, desktop)
	checkCopyright(t, filepath.Join(d, "usr/share/doc/skein-desktop/copyright"), filepath.Join(d, "usr/bin/skein-gui"))
}

// The checks themselves catch a missing module and a licence nobody reviewed.
func TestCheckCopyrightCatches(t *testing.T) {
	if _, err := os.Stat(filepath.Join(repo(t), "LICENSE")); err != nil {
		t.Skip("no LICENSE")
	}
	paras := copyrightParagraphs(t, "Format: x\n\nFiles: *\nLicense: GPL-3.0\n text\n .\n more\n")
	if paras[1]["License"] != "GPL-3.0\ntext\n\nmore" {
		t.Errorf("parsed %q", paras[1]["License"])
	}
	for _, id := range []string{"GPL-3.0", "AGPL-3.0", "MIT and GPL-2.0"} {
		ok := true
		for _, one := range regexp.MustCompile(` and | OR `).Split(id, -1) {
			ok = ok && shippable[one]
		}
		if ok {
			t.Errorf("%s counts as shippable", id)
		}
	}
}
