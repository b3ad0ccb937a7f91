package main

import (
	"fmt"
	"log"
	"os"
	"syscall"
)

// logFlags are the logger's flags for stderr: none when stderr is the systemd journal, which
// stamps and names every line itself (a second timestamp and a "skeind: " prefix would only
// repeat what journalctl shows), the date and time otherwise.
func logFlags(stderr any) (flags int, prefix string) {
	if f, ok := stderr.(*os.File); ok && isJournal(f, os.Getenv("JOURNAL_STREAM")) {
		return 0, ""
	}
	return log.LstdFlags | log.Lmicroseconds, "skeind: "
}

// isJournal tells whether f is the journal stream systemd connected: $JOURNAL_STREAM holds its
// "DEVICE:INODE", which differ as soon as stderr is redirected elsewhere (systemd.exec(5)).
func isJournal(f *os.File, stream string) bool {
	if stream == "" {
		return false
	}
	var dev, ino uint64
	if n, err := fmt.Sscanf(stream, "%d:%d", &dev, &ino); n != 2 || err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}
