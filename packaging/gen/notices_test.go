package main

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	mitText = `MIT License

Copyright (c) 2021 B. Kugler

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction.`
	bsd3Text = `Copyright 2009 The Go Authors.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are
met:
   * Neither the name of Google LLC nor the names of its
contributors may be used to endorse or promote products derived from
this software without specific prior written permission.`
	bsd2Text = `Copyright (c) 2013, Georg Reinke (<guelfey at gmail dot com>), Google
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions
are met:`
	apacheText = `
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/`
)

func TestClassify(t *testing.T) {
	for text, want := range map[string]string{
		mitText:    "MIT",
		bsd3Text:   "BSD-3-Clause",
		bsd2Text:   "BSD-2-Clause",
		apacheText: "Apache-2.0",
		"Permission to use, copy, modify, and/or distribute this software for any\npurpose with or without fee is hereby granted":                                                                 "ISC",
		"This is free and unencumbered software released into the public domain.":                                                                                                                 "Unlicense",
		"This project is provided under the terms of the UNLICENSE or\nthe BSD license\n\nSPDX-License-Identifier: Unlicense OR BSD-3-Clause\n\nBoth licenses are reproduced below.\n" + bsd3Text: "Unlicense OR BSD-3-Clause",
		"This software is provided 'as-is', without any express or implied\nwarranty. ... 2. Altered source versions must be plainly marked as such":                                              "Zlib",
		"SIL OPEN FONT LICENSE Version 1.1 - 26 February 2007":                                                                                                                                    "OFL-1.1",
		"Bitstream Vera Fonts Copyright\nPermission is hereby granted, free of charge, to any person obtaining a copy of the fonts":                                                               "Bitstream-Vera",
		bsd3Text + "\n\n" + apacheText: "Apache-2.0 and BSD-3-Clause",
		"# License\n\n**Permission is hereby granted, free of charge, to any person obtaining a copy**": "MIT",
	} {
		got, err := classify(text)
		if err != nil || got != want {
			t.Errorf("classify(%.50q) = %q, %v; want %q", text, got, err, want)
		}
	}
	for _, text := range []string{
		"GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007",
		"All rights reserved. Do not copy.",
		"Redistribution and use in source and binary forms ... 3. All advertising materials mentioning features",
		"",
	} {
		if got, err := classify(text); err == nil {
			t.Errorf("classify(%.50q) = %q, want an error (not a licence we may ship unseen)", text, got)
		}
	}
}

func TestCopyrights(t *testing.T) {
	got := copyrights([]string{bsd2Text, mitText, "Copyright © 2016-2020 The Inter Project Authors.\n  copyright 2009 The Go Authors.", "Licensor shall mean the copyright owner"})
	want := []string{"2013, Georg Reinke (<guelfey at gmail dot com>), Google", "2021 B. Kugler", "2016-2020 The Inter Project Authors.", "2009 The Go Authors."}
	if !slices.Equal(got, want) {
		t.Errorf("copyrights = %q, want %q", got, want)
	}
}

// A package's licences: its own directory and its parents up to the module's root, and the
// subdirectories that are no package (C sources, fonts); not testdata, not other packages.
func TestPackageLicences(t *testing.T) {
	root := filepath.Join(t.TempDir(), "example.com/mod@v1.0.0")
	files := map[string]string{
		"LICENSE":                  bsd3Text,
		"PATENTS":                  "Additional IP Rights Grant",
		"license.go":               "package mod",
		"a/b/b.go":                 "package b",
		"a/b/COPYING.txt":          mitText,
		"a/b/font/LICENSE_Font":    "SIL OPEN FONT LICENSE Version 1.1",
		"a/b/font/x.ttf":           "",
		"a/b/testdata/LICENSE":     "GPL",
		"a/b/other/other.go":       "package other",
		"a/b/other/LICENSE":        apacheText,
		"a/b/csrc/deep/LICENSE.md": "provided 'as-is', without any express or implied warranty; altered source versions must be plainly marked",
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string][]string{}
	for _, d := range packageLicences(pkgInfo{importPath: "example.com/mod/a/b", dir: filepath.Join(root, "a/b"), modPath: "example.com/mod", modVersion: "v1.0.0"}) {
		for _, f := range d.files {
			got[d.rel] = append(got[d.rel], filepath.Base(f))
		}
		if d.mod != "example.com/mod" || d.version != "v1.0.0" {
			t.Errorf("licence dir %+v", d)
		}
	}
	want := map[string][]string{"": {"LICENSE", "PATENTS"}, "a/b": {"COPYING.txt"}, "a/b/font": {"LICENSE_Font"}, "a/b/csrc/deep": {"LICENSE.md"}}
	if len(got) != len(want) {
		t.Errorf("licence dirs %q, want %q", got, want)
	}
	for rel, names := range want {
		if !slices.Equal(got[rel], names) {
			t.Errorf("%q: %q, want %q", rel, got[rel], names)
		}
	}
}

// The copyright file of a real program: machine-readable, Skein's licence first, and a
// paragraph with a licence text for every module in the program's build info.
func TestNoticesForABinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds skein")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "skein")
	build := exec.Command("go", "build", "-o", bin, "github.com/skeinvpn/skein/cmd/skein")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "copyright")
	if err := noticesCmd([]string{"-bin", bin, "-license", "../../LICENSE", "-out", out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	paras := strings.Split(strings.TrimRight(text, "\n"), "\n\n")
	if !strings.HasPrefix(paras[0], "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") ||
		!strings.HasPrefix(paras[1], "Files: *\nCopyright: 2026, The Skein developers\nLicense: BSD-3-Clause\n BSD 3-Clause License\n") {
		t.Fatalf("header:\n%s\n\n%s", paras[0], paras[1])
	}
	for _, p := range paras {
		for _, l := range strings.Split(p, "\n") {
			if l == "" || (l[0] != ' ' && !strings.Contains(l, ": ")) || l == " " {
				t.Fatalf("not DEP-5: line %q in\n%s", l, p)
			}
		}
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(bi.Deps) < 3 {
		t.Fatalf("skein links %d modules?", len(bi.Deps))
	}
	for _, d := range bi.Deps {
		if !strings.Contains(text, "\nFiles: vendor/"+d.Path+"/*\n") || !strings.Contains(text, "Go module "+d.Path+" "+d.Version+", in skein.") {
			t.Errorf("no paragraph for %s %s", d.Path, d.Version)
		}
	}
	if !strings.Contains(text, "\nFiles: go/*\n") || !strings.Contains(text, bi.GoVersion) {
		t.Errorf("no paragraph for the Go standard library (%s)", bi.GoVersion)
	}
}
