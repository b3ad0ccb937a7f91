package backend

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/skeinvpn/skein/daemon/ingress"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/sessionhelper"
	"github.com/skeinvpn/skein/daemon/sshkeys"
	"github.com/skeinvpn/skein/daemon/sshserver"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// capSSH is the node capability control grants when the tailnet allows Tailscale SSH.
const capSSH = "https://tailscale.com/cap/ssh"

// sshPort is where peers reach Tailscale SSH on our tailnet addresses.
const sshPort = 22

// sshState is Tailscale SSH as the apply loop runs it: the host keys, the TUN-bound listener
// that the ingress table redirects port 22 to, and the session helper that runs the sessions.
// Fields are read and written under Backend.mu; host I/O happens outside it.
type sshState struct {
	keys   *sshkeys.Keys
	svc    *ingress.Service
	helper *sessionhelper.Client
	policy *wire.SSHPolicy // the policy the helper was last told
	addrs  []netip.Addr    // the addresses the redirect covers
	// advertised are the host keys in our Hostinfo (nil while SSH is off).
	advertised []string
	// problem says why SSH is on but does not work ("" when it works or is off).
	problem *ipc.Issue
}

func selfHasCap(nm *netmap.NetworkMap, c string) bool {
	if nm == nil || nm.Self == nil {
		return false
	}
	_, ok := nm.Self.CapMap[c]
	return ok
}

// checkSSHPrefLocked refuses to turn SSH on when control says the tailnet does not allow it
// (as the official client does); without a map yet it is allowed and checked later.
func (b *Backend) checkSSHPrefLocked(p ipc.PrefsPatch) error {
	if p.RunSSH == nil || !*p.RunSSH || b.nm == nil || b.nm.Self == nil {
		return nil
	}
	if !selfHasCap(b.nm, capSSH) {
		return &ipc.Error{Code: ipc.ErrBadRequest, Message: "Unable to enable local Tailscale SSH server; not enabled on Tailnet."}
	}
	return nil
}

// syncSSH makes Tailscale SSH match the prefs and the map the tunnel carries; the apply loop
// calls it after every apply, and with nm nil when the tunnel stops. An error asks the loop
// to try again later (the helper may start meanwhile).
func (b *Backend) syncSSH(nm *netmap.NetworkMap) error {
	b.mu.Lock()
	st := &b.tun.ssh
	want := nm != nil && b.data.Prefs.RunSSH && selfHasCap(nm, capSSH)
	addrs := selfAddrs(nm)
	want = want && len(addrs) > 0
	if !want {
		keysWere := st.advertised != nil
		svc, helper := st.svc, st.helper
		st.svc, st.helper, st.policy, st.addrs, st.advertised, st.problem = nil, nil, nil, nil, nil, nil
		if nm != nil && b.data.Prefs.RunSSH && !selfHasCap(nm, capSSH) {
			st.problem = &ipc.Issue{Code: "ssh", Message: "Tailscale SSH is on, but the control server does not enable it for this tailnet"}
		}
		b.mu.Unlock()
		err := b.applyIngress(selfAddrs(nm))
		if svc != nil {
			svc.Close()
		}
		if helper != nil {
			helper.Close() // the helper ends every session
		}
		if svc != nil || helper != nil {
			b.logf("ssh: off")
		}
		if keysWere {
			b.sess.ReportChanged()
		}
		return err
	}
	keys, svc, helper := st.keys, st.svc, st.helper
	b.mu.Unlock()

	var errs []error
	if keys == nil {
		k, err := sshkeys.Load(filepath.Join(b.opts.Store.Dir(), "ssh"))
		if err != nil {
			return b.sshProblem(err, "")
		}
		keys = k
	}
	if helper != nil {
		select {
		case <-helper.Done():
			b.logf("ssh: the session helper went away")
			helper.Close()
			helper = nil
		default:
		}
	}
	if helper == nil {
		h, err := sessionhelper.Connect(b.opts.SessionHelperSocket, keys.PEM, nm.SSHPolicy)
		if err != nil {
			b.mu.Lock()
			st.keys, st.helper = keys, nil
			b.mu.Unlock()
			fix := ""
			if errors.Is(err, sessionhelper.ErrUnavailable) {
				fix = "sudo systemctl enable --now skein-session-helper.socket"
			}
			b.setAdvertised(keys.Public)
			// No helper: no redirect either, so port 22 stays the host's.
			b.applyIngress(addrs)
			return b.sshProblem(err, fix)
		}
		helper = h
		go func() {
			<-h.Done()
			b.mu.Lock()
			b.tun.want()
			b.mu.Unlock()
		}()
		b.logf("ssh: session helper ready")
		b.mu.Lock()
		st.policy = nm.SSHPolicy
		b.mu.Unlock()
	}
	if svc == nil {
		s, err := ingress.Listen(ingress.Options{
			Tun: b.opts.TunName, Port: sshPort,
			Self: b.isSelfAddr, Peer: b.isPeerAddr,
			Handle: b.handleSSHConn,
			Logf:   b.logf,
		})
		if err != nil {
			errs = append(errs, err)
		} else {
			svc = s
		}
	}
	b.mu.Lock()
	st.keys, st.helper, st.svc, st.problem = keys, helper, svc, nil
	sendPolicy := st.policy != nm.SSHPolicy
	st.policy = nm.SSHPolicy
	b.mu.Unlock()
	if sendPolicy {
		if err := helper.SetPolicy(nm.SSHPolicy); err != nil {
			errs = append(errs, err)
		}
	}
	if svc != nil {
		if err := b.applyIngress(addrs); err != nil {
			errs = append(errs, err)
		}
		b.mu.Lock()
		if !slices.Equal(st.addrs, addrs) {
			b.logf("ssh: listening on %v port %d", addrs, sshPort)
		}
		st.addrs = addrs
		b.mu.Unlock()
	}
	b.setAdvertised(keys.Public)
	if err := errors.Join(errs...); err != nil {
		return b.sshProblem(err, "")
	}
	return nil
}

// setAdvertised puts the host keys in our Hostinfo, telling control when they change.
func (b *Backend) setAdvertised(pub []string) {
	b.mu.Lock()
	changed := !slices.Equal(b.tun.ssh.advertised, pub)
	b.tun.ssh.advertised = pub
	b.mu.Unlock()
	if changed {
		b.sess.ReportChanged()
	}
}

func (b *Backend) sshProblem(err error, fix string) error {
	msg := "Tailscale SSH is on but cannot accept connections: " + err.Error()
	if fix != "" {
		msg += " (fix: " + fix + ")"
	}
	b.mu.Lock()
	if b.tun.ssh.problem == nil || b.tun.ssh.problem.Message != msg {
		b.logf("ssh: %v", err) // once per problem, not once per retry
	}
	b.tun.ssh.problem = &ipc.Issue{Code: "ssh", Message: msg}
	b.mu.Unlock()
	return err
}

// isSelfAddr and isPeerAddr answer for the map the tunnel carries.
func (b *Backend) isSelfAddr(a netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	nm := b.tun.shown
	if nm == nil || nm.Self == nil {
		return false
	}
	for _, p := range nm.Self.Addresses {
		if p.IsSingleIP() && p.Addr() == a.Unmap() {
			return true
		}
	}
	return false
}

func (b *Backend) isPeerAddr(a netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tun.shown != nil && b.tun.shown.PeerByAddr(a) != nil
}

// handleSSHConn hands a connection from a peer to the session helper, with who the peer is.
func (b *Backend) handleSSHConn(c ingress.Conn) {
	b.mu.Lock()
	nm, helper := b.tun.shown, b.tun.ssh.helper
	var id sshserver.Identity
	var known bool
	if nm != nil {
		if p := nm.PeerByAddr(c.Src.Addr()); p != nil {
			known = true
			id = sshserver.Identity{Src: c.Src, Dst: c.Dst, NodeID: int64(p.ID), StableID: p.StableID, NodeName: p.Name, Tagged: len(p.Tags) > 0}
			if u, ok := nm.UserProfiles[p.User]; ok {
				id.UserLogin = u.LoginName
			}
		}
	}
	b.mu.Unlock()
	if !known || helper == nil {
		c.Close()
		return
	}
	if err := helper.Handoff(c.TCPConn, id); err != nil {
		b.logf("ssh: handing %v to the session helper: %v", c.Src, err)
	}
}

// sshHealthLocked is SSH's line in status, if it has something to say.
func (b *Backend) sshHealthLocked() []ipc.Issue {
	st := &b.tun.ssh
	if !b.data.Prefs.RunSSH {
		return nil
	}
	if st.problem != nil {
		return []ipc.Issue{*st.problem}
	}
	if st.helper != nil && (b.tun.shown == nil || b.tun.shown.SSHPolicy == nil || len(b.tun.shown.SSHPolicy.Rules) == 0) {
		return []ipc.Issue{{Code: "ssh", Message: "Tailscale SSH is on, but the tailnet's SSH policy lets nobody log in to this machine"}}
	}
	return nil
}

// selfAddrs are our tailnet addresses in nm (none without a map).
func selfAddrs(nm *netmap.NetworkMap) []netip.Addr {
	if nm == nil || nm.Self == nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range nm.Self.Addresses {
		if a.IsSingleIP() {
			out = append(out, a.Addr())
		}
	}
	return out
}

// applyIngress makes the ingress table redirect, on our addresses, the ports of every service
// that listens now: SSH (while its helper is there) and what `skein serve` serves. No
// services, or no addresses: no table.
func (b *Backend) applyIngress(addrs []netip.Addr) error {
	b.mu.Lock()
	var rules []ingress.Rule
	if s := b.tun.ssh.svc; s != nil && b.tun.ssh.helper != nil {
		rules = append(rules, s.Rules(addrs)...)
	}
	for _, s := range b.tun.serve.svcs {
		rules = append(rules, s.Rules(addrs)...)
	}
	b.mu.Unlock()
	return b.tun.ingress.Set(b.opts.TunName, rules)
}
