package ui

import (
	"embed"
	"os"
	"slices"
	"strconv"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/lang"
)

// The app's languages. Every user-visible string goes through Fyne's translation support
// (lang.L, with the English text as the key); translations/zh-TW.json holds Traditional
// Chinese, and the same file translates Fyne's own words (dialog buttons) for it. The language
// follows the desktop's locale (LANGUAGE, LC_MESSAGES, LANG) unless the Language page chose one.
// A test fails when a string used in code is missing from a translation.

//go:embed translations/*.json
var translations embed.FS

// Language is one language the app speaks.
type Language struct {
	Tag  string // BCP 47; "" for the desktop's choice
	Name string // in that language
}

// Languages lists the app's languages, the desktop's choice first.
var Languages = []Language{{"", ""}, {"en", "English"}, {"zh-TW", "繁體中文（台灣）"}}

// prefLanguage is the preference key of the Language page's choice.
const prefLanguage = "app.language"

// ChosenLanguage is the language the Language page chose ("" = the desktop's), valid or not.
func ChosenLanguage(fa fyne.App) string {
	tag := fa.Preferences().String(prefLanguage)
	for _, l := range Languages {
		if l.Tag == tag {
			return tag
		}
	}
	return ""
}

// localeVars are the variables the language is read from; localeOrigVar keeps their values as
// the desktop set them, so that a restart after choosing "the desktop's language" gets them back.
var localeVars = []string{"LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"}

const localeOrigVar = "SKEIN_GUI_LOCALE_ENV"

// restoreLocaleEnv puts the desktop's locale variables back (after a restart in another
// language), or records them on the first start.
func restoreLocaleEnv() {
	if orig, ok := os.LookupEnv(localeOrigVar); ok {
		for _, kv := range strings.Split(orig, "\x1f") {
			k, v, _ := strings.Cut(kv, "=")
			if !slices.Contains(localeVars, k) {
				continue
			}
			if v == "\x1e" {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, v)
			}
		}
		return
	}
	var kvs []string
	for _, k := range localeVars {
		v, ok := os.LookupEnv(k)
		if !ok {
			v = "\x1e" // unset
		}
		kvs = append(kvs, k+"="+v)
	}
	os.Setenv(localeOrigVar, strings.Join(kvs, "\x1f"))
}

// SetupLanguage loads the app's translations with tag as the language ("" = the desktop's
// locale). It must run before the window is built; a later change takes a restart.
func SetupLanguage(tag string) error {
	restoreLocaleEnv()
	if tag != "" {
		// Fyne picks the language from the environment, as gettext does: LANGUAGE first,
		// unless the locale is C or POSIX.
		os.Setenv("LANGUAGE", strings.ReplaceAll(tag, "-", "_"))
		for _, env := range []string{"LC_ALL", "LC_MESSAGES", "LANG"} {
			if v := os.Getenv(env); v != "" {
				if v == "C" || v == "POSIX" {
					os.Setenv(env, strings.ReplaceAll(tag, "-", "_")+".UTF-8")
				}
				break
			}
		}
	}
	return lang.AddTranslationsFS(translations, "translations")
}

// plural is "1 name" or "3 names", both translated: one is a key for n == 1, many a key with
// {{.N}} for the others.
func plural(n int, one, many string) string {
	if n == 1 {
		return lang.L(one)
	}
	return lang.L(many, map[string]any{"N": strconv.Itoa(n)})
}
