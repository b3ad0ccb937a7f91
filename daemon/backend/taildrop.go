package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/skeinvpn/skein/daemon/taildrop"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// capFileSharing in the self node's CapMap means control lets this node use Taildrop.
const capFileSharing = "https://tailscale.com/cap/file-sharing"

// openInbox opens the Taildrop inbox under the state directory once.
func (b *Backend) openInboxLocked() *taildrop.Inbox {
	if b.inbox != nil || b.inboxErr != nil {
		return b.inbox
	}
	in, err := taildrop.OpenInbox(filepath.Join(b.opts.Store.Dir(), "files"), b.logf)
	if err != nil {
		b.inboxErr = err
		b.logf("taildrop: inbox: %v (receiving is off)", err)
		return nil
	}
	in.OnArrive(func(f ipc.WaitingFile) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.logf("taildrop: received %q (%d bytes) from %s", f.Name, f.Size, f.From)
		for w := range b.watchers {
			w.send(ipc.Event{Kind: ipc.EventFile, File: &f})
		}
	})
	b.inbox = in
	return in
}

// taildropPeer names the peer a peer API request comes from.
func (b *Backend) taildropPeer(remote netip.Addr) (taildrop.Peer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nm == nil {
		return taildrop.Peer{}, false
	}
	n := b.nm.PeerByAddr(remote)
	if n == nil {
		return taildrop.Peer{}, false
	}
	return taildrop.Peer{StableID: n.StableID, Name: shortName(n), UserID: int64(n.User), Tagged: len(n.Tags) > 0}, true
}

// taildropAllow: as the official client, files come only from untagged nodes of our own user,
// and only while control gives us the file-sharing capability.
func (b *Backend) taildropAllow(p taildrop.Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nm == nil || b.nm.Self == nil {
		return errors.New("not connected")
	}
	self := b.nm.Self
	if _, ok := self.CapMap[capFileSharing]; !ok {
		return errors.New("Taildrop disabled; no storage directory")
	}
	if p.Tagged || len(self.Tags) > 0 || int64(self.User) != p.UserID {
		return errors.New("file sharing is only allowed between untagged nodes of the same user")
	}
	return nil
}

// canReceiveLocked says whether we may send files to n, and the base URL of its peer API.
func (b *Backend) fileTargetLocked(n *wire.Node) (base string, why string) {
	var self *wire.Node
	if b.nm != nil {
		self = b.nm.Self
	}
	switch {
	case self == nil:
		return "", "not connected"
	case len(n.Tags) > 0 || len(self.Tags) > 0 || n.User != self.User:
		return "", "files can only be sent between untagged nodes of the same user"
	case n.Hostinfo == nil:
		return "", "it offers no peer API"
	}
	var ip4, ip6 netip.Addr
	for _, a := range n.Addresses {
		if a.IsSingleIP() && a.Addr().Is4() && !ip4.IsValid() {
			ip4 = a.Addr()
		} else if a.IsSingleIP() && a.Addr().Is6() && !ip6.IsValid() {
			ip6 = a.Addr()
		}
	}
	selfHas4 := slices.ContainsFunc(self.Addresses, func(a netip.Prefix) bool { return a.Addr().Is4() })
	for _, s := range n.Hostinfo.Services {
		if s.Proto == "peerapi4" && s.Port != 0 && ip4.IsValid() && selfHas4 {
			return "http://" + netip.AddrPortFrom(ip4, s.Port).String(), ""
		}
	}
	for _, s := range n.Hostinfo.Services {
		if s.Proto == "peerapi6" && s.Port != 0 && ip6.IsValid() {
			return "http://" + netip.AddrPortFrom(ip6, s.Port).String(), ""
		}
	}
	return "", "it offers no peer API (it cannot receive files)"
}

// FileTargets lists peers that can receive files.
func (b *Backend) FileTargets(ctx context.Context) ([]ipc.FileTarget, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stateLocked() != ipc.StateRunning || b.nm == nil {
		return nil, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	out := []ipc.FileTarget{}
	for n := range b.nm.Peers() {
		if base, _ := b.fileTargetLocked(n); base == "" {
			continue
		}
		p := b.peerLocked(n, time.Now())
		out = append(out, ipc.FileTarget{StableID: n.StableID, Name: p.ShortName(), DNSName: n.Name, IP: p.FirstIP(), OS: p.OS, Online: p.Online})
	}
	return out, nil
}

// PutFile sends a file to a peer's peer API, resuming a partial transfer it has.
func (b *Backend) PutFile(ctx context.Context, peer, name string, size int64, body io.Reader) (ipc.FilePutResult, error) {
	if err := taildrop.ValidateName(name); err != nil {
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("cannot send %q: %v", name, err)}
	}
	b.mu.Lock()
	if b.stateLocked() != ipc.StateRunning || b.tun.dp == nil {
		b.mu.Unlock()
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	n, err := b.findPeerLocked(peer)
	if err != nil {
		b.mu.Unlock()
		var ie *ipc.Error
		if errors.As(err, &ie) {
			e := *ie
			e.Fix = "skein file cp --targets"
			return ipc.FilePutResult{}, &e
		}
		return ipc.FilePutResult{}, err
	}
	base, why := b.fileTargetLocked(n)
	online := n.Online == nil || *n.Online
	pname := shortName(n)
	b.mu.Unlock()
	if base == "" {
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%s cannot receive files: %s", pname, why), Fix: "skein file cp --targets"}
	}
	if !online {
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: fmt.Sprintf("%s is offline", pname)}
	}
	// Unmarked sockets: the connection goes through the tunnel like any app's.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: 0}}
	resumed, err := taildrop.Send(ctx, hc, base, name, size, body, nil)
	if err != nil {
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrInternal, Message: fmt.Sprintf("sending %q to %s: %v", name, pname, err)}
	}
	return ipc.FilePutResult{Name: name, Size: size, ResumedAt: resumed}, nil
}

// WaitingFiles lists the inbox, waiting up to wait for a first file.
func (b *Backend) WaitingFiles(ctx context.Context, wait time.Duration) ([]ipc.WaitingFile, error) {
	b.mu.Lock()
	in := b.openInboxLocked()
	b.mu.Unlock()
	if in == nil {
		return nil, &ipc.Error{Code: ipc.ErrInternal, Message: "Taildrop inbox unavailable: " + fmt.Sprint(b.inboxErr)}
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := in.Changed()
		files := in.Waiting()
		if len(files) > 0 || wait <= 0 {
			return files, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return files, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// OpenFile opens a waiting file for the front end to copy.
func (b *Backend) OpenFile(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	b.mu.Lock()
	in := b.openInboxLocked()
	b.mu.Unlock()
	if in == nil {
		return nil, 0, &ipc.Error{Code: ipc.ErrInternal, Message: "Taildrop inbox unavailable"}
	}
	f, size, err := in.Open(name)
	if err != nil {
		return nil, 0, &ipc.Error{Code: ipc.ErrNotFound, Message: fmt.Sprintf("no waiting file %q", name)}
	}
	return f, size, nil
}

// DeleteFile removes a file the front end has saved.
func (b *Backend) DeleteFile(ctx context.Context, name string) error {
	b.mu.Lock()
	in := b.openInboxLocked()
	b.mu.Unlock()
	if in == nil {
		return &ipc.Error{Code: ipc.ErrInternal, Message: "Taildrop inbox unavailable"}
	}
	if err := in.Delete(name); err != nil {
		return &ipc.Error{Code: ipc.ErrNotFound, Message: fmt.Sprintf("no waiting file %q", name)}
	}
	return nil
}
