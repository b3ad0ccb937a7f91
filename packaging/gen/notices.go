package main

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// gen notices writes the Debian copyright file (machine-readable DEP-5) of a set of programs:
// Skein's own licence, then the licence and notice files of the Go standard library and of
// every module linked into them, verbatim. It is made from the module graph at build time:
//
//	gen notices -bin bin/skeind -bin bin/skein -out DIR/copyright
//	gen notices -pkg . -name skein-gui -tags flatpak -cgo 1 -out DIR/copyright   # before a build
//
// With -bin the packages, build tags and cgo setting come from each binary's build info, and
// the module list of `go list -deps` must equal the binary's, so the file describes exactly
// what was linked. The licence files of a package are those in its directory and every parent
// up to its module's root, and in its subdirectories that are no Go package themselves (the C
// sources of cgo packages, embedded fonts); each is classified by its text, and a text that is
// not one of the permissive licences below stops the build for a person to look at.

// licenceName matches the files that carry licences and notices (LICENSE, LICENSE-reader,
// LICENSE_Inter.txt, COPYING.txt, NOTICE, PATENTS, ...).
var licenceName = regexp.MustCompile(`(?i)^(licen[cs]e|copying|unlicense|notice|patents)([-._][^/]*)?$`)

// notAText is what a licence-like name may end in without being a licence (license.go).
var notAText = regexp.MustCompile(`(?i)\.(go|s|c|h|cc|py|sh|json|yaml|yml|html)$`)

// noticeOnly files carry notices to pass on, not a licence to classify.
var noticeOnly = regexp.MustCompile(`(?i)^(notice|patents)([-._].*)?$`)

// pkgInfo is one linked package of a program.
type pkgInfo struct {
	importPath, dir, modPath, modVersion string
}

// licenceDir is the licence and notice files of one directory of a module.
type licenceDir struct {
	mod, version, rel string // rel: the directory relative to the module's root ("" = the root)
	files             []string
	programs          []string
}

func noticesCmd(args []string) error {
	fs := flag.NewFlagSet("gen notices", flag.ExitOnError)
	var bins multiFlag
	fs.Var(&bins, "bin", "a program to describe (repeatable); its build info says how it was built")
	pkg := fs.String("pkg", "", "instead of -bin: the main package to describe")
	tags := fs.String("tags", "", "with -pkg: the build tags")
	cgo := fs.String("cgo", "1", "with -pkg: CGO_ENABLED")
	name := fs.String("name", "", "with -pkg: the program's name (default: the package's last element)")
	licence := fs.String("license", "LICENSE", "Skein's own licence file")
	out := fs.String("out", "", "the copyright file to write")
	fs.Parse(args)
	if *out == "" || (len(bins) == 0) == (*pkg == "") {
		return errors.New("want -out and either -bin FILE... or -pkg PATH")
	}
	type target struct{ name, pkg, tags, cgo, goVersion string }
	var targets []target
	binMods := map[string]map[string]bool{}
	for _, b := range bins {
		bi, err := buildinfo.ReadFile(b)
		if err != nil {
			return fmt.Errorf("%s: %v", b, err)
		}
		t := target{name: filepath.Base(b), pkg: bi.Path, goVersion: bi.GoVersion, cgo: "0"}
		for _, s := range bi.Settings {
			switch s.Key {
			case "-tags":
				t.tags = s.Value
			case "CGO_ENABLED":
				t.cgo = s.Value
			}
		}
		mods := map[string]bool{}
		for _, d := range bi.Deps {
			mods[d.Path] = true
		}
		binMods[t.name] = mods
		targets = append(targets, t)
	}
	if *pkg != "" {
		goVersion, err := goOutput("env", "GOVERSION")
		if err != nil {
			return err
		}
		n := *name
		if n == "" {
			n = path.Base(*pkg)
		}
		targets = append(targets, target{name: n, pkg: *pkg, tags: *tags, cgo: *cgo, goVersion: goVersion})
	}

	dirs := map[string]*licenceDir{}
	var programs, goVersions []string
	for _, t := range targets {
		pkgs, err := listPackages(t.pkg, t.tags, t.cgo)
		if err != nil {
			return err
		}
		listed := map[string]bool{}
		for _, p := range pkgs {
			listed[p.modPath] = true
			for _, ld := range packageLicences(p) {
				key := ld.mod + "\x00" + ld.rel
				if have, ok := dirs[key]; ok {
					ld = have
				} else {
					dirs[key] = ld
				}
				if !slices.Contains(ld.programs, t.name) {
					ld.programs = append(ld.programs, t.name)
				}
			}
		}
		for mod := range listed {
			if !hasLicence(dirs, mod) {
				return fmt.Errorf("%s: module %s has no licence file", t.name, mod)
			}
		}
		if mods, ok := binMods[t.name]; ok && !sameKeys(mods, listed) {
			return fmt.Errorf("%s: go list -deps (tags %q, CGO_ENABLED=%s) gives modules %v, the binary links %v",
				t.name, t.tags, t.cgo, sortedKeys(listed), sortedKeys(mods))
		}
		programs = append(programs, t.name)
		if !slices.Contains(goVersions, t.goVersion) {
			goVersions = append(goVersions, t.goVersion)
		}
	}
	own, err := os.ReadFile(*licence)
	if err != nil {
		return err
	}
	goroot, err := goOutput("env", "GOROOT")
	if err != nil {
		return err
	}
	text, err := dep5(string(own), filepath.Join(goroot, "LICENSE"), programs, goVersions, dirs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(*out, []byte(text), 0o644)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// goCmd is the go command (GO from the environment, as the Makefile passes it).
func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

func goOutput(args ...string) (string, error) {
	out, err := exec.Command(goCmd(), args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("go %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// listPackages lists the non-standard packages a main package links, outside the main module.
func listPackages(pkg, tags, cgo string) ([]pkgInfo, error) {
	cmd := exec.Command(goCmd(), "list", "-deps", "-tags="+tags,
		"-f", "{{if and (not .Standard) .Module (not .Module.Main)}}{{.ImportPath}}\t{{.Dir}}\t{{.Module.Path}}\t{{.Module.Version}}{{end}}", pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %v\n%s", pkg, err, stderr.String())
	}
	var pkgs []pkgInfo
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			continue
		}
		pkgs = append(pkgs, pkgInfo{importPath: f[0], dir: f[1], modPath: f[2], modVersion: f[3]})
	}
	return pkgs, nil
}

// packageLicences finds the licence files that cover package p: in its directory and each
// parent up to the module's root, and in subdirectories that hold no Go package.
func packageLicences(p pkgInfo) []*licenceDir {
	rel := strings.TrimPrefix(strings.TrimPrefix(p.importPath, p.modPath), "/")
	root := strings.TrimSuffix(filepath.Clean(p.dir), filepath.FromSlash("/"+rel))
	if rel == "" {
		root = filepath.Clean(p.dir)
	}
	var out []*licenceDir
	add := func(dir string) {
		files := licenceFilesIn(dir)
		if len(files) == 0 {
			return
		}
		r, _ := filepath.Rel(root, dir)
		if r == "." {
			r = ""
		}
		out = append(out, &licenceDir{mod: p.modPath, version: p.modVersion, rel: filepath.ToSlash(r), files: files})
	}
	for dir := filepath.Clean(p.dir); ; dir = filepath.Dir(dir) {
		add(dir)
		if dir == root || len(dir) <= len(root) {
			break
		}
	}
	var walk func(dir string)
	walk = func(dir string) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			name := e.Name()
			if !e.IsDir() || name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				continue
			}
			sub := filepath.Join(dir, name)
			if hasGoFiles(sub) {
				continue // another package: covered when it is linked
			}
			add(sub)
			walk(sub)
		}
	}
	walk(filepath.Clean(p.dir))
	return out
}

func licenceFilesIn(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && licenceName.MatchString(e.Name()) && !notAText.MatchString(e.Name()) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(m) > 0
}

func hasLicence(dirs map[string]*licenceDir, mod string) bool {
	for _, d := range dirs {
		if d.mod == mod {
			for _, f := range d.files {
				if !noticeOnly.MatchString(filepath.Base(f)) {
					return true
				}
			}
		}
	}
	return false
}

func sameKeys(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// classify names the licence a text carries with its SPDX identifier. Only permissive
// licences (and the font licences of Fyne's embedded fonts) are known: anything else is an
// error for a person to look at before it ships.
func classify(text string) (string, error) {
	if m := regexp.MustCompile(`(?m)SPDX-License-Identifier:\s*([A-Za-z0-9.+ ()-]+?)\s*$`).FindStringSubmatch(firstLines(text, 20)); m != nil {
		return m[1], nil
	}
	t := normalise(text)
	has := func(s ...string) bool {
		for _, x := range s {
			if !strings.Contains(t, x) {
				return false
			}
		}
		return true
	}
	// Font licences first: their permission grants read like MIT's.
	switch {
	case has("sil open font license", "version 1.1"):
		return "OFL-1.1", nil
	case has("bitstream vera", "permission is hereby granted"):
		return "Bitstream-Vera", nil
	case has("redistribution and use in source and binary forms", "advertising materials"):
		return "", errors.New("a BSD licence with an advertising clause")
	}
	// A file may hold several licences (klauspost/compress: BSD for the Go parts, Apache for
	// the rest): name each one found.
	var ids []string
	for _, r := range []struct {
		id      string
		phrases []string
	}{
		{"Apache-2.0", []string{"apache license", "version 2.0"}},
		{"MPL-2.0", []string{"mozilla public license", "2.0"}},
		{"Unlicense", []string{"this is free and unencumbered software released into the public domain"}},
		{"MIT", []string{"permission is hereby granted, free of charge, to any person obtaining a copy"}},
		{"ISC", []string{"permission to use, copy, modify, and/or distribute this software for any purpose"}},
		{"ISC", []string{"permission to use, copy, modify, and distribute this software for any purpose with or without fee"}},
		{"BSD-3-Clause", []string{"redistribution and use in source and binary forms", "endorse or promote products derived from this software"}},
		{"BSD-2-Clause", []string{"redistribution and use in source and binary forms"}},
		{"Zlib", []string{"provided 'as-is', without any express or implied warranty", "altered source versions must be plainly marked"}},
	} {
		if has(r.phrases...) && !slices.Contains(ids, r.id) && !(r.id == "BSD-2-Clause" && slices.Contains(ids, "BSD-3-Clause")) {
			ids = append(ids, r.id)
		}
	}
	if len(ids) == 0 {
		return "", errors.New("not a licence this generator knows; look at it and add it to classify if it may ship")
	}
	return strings.Join(ids, " and "), nil
}

// normalise lowercases a text and folds its whitespace, quotes and markup so that phrases match
// across reflowed, Markdown and typographic variants.
func normalise(s string) string {
	s = strings.NewReplacer("‘", "'", "’", "'", "“", `"`, "”", `"`, "*", "", "`", "").Replace(strings.ToLower(s))
	return strings.Join(strings.Fields(s), " ")
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// copyrightRE finds copyright statements ("Copyright (c) 2021 The Go Authors", "© 2016 Foo").
var copyrightRE = regexp.MustCompile(`(?im)^[\s#*/-]*(?:copyright\s*(?:\(c\)|©)?|©)\s*((?:\d{4}|\(c\)).*)$`)

func copyrights(texts []string) []string {
	var out []string
	for _, t := range texts {
		for _, m := range copyrightRE.FindAllStringSubmatch(t, -1) {
			c := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m[1]), "(c)"))
			c = strings.TrimSpace(strings.TrimSuffix(c, "All rights reserved."))
			if c != "" && len(c) < 200 && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// dep5 renders the copyright file.
func dep5(own, goLicence string, programs, goVersions []string, dirs map[string]*licenceDir) (string, error) {
	var b strings.Builder
	field := func(name, value string) {
		lines := strings.Split(strings.TrimRight(value, "\n"), "\n")
		fmt.Fprintf(&b, "%s: %s\n", name, lines[0])
		for _, l := range lines[1:] {
			l = strings.TrimRight(l, " \t\r")
			if l == "" {
				l = "."
			}
			fmt.Fprintf(&b, " %s\n", l)
		}
	}
	field("Format", "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
	field("Upstream-Name", "Skein")
	field("Upstream-Contact", "https://github.com/skeinvpn/skein/issues")
	field("Source", "https://github.com/skeinvpn/skein")
	field("Comment", fmt.Sprintf("%s: statically linked Go programs (%s). Besides Skein's own code they\n"+
		"contain the Go standard library and runtime and the Go modules below, each\n"+
		"under its own licence, reproduced as the module ships it. The list is made\n"+
		"from the programs' build information when they are built.", strings.Join(programs, ", "), strings.Join(goVersions, ", ")))
	b.WriteString("\n")

	ownID, err := classify(own)
	if err != nil {
		return "", fmt.Errorf("LICENSE: %v", err)
	}
	field("Files", "*")
	field("Copyright", strings.Join(copyrights([]string{own}), "\n"))
	field("License", ownID+"\n"+own)
	b.WriteString("\n")

	goText, err := readText(goLicence)
	if err != nil {
		return "", err
	}
	goID, err := classify(goText)
	if err != nil {
		return "", fmt.Errorf("%s: %v", goLicence, err)
	}
	field("Files", "go/*")
	field("Copyright", strings.Join(copyrights([]string{goText}), "\n"))
	field("Comment", "The Go standard library and runtime ("+strings.Join(goVersions, ", ")+"), linked into every program.")
	field("License", goID+"\n"+goText)

	keys := make([]string, 0, len(dirs))
	for k := range dirs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		d := dirs[k]
		var ids, licences, notices []string
		for _, f := range d.files {
			text, err := readText(f)
			if err != nil {
				return "", err
			}
			name := filepath.Base(f)
			if noticeOnly.MatchString(name) {
				notices = append(notices, name+":\n"+text)
				continue
			}
			id, err := classify(text)
			if err != nil {
				return "", fmt.Errorf("%s %s: %s: %v", d.mod, d.version, path.Join(d.rel, name), err)
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
			if len(d.files) > 1 {
				text = name + ":\n" + text
			}
			licences = append(licences, text)
		}
		files := "vendor/" + d.mod + "/*"
		if d.rel != "" {
			files = "vendor/" + d.mod + "/" + d.rel + "/*"
		}
		b.WriteString("\n")
		field("Files", files)
		cr := copyrights(licences)
		if len(cr) == 0 {
			cr = []string{"the authors of " + d.mod}
		}
		field("Copyright", strings.Join(cr, "\n"))
		slices.Sort(d.programs)
		comment := fmt.Sprintf("Go module %s %s, in %s.", d.mod, d.version, strings.Join(d.programs, ", "))
		if len(notices) > 0 {
			comment += "\nIts notices:\n" + strings.Join(notices, "\n")
		}
		field("Comment", comment)
		if len(ids) == 0 {
			// Notices only (PATENTS beside a licence in a parent directory).
			continue
		}
		field("License", strings.Join(ids, " and ")+"\n"+strings.Join(licences, "\n"))
	}
	return b.String(), nil
}

// readText reads a licence file as UTF-8 text with Unix line ends.
func readText(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return strings.TrimSpace(s), nil
}
