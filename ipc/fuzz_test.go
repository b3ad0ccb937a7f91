package ipc_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// FuzzRequest sends arbitrary requests to the local API as root and as a plain user (issue 14,
// S22: the local API request decoding): no panic, every error is a typed ipc.Error with the
// status its code maps to, and a plain user never changes anything.
func FuzzRequest(f *testing.F) {
	f.Add("POST", ipc.PathUp, "application/json", `{"loginServer":"https://x","authKey":"k"}`)
	f.Add("POST", ipc.PathPrefs, "application/json; charset=utf-8", `{"exitNode":"","advertiseRoutes":["10.0.0.0/8"]}`)
	f.Add("POST", ipc.PathDown, "application/json", `{} {}`)
	f.Add("GET", ipc.PathDNSQuery+"?name=a&type=AAAA", "", "")
	f.Add("GET", ipc.PathFiles+"/", "", "")
	f.Add("DELETE", ipc.PathFiles+"/%2e%2e%2fx", "", "")
	f.Add("PUT", ipc.PathFilePut+"/peer/x", "application/octet-stream", "abc")
	f.Fuzz(func(t *testing.T, method, target, ctype, body string) {
		if !strings.HasPrefix(target, "/") || strings.Contains(target, "/watch") || strings.Contains(target, "wait=") || len(method) == 0 || len(method) > 16 {
			return // watch and a files long-poll wait on purpose; not a request shape
		}
		for _, m := range method {
			if m <= ' ' || m >= 0x7f {
				return
			}
		}
		b := ipctest.NewBackend(testStatus(), ipc.Prefs{})
		changed := false
		b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
			changed = true
			return ipc.UpResponse{}, nil
		})
		b.OnDown(func(context.Context) error { changed = true; return nil })
		b.OnLogout(func(context.Context) error { changed = true; return nil })
		b.OnSetPrefs(func(context.Context, ipc.PrefsPatch) (ipc.Prefs, error) { changed = true; return ipc.Prefs{}, nil })
		s := ipc.NewServer(b, ipc.ServerOptions{OwnUID: 999, LookupUID: func(string) (uint32, error) { return 5, nil }})
		for _, uid := range []uint32{0, 1234} {
			changed = false
			req, err := http.NewRequest(method, "http://local"+target, strings.NewReader(body))
			if err != nil {
				return
			}
			req.Host = "local"
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			req = req.WithContext(ipc.WithPeerCred(req.Context(), ipc.PeerCred{UID: uid}))
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			res := rec.Result()
			out, _ := io.ReadAll(res.Body)
			if res.StatusCode/100 != 2 {
				var e ipc.Error
				if err := json.Unmarshal(out, &e); err != nil || e.Code == "" || e.Message == "" {
					t.Fatalf("%s %s: %d with an untyped error %q", method, target, res.StatusCode, out)
				}
				if want := ipc.HTTPStatus(e.Code); want != res.StatusCode && res.StatusCode != http.StatusMethodNotAllowed && res.StatusCode != http.StatusLengthRequired && res.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("%s %s: %d for code %s (want %d)", method, target, res.StatusCode, e.Code, want)
				}
			}
			if uid != 0 && changed {
				t.Fatalf("%s %s as a plain user changed state", method, target)
			}
		}
	})
}
