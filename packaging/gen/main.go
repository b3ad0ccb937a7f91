// Command gen makes the files the packages install that come from the programs themselves:
//
//	gen docs -skein bin/skein -skeind bin/skeind -out DIR   # man pages and shell completions
//	gen icons -src assets/skein.png -id APPID -out DIR      # hicolor icons in every size
//	gen notices -bin bin/skeind -bin bin/skein -out FILE    # the copyright file (notices.go)
//
// docs runs 'skein help', 'skein COMMAND --help' (and a subcommand's) and 'skeind --help', so
// the man pages and completions list exactly the commands and flags the binaries have:
//
//	DIR/man/skein.1  DIR/man/skeind.8
//	DIR/completions/bash/skein  DIR/completions/zsh/_skein  DIR/completions/fish/skein.fish
//
// The date in the man pages comes from SOURCE_DATE_EPOCH when set (reproducible builds).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/skeinvpn/skein/daemon/state"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gen docs|icons|notices [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "docs":
		err = docs(os.Args[2:])
	case "icons":
		err = icons(os.Args[2:])
	case "notices":
		err = noticesCmd(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "gen: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func docs(args []string) error {
	fs := flag.NewFlagSet("gen docs", flag.ExitOnError)
	skein := fs.String("skein", "bin/skein", "the skein binary")
	skeind := fs.String("skeind", "bin/skeind", "the skeind binary")
	out := fs.String("out", "", "output directory")
	version := fs.String("version", "", "version for the man pages' footer")
	fs.Parse(args)
	if *out == "" || *version == "" {
		return fmt.Errorf("-out and -version are required")
	}
	c, err := LoadCLI(*skein)
	if err != nil {
		return err
	}
	d, err := LoadDaemon(*skeind)
	if err != nil {
		return err
	}
	date := buildDate()
	files := map[string]string{
		"man/skein.1":                 ManSkein(c, date, *version),
		"man/skeind.8":                ManSkeind(d, date, *version, state.DefaultDir),
		"completions/bash/skein":      Bash(c),
		"completions/zsh/_skein":      Zsh(c),
		"completions/fish/skein.fish": Fish(c),
	}
	for name, text := range files {
		p := filepath.Join(*out, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func icons(args []string) error {
	fs := flag.NewFlagSet("gen icons", flag.ExitOnError)
	src := fs.String("src", "assets/skein.png", "square source icon (PNG)")
	id := fs.String("id", "io.github.skeinvpn.Skein", "icon name (the app ID)")
	out := fs.String("out", "", "output directory (gets hicolor/NxN/apps/ID.png)")
	fs.Parse(args)
	if *out == "" {
		return fmt.Errorf("-out is required")
	}
	return Icons(*src, *out, *id)
}

// buildDate is SOURCE_DATE_EPOCH's day, else today's.
func buildDate() string {
	t := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			t = time.Unix(n, 0)
		}
	}
	return t.UTC().Format("2006-01-02")
}
