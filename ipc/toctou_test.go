package ipc_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// slowPrefs is a backend whose prefs changes take a moment between being asked for and taking
// effect, as a real one's do (saving state, applying routes); it records every change that took
// effect while its caller was no longer the operator.
type slowPrefs struct {
	*ipctest.Backend
	mu     sync.Mutex
	prefs  ipc.Prefs
	stale  atomic.Int32 // hostname changes that landed after their caller's right was gone
	landed atomic.Int32
}

func (b *slowPrefs) Prefs() ipc.Prefs {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.prefs
}

func (b *slowPrefs) SetPrefs(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
	if p.Hostname != nil {
		time.Sleep(time.Millisecond)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Operator != nil {
		b.prefs.Operator = *p.Operator
	}
	if p.Hostname != nil {
		b.landed.Add(1)
		if b.prefs.Operator != "alice" {
			b.stale.Add(1)
		}
		b.prefs.Hostname = *p.Hostname
	}
	return b.prefs, nil
}

// TestOperatorChangeIsAtomic (issue 14, S4): alice, the operator, changes the hostname 1,000
// times from many connections while root makes bob the operator. No change of alice's takes
// effect after the operator moved: the check and the action are one step.
func TestOperatorChangeIsAtomic(t *testing.T) {
	users := map[string]uint32{"alice": 1000, "bob": 1001}
	b := &slowPrefs{Backend: ipctest.NewBackend(testStatus(), ipc.Prefs{}), prefs: ipc.Prefs{Operator: "alice"}}
	s := ipc.NewServer(b, ipc.ServerOptions{
		OwnUID: 999,
		LookupUID: func(name string) (uint32, error) {
			if uid, ok := users[name]; ok {
				return uid, nil
			}
			return 0, fmt.Errorf("unknown user %s", name)
		},
		Logf: t.Logf,
	})
	post := func(uid uint32, body string) int {
		req := httptest.NewRequest(http.MethodPost, "http://"+ipc.HTTPHost+ipc.PathPrefs, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req = req.WithContext(ipc.WithPeerCred(req.Context(), ipc.PeerCred{UID: uid}))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	var wg sync.WaitGroup
	var refused atomic.Int32
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				switch code := post(1000, fmt.Sprintf(`{"hostname":"alice-%d-%d"}`, g, i)); code {
				case http.StatusOK:
				case http.StatusForbidden:
					refused.Add(1)
				default:
					t.Errorf("alice's change: status %d", code)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // while alice's calls are in full flow
	if code := post(0, `{"operator":"bob"}`); code != http.StatusOK {
		t.Fatalf("root making bob the operator: status %d", code)
	}
	wg.Wait()
	t.Logf("alice: %d changes landed, %d refused after the operator moved", b.landed.Load(), refused.Load())
	if refused.Load() == 0 {
		t.Fatal("no call of alice's came after the change of operator: the test proves nothing")
	}
	if n := b.stale.Load(); n > 0 {
		t.Errorf("%d of alice's changes took effect after root made bob the operator", n)
	}
}
