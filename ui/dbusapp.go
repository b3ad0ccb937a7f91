package ui

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// Single instance over the session bus, the way desktop apps do it: the first instance owns
// the app ID as a bus name and implements org.freedesktop.Application; a second launch finds
// the name taken and calls Activate (show the window) or Open (files to send) on its owner.
// The same interface is what the desktop calls for a DBusActivatable .desktop file, and what
// the bus calls after starting the app from its D-Bus service file. Inside a Flatpak an app may
// own its ID (and talk to it) without any extra permission, and the bus is shared with the
// other sandboxes and the host, unlike the sandbox's private runtime directory.

const (
	appIface = "org.freedesktop.Application"
	// appPath is the app ID as an object path, as the Desktop Entry spec derives it.
	appPath = dbus.ObjectPath("/io/github/skeinvpn/Skein")
	// maxOpenURIs bounds one Open call.
	maxOpenURIs = 4096
	// activateTimeout bounds the call to the running instance.
	activateTimeout = 5 * time.Second
)

// request is one thing a second launch or the desktop asked the running instance to do.
type request struct {
	paths  []string // files to send (Open)
	action string   // ActivateAction's name; "" = show the window
}

// application is the exported org.freedesktop.Application object.
type application struct {
	reqs chan request
}

func (a *application) queue(r request) *dbus.Error {
	select {
	case a.reqs <- r:
		return nil
	default:
		return dbus.MakeFailedError(errors.New("busy: too many requests at once"))
	}
}

// Activate shows the window.
func (a *application) Activate(platformData map[string]dbus.Variant) *dbus.Error {
	return a.queue(request{})
}

// Open offers to send the files: only local file:// URIs with absolute paths are taken.
func (a *application) Open(uris []string, platformData map[string]dbus.Variant) *dbus.Error {
	if len(uris) > maxOpenURIs {
		return invalidArgs("at most %d files at once", maxOpenURIs)
	}
	paths := make([]string, 0, len(uris))
	for _, s := range uris {
		p, err := localPath(s)
		if err != nil {
			return invalidArgs("%v", err)
		}
		paths = append(paths, p)
	}
	if len(paths) == 0 {
		return a.queue(request{})
	}
	return a.queue(request{paths: paths})
}

// ActivateAction runs one of the app's actions: "show" (the window) or "quit".
func (a *application) ActivateAction(name string, params []dbus.Variant, platformData map[string]dbus.Variant) *dbus.Error {
	switch name {
	case "show":
		return a.queue(request{})
	case "quit":
		return a.queue(request{action: "quit"})
	}
	return invalidArgs("no action %q (the app has show and quit)", name)
}

func invalidArgs(format string, args ...any) *dbus.Error {
	return dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{fmt.Sprintf(format, args...)})
}

// localPath turns a file:// URI into its absolute path.
func localPath(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URI", s)
	}
	if u.Scheme != "file" || (u.Host != "" && u.Host != "localhost") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("only local files can be sent, not %q", s)
	}
	if !filepath.IsAbs(u.Path) || strings.ContainsRune(u.Path, 0) {
		return "", fmt.Errorf("%q has no absolute path", s)
	}
	return filepath.Clean(u.Path), nil
}

// fileURI is the file:// URI of an absolute path.
func fileURI(p string) string {
	return (&url.URL{Scheme: "file", Path: p}).String()
}

// claimBus makes this process the instance that owns the app ID on conn's bus, or, when
// another process owns it, asks that one to show its window or take files and returns
// ErrRunning. conn is kept (and closed by Instance.Close) when this process is the instance.
func claimBus(conn *dbus.Conn, files []string) (*Instance, error) {
	app := &application{reqs: make(chan request, 16)}
	if err := conn.Export(app, appPath, appIface); err != nil {
		return nil, err
	}
	node := &introspect.Node{Name: string(appPath), Interfaces: []introspect.Interface{
		introspect.IntrospectData, {Name: appIface, Methods: introspect.Methods(app)}}}
	if err := conn.Export(introspect.NewIntrospectable(node), appPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		reply, err := conn.RequestName(AppID, dbus.NameFlagDoNotQueue)
		if err != nil {
			return nil, fmt.Errorf("owning %s on the session bus: %w", AppID, err)
		}
		if reply == dbus.RequestNameReplyPrimaryOwner || reply == dbus.RequestNameReplyAlreadyOwner {
			return &Instance{bus: conn, app: app, done: make(chan struct{})}, nil
		}
		// Taken: hand the request to its owner. If the owner quit meanwhile, try again.
		err = activateRunning(conn, files)
		if err == nil {
			return nil, ErrRunning
		}
		var derr dbus.Error
		if !errors.As(err, &derr) || (derr.Name != "org.freedesktop.DBus.Error.ServiceUnknown" && derr.Name != "org.freedesktop.DBus.Error.NameHasNoOwner") {
			return nil, fmt.Errorf("asking the running Skein over D-Bus: %w", err)
		}
	}
	return nil, fmt.Errorf("cannot own %s on the session bus", AppID)
}

// activateRunning calls Activate, or Open with the files, on the name's owner. It does not
// start the app through D-Bus activation: the owner is known to exist, or the call fails.
func activateRunning(conn *dbus.Conn, files []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), activateTimeout)
	defer cancel()
	obj := conn.Object(AppID, appPath)
	platform := map[string]dbus.Variant{}
	if len(files) == 0 {
		return obj.CallWithContext(ctx, appIface+".Activate", dbus.FlagNoAutoStart, platform).Err
	}
	uris := make([]string, len(files))
	for i, f := range files {
		uris[i] = fileURI(f)
	}
	return obj.CallWithContext(ctx, appIface+".Open", dbus.FlagNoAutoStart, uris, platform).Err
}
