package portmap

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/skeinvpn/skein/internal/atomicfile"
)

// journal records the live mapping so that a crashed skeind's mapping can
// be deleted from the router by `skeind --cleanup` (or the next start).
type journal struct {
	Protocol Protocol `json:"protocol"`
	Gateway  string   `json:"gateway"`
	Self     string   `json:"self"`
	Internal uint16   `json:"internal_port"`
	External uint16   `json:"external_port"`
	Nonce    string   `json:"pcp_nonce,omitempty"`    // hex, PCP
	URN      string   `json:"upnp_service,omitempty"` // UPnP
	Control  string   `json:"upnp_control,omitempty"` // UPnP control URL
}

func journalPath(stateDir string) string { return filepath.Join(stateDir, JournalFile) }

func writeJournal(stateDir string, j journal) error {
	if stateDir == "" {
		return nil
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return atomicfile.Write(journalPath(stateDir), append(b, '\n'), 0o600)
}

func removeJournal(stateDir string) error {
	if stateDir == "" {
		return nil
	}
	if err := os.Remove(journalPath(stateDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(stateDir)
}

// readJournal returns the recorded mapping; ok is false without a journal.
func readJournal(stateDir string) (j journal, ok bool, err error) {
	b, err := os.ReadFile(journalPath(stateDir))
	if errors.Is(err, os.ErrNotExist) {
		return j, false, nil
	}
	if err != nil {
		return j, false, err
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return j, false, fmt.Errorf("%s: %w", journalPath(stateDir), err)
	}
	return j, true, nil
}

// mapping rebuilds what release needs from a journal entry.
func (j journal) mapping(hc func(netip.Addr) *http.Client) (*mapping, error) {
	gw, err := netip.ParseAddr(j.Gateway)
	if err != nil {
		return nil, fmt.Errorf("journal: gateway: %w", err)
	}
	self, err := netip.ParseAddr(j.Self)
	if err != nil {
		return nil, fmt.Errorf("journal: self: %w", err)
	}
	m := &mapping{
		proto:    j.Protocol,
		gw:       gw,
		self:     self,
		internal: j.Internal,
		external: netip.AddrPortFrom(netip.IPv4Unspecified(), j.External),
	}
	switch j.Protocol {
	case NATPMP:
	case PCP:
		n, err := hex.DecodeString(j.Nonce)
		if err != nil || len(n) != pcpNonceLen {
			return nil, fmt.Errorf("journal: bad PCP nonce %q", j.Nonce)
		}
		copy(m.nonce[:], n)
	case UPnP:
		u, err := url.Parse(j.Control)
		if err != nil || u.Scheme != "http" {
			return nil, fmt.Errorf("journal: bad UPnP control URL %q", j.Control)
		}
		svc, err := newUPnPService(j.URN, u, hc(gw))
		if err != nil {
			return nil, err
		}
		m.upnp = &upnpTarget{URN: j.URN, Control: u, svc: svc}
	default:
		return nil, fmt.Errorf("journal: unknown protocol %q", j.Protocol)
	}
	return m, nil
}

// Cleanup deletes from the router a mapping that a crashed process left
// recorded in stateDir's journal, and removes the journal. control marks
// the sockets as for Options.Control. Without a journal it does nothing.
// A router that does not answer within a few seconds is given up on (the
// mapping then expires by itself within its lifetime); the journal is
// removed either way, since retrying at every start would only delay it.
func Cleanup(stateDir string, control func(string, string, syscall.RawConn) error, logf func(string, ...any)) error {
	return cleanup(stateDir, Options{Control: control, Logf: logf})
}

// cleanup is Cleanup with o's test hooks (router ports).
func cleanup(stateDir string, o Options) error {
	control, logf := o.Control, o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	j, ok, err := readJournal(stateDir)
	if err != nil {
		logf("portmap: dropping unreadable journal: %v", err)
		return removeJournal(stateDir)
	}
	if !ok {
		return nil
	}
	hc := func(gw netip.Addr) *http.Client { return gatewayHTTPClient(gw, control) }
	m, err := j.mapping(hc)
	if err != nil {
		logf("portmap: dropping journal: %v", err)
		return removeJournal(stateDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := newSocket(control, o)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.release(ctx, m); err != nil {
		logf("portmap: deleting %s mapping of port %d on %v left by a crash: %v", m.proto, m.internal, m.gw, err)
	} else {
		logf("portmap: deleted %s mapping of port %d on %v left by a crash", m.proto, m.internal, m.gw)
	}
	return removeJournal(stateDir)
}
