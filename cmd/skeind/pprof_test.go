package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLoopbackAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:6060": "127.0.0.1:6060",
		"127.1.2.3:0":    "127.1.2.3:0",
		"[::1]:6060":     "[::1]:6060",
		"localhost:6060": "127.0.0.1:6060",
	} {
		got, err := loopbackAddr(in)
		if err != nil || got != want {
			t.Errorf("loopbackAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "6060", ":6060", "0.0.0.0:6060", "[::]:6060", "10.0.0.1:6060", "100.64.0.1:6060",
		"example.com:6060", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", "[fe80::1%lo]:6060",
	} {
		if got, err := loopbackAddr(in); err == nil {
			t.Errorf("loopbackAddr(%q) = %q, want an error", in, got)
		}
	}
}

func TestPprofMux(t *testing.T) {
	srv := httptest.NewServer(pprofMux())
	defer srv.Close()
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	var vars struct {
		Goroutines int
		Memstats   struct{ HeapInuse uint64 }
	}
	if err := json.Unmarshal([]byte(get("/debug/vars")), &vars); err != nil {
		t.Fatal(err)
	}
	if vars.Goroutines < 1 || vars.Memstats.HeapInuse == 0 {
		t.Errorf("/debug/vars: goroutines %d, heap in use %d", vars.Goroutines, vars.Memstats.HeapInuse)
	}
	if !strings.Contains(get("/debug/pprof/goroutine?debug=1"), "goroutine profile: total") {
		t.Error("no goroutine profile")
	}
	if get("/debug/pprof/heap") == "" {
		t.Error("empty heap profile")
	}
}
