package ui

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Received files are taken from skeind's inbox by the app while it runs, and by the receiver
// (skein-gui --receive, the per-user service) while it does not. Both take files only while
// they hold one lock (flock on a file in the user's runtime directory), so the two never take
// the same file: the receiver gives the lock up as soon as the app appears, and the app waits
// for it before it takes anything.

// ReceiveLockPath is the lock's default path: in XDG_RUNTIME_DIR (the app's own directory
// there inside a Flatpak, which every instance of the app shares), else in the temporary
// directory under the user's ID.
func ReceiveLockPath() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir != "" {
		if id := os.Getenv("FLATPAK_ID"); id != "" {
			dir = filepath.Join(dir, "app", id)
		}
		return filepath.Join(dir, "skein-receive.lock")
	}
	return filepath.Join(os.TempDir(), "skein-receive-"+strconv.Itoa(os.Getuid())+".lock")
}

// fileLock is a held lock; release gives it back.
type fileLock struct{ f *os.File }

var errLocked = errors.New("held by another process")

// tryLock takes the lock at path without waiting; errLocked when someone holds it.
func tryLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return &fileLock{f: f}, nil
}

// waitLock takes the lock, trying every poll until ctx ends.
func waitLock(ctx context.Context, path string, poll time.Duration) (*fileLock, error) {
	for {
		l, err := tryLock(path)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errLocked) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

func (l *fileLock) release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the descriptor drops the flock
		l.f = nil
	}
}
