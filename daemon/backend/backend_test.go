package backend

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/ipc"
)

func TestAsIPCError(t *testing.T) {
	cases := []struct {
		err  error
		want ipc.ErrorCode
	}{
		{&ipc.Error{Code: ipc.ErrLoginFailed, Message: "x"}, ipc.ErrLoginFailed},
		{fmt.Errorf("wrapped: %w", &ipc.Error{Code: ipc.ErrBadRequest}), ipc.ErrBadRequest},
		{fmt.Errorf("ts2021: %w", x509.UnknownAuthorityError{}), ipc.ErrCertUntrusted},
		{fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), ipc.ErrServerUnreachable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), ipc.ErrServerUnreachable},
		{&control.HTTPError{Path: "/machine/map", Status: 500, Body: "boom"}, ipc.ErrServerUnreachable},
		{errors.New("something\nelse"), ipc.ErrInternal},
	}
	for _, c := range cases {
		got := asIPCError(c.err)
		if got.Code != c.want {
			t.Errorf("%v: code %s, want %s", c.err, got.Code, c.want)
		}
		for _, r := range got.Message {
			if r == '\n' {
				t.Errorf("%v: message has a newline: %q", c.err, got.Message)
			}
		}
	}
}

func TestValidation(t *testing.T) {
	for _, h := range []string{"", "laptop", "my-box-2"} {
		if err := validHostname(h); err != nil {
			t.Errorf("hostname %q rejected: %v", h, err)
		}
	}
	for _, h := range []string{"-x", "x-", "a b", "a.b", "ü", string(make([]byte, 64))} {
		if err := validHostname(h); err == nil {
			t.Errorf("hostname %q accepted", h)
		}
	}
	for _, s := range []string{"https://hs.example.com", "http://127.0.0.1:8080"} {
		if err := validLoginServer(s); err != nil {
			t.Errorf("server %q rejected: %v", s, err)
		}
	}
	for _, s := range []string{"", "hs.example.com", "ftp://x", "https://", "https://u:p@host", "http://hs.example.com"} {
		if err := validLoginServer(s); err == nil {
			t.Errorf("server %q accepted", s)
		}
	}
}

func TestWatcherNeverBlocks(t *testing.T) {
	w := &watcher{ch: make(chan ipc.Event, 2)}
	for i := 0; i < 10; i++ {
		w.send(ipc.Event{Kind: ipc.EventNetmap, Status: &ipc.Status{Version: fmt.Sprint(i)}})
	}
	first := <-w.ch
	second := <-w.ch
	if second.Status.Version != "9" || first.Status.Version != "8" {
		t.Fatalf("kept %s, %s; want the newest two", first.Status.Version, second.Status.Version)
	}
	w.close()
	w.close()
	w.send(ipc.Event{}) // after close: dropped, no panic
}
