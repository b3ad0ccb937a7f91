package main

import (
	"context"
	"encoding/json"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// decodeAll decodes every JSON value in s (up --json prints more than one).
func decodeAll[T any](t *testing.T, s string) []T {
	t.Helper()
	var out []T
	dec := json.NewDecoder(strings.NewReader(s))
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, s)
		}
		out = append(out, v)
	}
	return out
}

func TestVersionJSON(t *testing.T) {
	defer func(v string) { version = v }(version)
	for v, short := range map[string]string{"v0.2.0-3-gabc1234-dirty": "0.2.0", "0.2.0~git20260101.abc1234": "0.2.0", "1.2.3": "1.2.3", "7733192": "7733192"} {
		version = v
		code, out, errs := runCLI("version", "--json")
		got := decodeAll[versionJSON](t, out)
		want := versionJSON{Short: short, Long: v, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
		if code != 0 || errs != "" || len(got) != 1 || got[0] != want {
			t.Errorf("version %s --json: code %d, %+v, want %+v", v, code, got, want)
		}
	}
	version = "7733192"
	if _, out, _ := runCLI("version", "--json"); !strings.Contains(out, `"short": "7733192"`) {
		t.Errorf("field names: %s", out)
	}
}

func TestIPJSON(t *testing.T) {
	e := newEnv(t, runningStatus())
	for _, tc := range []struct {
		args []string
		want ipJSON
	}{
		{[]string{"ip", "--json"}, ipJSON{Name: "box", DNSName: "box.tail.example.", Addresses: addrs("100.64.0.1", "fd7a:115c:a1e0::1")}},
		{[]string{"ip", "--json", "-4", "alpha"}, ipJSON{Name: "alpha", DNSName: "alpha.tail.example.", Addresses: addrs("100.64.0.2")}},
		{[]string{"ip", "-6", "--json", "nodns"}, ipJSON{Name: "nodns", Addresses: addrs("fd7a:115c:a1e0::5")}},
	} {
		code, out, errs := e.run(tc.args...)
		got := decodeAll[ipJSON](t, out)
		if code != 0 || errs != "" || len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
			t.Errorf("%q: code %d, stderr %q, %+v, want %+v", tc.args, code, errs, got, tc.want)
		}
	}
	// Failures stay failures: nothing on stdout, the reason on stderr.
	if code, out, errs := e.run("ip", "--json", "-4", "nodns"); code != 1 || out != "" || !strings.Contains(errs, "no IPv4 address") {
		t.Errorf("no IPv4: code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestExitNodeListJSON(t *testing.T) {
	st := exitNodeStatus()
	st.Peers[9].Online = false // sea
	e := newEnv(t, st)
	code, out, errs := e.run("exit-node", "list", "--json")
	rows := decodeAll[[]exitNodeRow](t, out)
	if code != 0 || errs != "" || len(rows) != 1 || len(rows[0]) != 7 {
		t.Fatalf("code %d, stderr %q, %+v", code, errs, rows)
	}
	byHost := map[string]exitNodeRow{}
	for _, r := range rows[0] {
		byHost[r.Host] = r
	}
	want := exitNodeRow{ID: "nFRA", IP: "100.64.0.12", Host: "fra.tail.example", Country: "Germany", City: "Frankfurt",
		Status: "selected", Online: true, Selected: true}
	if byHost["fra.tail.example"] != want {
		t.Errorf("fra: %+v, want %+v", byHost["fra.tail.example"], want)
	}
	if r := byHost["sea.tail.example"]; r.Online || r.Selected || r.Status != "offline" {
		t.Errorf("sea: %+v", r)
	}
	if !strings.Contains(out, `"hostname": "fra.tail.example"`) || strings.Contains(out, "# To use") {
		t.Errorf("JSON carries the hints or lacks its field names:\n%s", out)
	}

	// The same order as the table; --filter applies; no match is an empty list, not an error.
	_, text, _ := e.run("exit-node", "list")
	for i, r := range rows[0] {
		if !strings.Contains(strings.Split(text, "\n")[i+2], r.Host) {
			t.Errorf("row %d is %s in JSON, not in the table:\n%s", i, r.Host, text)
		}
	}
	_, out, _ = e.run("exit-node", "list", "--json", "--filter=germany")
	if got := decodeAll[[]exitNodeRow](t, out); len(got[0]) != 2 || got[0][0].Host != "ber.tail.example" {
		t.Errorf("--filter=germany: %+v", got)
	}
	if code, out, errs := e.run("exit-node", "list", "--json", "--filter=Narnia"); code != 0 || strings.TrimSpace(out) != "[]" || errs != "" {
		t.Errorf("no match: code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestFileTargetsJSON(t *testing.T) {
	e := newFileEnv(t)
	code, out, errs := e.run("file", "cp", "--targets", "--json")
	got := decodeAll[[]ipc.FileTarget](t, out)
	if code != 0 || errs != "" || len(got) != 1 {
		t.Fatalf("code %d, stderr %q, stdout %q", code, errs, out)
	}
	var names []string
	for _, ft := range got[0] {
		names = append(names, ft.Name)
		if ft.Name == "zeta" && ft.Online {
			t.Errorf("zeta is offline: %+v", ft)
		}
	}
	if strings.Join(names, " ") != "alpha beta zeta" || !strings.Contains(out, `"stableID"`) {
		t.Errorf("targets %q (want the text's order):\n%s", names, out)
	}
	e.b.SetFileTargets(nil)
	if code, out, errs := e.run("file", "cp", "--targets", "--json"); code != 0 || strings.TrimSpace(out) != "[]" || errs != "" {
		t.Errorf("none: code %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, _, errs := e.run("file", "cp", "--json", "a.txt", "alpha:"); code != 2 || !strings.Contains(errs, "--json goes with --targets") {
		t.Errorf("--json while sending: code %d, stderr %q", code, errs)
	}
}

func TestDNSQueryJSON(t *testing.T) {
	e := newEnv(t, dnsStatus())
	dnsQueries(e, func(name, qtype string) ipc.DNSQueryResult {
		if name == "box" {
			return ipc.DNSQueryResult{Name: "box.tail.example.", Type: "A", Rcode: "NOERROR", Via: "local", LatencyMs: 0.25,
				Answers: []string{"box.tail.example.\t600\tIN\tA\t100.64.0.1"}}
		}
		return ipc.DNSQueryResult{Rcode: "NXDOMAIN", Via: "upstream", LatencyMs: 3}
	})
	code, out, errs := e.run("dns", "query", "--json", "box")
	got := decodeAll[ipc.DNSQueryResult](t, out)
	want := ipc.DNSQueryResult{Name: "box.tail.example.", Type: "A", Rcode: "NOERROR", Via: "local", LatencyMs: 0.25,
		Answers: []string{"box.tail.example.\t600\tIN\tA\t100.64.0.1"}}
	if code != 0 || errs != "" || len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("box: code %d, stderr %q, %+v", code, errs, got)
	}
	// NXDOMAIN: the JSON still says so, and the exit status is 1 as in text mode; the name and
	// type fall back to the question when the helper leaves them out.
	code, out, _ = e.run("dns", "query", "--json", "nope.example", "aaaa")
	got = decodeAll[ipc.DNSQueryResult](t, out)
	if code != 1 || len(got) != 1 || got[0].Rcode != "NXDOMAIN" || got[0].Name != "nope.example" || got[0].Type != "AAAA" {
		t.Errorf("NXDOMAIN: code %d, %+v", code, got)
	}
}

// up --json prints the official client's JSON: the login URL first, then the final state.
func TestUpJSON(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateNeedsLogin})
	const url = "https://hs.example/register/nodekey:abc"
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		e.b.SetState(ipc.StateNeedsLogin, url)
		go func() {
			for e.b.Watchers() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			e.b.SetState(ipc.StateRunning, "")
		}()
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: url}, nil
	})
	code, out, errs := e.run("up", "--json", "--timeout=10s")
	got := decodeAll[map[string]string](t, out)
	want := []map[string]string{{"AuthURL": url, "BackendState": "NeedsLogin"}, {"BackendState": "Running"}}
	if code != 0 || errs != "" || !reflect.DeepEqual(got, want) {
		t.Fatalf("code %d, stderr %q, JSON %v, want %v", code, errs, got, want)
	}

	// Already running: one block. A failure: the error in the JSON (and on stderr), exit 1.
	e.b.OnUp(nil)
	e.b.SetStatus(ipc.Status{State: ipc.StateStopped})
	if code, out, _ := e.run("up", "--json"); code != 0 || !reflect.DeepEqual(decodeAll[map[string]string](t, out), want[1:]) {
		t.Errorf("already running: code %d, %q", code, out)
	}
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrLoginFailed, Message: "invalid auth key"}
	})
	code, out, errs = e.run("login", "--json", "--auth-key=bad")
	got = decodeAll[map[string]string](t, out)
	if code != 1 || len(got) != 1 || got[0]["Error"] != "invalid auth key" || errs != "skein: invalid auth key\n" {
		t.Errorf("failure: code %d, JSON %v, stderr %q", code, got, errs)
	}
}
