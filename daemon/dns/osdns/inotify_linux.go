package osdns

import (
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// inotifyWatch signals when a file may have changed. It watches the directory, which sees the
// file being replaced by rename, created or deleted, and the file itself, which sees writes in
// place, including writes to a bind-mounted file made through its other name.
type inotifyWatch struct {
	f      *os.File
	fd     int
	path   string
	name   string
	dirWD  int
	fileWD int
}

const (
	dirEvents  = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_ATTRIB
	fileEvents = unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_DONT_FOLLOW
)

// newInotify starts watching path; events receives a token (never blocking) on any change.
func newInotify(path string, events chan<- struct{}) (*inotifyWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w := &inotifyWatch{fd: fd, path: path, name: filepath.Base(path), fileWD: -1}
	w.dirWD, err = unix.InotifyAddWatch(fd, filepath.Dir(path), dirEvents)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	w.addFileWatch()
	// A non-blocking descriptor goes through the runtime poller, so Close unblocks Read.
	w.f = os.NewFile(uintptr(fd), "inotify")
	go w.read(events)
	return w, nil
}

// addFileWatch (re)attaches the watch to whatever is at path now. Adding a watch for an inode
// that is already watched returns the same descriptor.
func (w *inotifyWatch) addFileWatch() {
	if wd, err := unix.InotifyAddWatch(w.fd, w.path, fileEvents); err == nil {
		w.fileWD = wd
	}
}

func (w *inotifyWatch) read(events chan<- struct{}) {
	buf := make([]byte, 16*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		hit := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameLen := int(ev.Len)
			var name string
			if nameLen > 0 && off+unix.SizeofInotifyEvent+nameLen <= n {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
				for i, c := range raw {
					if c == 0 {
						raw = raw[:i]
						break
					}
				}
				name = string(raw)
			}
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				hit = true
			case int(ev.Wd) == w.dirWD && name == w.name:
				hit = true
			case int(ev.Wd) == w.fileWD && ev.Mask&unix.IN_IGNORED == 0:
				hit = true
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
		if hit {
			w.addFileWatch()
			select {
			case events <- struct{}{}:
			default:
			}
		}
	}
}

func (w *inotifyWatch) close() { w.f.Close() }
