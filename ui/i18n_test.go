package ui

import (
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"fyne.io/fyne/v2/lang"
)

var dumpKeys = flag.Bool("dump-keys", false, "print the translation keys missing from zh-TW.json as JSON")

// translationKey is one string the code translates, and where.
type translationKey struct {
	key string
	pos string
}

// sourceStrings reads the package's non-test files and returns the keys passed to lang.L,
// lang.X and plural, and the string literals passed straight to widgets and menus (which must
// go through lang.L instead).
func sourceStrings(t *testing.T) (keys []translationKey, untranslated []string) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var parsed []*ast.File
	consts := map[string]ast.Expr{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, f)
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, sp := range gd.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						consts[n.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	var eval func(e ast.Expr) (string, bool)
	eval = func(e ast.Expr) (string, bool) {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		case *ast.Ident:
			if v, ok := consts[e.Name]; ok {
				return eval(v)
			}
		case *ast.ParenExpr:
			return eval(e.X)
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				x, ok1 := eval(e.X)
				y, ok2 := eval(e.Y)
				return x + y, ok1 && ok2
			}
		}
		return "", false
	}
	// Calls whose string arguments a person reads.
	sinks := map[string]bool{
		"widget.NewLabel": true, "widget.NewButton": true, "widget.NewButtonWithIcon": true, "widget.NewCheck": true,
		"widget.NewFormItem": true, "container.NewTabItem": true, "container.NewTabItemWithIcon": true,
		"fyne.NewMenuItem": true, "fyne.NewMenu": true, "fyne.NewNotification": true, "dialog.ShowConfirm": true,
		"dialog.NewCustom": true, "dialog.NewCustomConfirm": true, "dialog.ShowInformation": true,
		"newWrappedLabel": true, "SetText": true, "SetPlaceHolder": true, "notifyUser": true,
	}
	for _, f := range parsed {
		ast.Inspect(f, func(n ast.Node) bool {
			if fd, ok := n.(*ast.FuncDecl); ok && fd.Name.Name == "plural" {
				return false // its callers' keys are scanned instead
			}
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			name := ""
			switch fn := call.Fun.(type) {
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok {
					name = x.Name + "." + fn.Sel.Name
				}
				if sinks[fn.Sel.Name] {
					name = fn.Sel.Name
				}
			case *ast.Ident:
				name = fn.Name
			}
			pos := fset.Position(call.Pos()).String()
			add := func(e ast.Expr) {
				s, ok := eval(e)
				if !ok {
					t.Errorf("%s: %s needs a constant string as its key", pos, name)
					return
				}
				keys = append(keys, translationKey{s, pos})
			}
			switch name {
			case "lang.L", "lang.N":
				add(call.Args[0])
			case "lang.X":
				add(call.Args[0])
			case "plural":
				add(call.Args[1])
				add(call.Args[2])
			default:
				if !sinks[name] {
					return true
				}
				// A literal, a named constant or a sum with literal parts, given straight to the
				// widget, bypasses the translation.
				var check func(e ast.Expr)
				check = func(e ast.Expr) {
					if s, ok := eval(e); ok {
						if needsTranslation(s) {
							untranslated = append(untranslated, fmt.Sprintf("%s: %s(%q)", pos, name, s))
						}
						return
					}
					switch e := e.(type) {
					case *ast.BinaryExpr:
						if e.Op == token.ADD {
							check(e.X)
							check(e.Y)
						}
					case *ast.ParenExpr:
						check(e.X)
					}
				}
				for _, a := range call.Args {
					check(a)
				}
			}
			return true
		})
	}
	return keys, untranslated
}

// needsTranslation: a string with words in it (not a name, an example address or a symbol).
func needsTranslation(s string) bool {
	switch s {
	case "Skein", "https://headscale.example.com":
		return false
	}
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "sudo ") || strings.HasPrefix(t, "skein ") {
		return false // a command, typed as it is in any language
	}
	letters := 0
	for _, r := range s {
		if unicode.IsLetter(r) {
			letters++
		}
	}
	return letters >= 2
}

// fyneKeys are Fyne's own words (dialog buttons, the file dialog) the translation covers too.
var fyneKeys = []string{"Advanced", "Cancel", "Confirm", "Copy", "Create Folder", "Cut", "Enter filename", "Error",
	"Favourites", "File", "Folder", "New Folder", "No", "OK", "Open", "Paste", "Quit", "Redo", "Save", "Select all",
	"Show Hidden Files", "Undo", "Yes"}

var placeholder = regexp.MustCompile(`\{\{\s*\.[A-Za-z]+\s*\}\}`)

func loadTranslation(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := translations.ReadFile("translations/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// Every string the code translates is in zh-TW.json, with the same placeholders; nothing in
// the file is unused; no widget or menu gets a bare English literal.
func TestTranslationsComplete(t *testing.T) {
	keys, untranslated := sourceStrings(t)
	if len(keys) < 100 {
		t.Fatalf("only %d translated strings found: is the scan broken?", len(keys))
	}
	for _, u := range untranslated {
		t.Errorf("not translated: %s", u)
	}
	zh := loadTranslation(t, "zh-TW.json")
	used := map[string]bool{}
	missing := map[string]string{}
	for _, k := range keys {
		used[k.key] = true
		tr, ok := zh[k.key]
		switch {
		case !ok || strings.TrimSpace(tr) == "":
			missing[k.key] = ""
			t.Errorf("%s: %q has no Traditional Chinese translation", k.pos, k.key)
		case !slices.Equal(sortedMatches(k.key), sortedMatches(tr)):
			t.Errorf("%s: %q and its translation %q differ in placeholders", k.pos, k.key, tr)
		}
	}
	for _, k := range fyneKeys {
		used[k] = true
		if zh[k] == "" {
			missing[k] = ""
			t.Errorf("Fyne's %q has no Traditional Chinese translation", k)
		}
	}
	for k := range zh {
		if !used[k] {
			t.Errorf("zh-TW.json has %q, which no code uses", k)
		}
	}
	if *dumpKeys && len(missing) > 0 {
		b, _ := json.MarshalIndent(missing, "", "  ")
		os.WriteFile(filepath.Join(t.TempDir(), "x"), nil, 0o600)
		fmt.Println(string(b))
	}
}

func sortedMatches(s string) []string {
	m := placeholder.FindAllString(s, -1)
	for i := range m {
		m[i] = strings.ReplaceAll(m[i], " ", "")
	}
	slices.Sort(m)
	return slices.Compact(m)
}

// SetupLanguage sets the language for Fyne; a restart after choosing "the desktop's
// language" again gets the desktop's variables back, not the ones the app set.
func TestSetupLanguageEnv(t *testing.T) {
	for _, k := range append(slices.Clone(localeVars), localeOrigVar) {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("LANG", "C")
	t.Cleanup(func() {
		os.Setenv("LANGUAGE", "en")
		lang.AddTranslationsFS(translations, "translations")
	})
	if err := SetupLanguage("zh-TW"); err != nil {
		t.Fatal(err)
	}
	if got := lang.L("Connected"); got != "已連線" {
		t.Errorf("after SetupLanguage(zh-TW): %q", got)
	}
	if os.Getenv("LANGUAGE") != "zh_TW" || os.Getenv("LANG") != "zh_TW.UTF-8" {
		t.Errorf("env LANGUAGE=%q LANG=%q", os.Getenv("LANGUAGE"), os.Getenv("LANG"))
	}
	// As after a restart (the environment is inherited): back to the desktop's language.
	if err := SetupLanguage(""); err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv("LANGUAGE"); ok || os.Getenv("LANG") != "C" {
		t.Errorf("desktop's variables not restored: LANGUAGE=%q LANG=%q", os.Getenv("LANGUAGE"), os.Getenv("LANG"))
	}
	if got := lang.L("Connected"); got != "Connected" {
		t.Errorf("after SetupLanguage(\"\") with LANG=C: %q", got)
	}
}
