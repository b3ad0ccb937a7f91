package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

// peerAPI is the running peer API: one listener per tailnet address of this node.
type peerAPI struct {
	addrs   []netip.Addr
	servers []*http.Server
	port4   uint16
	port6   uint16
}

func (p *peerAPI) close() {
	for _, s := range p.servers {
		s.Close()
	}
}

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
		b.notifyFileLocked(f)
	})
	b.inbox = in
	return in
}

// syncPeerAPILocked (re)starts the peer API when this node's addresses change, and stops it
// when the tunnel is down.
func (b *Backend) syncPeerAPILocked() {
	var want []netip.Addr
	if b.dp != nil && b.nm.Self != nil {
		for _, a := range b.nm.Self.Addresses {
			if a.IsSingleIP() {
				want = append(want, a.Addr())
			}
		}
	}
	if b.papi != nil && slices.Equal(b.papi.addrs, want) {
		return
	}
	if b.papi != nil {
		b.papi.close()
		b.papi = nil
	}
	if len(want) == 0 {
		return
	}
	in := b.openInboxLocked()
	if in == nil {
		return
	}
	h := &taildrop.Handler{
		Inbox:     in,
		Lookup:    b.taildropPeer,
		SelfAddrs: func() []netip.Addr { return slices.Clone(want) },
		Allow:     b.taildropAllow,
		Logf:      b.logf,
	}
	p := &peerAPI{addrs: want}
	for _, a := range want {
		ln, err := taildrop.Listen(context.Background(), a)
		if err != nil {
			b.logf("taildrop: %v", err)
			continue
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		srv := taildrop.NewServer(h)
		p.servers = append(p.servers, srv)
		go srv.Serve(ln)
		if a.Is4() {
			p.port4 = port
		} else {
			p.port6 = port
		}
	}
	b.papi = p
	b.dp.SetPeerAPIPorts(p.port4, p.port6)
	b.logf("taildrop: peer API on ports %d (IPv4) and %d (IPv6)", p.port4, p.port6)
	b.sendHostinfoLocked()
}

// sendHostinfoLocked tells control about changed Hostinfo (services, routes).
func (b *Backend) sendHostinfoLocked() {
	if r := b.rep.Load(); r != nil && b.data.LoggedIn {
		r.changed()
	}
}

// peerAPIServicesLocked are the Hostinfo.Services entries for the running peer API.
func (b *Backend) peerAPIServicesLocked() []wire.Service {
	if b.papi == nil {
		return nil
	}
	var s []wire.Service
	if b.papi.port4 != 0 {
		s = append(s, wire.Service{Proto: "peerapi4", Port: b.papi.port4})
	}
	if b.papi.port6 != 0 {
		s = append(s, wire.Service{Proto: "peerapi6", Port: b.papi.port6})
	}
	return s
}

func (b *Backend) taildropPeer(remote netip.Addr) (taildrop.Peer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	remote = remote.Unmap()
	for _, n := range b.nm.SortedPeers() {
		for _, a := range n.Addresses {
			if a.IsSingleIP() && a.Addr() == remote {
				return taildrop.Peer{StableID: n.StableID, Name: shortName(n), UserID: int64(n.User), Tagged: len(n.Tags) > 0}, true
			}
		}
	}
	return taildrop.Peer{}, false
}

// taildropAllow: as the official client, files come only from untagged nodes of our own user,
// and only while control gives us the file-sharing capability.
func (b *Backend) taildropAllow(p taildrop.Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	self := b.nm.Self
	if self == nil {
		return errors.New("not connected")
	}
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
	self := b.nm.Self
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
	if b.state != ipc.StateRunning {
		return nil, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	out := []ipc.FileTarget{}
	for _, n := range b.nm.SortedPeers() {
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
	if b.state != ipc.StateRunning || b.dp == nil {
		b.mu.Unlock()
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	}
	n := b.findPeerLocked(peer)
	if n == nil {
		for _, p := range b.nm.SortedPeers() {
			if p.StableID == peer {
				n = p
			}
		}
	}
	if n == nil {
		b.mu.Unlock()
		return ipc.FilePutResult{}, &ipc.Error{Code: ipc.ErrNotFound, Message: fmt.Sprintf("no peer named %q", peer), Fix: "skein file cp --targets"}
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
