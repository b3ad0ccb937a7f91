package router

import "github.com/skeinvpn/skein/daemon/sockmark"

// MarkSocket sets SO_MARK=FwmarkBypass on fd so the socket's packets take
// the host's own routes (rules 5210/5230/5250) instead of table 52. Needs
// CAP_NET_ADMIN.
func MarkSocket(fd uintptr) error { return sockmark.Set(fd, FwmarkBypass) }

// ControlBypass is a net.Dialer / net.ListenConfig Control func that marks
// the socket with FwmarkBypass before it connects or binds.
var ControlBypass = sockmark.Control(FwmarkBypass)
