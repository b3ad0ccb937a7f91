package dataplane

import (
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The TUN is made without wireguard-go's link monitor (a write to the device every second,
// forever), with the MTU set and the offloads on.
func TestCreateTUNUnmonitored(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A network namespace of our own on a thread of our own, which ends with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v (the test needs root)", err)
			return
		}
		dev, err := createTUN("sktun0", 1280)
		if err != nil {
			t.Errorf("createTUN: %v", err)
			return
		}
		defer dev.Close()
		if mtu, err := dev.MTU(); err != nil || mtu != 1280 {
			t.Errorf("MTU %d, %v; want 1280", mtu, err)
		}
		if n := dev.BatchSize(); n < 2 {
			t.Errorf("batch size %d: offloads are off", n)
		}
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, f := range []string{"routineHackListener", "routineNetlinkListener"} {
			if strings.Contains(stacks, f) {
				t.Errorf("wireguard-go's link monitor runs (%s)", f)
			}
		}
	}()
	<-done
}
