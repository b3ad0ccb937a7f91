package ui

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// The two desktop portals the app calls itself (xdg-desktop-portal, org.freedesktop.portal.*):
//
//   - OpenURI.OpenDirectory / OpenFile with a file descriptor: the portal refuses file:// URIs
//     from a sandbox, but takes a descriptor, which proves the app may see the file, and maps
//     the sandbox's path to the host's.
//   - Background.RequestBackground with autostart: the portal writes the session's autostart
//     entry (which runs `flatpak run` with our command line), since ~/.config/autostart in the
//     sandbox is the app's private copy that the session never reads.
//
// github.com/rymdport/portal (in the module graph through Fyne) wraps both, but for a request
// it subscribes to Response only after the call has returned (an early answer is lost and the
// wait never ends), takes the first Response on the shared bus connection whatever request it
// answers, and leaves its signal channel registered there; so these few calls are made here,
// on a connection of their own, subscribing before calling as the portal spec advises.

const (
	portalName    = "org.freedesktop.portal.Desktop"
	portalPath    = dbus.ObjectPath("/org/freedesktop/portal/desktop")
	portalOpenURI = "org.freedesktop.portal.OpenURI"
	portalBg      = "org.freedesktop.portal.Background"
	portalRequest = "org.freedesktop.portal.Request"
	// portalCallTimeout bounds a call's reply; backgroundAnswerTimeout bounds the wait for the
	// Response of a background request, which may ask the user first.
	portalCallTimeout       = 10 * time.Second
	backgroundAnswerTimeout = 3 * time.Minute
)

// errPortalDenied is a request the user (or the desktop's policy) refused.
var errPortalDenied = errors.New("the desktop refused the request")

// portalShow shows target in the file manager through the OpenURI portal: a file is shown in
// its folder, selected (OpenDirectory: "open the directory containing a file"); a folder is
// opened itself (OpenFile of the folder, which opens in the file manager, since OpenDirectory
// of a folder would open its parent).
func portalShow(target string) error {
	fd, err := unix.Open(target, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	method := portalOpenURI + ".OpenDirectory"
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		method = portalOpenURI + ".OpenFile"
	}
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		return err
	}
	defer conn.Close()
	if !conn.SupportsUnixFDs() {
		return errors.New("the session bus cannot pass file descriptors")
	}
	ctx, cancel := context.WithTimeout(context.Background(), portalCallTimeout)
	defer cancel()
	var handle dbus.ObjectPath
	return conn.Object(portalName, portalPath).CallWithContext(ctx, method, 0,
		"", dbus.UnixFD(fd), map[string]dbus.Variant{}).Store(&handle)
}

// portalBackground asks the Background portal to start the app at login with commandline
// (autostart true) or not to (false), and returns whether autostart is on afterwards.
func portalBackground(autostart bool, commandline []string, reason string) (bool, error) {
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		return false, err
	}
	defer conn.Close()
	token := requestToken()
	// The portal answers with a Response signal on a Request object whose path it derives from
	// our unique name and the token: listen there before asking, so the answer cannot be missed.
	sender := strings.ReplaceAll(strings.TrimPrefix(conn.Names()[0], ":"), ".", "_")
	want := dbus.ObjectPath("/org/freedesktop/portal/desktop/request/" + sender + "/" + token)
	answers := make(chan *dbus.Signal, 8)
	conn.Signal(answers)
	match := []dbus.MatchOption{dbus.WithMatchInterface(portalRequest), dbus.WithMatchMember("Response")}
	if err := conn.AddMatchSignal(match...); err != nil {
		return false, err
	}
	opts := map[string]dbus.Variant{
		"handle_token":     dbus.MakeVariant(token),
		"reason":           dbus.MakeVariant(reason),
		"autostart":        dbus.MakeVariant(autostart),
		"commandline":      dbus.MakeVariant(commandline),
		"dbus-activatable": dbus.MakeVariant(false),
	}
	ctx, cancel := context.WithTimeout(context.Background(), portalCallTimeout)
	defer cancel()
	var handle dbus.ObjectPath
	if err := conn.Object(portalName, portalPath).CallWithContext(ctx, portalBg+".RequestBackground", 0, "", opts).Store(&handle); err != nil {
		return false, err
	}
	if handle != "" {
		want = handle // portals before 0.9 chose the path themselves
	}
	deadline := time.After(backgroundAnswerTimeout)
	for {
		select {
		case sig, ok := <-answers:
			if !ok {
				return false, errors.New("the session bus closed before the portal answered")
			}
			if sig.Path != want || sig.Name != portalRequest+".Response" {
				continue
			}
			return backgroundAnswer(sig.Body)
		case <-deadline:
			return false, fmt.Errorf("the background portal did not answer in %v", backgroundAnswerTimeout)
		}
	}
}

// backgroundAnswer reads a Response: (u response, a{sv} results); 0 is success.
func backgroundAnswer(body []any) (bool, error) {
	if len(body) != 2 {
		return false, fmt.Errorf("unexpected portal response %v", body)
	}
	code, ok := body[0].(uint32)
	results, ok2 := body[1].(map[string]dbus.Variant)
	if !ok || !ok2 {
		return false, fmt.Errorf("unexpected portal response %v", body)
	}
	if code != 0 {
		return false, errPortalDenied
	}
	on, _ := results["autostart"].Value().(bool)
	return on, nil
}

// requestToken is a fresh handle_token (a valid object path element).
func requestToken() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "skein" + hex.EncodeToString(b)
}
