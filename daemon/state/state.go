// Package state persists the helper's identity and the user's prefs: one JSON file, mode 0600,
// in a 0700 directory, replaced atomically so that a crash never leaves half a file.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/internal/atomicfile"
	"github.com/skeinvpn/skein/ipc"
)

// DefaultDir is where skeind keeps its state unless told otherwise.
const DefaultDir = "/var/lib/skein"

const fileName = "skeind.state"

// Data is everything that survives a restart.
type Data struct {
	MachineKey key.MachinePrivate
	// NodeKey is the registered node key; zero when logged out.
	NodeKey key.NodePrivate
	// LoggedIn means NodeKey is registered with Prefs.LoginServer.
	LoggedIn  bool
	LoginName string `json:",omitempty"`
	Prefs     ipc.Prefs
}

// Store reads and writes Data in one directory.
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
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
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

// Load returns the stored data, or fresh data with a new machine key when there is none yet.
func (s *Store) Load() (Data, error) {
	var d Data
	b, err := os.ReadFile(filepath.Join(s.dir, fileName))
	if errors.Is(err, fs.ErrNotExist) {
		d.MachineKey = key.NewMachine()
		d.Prefs.WantRunning = true
		return d, s.Save(d)
	}
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("state file %s is corrupt: %w", filepath.Join(s.dir, fileName), err)
	}
	if d.MachineKey.IsZero() {
		return d, fmt.Errorf("state file %s has no machine key", filepath.Join(s.dir, fileName))
	}
	return d, nil
}

// Save replaces the state file atomically: write a temp file, fsync, rename, fsync the directory.
func (s *Store) Save(d Data) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.dir, fileName), b, 0o600)
}
