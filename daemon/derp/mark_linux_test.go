package derp

import (
	"context"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/daemon/key"
)

func TestDialMark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	s := newTestServer(t)
	c, err := Dial(context.Background(), DialOptions{Node: s.node(), PrivateKey: key.NewNode(), TLSConfig: s.tlsConfig(), Mark: 0x80000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.raw.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if gerr != nil || mark != 0x80000 {
		t.Errorf("SO_MARK = %#x, %v", mark, gerr)
	}
}
