package taildrop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/ipc"
)

const (
	// staleAfter is how long a partial file that nobody writes to is kept for a resume
	// (the official client's delay too).
	staleAfter = time.Hour
	// cleanEvery is how often stale partial files are looked for.
	cleanEvery = time.Hour

	// copyBufSize is the unit of reading a body and writing it to disk.
	copyBufSize = 1 << 20
	// spaceCheckEvery is how many bytes a transfer of unknown length writes between checks of
	// the free space.
	spaceCheckEvery = 8 << 20
	// writebackEvery is how many bytes are written before the kernel is asked to start writing
	// them back, so that the final fsync has little left to do.
	writebackEvery = 32 << 20

	// metaXattr holds the sender of a received file ([fileMeta] as JSON). It is set on the
	// partial before it is fsync'ed and renamed, so it is part of the file's inode: a crash
	// can never leave a complete file with someone else's metadata, nor metadata without file.
	metaXattr = "user.skein.taildrop"
)

// Errors of a transfer; the peer API maps them to HTTP statuses.
var (
	errInProgress = errors.New("file already exists") // the official text for 409
	errNoSpace    = errors.New("insufficient storage")
	errBadOffset  = errors.New("resume offset beyond the partial file")
	errTooSlow    = errors.New("request body too slow")
	errShortBody  = errors.New("body shorter than Content-Length")
	errClosed     = errors.New("taildrop inbox closed")
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// fileMeta is what the inbox remembers about a received file beside its bytes.
type fileMeta struct {
	From     string `json:"from,omitempty"`
	FromID   string `json:"fromID,omitempty"`
	Received int64  `json:"received,omitempty"` // Unix nanoseconds
}

// Inbox is the root-owned directory where received files wait until the desktop user takes
// them. All access goes through one directory descriptor; no path below it is ever resolved
// through a symbolic link.
type Inbox struct {
	dir  string
	logf func(string, ...any)

	// fdMu guards dfd against Close while a system call uses it.
	fdMu   sync.RWMutex
	dfd    int
	closed bool

	mu       sync.Mutex
	active   map[string]bool // partial names being written
	changed  chan struct{}
	onArrive []func(ipc.WaitingFile)

	// committed is the number of bytes promised to transfers of known length and not yet
	// written; admission and the space checks subtract it from the free space.
	committed atomic.Int64
	// peerCommitted is committed by sender (client id; in.mu).
	peerCommitted map[string]int64
	limits        Limits // quota_linux.go (in.mu)

	// Replaceable in tests.
	avail func() (int64, error) // free bytes on the inbox's file system
	now   func() time.Time

	xattrWarned atomic.Bool
	stop        chan struct{}
	wg          sync.WaitGroup
}

// OpenInbox opens (creating if needed, mode 0700) the inbox directory dir, which must be an
// absolute path whose last element is a real directory owned by the current user (root in
// skeind); a wrong mode is corrected. Stale partial files (untouched for an hour) are removed
// now and every hour until Close.
func OpenInbox(dir string, logf func(string, ...any)) (*Inbox, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("taildrop: inbox %q is not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("taildrop: inbox: %w", err)
	}
	if err := unix.Mkdir(dir, 0o700); err != nil && err != unix.EEXIST {
		return nil, fmt.Errorf("taildrop: inbox: mkdir %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP || err == unix.ENOTDIR {
			return nil, fmt.Errorf("taildrop: inbox %s is not a directory (symbolic links are refused)", dir)
		}
		return nil, fmt.Errorf("taildrop: inbox: open %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("taildrop: inbox: stat %s: %w", dir, err)
	}
	if int(st.Uid) != os.Geteuid() {
		unix.Close(fd)
		return nil, fmt.Errorf("taildrop: inbox %s is owned by uid %d, not %d", dir, st.Uid, os.Geteuid())
	}
	if st.Mode&0o7777 != 0o700 {
		if err := unix.Fchmod(fd, 0o700); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("taildrop: inbox: chmod %s: %w", dir, err)
		}
	}
	in := &Inbox{
		dir:     dir,
		logf:    logf,
		dfd:     fd,
		active:  make(map[string]bool),
		changed: make(chan struct{}),

		peerCommitted: map[string]int64{},
		now:           time.Now,
		stop:          make(chan struct{}),
	}
	in.avail = in.statfsAvail
	in.cleanStale()
	in.cleanExpired()
	in.wg.Add(1)
	go in.cleaner()
	return in, nil
}

// Dir is the inbox directory.
func (in *Inbox) Dir() string { return in.dir }

// Close stops the cleaner and releases the directory. Transfers still running fail.
func (in *Inbox) Close() error {
	in.fdMu.Lock()
	if in.closed {
		in.fdMu.Unlock()
		return nil
	}
	in.closed = true
	err := unix.Close(in.dfd)
	in.fdMu.Unlock()
	close(in.stop)
	in.wg.Wait()
	return err
}

// withDir runs f with the directory descriptor, which stays open until f returns.
func (in *Inbox) withDir(f func(dfd int) error) error {
	in.fdMu.RLock()
	defer in.fdMu.RUnlock()
	if in.closed {
		return errClosed
	}
	return f(in.dfd)
}

func (in *Inbox) statfsAvail() (int64, error) {
	var sf unix.Statfs_t
	err := in.withDir(func(dfd int) error { return unix.Fstatfs(dfd, &sf) })
	if err != nil {
		return 0, err
	}
	bs := sf.Frsize
	if bs <= 0 {
		bs = sf.Bsize
	}
	return int64(sf.Bavail) * bs, nil
}

// Changed returns a channel that is closed (and replaced by a new one) when a file arrives in
// the inbox or is deleted through it.
func (in *Inbox) Changed() <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.changed
}

func (in *Inbox) notify() {
	in.mu.Lock()
	close(in.changed)
	in.changed = make(chan struct{})
	in.mu.Unlock()
}

// OnArrive registers f to be called (on the receiving goroutine) after each file is complete:
// written, fsync'ed and renamed to its final name. f must not block for long.
func (in *Inbox) OnArrive(f func(ipc.WaitingFile)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.onArrive = append(in.onArrive, f)
}

// Waiting lists the complete files in the inbox, oldest first. Partial files, hidden files,
// names [ValidateName] refuses and anything that is not a regular file are left out.
func (in *Inbox) Waiting() []ipc.WaitingFile {
	var out []ipc.WaitingFile
	for _, name := range in.readDir() {
		if ValidateName(name) != nil {
			continue
		}
		if wf, err := in.stat(name); err == nil {
			out = append(out, wf)
		}
	}
	slices.SortFunc(out, func(a, b ipc.WaitingFile) int {
		if c := a.Received.Compare(b.Received); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// readDir lists the names in the inbox.
func (in *Inbox) readDir() []string {
	var out []string
	err := in.withDir(func(dfd int) error {
		fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), in.dir)
		defer f.Close()
		out, err = f.Readdirnames(-1)
		return err
	})
	if err != nil {
		in.logf("taildrop: reading inbox: %v", err)
	}
	return out
}

// stat describes the complete file name.
func (in *Inbox) stat(name string) (ipc.WaitingFile, error) {
	f, size, err := in.openRegular(name)
	if err != nil {
		return ipc.WaitingFile{}, err
	}
	defer f.Close()
	wf := ipc.WaitingFile{Name: name, Size: size}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil {
		wf.Received = time.Unix(st.Mtim.Unix())
	}
	buf := make([]byte, 1024)
	if n, err := unix.Fgetxattr(int(f.Fd()), metaXattr, buf); err == nil {
		var m fileMeta
		if json.Unmarshal(buf[:n], &m) == nil {
			wf.From, wf.FromID = m.From, m.FromID
			if m.Received != 0 {
				wf.Received = time.Unix(0, m.Received)
			}
		}
	}
	if !wf.Received.IsZero() {
		wf.Expires = wf.Received.Add(in.Expiry())
	}
	return wf, nil
}

// Open opens the complete file name for reading and returns it with its size. Symbolic links
// and anything but a regular file are refused.
func (in *Inbox) Open(name string) (*os.File, int64, error) {
	if err := ValidateName(name); err != nil {
		return nil, 0, err
	}
	return in.openRegular(name)
}

// openRegular opens name in the inbox read-only without following a symbolic link, and only if
// it is a regular file (checked before opening, so a device or FIFO is never opened, and again
// on the descriptor).
func (in *Inbox) openRegular(name string) (*os.File, int64, error) {
	var f *os.File
	var size int64
	err := in.withDir(func(dfd int) error {
		var pre unix.Stat_t
		if err := unix.Fstatat(dfd, name, &pre, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if pre.Mode&unix.S_IFMT != unix.S_IFREG {
			return errNotRegular
		}
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != pre.Ino || st.Dev != pre.Dev {
			unix.Close(fd)
			return errNotRegular
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), filepath.Join(in.dir, name))
		size = st.Size
		return nil
	})
	if err != nil {
		return nil, 0, pathError("open", name, err)
	}
	return f, size, nil
}

var errNotRegular = errors.New("not a regular file")

func pathError(op, name string, err error) error {
	if err == unix.ENOENT {
		err = os.ErrNotExist
	}
	return &os.PathError{Op: "taildrop: " + op, Path: name, Err: err}
}

// Delete removes the complete file name (after the user took it). Only regular files are
// removed.
func (in *Inbox) Delete(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	err := in.withDir(func(dfd int) error {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return errNotRegular
		}
		return unix.Unlinkat(dfd, name, 0)
	})
	if err != nil {
		return pathError("delete", name, err)
	}
	in.notify()
	return nil
}

func (in *Inbox) cleaner() {
	defer in.wg.Done()
	t := time.NewTicker(cleanEvery)
	defer t.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-t.C:
			in.cleanStale()
			in.cleanExpired()
		}
	}
}

// cleanStale removes partial files that are not being written and were last modified more than
// staleAfter ago. Only regular files are removed.
func (in *Inbox) cleanStale() {
	cutoff := in.now().Add(-staleAfter)
	for _, name := range in.readDir() {
		if !strings.HasSuffix(name, partialSuffix) {
			continue
		}
		in.mu.Lock()
		if !in.active[name] {
			err := in.withDir(func(dfd int) error {
				var st unix.Stat_t
				if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return err
				}
				if st.Mode&unix.S_IFMT != unix.S_IFREG || !time.Unix(st.Mtim.Unix()).Before(cutoff) {
					return nil
				}
				in.logf("taildrop: removing stale partial file %q", name)
				return unix.Unlinkat(dfd, name, 0)
			})
			if err != nil && err != unix.ENOENT {
				in.logf("taildrop: cleaning %q: %v", name, err)
			}
		}
		in.mu.Unlock()
	}
}

// partials lists the partial files of the peer with client id.
func (in *Inbox) partials(id string) []string {
	var out []string
	suffix := "." + id + partialSuffix
	for _, name := range in.readDir() {
		if strings.HasSuffix(name, suffix) && in.isRegular(name) {
			out = append(out, name)
		}
	}
	return out
}

// isRegular reports whether name in the inbox is a regular file (not following a symlink).
func (in *Inbox) isRegular(name string) bool {
	var st unix.Stat_t
	err := in.withDir(func(dfd int) error { return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}

// openPartial opens the partial file of name from the peer with client id for reading; nil
// without error when there is none.
func (in *Inbox) openPartial(name, id string) (*os.File, error) {
	f, _, err := in.openRegular(partialName(name, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return f, err
}

// received is the outcome of a transfer.
type received struct {
	Name      string // final name in the inbox
	Size      int64  // size of the whole file
	Written   int64  // bytes taken from the body
	Duplicate bool   // an identical file was already there under Name
}

// receive stores a file sent by peer p: body holds the bytes from offset on; length is their
// number, or -1 when unknown. reserve is the free space to leave on the file system.
//
// The bytes go to the partial file "<name>.<id>.partial" (created only when offset is 0;
// otherwise it must exist and be at least offset bytes long, and is cut to offset). When the
// body ends early or fails the partial stays, for a resume; when space runs out it is removed.
// On success the file is fsync'ed, renamed without replacing anything and the directory
// fsync'ed.
func (in *Inbox) receive(p Peer, name string, offset, length int64, body io.Reader, reserve int64) (res received, err error) {
	if err := ValidateName(name); err != nil {
		return res, err
	}
	if offset < 0 {
		return res, errBadOffset
	}
	id := clientID(p.StableID)
	pname := partialName(name, id)

	// Claim the name, then the space, under one lock so that concurrent admissions see each
	// other's promises.
	in.mu.Lock()
	if in.active[pname] {
		in.mu.Unlock()
		return res, errInProgress
	}
	var promised int64
	nextCheck := int64(-1) // for unknown lengths: written bytes at which to look at the room left again
	if offset == 0 && !in.isRegular(pname) {
		if err := in.roomForFile(id); err != nil {
			in.mu.Unlock()
			return res, err
		}
	}
	room, why, err := in.room(reserve, id)
	if err != nil {
		in.mu.Unlock()
		return res, fmt.Errorf("checking free space: %w", err)
	}
	if length < 0 {
		if room <= 0 {
			in.mu.Unlock()
			return res, fmt.Errorf("%w: %s", errNoSpace, why)
		}
		nextCheck = min(room, spaceCheckEvery)
	} else {
		if length > room {
			in.mu.Unlock()
			return res, fmt.Errorf("%w: the file needs %d bytes, %d are available: %s", errNoSpace, length, max(room, 0), why)
		}
		promised = length
		in.committed.Add(promised)
		in.peerCommitted[id] += promised
	}
	in.active[pname] = true
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.committed.Add(-promised)
		if in.peerCommitted[id] -= promised; in.peerCommitted[id] <= 0 {
			delete(in.peerCommitted, id)
		}
		delete(in.active, pname)
		in.mu.Unlock()
	}()

	f, err := in.openPartialForWrite(pname, offset)
	if err != nil {
		return res, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	removePartial := func() {
		f.Close()
		f = nil
		in.withDir(func(dfd int) error { return unix.Unlinkat(dfd, pname, 0) })
	}

	// Copy, filling a large buffer before each write.
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	fd := int(f.Fd())
	pos := offset
	var written, synced int64 = 0, offset
	var rerr error
	for rerr == nil {
		n := 0
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = body.Read(buf[n:])
			n += m
		}
		if n == 0 {
			break
		}
		if _, werr := f.Write(buf[:n]); werr != nil {
			if errors.Is(werr, unix.ENOSPC) || errors.Is(werr, unix.EDQUOT) {
				removePartial()
				return res, fmt.Errorf("%w: the file system is full", errNoSpace)
			}
			return res, fmt.Errorf("writing: %w", werr)
		}
		pos += int64(n)
		written += int64(n)
		if promised > 0 {
			d := min(int64(n), promised)
			in.mu.Lock()
			promised -= d
			in.committed.Add(-d)
			in.peerCommitted[id] -= d
			in.mu.Unlock()
		}
		if nextCheck >= 0 && written >= nextCheck {
			// The next look is due before the room could be used up, so at most one buffer's
			// worth is written past a limit.
			in.mu.Lock()
			room, why, err := in.room(reserve, id)
			in.mu.Unlock()
			if err == nil && room <= 0 {
				removePartial()
				return res, fmt.Errorf("%w: stopped after %d bytes: %s", errNoSpace, pos, why)
			}
			nextCheck = written + max(min(room, spaceCheckEvery), 1)
		}
		if pos-synced >= writebackEvery {
			unix.SyncFileRange(fd, synced, pos-synced, unix.SYNC_FILE_RANGE_WRITE)
			synced = pos
		}
	}
	if rerr != io.EOF {
		if errors.Is(rerr, errTooSlow) {
			return res, rerr
		}
		return res, fmt.Errorf("%w after %d bytes: %v", errShortBody, written, rerr)
	}
	if length >= 0 && written != length {
		return res, fmt.Errorf("%w: got %d of %d bytes", errShortBody, written, length)
	}

	now := in.now()
	meta, _ := json.Marshal(fileMeta{From: p.Name, FromID: p.StableID, Received: now.UnixNano()})
	if err := unix.Fsetxattr(fd, metaXattr, meta, 0); err != nil && !in.xattrWarned.Swap(true) {
		in.logf("taildrop: cannot record senders (extended attributes unsupported?): %v", err)
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return res, fmt.Errorf("close: %w", err)
	}
	f = nil

	final, dup, err := in.publish(pname, name, pos)
	if err != nil {
		// Complete but with nowhere to go: a resume could not help, so free the space.
		in.withDir(func(dfd int) error { return unix.Unlinkat(dfd, pname, 0) })
		return res, err
	}
	res = received{Name: final, Size: pos, Written: written, Duplicate: dup}
	wf := ipc.WaitingFile{Name: final, Size: pos, From: p.Name, FromID: p.StableID, Received: now}
	if dup {
		if w, err := in.stat(final); err == nil {
			wf = w
		}
	}
	in.notify()
	in.mu.Lock()
	cbs := slices.Clone(in.onArrive)
	in.mu.Unlock()
	for _, cb := range cbs {
		cb(wf)
	}
	return res, nil
}

// headroom is the free space beyond reserve and the bytes promised to running transfers.
func (in *Inbox) headroom(reserve int64) (int64, error) {
	avail, err := in.avail()
	if err != nil {
		return 0, err
	}
	return avail - in.committed.Load() - reserve, nil
}

// openPartialForWrite opens (offset 0: creates) the partial pname for writing at offset,
// cutting it there. Symbolic links, hard-linked files and non-regular files are refused.
func (in *Inbox) openPartialForWrite(pname string, offset int64) (*os.File, error) {
	var f *os.File
	err := in.withDir(func(dfd int) error {
		flags := unix.O_WRONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
		if offset == 0 {
			flags |= unix.O_CREAT
		}
		fd, err := unix.Openat(dfd, pname, flags, 0o600)
		if err != nil {
			switch err {
			case unix.ENOENT:
				return errBadOffset
			case unix.ELOOP:
				return fmt.Errorf("partial file %q is a symbolic link; refusing", pname)
			}
			return fmt.Errorf("opening partial file: %w", err)
		}
		fail := func(e error) error { unix.Close(fd); return e }
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fail(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
			return fail(fmt.Errorf("partial file %q is not a plain regular file; refusing", pname))
		}
		if st.Size < offset {
			return fail(fmt.Errorf("%w (%d > %d)", errBadOffset, offset, st.Size))
		}
		if st.Mode&0o7777 != 0o600 {
			if err := unix.Fchmod(fd, 0o600); err != nil {
				return fail(err)
			}
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			return fail(err)
		}
		if err := unix.Ftruncate(fd, offset); err != nil {
			return fail(fmt.Errorf("truncating partial file: %w", err))
		}
		if _, err := unix.Seek(fd, offset, io.SeekStart); err != nil {
			return fail(err)
		}
		f = os.NewFile(uintptr(fd), filepath.Join(in.dir, pname))
		return nil
	})
	return f, err
}

// publish renames the complete partial pname to name, or to the first free alternative, never
// replacing anything. When a name is taken by a regular file with the same bytes, the partial
// is dropped instead and that name returned with dup set.
func (in *Inbox) publish(pname, name string, size int64) (final string, dup bool, err error) {
	for _, cand := range candidates(name) {
		err := in.withDir(func(dfd int) error { return renameNoReplace(dfd, pname, cand) })
		if err == nil {
			in.syncDir()
			return cand, false, nil
		}
		if err != unix.EEXIST {
			return "", false, fmt.Errorf("renaming to %q: %w", cand, err)
		}
		if in.sameContent(pname, cand, size) {
			if err := in.withDir(func(dfd int) error { return unix.Unlinkat(dfd, pname, 0) }); err != nil {
				return "", false, fmt.Errorf("removing duplicate: %w", err)
			}
			in.syncDir()
			return cand, true, nil
		}
	}
	return "", false, fmt.Errorf("too many files named %q are waiting", name)
}

// renameNoReplace renames old to new in dfd, failing with EEXIST if new exists (as anything,
// including a dangling symbolic link). File systems without RENAME_NOREPLACE get link+unlink,
// which is just as exclusive.
func renameNoReplace(dfd int, old, new string) error {
	err := unix.Renameat2(dfd, old, dfd, new, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL && err != unix.ENOSYS && err != unix.ENOTSUP {
		return err
	}
	if err := unix.Linkat(dfd, old, dfd, new, 0); err != nil {
		return err
	}
	return unix.Unlinkat(dfd, old, 0)
}

func (in *Inbox) syncDir() {
	err := in.withDir(func(dfd int) error { return unix.Fsync(dfd) })
	if err != nil {
		in.logf("taildrop: fsync of the inbox directory: %v", err)
	}
}

// sameContent reports whether the regular files a and b both have size bytes and the same ones.
func (in *Inbox) sameContent(a, b string, size int64) bool {
	fa, sa, err := in.openRegular(a)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, sb, err := in.openRegular(b)
	if err != nil {
		return false
	}
	defer fb.Close()
	if sa != size || sb != size {
		return false
	}
	pa, pb := bufPool.Get().(*[]byte), bufPool.Get().(*[]byte)
	defer bufPool.Put(pa)
	defer bufPool.Put(pb)
	for {
		na, ea := io.ReadFull(fa, *pa)
		nb, eb := io.ReadFull(fb, *pb)
		if na != nb || !bytes.Equal((*pa)[:na], (*pb)[:nb]) {
			return false
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea
		}
		if ea != nil || eb != nil {
			return false
		}
	}
}
