package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/session"
	"github.com/skeinvpn/skein/ipc"
)

// asIPCError classifies an error into the typed IPC error the front ends render.
func asIPCError(err error) *ipc.Error {
	var ie *ipc.Error
	if errors.As(err, &ie) {
		return ie
	}
	msg := err.Error()
	var le *session.LoginError
	if errors.As(err, &le) {
		return &ipc.Error{Code: ipc.ErrLoginFailed, Message: oneLine(msg)}
	}
	var ee *session.ExpiredError
	if errors.As(err, &ee) {
		return &ipc.Error{Code: ipc.ErrNeedsLogin, Message: oneLine(msg), Fix: "skein up"}
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) || strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate") {
		return &ipc.Error{Code: ipc.ErrCertUntrusted, Message: "the login server's TLS certificate is not trusted: " + oneLine(msg),
			Fix: "install the server's CA in the system store, or set SSL_CERT_FILE for skeind"}
	}
	var ne net.Error
	var oe *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &dnsErr) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return &ipc.Error{Code: ipc.ErrServerUnreachable, Message: "cannot reach the login server: " + oneLine(msg)}
	}
	var he *control.HTTPError
	if errors.As(err, &he) {
		return &ipc.Error{Code: ipc.ErrServerUnreachable, Message: oneLine(msg)}
	}
	return &ipc.Error{Code: ipc.ErrInternal, Message: oneLine(msg)}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
