package forwarding

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const persistMarker = "# Written by skeind"

func persistPath() string { return filepath.Join(SysctlDir, PersistFileName) }

func persistContent(ipv6 bool) string {
	var b strings.Builder
	b.WriteString(persistMarker + ": the user chose to keep IP forwarding on for\n")
	b.WriteString("# Skein's exit node / subnet router. skeind deletes this file when that\n")
	b.WriteString("# choice is withdrawn.\n")
	b.WriteString(dotted(forwardKey(famV4)) + " = 1\n")
	if ipv6 {
		b.WriteString(dotted(forwardKey(famV6)) + " = 1\n")
	}
	return b.String()
}

// readPersist returns the drop-in's content and whether skeind wrote it.
func readPersist() (content string, ours, exists bool) {
	b, err := os.ReadFile(persistPath())
	if err != nil {
		return "", false, !errors.Is(err, fs.ErrNotExist)
	}
	s := string(b)
	return s, strings.HasPrefix(s, persistMarker), true
}

func persistCurrent(ipv6 bool) bool {
	s, ours, _ := readPersist()
	return ours && s == persistContent(ipv6)
}

// setPersist writes or removes the sysctl.d drop-in. A file of that name
// that skeind did not write is never modified.
func (m *Manager) setPersist(on, ipv6 bool) error {
	content, ours, exists := readPersist()
	if on {
		if exists && !ours {
			return fmt.Errorf("%s exists and was not written by skeind; not replacing it", persistPath())
		}
		if want := persistContent(ipv6); content != want {
			if err := os.MkdirAll(SysctlDir, 0o755); err != nil {
				return err
			}
			if err := writeFileAtomic(persistPath(), []byte(want), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", persistPath(), err)
			}
			m.logf("forwarding: wrote %s", persistPath())
		}
		if !m.j.Persisted {
			m.j.Persisted = true
			return m.save()
		}
		return nil
	}
	if ours {
		if err := os.Remove(persistPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		syncDir(SysctlDir)
		m.logf("forwarding: removed %s", persistPath())
	}
	if m.j.Persisted {
		m.j.Persisted = false
		return m.save()
	}
	return nil
}
