package ipctest

import (
	"bytes"
	"context"
	"io"
	"sync"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// An in-memory Taildrop: AddFile puts a file in the inbox (and emits EventFile), SetTargets
// sets who can receive, Puts returns what was sent.
type files struct {
	mu      sync.Mutex
	inbox   map[string]fakeFile
	order   []string
	targets []ipc.FileTarget
	puts    []SentFile
	putHook func(ctx context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error)
	arrived chan struct{}
}

type fakeFile struct {
	meta ipc.WaitingFile
	data []byte
}

// SentFile is one completed PutFile.
type SentFile struct {
	Peer, Name string
	Data       []byte
}

func (b *Backend) files() *files {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fs == nil {
		b.fs = &files{inbox: map[string]fakeFile{}, arrived: make(chan struct{})}
	}
	return b.fs
}

// AddFile puts a file from a peer into the fake inbox and emits EventFile.
func (b *Backend) AddFile(name, from string, data []byte) {
	f := b.files()
	now := time.Now()
	meta := ipc.WaitingFile{Name: name, Size: int64(len(data)), From: from, FromID: from, Received: now, Expires: now.Add(7 * 24 * time.Hour)}
	f.mu.Lock()
	if _, ok := f.inbox[name]; !ok {
		f.order = append(f.order, name)
	}
	f.inbox[name] = fakeFile{meta: meta, data: append([]byte(nil), data...)}
	close(f.arrived)
	f.arrived = make(chan struct{})
	f.mu.Unlock()
	b.Emit(ipc.Event{Kind: ipc.EventFile, File: &meta})
}

// SetFileTargets sets the answer of FileTargets.
func (b *Backend) SetFileTargets(t []ipc.FileTarget) {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets = t
}

// OnPutFile replaces PutFile's behaviour (nil: record the bytes and succeed).
func (b *Backend) OnPutFile(h func(ctx context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error)) {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putHook = h
}

// Sent returns the files sent so far.
func (b *Backend) Sent() []SentFile {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SentFile(nil), f.puts...)
}

// Inbox returns the names waiting in the fake inbox.
func (b *Backend) Inbox() []string {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// WaitingFiles implements ipc.FileBackend.
func (b *Backend) WaitingFiles(ctx context.Context, wait time.Duration) ([]ipc.WaitingFile, error) {
	f := b.files()
	deadline := time.After(wait)
	for {
		f.mu.Lock()
		var out []ipc.WaitingFile
		for _, n := range f.order {
			out = append(out, f.inbox[n].meta)
		}
		arrived := f.arrived
		f.mu.Unlock()
		if len(out) > 0 || wait <= 0 {
			return out, nil
		}
		select {
		case <-arrived:
		case <-deadline:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// OpenFile implements ipc.FileBackend.
func (b *Backend) OpenFile(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	ff, ok := f.inbox[name]
	if !ok {
		return nil, 0, &ipc.Error{Code: ipc.ErrNotFound, Message: "no waiting file " + name}
	}
	return io.NopCloser(bytes.NewReader(ff.data)), int64(len(ff.data)), nil
}

// DeleteFile implements ipc.FileBackend.
func (b *Backend) DeleteFile(ctx context.Context, name string) error {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.inbox[name]; !ok {
		return &ipc.Error{Code: ipc.ErrNotFound, Message: "no waiting file " + name}
	}
	delete(f.inbox, name)
	for i, n := range f.order {
		if n == name {
			f.order = append(f.order[:i], f.order[i+1:]...)
			break
		}
	}
	return nil
}

// PutFile implements ipc.FileBackend.
func (b *Backend) PutFile(ctx context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
	f := b.files()
	f.mu.Lock()
	h := f.putHook
	f.mu.Unlock()
	if h != nil {
		return h(ctx, peer, name, size, body)
	}
	data, err := io.ReadAll(io.LimitReader(body, size))
	if err != nil {
		return ipc.FilePutResult{}, err
	}
	f.mu.Lock()
	f.puts = append(f.puts, SentFile{Peer: peer, Name: name, Data: data})
	f.mu.Unlock()
	return ipc.FilePutResult{Name: name, Size: int64(len(data))}, nil
}

// FileTargets implements ipc.FileBackend.
func (b *Backend) FileTargets(ctx context.Context) ([]ipc.FileTarget, error) {
	f := b.files()
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ipc.FileTarget{}, f.targets...), nil
}
