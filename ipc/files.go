package ipc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Taildrop over the IPC. Files that peers send wait in the helper's inbox (root-owned) until a
// front end running as the desktop user takes them: it reads the bytes over the socket and
// writes them itself, so the helper never writes into a user-controlled path. Sending streams
// the bytes the other way: the front end reads the user's file, the helper forwards it to the
// peer (resuming a partial transfer when the peer has one).
const (
	// PathFiles lists waiting files: GET ?wait=SECONDS (long-poll until at least one) → []WaitingFile.
	// PathFiles + "/" + escaped name: GET → the bytes (Content-Length set); DELETE → 204.
	// Taking files changes state, so both need write permission (root, the helper's uid or the operator).
	PathFiles = "/" + APIVersion + "/files"
	// PathFilePut + "/" + peer + "/" + escaped name: PUT the bytes (Content-Length required) →
	// FilePutResult. peer is a name, IP or StableID.
	PathFilePut = "/" + APIVersion + "/file-put"
	// PathFileTargets: GET → []FileTarget, the peers that can receive files.
	PathFileTargets = "/" + APIVersion + "/file-targets"
)

// EventFile: a file arrived in the inbox (Event.File).
const EventFile EventKind = "file"

// WaitingFile is a file received from a peer, waiting in the inbox.
type WaitingFile struct {
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	From     string    `json:"from,omitempty"`   // sender's short name
	FromID   string    `json:"fromID,omitempty"` // sender's StableID
	Received time.Time `json:"received"`
	// Expires is when skeind removes the file if nobody took it.
	Expires time.Time `json:"expires,omitzero"`
}

// FileTarget is a peer files can be sent to.
type FileTarget struct {
	StableID string `json:"stableID"`
	Name     string `json:"name"` // short name
	DNSName  string `json:"dnsName,omitempty"`
	IP       string `json:"ip,omitempty"`
	OS       string `json:"os,omitempty"`
	Online   bool   `json:"online"`
}

// FilePutResult is the answer to a completed send.
type FilePutResult struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// ResumedAt is the offset the transfer continued from (0 = sent whole).
	ResumedAt int64 `json:"resumedAt,omitempty"`
}

// FileBackend is what the helper implements for Taildrop.
type FileBackend interface {
	WaitingFiles(ctx context.Context, wait time.Duration) ([]WaitingFile, error)
	OpenFile(ctx context.Context, name string) (io.ReadCloser, int64, error)
	DeleteFile(ctx context.Context, name string) error
	PutFile(ctx context.Context, peer, name string, size int64, body io.Reader) (FilePutResult, error)
	FileTargets(ctx context.Context) ([]FileTarget, error)
}

// maxFileWait bounds the long-poll of PathFiles.
const maxFileWait = 10 * time.Minute

// fileBackend returns the backend's Taildrop side, answering 404 itself when it has none.
func (s *Server) fileBackend(w http.ResponseWriter) (FileBackend, bool) {
	fb, ok := s.b.(FileBackend)
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Code: ErrNotFound, Message: "this helper has no Taildrop"})
	}
	return fb, ok
}

func (s *Server) serveFileTargets(w http.ResponseWriter, r *http.Request, _ string) {
	if fb, ok := s.fileBackend(w); ok {
		t, err := fb.FileTargets(r.Context())
		s.reply(w, t, err)
	}
}

func (s *Server) serveFileList(w http.ResponseWriter, r *http.Request, _ string) {
	fb, ok := s.fileBackend(w)
	if !ok {
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 0 {
			writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "files: wait must be a number of seconds"})
			return
		}
		wait = min(time.Duration(secs)*time.Second, maxFileWait)
	}
	files, err := fb.WaitingFiles(r.Context(), wait)
	if files == nil {
		files = []WaitingFile{}
	}
	s.reply(w, files, err)
}

// fileName unescapes the name of a waiting file from the request path.
func fileName(w http.ResponseWriter, rest string) (string, bool) {
	name, err := url.PathUnescape(rest)
	if err != nil || name == "" || strings.Contains(name, "/") {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "files: bad file name"})
		return "", false
	}
	return name, true
}

func (s *Server) serveFileGet(w http.ResponseWriter, r *http.Request, rest string) {
	fb, ok := s.fileBackend(w)
	if !ok {
		return
	}
	name, ok := fileName(w, rest)
	if !ok {
		return
	}
	rc, size, err := fb.OpenFile(r.Context(), name)
	if err != nil {
		s.writeBackendError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	io.Copy(w, io.LimitReader(rc, size))
}

func (s *Server) serveFileDelete(w http.ResponseWriter, r *http.Request, rest string) {
	fb, ok := s.fileBackend(w)
	if !ok {
		return
	}
	name, ok := fileName(w, rest)
	if !ok {
		return
	}
	if err := fb.DeleteFile(r.Context(), name); err != nil {
		s.writeBackendError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveFilePut(w http.ResponseWriter, r *http.Request, rest string) {
	fb, ok := s.fileBackend(w)
	if !ok {
		return
	}
	peerEsc, nameEsc, ok := strings.Cut(rest, "/")
	peer, err1 := url.PathUnescape(peerEsc)
	name, err2 := url.PathUnescape(nameEsc)
	if !ok || err1 != nil || err2 != nil || peer == "" || name == "" {
		writeError(w, http.StatusBadRequest, &Error{Code: ErrBadRequest, Message: "file-put: want " + PathFilePut + "/PEER/NAME"})
		return
	}
	if r.ContentLength < 0 {
		writeError(w, http.StatusLengthRequired, &Error{Code: ErrBadRequest, Message: "file-put: Content-Length is required"})
		return
	}
	res, err := fb.PutFile(r.Context(), peer, name, r.ContentLength, r.Body)
	s.reply(w, res, err)
}

// FileTargets lists the peers that can receive files.
func (c *Client) FileTargets(ctx context.Context) ([]FileTarget, error) {
	var t []FileTarget
	err := c.do(ctx, http.MethodGet, PathFileTargets, nil, &t)
	return t, err
}

// WaitingFiles lists the inbox; with wait > 0 it waits until at least one file is there.
func (c *Client) WaitingFiles(ctx context.Context, wait time.Duration) ([]WaitingFile, error) {
	var f []WaitingFile
	path := PathFiles
	if wait > 0 {
		path += "?wait=" + strconv.Itoa(int(wait.Seconds()))
	}
	err := c.do(ctx, http.MethodGet, path, nil, &f)
	return f, err
}

// OpenFile streams a waiting file; the caller closes it. size is the file's length.
func (c *Client) OpenFile(ctx context.Context, name string) (rc io.ReadCloser, size int64, err error) {
	resp, err := c.send(ctx, http.MethodGet, PathFiles+"/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// DeleteFile removes a waiting file from the inbox (after the caller saved it).
func (c *Client) DeleteFile(ctx context.Context, name string) error {
	resp, err := c.send(ctx, http.MethodDelete, PathFiles+"/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// PutFile sends size bytes from body to peer as name. progress, if set, is called with the
// number of bytes handed to the helper so far.
func (c *Client) PutFile(ctx context.Context, peer, name string, size int64, body io.Reader, progress func(int64)) (FilePutResult, error) {
	var res FilePutResult
	if progress != nil {
		body = &countingReader{r: body, f: progress}
	}
	var rb io.Reader = io.NopCloser(body)
	if size == 0 {
		rb = http.NoBody // else net/http sends an empty body as "length unknown"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+HTTPHost+PathFilePut+"/"+url.PathEscape(peer)+"/"+url.PathEscape(name), rb)
	if err != nil {
		return res, &Error{Code: ErrInternal, Message: err.Error()}
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return res, decodeError(resp)
	}
	if err := decodeJSON(resp.Body, &res); err != nil {
		return res, &Error{Code: ErrInternal, Message: fmt.Sprintf("bad response from skeind to file-put: %v", err)}
	}
	return res, nil
}

type countingReader struct {
	r io.Reader
	n int64
	f func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.f(c.n)
	return n, err
}

func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, maxResponse)).Decode(v)
}
