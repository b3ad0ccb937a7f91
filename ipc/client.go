package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// SocketEnv names the environment variable that overrides DefaultSocket for clients.
const SocketEnv = "SKEIN_SOCKET"

// maxResponse bounds a non-streaming response; a status of a large tailnet is well below it.
const maxResponse = 64 << 20

// maxEventLine bounds one line of the watch stream (one Event with a full Status).
const maxEventLine = 64 << 20

// Client talks to skeind over its Unix socket. Its methods return errors as *Error, except
// that a cancelled or expired ctx comes back as ctx.Err().
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at socketPath; empty means $SKEIN_SOCKET, or
// DefaultSocket when that is unset.
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = os.Getenv(SocketEnv)
	}
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	c := &Client{path: socketPath}
	d := net.Dialer{Timeout: 5 * time.Second}
	c.hc = &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", c.path)
			},
			MaxIdleConns:    2,
			IdleConnTimeout: 30 * time.Second,
		},
	}
	return c
}

// SocketPath is the socket the client connects to.
func (c *Client) SocketPath() string { return c.path }

// Status returns the daemon's current status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	resp, err := c.sendAccept(ctx, http.MethodGet, PathStatus, nil, MediaStatusBinary)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxResponse)
	var st Status
	if resp.Header.Get("Content-Type") == MediaStatusBinary {
		st, err = readStatusBinary(body)
	} else {
		err = json.NewDecoder(body).Decode(&st) // a helper without the binary form
	}
	if err != nil {
		if ctx.Err() != nil {
			return Status{}, ctx.Err()
		}
		return Status{}, &Error{Code: ErrInternal, Message: fmt.Sprintf("bad response from skeind to %s: %v", PathStatus, err)}
	}
	return st, nil
}

// Ping sends one disco ping to a peer (name, DNS name or address).
func (c *Client) Ping(ctx context.Context, peer string) (PingResult, error) {
	var res PingResult
	err := c.do(ctx, http.MethodGet, PathPing+"?peer="+url.QueryEscape(peer), nil, &res)
	return res, err
}

// Netcheck asks the helper to run a netcheck now.
func (c *Client) Netcheck(ctx context.Context) (NetcheckReport, error) {
	var rep NetcheckReport
	err := c.do(ctx, http.MethodGet, PathNetcheck, nil, &rep)
	return rep, err
}

// DNSQuery asks the helper's MagicDNS resolver for name (qtype "" = A).
func (c *Client) DNSQuery(ctx context.Context, name, qtype string) (DNSQueryResult, error) {
	var res DNSQueryResult
	err := c.do(ctx, http.MethodGet, PathDNSQuery+"?name="+url.QueryEscape(name)+"&type="+url.QueryEscape(qtype), nil, &res)
	return res, err
}

// Prefs returns the daemon's stored preferences.
func (c *Client) Prefs(ctx context.Context) (Prefs, error) {
	var p Prefs
	err := c.do(ctx, http.MethodGet, PathPrefs, nil, &p)
	return p, err
}

// SetPrefs changes the fields set in p and returns the resulting preferences.
func (c *Client) SetPrefs(ctx context.Context, p PrefsPatch) (Prefs, error) {
	var out Prefs
	err := c.do(ctx, http.MethodPost, PathPrefs, p, &out)
	return out, err
}

// Up asks the daemon to connect. It returns once the daemon is Running, or with an AuthURL
// for the user to visit, after which Watch tells when the state becomes Running.
func (c *Client) Up(ctx context.Context, req UpRequest) (UpResponse, error) {
	var out UpResponse
	err := c.do(ctx, http.MethodPost, PathUp, req, &out)
	return out, err
}

// Down disconnects, keeping the login, and returns the resulting status.
func (c *Client) Down(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodPost, PathDown, struct{}{}, &st)
	return st, err
}

// Logout disconnects and forgets the login, and returns the resulting status.
func (c *Client) Logout(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodPost, PathLogout, struct{}{}, &st)
	return st, err
}

// Watch calls fn with every event of the daemon's event stream, the first carrying a full
// Status. It returns fn's error unchanged as soon as fn returns one, ctx.Err() once ctx is done,
// and an *Error when the stream cannot be opened or breaks (e.g. the daemon stopped).
func (c *Client) Watch(ctx context.Context, fn func(Event) error) error {
	resp, err := c.send(ctx, http.MethodGet, PathWatch, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return &Error{Code: ErrInternal, Message: "bad event from skeind: " + err.Error()}
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return &Error{Code: ErrHelperUnreachable, Message: fmt.Sprintf("lost connection to skeind at %s: %v", c.path, err)}
	}
	return &Error{Code: ErrHelperUnreachable, Message: "skeind ended the event stream (is it shutting down?)"}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Error{Code: ErrInternal, Message: fmt.Sprintf("bad response from skeind to %s: %v", path, err)}
	}
	return nil
}

// send performs a request and returns a 2xx response, or the error as *Error.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	return c.sendAccept(ctx, method, path, in, "application/json")
}

// sendAccept is send asking for the media type accept.
func (c *Client) sendAccept(ctx context.Context, method, path string, in any, accept string) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, &Error{Code: ErrBadRequest, Message: "encoding request: " + err.Error()}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+HTTPHost+path, body)
	if err != nil {
		return nil, &Error{Code: ErrInternal, Message: err.Error()}
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.transportError(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func (c *Client) transportError(err error) *Error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return &Error{
			Code:    ErrHelperUnreachable,
			Message: fmt.Sprintf("cannot reach skeind at %s: is it running?", c.path),
			Fix:     "sudo systemctl start skeind (or: sudo skeind)",
		}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return &Error{
			Code:    ErrNeedsOperator,
			Message: fmt.Sprintf("permission denied connecting to skeind at %s (its directory must be world-searchable)", c.path),
			Fix:     "sudo chmod 0755 " + dirOf(c.path),
		}
	}
	return &Error{
		Code:    ErrHelperUnreachable,
		Message: fmt.Sprintf("lost connection to skeind at %s: %v", c.path, unwrapURLError(err)),
	}
}

// unwrapURLError drops net/http's `Get "http://local/v1/...":` prefix, which means nothing to
// a user.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// decodeError turns a non-2xx response into an *Error, inventing one from the status when the
// body is not a typed error (e.g. an old or foreign server answered).
func decodeError(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e Error
	if json.Unmarshal(b, &e) == nil && e.Code != "" {
		return &e
	}
	code := ErrInternal
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		code = ErrBadRequest
	case http.StatusForbidden:
		code = ErrNeedsOperator
	case http.StatusNotFound:
		code = ErrNotFound
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return &Error{Code: code, Message: "skeind: " + msg}
}
