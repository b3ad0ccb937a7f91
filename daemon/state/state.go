// Package state persists the helper's identity and its profiles (several logins, each with its
// own node key, prefs and control server): one JSON file, mode 0600, in a 0700 directory,
// replaced atomically so that a crash never leaves half a file. A state file of the
// single-login format (version 1) is migrated to profiles on first load, in one atomic write.
package state

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/internal/atomicfile"
	"github.com/skeinvpn/skein/ipc"
)

// DefaultDir is where skeind keeps its state unless told otherwise.
const DefaultDir = "/var/lib/skein"

const fileName = "skeind.state"

// Version is the state file format this package writes. Version 1 (no Version field) held one
// login; version 2 holds profiles.
const Version = 2

// Data is the current profile as the backend works with it, with the machine-wide fields
// (machine key, operator) filled in.
type Data struct {
	MachineKey key.MachinePrivate
	// NodeKey is the registered node key; zero when logged out.
	NodeKey key.NodePrivate
	// LoggedIn means NodeKey is registered with Prefs.LoginServer.
	LoggedIn  bool
	LoginName string `json:",omitempty"`
	// Prefs.Operator is machine-wide: the same in every profile.
	Prefs ipc.Prefs
	// ProfileID and ProfileName name the profile ("" name: named after its login).
	ProfileID   string `json:",omitempty"`
	ProfileName string `json:",omitempty"`
	// Tailnet is the MagicDNS suffix of the profile's tailnet as last seen (for lists).
	Tailnet string `json:",omitempty"`
}

// Profile is one login kept on this machine.
type Profile struct {
	ID string
	// Name is the nickname (skein login --nickname); "" means it is named after its login.
	Name      string `json:",omitempty"`
	NodeKey   key.NodePrivate
	LoggedIn  bool
	LoginName string `json:",omitempty"`
	Tailnet   string `json:",omitempty"`
	// Prefs of this login; Operator is never kept here (see Profiles.Operator).
	Prefs ipc.Prefs
}

// Empty reports whether the profile never logged in: a fresh machine's first profile, which a
// new login reuses instead of leaving it in the list.
func (p *Profile) Empty() bool {
	return !p.LoggedIn && p.NodeKey.IsZero() && p.LoginName == "" && p.Prefs.LoginServer == ""
}

// DisplayName is what lists call the profile: the nickname, else the login name, else the
// login server's host.
func (p *Profile) DisplayName() string {
	switch {
	case p.Name != "":
		return p.Name
	case p.LoginName != "":
		return p.LoginName
	case p.Prefs.LoginServer != "":
		if u, err := url.Parse(p.Prefs.LoginServer); err == nil && u.Host != "" {
			return u.Host
		}
		return p.Prefs.LoginServer
	}
	return "new profile"
}

// Profiles is the state file: this machine's identity, the machine-wide operator (who may
// change state must not depend on which login is current) and every profile.
type Profiles struct {
	Version    int
	MachineKey key.MachinePrivate
	Operator   string `json:",omitempty"`
	// Current is the ID of the profile in use.
	Current  string
	Profiles []Profile
}

// Find returns the profile with the given ID, or nil.
func (ps *Profiles) Find(id string) *Profile {
	for i := range ps.Profiles {
		if ps.Profiles[i].ID == id {
			return &ps.Profiles[i]
		}
	}
	return nil
}

// CurrentData is the current profile with the machine-wide fields.
func (ps Profiles) CurrentData() Data {
	return ps.DataOf(ps.Current)
}

// DataOf is the profile id with the machine-wide fields (zero profile fields when unknown).
func (ps Profiles) DataOf(id string) Data {
	d := Data{MachineKey: ps.MachineKey, ProfileID: id}
	if p := ps.Find(id); p != nil {
		d.NodeKey, d.LoggedIn, d.LoginName, d.Prefs = p.NodeKey, p.LoggedIn, p.LoginName, p.Prefs
		d.ProfileName, d.Tailnet = p.Name, p.Tailnet
	}
	d.Prefs.Operator = ps.Operator
	return d
}

// With returns a copy of ps in which d's profile (added when new) holds d and d's operator is
// the machine's; ps itself is not changed, so a failed save can leave it as it was.
func (ps Profiles) With(d Data) Profiles {
	next := ps
	next.Profiles = slices.Clone(ps.Profiles)
	next.Operator = d.Prefs.Operator
	p := Profile{ID: d.ProfileID, Name: d.ProfileName, NodeKey: d.NodeKey, LoggedIn: d.LoggedIn, LoginName: d.LoginName, Tailnet: d.Tailnet, Prefs: d.Prefs}
	p.Prefs.Operator = ""
	if i := slices.IndexFunc(next.Profiles, func(q Profile) bool { return q.ID == d.ProfileID }); i >= 0 {
		next.Profiles[i] = p
	} else {
		next.Profiles = append(next.Profiles, p)
	}
	return next
}

// Without returns a copy of ps without the profile id.
func (ps Profiles) Without(id string) Profiles {
	next := ps
	next.Profiles = slices.DeleteFunc(slices.Clone(ps.Profiles), func(p Profile) bool { return p.ID == id })
	return next
}

// NewID returns a profile ID not in use: four hex digits, as the official client's.
func (ps *Profiles) NewID() string {
	for {
		var b [2]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if ps.Find(id) == nil {
			return id
		}
	}
}

// NewProfileData is a new, logged-out profile's data: default prefs, the machine's operator.
func (ps *Profiles) NewProfileData(name string) Data {
	d := Data{MachineKey: ps.MachineKey, ProfileID: ps.NewID(), ProfileName: name}
	d.Prefs.WantRunning = true
	d.Prefs.Operator = ps.Operator
	return d
}

// Store reads and writes the state file in one directory.
type Store struct {
	dir string
}

// Open creates the directory (0700) when missing and checks that it is writable, so a bad
// --statedir fails at start rather than at the first login.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return &Store{dir: dir}, nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path() string { return filepath.Join(s.dir, fileName) }

// v1 is the single-login format of version 1.
type v1 struct {
	MachineKey key.MachinePrivate
	NodeKey    key.NodePrivate
	LoggedIn   bool
	LoginName  string
	Prefs      ipc.Prefs
}

// LoadProfiles returns the stored profiles: fresh ones (a new machine key, one empty profile)
// when there is no state yet, and a version 1 file migrated (and written back) as one profile.
func (s *Store) LoadProfiles() (Profiles, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		ps := Profiles{Version: Version, MachineKey: key.NewMachine()}
		d := ps.NewProfileData("")
		ps = ps.With(d)
		ps.Current = d.ProfileID
		if err := s.SaveProfiles(ps); err != nil {
			// Without a saved machine key every restart would be a new machine to control.
			return ps, fmt.Errorf("cannot save a new machine key in %s: %w", s.dir, err)
		}
		return ps, nil
	}
	if err != nil {
		return Profiles{}, err
	}
	var head struct{ Version int }
	if err := json.Unmarshal(b, &head); err != nil {
		return Profiles{}, fmt.Errorf("state file %s is corrupt: %w", s.path(), err)
	}
	switch {
	case head.Version > Version:
		return Profiles{}, fmt.Errorf("state file %s has format version %d, written by a newer skeind (this one reads up to %d)", s.path(), head.Version, Version)
	case head.Version < Version:
		var old v1
		if err := json.Unmarshal(b, &old); err != nil {
			return Profiles{}, fmt.Errorf("state file %s is corrupt: %w", s.path(), err)
		}
		if old.MachineKey.IsZero() {
			return Profiles{}, fmt.Errorf("state file %s has no machine key", s.path())
		}
		ps := Profiles{Version: Version, MachineKey: old.MachineKey}
		d := Data{MachineKey: old.MachineKey, ProfileID: ps.NewID(), NodeKey: old.NodeKey, LoggedIn: old.LoggedIn, LoginName: old.LoginName, Prefs: old.Prefs}
		ps = ps.With(d)
		ps.Current = d.ProfileID
		// One atomic write: a crash leaves either the old file (migrated again next time) or
		// the new one.
		if err := s.SaveProfiles(ps); err != nil {
			return Profiles{}, fmt.Errorf("migrating state file %s: %w", s.path(), err)
		}
		return ps, nil
	}
	var ps Profiles
	if err := json.Unmarshal(b, &ps); err != nil {
		return Profiles{}, fmt.Errorf("state file %s is corrupt: %w", s.path(), err)
	}
	if ps.MachineKey.IsZero() {
		return Profiles{}, fmt.Errorf("state file %s has no machine key", s.path())
	}
	if err := ps.check(); err != nil {
		return Profiles{}, fmt.Errorf("state file %s: %w", s.path(), err)
	}
	return ps, nil
}

// check rejects a file whose profiles make no sense (duplicate or missing IDs).
func (ps *Profiles) check() error {
	seen := map[string]bool{}
	for _, p := range ps.Profiles {
		if p.ID == "" || seen[p.ID] {
			return fmt.Errorf("profile ID %q missing or used twice", p.ID)
		}
		seen[p.ID] = true
	}
	if !seen[ps.Current] {
		return fmt.Errorf("current profile %q is not among the profiles", ps.Current)
	}
	return nil
}

// Load returns the current profile's data (see LoadProfiles).
func (s *Store) Load() (Data, error) {
	ps, err := s.LoadProfiles()
	if err != nil {
		return Data{}, err
	}
	return ps.CurrentData(), nil
}

// SaveProfiles replaces the state file atomically: write a temp file, fsync, rename, fsync the
// directory.
func (s *Store) SaveProfiles(ps Profiles) error {
	ps.Version = Version
	if err := ps.check(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(ps, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path(), b, 0o600)
}
