package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// Flag is one flag as Go's flag.PrintDefaults shows it.
type Flag struct {
	Name  string // without dashes
	Arg   string // the value's placeholder ("string", "duration", "COUNTRY"); "" for a boolean
	Usage string // one paragraph, "(default x)" included
}

// Command is one skein command (or subcommand, Name "exit-node list") read from its --help.
type Command struct {
	Name    string // as typed after "skein"
	Summary string // the line in 'skein help'; for subcommands the first sentence of Desc
	Usage   string // the usage line without "usage: "
	Args    string // what follows "[flags]" in the usage line, e.g. "PEER" or "list [--filter=COUNTRY]"
	Desc    string // the text between the usage line and "Flags:" / "Exit status:"
	Flags   []Flag
	Subs    []*Command
}

// CLI is what 'skein help' and each 'skein COMMAND --help' say.
type CLI struct {
	Usage    string
	Global   []Flag
	Commands []*Command
	Exit     string // the "Exit status:" paragraph
}

// Daemon is what 'skeind --help' says.
type Daemon struct {
	Usage string
	Desc  string
	Flags []Flag
}

// runHelp runs bin with args and returns stdout+stderr; help output may go to either, and
// skeind's --help exits 0 while a few Go programs exit 2, so the exit status is not checked
// beyond "the program ran".
func runHelp(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); ok {
		err = nil
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", bin, strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// LoadCLI reads the CLI's commands and flags from the skein binary at bin.
func LoadCLI(bin string) (*CLI, error) {
	top, err := runHelp(bin, "help")
	if err != nil {
		return nil, err
	}
	c, err := parseTopHelp(top)
	if err != nil {
		return nil, err
	}
	for _, cmd := range c.Commands {
		if err := loadCommand(bin, cmd, 0); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func loadCommand(bin string, cmd *Command, depth int) error {
	out, err := runHelp(bin, append(strings.Fields(cmd.Name), "--help")...)
	if err != nil {
		return err
	}
	if err := parseCommandHelp(out, cmd); err != nil {
		return fmt.Errorf("skein %s --help: %w", cmd.Name, err)
	}
	if depth > 0 {
		return nil
	}
	for _, sub := range subcommandWords(cmd.Args) {
		sc := &Command{Name: cmd.Name + " " + sub}
		if err := loadCommand(bin, sc, depth+1); err != nil {
			return err
		}
		sc.Summary = shortSummary(firstSentence(sc.Desc))
		cmd.Subs = append(cmd.Subs, sc)
	}
	return nil
}

// subcommandWords picks the subcommands out of a usage line's arguments: the bare lower-case
// words ("list" in "list [--filter=COUNTRY]"); upper-case words are placeholders (PEER).
func subcommandWords(args string) []string {
	var subs []string
	depth := 0
	for _, f := range strings.Fields(args) {
		open, close := strings.Count(f, "["), strings.Count(f, "]")
		if depth == 0 && open == 0 && subWord.MatchString(f) {
			subs = append(subs, strings.Split(f, "|")...)
		}
		depth += open - close
	}
	return subs
}

var subWord = regexp.MustCompile(`^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$`)

var commandLine = regexp.MustCompile(`^  ([a-z][a-z0-9-]*) +(.*)$`)

func parseTopHelp(s string) (*CLI, error) {
	c := &CLI{}
	lines := strings.Split(s, "\n")
	section := ""
	var flagLines, exitLines []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "usage: "):
			c.Usage = strings.TrimPrefix(l, "usage: ")
			continue
		case l == "Commands:":
			section = "commands"
			continue
		case l == "Global flags:":
			section = "flags"
			continue
		case strings.HasPrefix(l, "Exit status:"):
			section = "exit"
		case strings.HasPrefix(l, "Run '"):
			section = ""
			continue
		}
		switch section {
		case "commands":
			if m := commandLine.FindStringSubmatch(l); m != nil {
				c.Commands = append(c.Commands, &Command{Name: m[1], Summary: strings.TrimSpace(m[2])})
			}
		case "flags":
			flagLines = append(flagLines, l)
		case "exit":
			exitLines = append(exitLines, l)
		}
	}
	if c.Usage == "" || len(c.Commands) == 0 {
		return nil, fmt.Errorf("'skein help' has no usage line or no commands:\n%s", s)
	}
	c.Global = parseFlags(flagLines)
	c.Exit = strings.TrimSpace(strings.TrimPrefix(strings.Join(exitLines, "\n"), "Exit status:"))
	return c, nil
}

// parseCommandHelp fills cmd from 'skein NAME --help':
//
//	usage: skein NAME [flags] ARGS
//
//	description...
//
//	Flags:
//	  -name type
//	    	usage
//
//	Exit status: ...
func parseCommandHelp(s string, cmd *Command) error {
	lines := strings.Split(s, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "usage: ") {
		return fmt.Errorf("no usage line:\n%s", s)
	}
	cmd.Usage = strings.TrimPrefix(lines[0], "usage: ")
	rest := strings.TrimPrefix(cmd.Usage, "skein "+cmd.Name)
	rest = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), "[flags]"))
	cmd.Args = rest
	var desc, flags []string
	section := "desc"
	for _, l := range lines[1:] {
		switch {
		case l == "Flags:":
			section = "flags"
			continue
		case strings.HasPrefix(l, "Exit status:"):
			section = "exit"
		}
		switch section {
		case "desc":
			desc = append(desc, l)
		case "flags":
			flags = append(flags, l)
		}
	}
	cmd.Desc = strings.TrimSpace(strings.Join(desc, "\n"))
	cmd.Flags = parseFlags(flags)
	// Flags named only in the usage line ("[--filter=COUNTRY]") belong to a subcommand; they
	// are found when that subcommand's own help is read.
	return nil
}

var (
	flagHead   = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?: ([^\t]+))?$`)
	flagInline = regexp.MustCompile(`^  -([A-Za-z0-9])\t(.*)$`)
)

// parseFlags reads flag.PrintDefaults output: "  -name type" then "    \tusage" lines, or
// "  -x\tusage" on one line for a one-letter boolean.
func parseFlags(lines []string) []Flag {
	var fs []Flag
	for _, l := range lines {
		if m := flagInline.FindStringSubmatch(l); m != nil {
			fs = append(fs, Flag{Name: m[1], Usage: strings.TrimSpace(m[2])})
			continue
		}
		if m := flagHead.FindStringSubmatch(l); m != nil {
			fs = append(fs, Flag{Name: m[1], Arg: strings.TrimSpace(m[2])})
			continue
		}
		if strings.HasPrefix(l, "    \t") && len(fs) > 0 {
			f := &fs[len(fs)-1]
			t := strings.TrimSpace(strings.TrimPrefix(l, "    \t"))
			if f.Usage == "" {
				f.Usage = t
			} else {
				f.Usage += " " + t
			}
		}
	}
	return fs
}

// LoadDaemon reads skeind's flags from 'skeind --help'.
func LoadDaemon(bin string) (*Daemon, error) {
	out, err := runHelp(bin, "--help")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(out, "\n")
	d := &Daemon{}
	var desc, flags []string
	inFlags := false
	for _, l := range lines {
		switch {
		case strings.HasPrefix(strings.ToLower(l), "usage: "):
			d.Usage = strings.TrimSpace(l[len("usage: "):])
			continue
		case !inFlags && strings.HasPrefix(l, "  -"):
			inFlags = true
		}
		if inFlags {
			flags = append(flags, l)
		} else {
			desc = append(desc, l)
		}
	}
	d.Desc = strings.TrimSuffix(strings.TrimSpace(strings.Join(desc, "\n")), " Flags:")
	d.Flags = parseFlags(flags)
	if d.Usage == "" || len(d.Flags) == 0 {
		return nil, fmt.Errorf("'skeind --help' has no usage line or no flags:\n%s", out)
	}
	return d, nil
}

// firstSentence is s up to its first ". " or line end, without the full stop.
func firstSentence(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if i := strings.Index(s, ". "); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSuffix(s, ".")
}

// shortSummary cuts a long sentence at its first clause, for completion menus.
func shortSummary(s string) string {
	if i := strings.IndexAny(s, ":;("); i > 0 {
		s = strings.TrimSpace(s[:i])
	}
	if len(s) > 60 {
		if i := strings.Index(s, ", "); i > 0 {
			s = s[:i]
		}
	}
	return s
}

// AllFlagNames lists a command's flag names including its subcommands', for tests.
func (c *Command) AllFlagNames() []string {
	var n []string
	for _, f := range c.Flags {
		n = append(n, f.Name)
	}
	for _, s := range c.Subs {
		n = append(n, s.AllFlagNames()...)
	}
	return n
}
