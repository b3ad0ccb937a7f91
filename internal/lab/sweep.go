package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runRoot holds one record per live run, and the lock that serializes run
// creation and sweeping across processes. /run is a tmpfs, like /run/netns,
// so records and namespaces vanish together at reboot.
const runRoot = "/run/skein-lab"

type runRecord struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	PID      int       `json:"pid"`
	PIDStart uint64    `json:"pid_start"` // /proc/PID/stat starttime, against PID reuse
	Subnet   int       `json:"subnet"`
	Dir      string    `json:"dir"`
	Created  time.Time `json:"created"`
}

func withRunLock(fn func() error) error {
	if err := os.MkdirAll(runRoot, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(runRoot, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

func recordPath(id string) string { return filepath.Join(runRoot, id+".json") }

func writeRecord(r runRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(recordPath(r.ID), b, 0o644)
}

func removeRecord(id string) error {
	err := os.Remove(recordPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// readRecords returns the records of live runs and deletes nothing.
func readRecords() (map[string]runRecord, error) {
	all, err := readAllRecords()
	if err != nil {
		return nil, err
	}
	live := map[string]runRecord{}
	for id, r := range all {
		if ownerAlive(r) {
			live[id] = r
		}
	}
	return live, nil
}

func readAllRecords() (map[string]runRecord, error) {
	ents, err := os.ReadDir(runRoot)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	out := map[string]runRecord{}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !idRE.MatchString(id) {
			continue
		}
		var r runRecord
		b, err := os.ReadFile(filepath.Join(runRoot, e.Name()))
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || r.ID != id {
			r = runRecord{ID: id} // unreadable: treated as stale
		}
		out[id] = r
	}
	return out, nil
}

func ownerAlive(r runRecord) bool {
	if r.PID <= 0 {
		return false
	}
	state, st, err := procStat(r.PID)
	// A zombie is dead too (PID 1 may be slow to reap it).
	return err == nil && st == r.PIDStart && state != "Z" && state != "X"
}

// procStartTime returns field 22 (starttime) of /proc/PID/stat.
func procStartTime(pid int) (uint64, error) {
	_, st, err := procStat(pid)
	return st, err
}

// procStat returns fields 3 (state) and 22 (starttime) of /proc/PID/stat.
func procStat(pid int) (state string, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return "", 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err
}

// Sweep removes the leftovers of lab runs whose owning process is gone:
// processes in their namespaces, the namespaces, /etc/netns dirs, run dirs
// and records. Live runs (of this or other processes) are left alone. It
// returns what it removed. New and NewStandalone sweep automatically.
func Sweep() ([]string, error) {
	var removed []string
	err := withRunLock(func() error {
		var err error
		removed, err = sweepLocked(func(string, ...any) {})
		return err
	})
	return removed, err
}

func sweepLocked(logf func(string, ...any)) ([]string, error) {
	all, err := readAllRecords()
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for id, r := range all {
		if ownerAlive(r) {
			live[id] = true
		}
	}
	var removed []string
	var errs []error
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		removed = append(removed, what)
		logf("swept stale %s", what)
	}

	// Namespaces (and the processes inside them).
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := nsRE.FindStringSubmatch(f[0])
		if m == nil || live[m[1]] {
			continue
		}
		note("namespace "+f[0], removeNetns(f[0]))
	}
	// /etc/netns dirs without a namespace.
	if ents, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range ents {
			m := nsRE.FindStringSubmatch(e.Name())
			if m == nil || live[m[1]] {
				continue
			}
			note("/etc/netns/"+e.Name(), os.RemoveAll(filepath.Join("/etc/netns", e.Name())))
		}
	}
	// Run dirs: $TMPDIR/skein-lab-<id> (kept dirs are named skein-lab-kept-<id>).
	if ents, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range ents {
			id, ok := strings.CutPrefix(e.Name(), "skein-lab-")
			if !ok || !idRE.MatchString(id) || live[id] || !e.IsDir() {
				continue
			}
			p := filepath.Join(os.TempDir(), e.Name())
			note(p, os.RemoveAll(p))
		}
	}
	// Records.
	for id, r := range all {
		if live[id] {
			continue
		}
		if r.Dir != "" && r.Dir != runDir(id) && filepath.Base(r.Dir) == "skein-lab-"+id {
			// Created with another TMPDIR.
			note(r.Dir, os.RemoveAll(r.Dir))
		}
		note("record "+id, removeRecord(id))
	}
	return removed, errors.Join(errs...)
}

// removeNetns kills every process in a namespace, deletes it and its
// /etc/netns dir.
func removeNetns(ns string) error {
	self := os.Getpid()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := netnsPids(ns)
		pids = slices.DeleteFunc(pids, func(pid int) bool { return pid == self })
		if err != nil || len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: processes %v do not die", ns, pids)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var errs []error
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}
	if err := os.RemoveAll(filepath.Join("/etc/netns", ns)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// netnsPids lists the (non-zombie) processes in a namespace.
func netnsPids(ns string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
