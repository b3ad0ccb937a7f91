package state

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/ipc"
)

func TestRoundTripAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := s.LoadProfiles()
	if err != nil {
		t.Fatal(err)
	}
	d := ps.CurrentData()
	if d.MachineKey.IsZero() || !d.Prefs.WantRunning || len(ps.Profiles) != 1 || d.ProfileID == "" {
		t.Fatalf("fresh state: %+v", ps)
	}
	d.Prefs.LoginServer = "https://example.test"
	d.Prefs.Operator = "alice"
	d.LoggedIn = true
	if err := s.SaveProfiles(ps.With(d)); err != nil {
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
	mk, _ := key.NewMachine().MarshalText()
	for name, body := range map[string]string{
		"not json":           "{not json",
		"newer format":       `{"Version": 3, "MachineKey": "` + string(mk) + `"}`,
		"no machine key":     `{"Version": 2, "Current": "a", "Profiles": [{"ID": "a"}]}`,
		"current missing":    `{"Version": 2, "MachineKey": "` + string(mk) + `", "Current": "b", "Profiles": [{"ID": "a"}]}`,
		"duplicate ID":       `{"Version": 2, "MachineKey": "` + string(mk) + `", "Current": "a", "Profiles": [{"ID": "a"}, {"ID": "a"}]}`,
		"v1 no machine key":  `{"LoggedIn": true}`,
		"v1 bad node key":    `{"MachineKey": "` + string(mk) + `", "NodeKey": "nope"}`,
		"wrong type of list": `{"Version": 2, "MachineKey": "` + string(mk) + `", "Profiles": {}}`,
	} {
		os.WriteFile(filepath.Join(dir, fileName), []byte(body), 0o600)
		if _, err := s.LoadProfiles(); err == nil {
			t.Errorf("%s: loaded without error", name)
		} else if name == "newer format" && !strings.Contains(err.Error(), "newer skeind") {
			t.Errorf("%s: %v", name, err)
		}
		// A refused file is left as it was: nothing is overwritten.
		if b, _ := os.ReadFile(filepath.Join(dir, fileName)); string(b) != body {
			t.Errorf("%s: file rewritten to %s", name, b)
		}
	}
}

// A state file of the single-login format becomes one profile with the same keys, login and
// prefs; the operator becomes the machine's; the file is rewritten in the new format at once.
func TestMigrateV1(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := v1{MachineKey: key.NewMachine(), NodeKey: key.NewNode(), LoggedIn: true, LoginName: "alice@example",
		Prefs: ipc.Prefs{LoginServer: "https://hs.example", WantRunning: true, Operator: "alice", ExitNodeID: "n7", Hostname: "desk"}}
	b, _ := json.Marshal(old)
	if err := os.WriteFile(filepath.Join(dir, fileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := s.LoadProfiles()
	if err != nil {
		t.Fatal(err)
	}
	if ps.Version != Version || len(ps.Profiles) != 1 || ps.Operator != "alice" || ps.MachineKey != old.MachineKey {
		t.Fatalf("migrated %+v", ps)
	}
	d := ps.CurrentData()
	if d.NodeKey != old.NodeKey || !d.LoggedIn || d.LoginName != old.LoginName || !reflect.DeepEqual(d.Prefs, old.Prefs) {
		t.Errorf("migrated current profile %+v, want %+v", d, old)
	}
	if p := ps.Find(ps.Current); p.Prefs.Operator != "" || p.DisplayName() != "alice@example" {
		t.Errorf("profile keeps operator %q / named %q", p.Prefs.Operator, p.DisplayName())
	}
	var head struct{ Version int }
	b, _ = os.ReadFile(filepath.Join(dir, fileName))
	if json.Unmarshal(b, &head); head.Version != Version {
		t.Errorf("file not rewritten in the new format:\n%s", b)
	}
	// Loading again gives the same profiles (no second migration, same ID).
	again, err := s.LoadProfiles()
	if err != nil || !reflect.DeepEqual(again, ps) {
		t.Errorf("second load %+v, %v; want %+v", again, err, ps)
	}
}

func TestProfilesWithWithout(t *testing.T) {
	ps := Profiles{Version: Version, MachineKey: key.NewMachine(), Operator: "bob"}
	a := ps.NewProfileData("work")
	ps = ps.With(a)
	ps.Current = a.ProfileID
	b := ps.NewProfileData("")
	b.Prefs.LoginServer = "https://other.example:8443"
	next := ps.With(b)
	if len(ps.Profiles) != 1 || len(next.Profiles) != 2 {
		t.Fatalf("With changed its receiver or did not add: %d, %d", len(ps.Profiles), len(next.Profiles))
	}
	if a.ProfileID == b.ProfileID {
		t.Fatal("two profiles with one ID")
	}
	if got := next.Find(b.ProfileID).DisplayName(); got != "other.example:8443" {
		t.Errorf("display name %q", got)
	}
	if got := next.DataOf(b.ProfileID).Prefs.Operator; got != "bob" {
		t.Errorf("operator of the second profile %q, want the machine's", got)
	}
	b.Prefs.Operator = ""
	next2 := next.With(b)
	if next2.Operator != "" || next.Operator != "bob" {
		t.Errorf("operator: %q (was %q)", next2.Operator, next.Operator)
	}
	gone := next.Without(b.ProfileID)
	if len(gone.Profiles) != 1 || len(next.Profiles) != 2 || gone.Find(b.ProfileID) != nil {
		t.Errorf("Without: %d profiles (receiver %d)", len(gone.Profiles), len(next.Profiles))
	}
	if !(&Profile{}).Empty() || next.Find(a.ProfileID).DisplayName() != "work" || (&Profile{}).DisplayName() != "new profile" {
		t.Error("Empty/DisplayName of plain profiles")
	}
}

// SaveProfiles refuses a set whose current profile is missing, and leaves the file alone.
func TestSaveRefusesInconsistent(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := s.LoadProfiles()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveProfiles(ps.Without(ps.Current)); err == nil {
		t.Fatal("saved a state without its current profile")
	}
	if again, err := s.LoadProfiles(); err != nil || len(again.Profiles) != 1 {
		t.Fatalf("state after a refused save: %+v, %v", again, err)
	}
}
