//go:build unix

package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// destDir is file get's DIR, opened once per batch. Every file is created, renamed and
// removed relative to this descriptor, by a single name that is never followed when it is a
// symlink, so neither a swapped DIR nor a symlink planted in it redirects a write.
type destDir struct {
	fd   int
	path string
}

// fileID identifies a file created by file get, so that cleaning up removes that file only.
type fileID struct{ dev, ino uint64 }

func openDestDir(path string) (*destDir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return &destDir{fd: fd, path: path}, nil
}

func (d *destDir) close() { unix.Close(d.fd) }

// sync flushes the directory itself, so that a rename survives a crash.
func (d *destDir) sync() { unix.Fsync(d.fd) }

// create makes a new file name in d, failing with fs.ErrExist when anything, a dangling
// symlink included, has that name already.
func (d *destDir) create(name string) (*os.File, fileID, error) {
	p := filepath.Join(d.path, name)
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.ELOOP) { // a symlink, on a system that says so rather than EEXIST
			err = unix.EEXIST
		}
		return nil, fileID{}, &fs.PathError{Op: "create", Path: p, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		unix.Unlinkat(d.fd, name, 0)
		return nil, fileID{}, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), fileID{uint64(st.Dev), uint64(st.Ino)}, nil
}

// createTemp makes a new hidden temporary file in d.
func (d *destDir) createTemp() (*os.File, fileID, string, error) {
	for range 10 {
		name := tempName()
		f, id, err := d.create(name)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, id, name, err
	}
	return nil, fileID{}, "", &fs.PathError{Op: "create", Path: filepath.Join(d.path, ".skein-get-*.tmp"), Err: unix.EEXIST}
}

// rename replaces to by from; a symlink named to is replaced, never followed.
func (d *destDir) rename(from, to string) error {
	return unix.Renameat(d.fd, from, d.fd, to)
}

// removeIf removes name when it is still the file identified by id.
func (d *destDir) removeIf(name string, id fileID) {
	var st unix.Stat_t
	if unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	if (fileID{uint64(st.Dev), uint64(st.Ino)}) == id {
		unix.Unlinkat(d.fd, name, 0)
	}
}
