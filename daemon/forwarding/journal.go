package forwarding

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/skeinvpn/skein/internal/atomicfile"
)

// journalName is the file in the state directory that records, before
// anything on the host is changed, what must be put back.
const journalName = "forwarding.json"

const journalVersion = 1

// journal is the on-disk record of host changes that are still in effect.
// It is written (fsync + atomic rename) before each change, so after a crash
// it describes a superset of what the dead process had done.
type journal struct {
	Version int `json:"version"`
	// Table is set while our nftables table may exist ("inet skein").
	Table string `json:"table,omitempty"`
	// Sysctls holds, per family ("ipv4", "ipv6"), the values found before
	// we turned forwarding on: the global switch first, then the
	// "default" and per-interface values that writing it overwrites.
	Sysctls map[string][]sysctlValue `json:"sysctls,omitempty"`
	// Persisted is set once the sysctl.d file is in place: the runtime
	// values are then the user's choice and are not restored.
	Persisted bool `json:"persisted,omitempty"`
}

type sysctlValue struct {
	Key   string `json:"key"` // slash form below /proc/sys, e.g. "net/ipv4/ip_forward"
	Value string `json:"value"`
}

func (j *journal) empty() bool {
	return j.Table == "" && len(j.Sysctls) == 0 && !j.Persisted
}

func journalPath(stateDir string) string { return filepath.Join(stateDir, journalName) }

// loadJournal reads the journal; a missing file is an empty journal.
func loadJournal(stateDir string) (journal, error) {
	var j journal
	b, err := os.ReadFile(journalPath(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return j, err
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return journal{}, fmt.Errorf("parse %s: %w", journalPath(stateDir), err)
	}
	if j.Version != journalVersion {
		return journal{}, fmt.Errorf("%s: unknown version %d", journalPath(stateDir), j.Version)
	}
	return j, nil
}

// saveJournal durably replaces the journal, or removes it when empty.
func saveJournal(stateDir string, j *journal) error {
	p := journalPath(stateDir)
	if j.empty() {
		err := os.Remove(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err == nil {
			syncDir(stateDir)
		}
		return nil
	}
	j.Version = journalVersion
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(p, append(b, '\n'), 0o600)
}

// writeFileAtomic and syncDir: see internal/atomicfile.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.Write(path, data, perm)
}

func syncDir(dir string) { atomicfile.SyncDir(dir) }
