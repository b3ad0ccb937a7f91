package fileserve

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/skeinvpn/skein/internal/unixmsg"
)

func get(t *testing.T, h http.Handler, p string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://files/", nil)
	req.URL.Path = p
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// A folder is served with listings and nothing outside it: not through "..", not through a
// symlink; a single file only at "/".
func TestConfined(t *testing.T) {
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	os.Mkdir(share, 0o755)
	os.WriteFile(filepath.Join(share, "a.txt"), []byte("inside"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("outside"), 0o644)
	os.Symlink(filepath.Join(dir, "secret"), filepath.Join(share, "link"))
	os.Symlink("a.txt", filepath.Join(share, "inner-link"))
	h, done, err := Handler(share)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	for p, want := range map[string]int{"/a.txt": 200, "/inner-link": 200, "/": 200, "/link": 0, "/../secret": 0, "/x/../../secret": 0} {
		code, body := get(t, h, p)
		if want != 0 && code != want {
			t.Errorf("%s: %d", p, code)
		}
		if body == "outside" || (want == 0 && code == 200 && body != "inside") {
			t.Errorf("%s escaped the share: %d %q", p, code, body)
		}
	}
	fh, done2, err := Handler(filepath.Join(share, "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer done2()
	if code, body := get(t, fh, "/"); code != 200 || body != "inside" {
		t.Errorf("single file at /: %d %q", code, body)
	}
	if code, _ := get(t, fh, "/link"); code != 404 {
		t.Errorf("single file, other path: %d", code)
	}
}

// Connections passed over the stream are answered.
func TestServeOverPassedConns(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644)
	h, done, _ := Handler(dir)
	defer done()
	a, bf, err := unixmsg.Pair()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := unixmsg.FromFile(bf)
	go Serve(b, h)
	defer a.Close()
	for range 3 {
		c, err := Dial(a)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := io.ReadAll(c)
		c.Close()
		if err != nil || len(resp) == 0 || string(resp[len(resp)-5:]) != "hello" {
			t.Fatalf("response %q %v", resp, err)
		}
	}
}
