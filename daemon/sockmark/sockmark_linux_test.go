package sockmark

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A listening socket carries the mark; mark 0 means no Control at all.
func TestControl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	if Control(0) != nil {
		t.Error("Control(0) marks")
	}
	lc := net.ListenConfig{Control: Control(0x80000)}
	pc, err := lc.ListenPacket(t.Context(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, _ := pc.(*net.UDPConn).SyscallConn()
	var mark int
	var gerr error
	rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if gerr != nil || mark != 0x80000 {
		t.Errorf("SO_MARK = %#x, %v", mark, gerr)
	}
}
