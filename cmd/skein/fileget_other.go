//go:build !unix

package main

import (
	"errors"
	"os"
)

// On systems without openat and O_NOFOLLOW, file get refuses to write rather than risk
// following a symlink.
type destDir struct{}

type fileID struct{}

var errNoFileGet = errors.New("skein file get is not supported on this system")

func openDestDir(string) (*destDir, error)                 { return nil, errNoFileGet }
func (d *destDir) close()                                  {}
func (d *destDir) sync()                                   {}
func (d *destDir) create(string) (*os.File, fileID, error) { return nil, fileID{}, errNoFileGet }
func (d *destDir) createTemp() (*os.File, fileID, string, error) {
	return nil, fileID{}, "", errNoFileGet
}
func (d *destDir) rename(string, string) error { return errNoFileGet }
func (d *destDir) removeIf(string, fileID)     {}
