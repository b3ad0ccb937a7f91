package state

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRoundTripAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if d.MachineKey.IsZero() || !d.Prefs.WantRunning {
		t.Fatalf("fresh state: %+v", d)
	}
	d.Prefs.LoginServer = "https://example.test"
	d.LoggedIn = true
	if err := s.Save(d); err != nil {
		t.Fatal(err)
	}
	d2, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if d2.MachineKey != d.MachineKey || !reflect.DeepEqual(d2.Prefs, d.Prefs) || !d2.LoggedIn {
		t.Fatalf("reloaded %+v, want %+v", d2, d)
	}
	fi, err := os.Stat(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(dir)
	if di.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", di.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("leftover files in state dir: %v", ents)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, fileName), []byte("{not json"), 0o600)
	if _, err := s.Load(); err == nil {
		t.Fatal("corrupt state loaded without error")
	}
}
