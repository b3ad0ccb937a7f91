package taildrop

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The inbox is on the root file system and fills while nobody takes its files (no app runs),
// so free space alone is no limit: peers share a quota, each sender may use half of it, and
// files nobody took are removed after a while. (Issue 14, hole 4.)

// Limits bound what waits in the inbox. Zero values mean the defaults.
type Limits struct {
	// MaxBytes bounds waiting and partial files together (default: a quarter of the file
	// system's size).
	MaxBytes int64
	// MaxFiles bounds their number (default 1000).
	MaxFiles int
	// PeerBytes and PeerFiles bound what one sender has there (default: half of each).
	PeerBytes int64
	PeerFiles int
	// Expiry is how long a received file waits to be taken before it is removed (default 7
	// days).
	Expiry time.Duration
}

const (
	DefaultMaxFiles = 1000
	DefaultExpiry   = 7 * 24 * time.Hour
)

// SetLimits replaces the inbox's limits.
func (in *Inbox) SetLimits(l Limits) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.limits = l
}

// effectiveLimits fills in the defaults (in.mu held).
func (in *Inbox) effectiveLimits() Limits {
	l := in.limits
	if l.MaxBytes <= 0 {
		l.MaxBytes = in.fsSize() / 4
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.PeerBytes <= 0 {
		l.PeerBytes = l.MaxBytes / 2
	}
	if l.PeerFiles <= 0 {
		l.PeerFiles = max(l.MaxFiles/2, 1)
	}
	if l.Expiry <= 0 {
		l.Expiry = DefaultExpiry
	}
	return l
}

// Expiry is how long received files wait before they are removed.
func (in *Inbox) Expiry() time.Duration {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.effectiveLimits().Expiry
}

func (in *Inbox) fsSize() int64 {
	var sf unix.Statfs_t
	if err := in.withDir(func(dfd int) error { return unix.Fstatfs(dfd, &sf) }); err != nil {
		return 0
	}
	bs := sf.Frsize
	if bs <= 0 {
		bs = sf.Bsize
	}
	return int64(sf.Blocks) * bs
}

// usage is what the inbox holds: every regular file, complete or partial.
type usage struct {
	bytes     int64
	files     int
	peerBytes map[string]int64 // by client id
	peerFiles map[string]int
}

// scanUsage adds up the inbox's files by sender: a partial's sender is in its name, a complete
// file's in its metadata (files without one count for nobody in particular).
func (in *Inbox) scanUsage() usage {
	u := usage{peerBytes: map[string]int64{}, peerFiles: map[string]int{}}
	for _, name := range in.readDir() {
		var st unix.Stat_t
		if in.withDir(func(dfd int) error { return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }) != nil ||
			st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		id := ""
		if base, ok := strings.CutSuffix(name, partialSuffix); ok {
			if i := strings.LastIndexByte(base, '.'); i >= 0 {
				id = base[i+1:]
			}
		} else if m, ok := in.meta(name); ok {
			id = clientID(m.FromID)
		}
		u.bytes += st.Size
		u.files++
		u.peerBytes[id] += st.Size
		u.peerFiles[id]++
	}
	return u
}

// meta reads the sender metadata of the complete file name.
func (in *Inbox) meta(name string) (fileMeta, bool) {
	f, _, err := in.openRegular(name)
	if err != nil {
		return fileMeta{}, false
	}
	defer f.Close()
	buf := make([]byte, 1024)
	n, err := unix.Fgetxattr(int(f.Fd()), metaXattr, buf)
	var m fileMeta
	if err != nil || json.Unmarshal(buf[:n], &m) != nil {
		return fileMeta{}, false
	}
	return m, true
}

// room is how many more bytes the transfer of peer id may write, and what limits it: the
// file system's free space beyond reserve, the inbox quota and the sender's share, each less
// what running transfers were promised (in.mu held).
func (in *Inbox) room(reserve int64, id string) (int64, string, error) {
	free, err := in.headroom(reserve)
	if err != nil {
		return 0, "", err
	}
	l := in.effectiveLimits()
	u := in.scanUsage()
	room, why := free, fmt.Sprintf("no space left beyond the %d bytes kept free", reserve)
	if q := l.MaxBytes - u.bytes - in.committed.Load(); q < room {
		room, why = q, fmt.Sprintf("the inbox is full: %d MiB of files wait to be taken (the limit is %d MiB)", u.bytes>>20, l.MaxBytes>>20)
	}
	if q := l.PeerBytes - u.peerBytes[id] - in.peerCommitted[id]; q < room {
		room, why = q, fmt.Sprintf("this sender's files already take %d MiB of the inbox (the limit per sender is %d MiB)", u.peerBytes[id]>>20, l.PeerBytes>>20)
	}
	return room, why, nil
}

// roomForFile refuses a new file when the inbox, or the sender's share of it, has as many
// files as allowed (in.mu held; partials in progress count).
func (in *Inbox) roomForFile(id string) error {
	l := in.effectiveLimits()
	u := in.scanUsage()
	switch {
	case u.files >= l.MaxFiles:
		return fmt.Errorf("%w: the inbox is full: %d files wait to be taken", errNoSpace, u.files)
	case u.peerFiles[id] >= l.PeerFiles:
		return fmt.Errorf("%w: %d files from this sender wait to be taken", errNoSpace, u.peerFiles[id])
	}
	return nil
}

// cleanExpired removes complete files that waited longer than the expiry.
func (in *Inbox) cleanExpired() {
	in.mu.Lock()
	expiry := in.effectiveLimits().Expiry
	in.mu.Unlock()
	cutoff := in.now().Add(-expiry)
	removed := false
	for _, name := range in.readDir() {
		if ValidateName(name) != nil {
			continue
		}
		wf, err := in.stat(name)
		if err != nil || !wf.Received.Before(cutoff) {
			continue
		}
		in.logf("taildrop: removing %q from %s: nobody took it in %v", name, wf.From, expiry)
		if err := in.Delete(name); err == nil {
			removed = true
		}
	}
	if removed {
		in.notify()
	}
}
