package main

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

func dnsStatus() ipc.Status {
	st := runningStatus()
	st.DNS = &ipc.DNSStatus{
		AcceptDNS:     true,
		MagicDNS:      true,
		Resolver:      addrs("100.100.100.100"),
		Mode:          "systemd-resolved",
		ModeReason:    "/etc/resolv.conf points at systemd-resolved's stub",
		Applied:       true,
		SearchDomains: []string{"tail.example"},
		SplitRoutes: map[string][]string{
			"tail.example.": nil,
			"corp.example.": {"10.0.0.53", "10.0.0.54"},
		},
		Upstreams:     []string{"192.168.1.1"},
		UpstreamsFrom: "system",
		Hosts:         5,
		ExtraRecords:  1,
	}
	return st
}

// --accept-dns reaches the patch only when given, on set, up and login.
func TestAcceptDNSFlag(t *testing.T) {
	e := newEnv(t, runningStatus())
	patches := recordPatches(e)
	for _, tc := range []struct {
		args []string
		want ipc.PrefsPatch
	}{
		{[]string{"set", "--accept-dns"}, ipc.PrefsPatch{AcceptDNS: ptr(true)}},
		{[]string{"set", "--accept-dns=false"}, ipc.PrefsPatch{AcceptDNS: ptr(false)}},
		{[]string{"set", "--accept-dns=true", "--accept-routes"}, ipc.PrefsPatch{AcceptDNS: ptr(true), AcceptRoutes: ptr(true)}},
		{[]string{"up", "--accept-dns=false"}, ipc.PrefsPatch{AcceptDNS: ptr(false)}},
		{[]string{"login", "--accept-dns=false"}, ipc.PrefsPatch{AcceptDNS: ptr(false)}},
		{[]string{"up", "--accept-routes"}, ipc.PrefsPatch{AcceptRoutes: ptr(true)}},
	} {
		before := len(patches())
		code, out, errs := e.run(tc.args...)
		if code != 0 || out != "" || errs != "" {
			t.Errorf("%q: code %d, stdout %q, stderr %q", tc.args, code, out, errs)
			continue
		}
		got := patches()[before:]
		if len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
			t.Errorf("%q: sent %+v, want %s", tc.args, got, patchJSON(tc.want))
		}
	}
	// up without pref flags sends no patch at all.
	before := len(patches())
	if code, _, errs := e.run("up"); code != 0 || len(patches()) != before {
		t.Errorf("plain up: code %d, stderr %q, %d patches", code, errs, len(patches())-before)
	}
}

// Through the fake helper's ApplyPatch: the pref flips and back.
func TestAcceptDNSRoundTrip(t *testing.T) {
	e := newEnv(t, runningStatus())
	if code, _, errs := e.run("set", "--accept-dns=false"); code != 0 || !e.b.Prefs().NoAcceptDNS {
		t.Fatalf("code %d, stderr %q, prefs %+v", code, errs, e.b.Prefs())
	}
	if code, _, errs := e.run("set", "--accept-dns"); code != 0 || e.b.Prefs().NoAcceptDNS {
		t.Fatalf("code %d, stderr %q, prefs %+v", code, errs, e.b.Prefs())
	}
	if code, _, errs := runCLI("set", "--accept-dns=maybe"); code != 2 || !strings.Contains(errs, "accept-dns") {
		t.Fatalf("bad bool: code %d, stderr %q", code, errs)
	}
}

func TestDNSStatusText(t *testing.T) {
	e := newEnv(t, dnsStatus())
	code, out, errs := e.run("dns", "status")
	want := `
=== 'Use Skein DNS' status ===

Skein DNS: enabled.

This machine's DNS queries go to Skein's resolver at 100.100.100.100.
To go back to the system's own resolver, run 'skein set --accept-dns=false'.

=== MagicDNS configuration ===

The tailnet's DNS settings, as the coordination server sent them to this machine.

MagicDNS: enabled tailnet-wide (suffix = tail.example)

Other machines of the tailnet reach this one as box.tail.example.

Resolvers (in preference order):
  (none from the tailnet: other names go to the system's own resolvers, see 'System DNS configuration' below)

Split DNS Routes:
  - corp.example.                  -> 10.0.0.53
  - corp.example.                  -> 10.0.0.54
  - tail.example.                  -> (answered locally by Skein)

Search Domains:
  - tail.example

=== System DNS configuration ===

How Skein set up this machine's resolver.

Configured through: systemd-resolved
Why: /etc/resolv.conf points at systemd-resolved's stub
Applied: yes, the system resolver sends its queries to 100.100.100.100

System nameservers (Skein forwards other names to them):
  - 192.168.1.1
`
	if code != 0 || errs != "" || out != want {
		t.Fatalf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}

	// --all adds the local counts.
	_, out, _ = e.run("dns", "status", "--all")
	if !strings.Contains(out, "\nAnswered locally:\n  - 5 tailnet names\n  - 1 extra record from the coordination server\n") {
		t.Errorf("--all:\n%s", out)
	}
}

func TestDNSStatusDisabledWithWarnings(t *testing.T) {
	st := dnsStatus()
	st.DNS = &ipc.DNSStatus{
		AcceptDNS:     false,
		MagicDNS:      false,
		Resolver:      addrs("100.100.100.100"),
		Upstreams:     []string{"1.1.1.1", "9.9.9.9"},
		UpstreamsFrom: "tailnet",
		Warnings:      []string{"NetworkManager rewrote /etc/resolv.conf"},
	}
	e := newEnv(t, st)
	code, out, errs := e.run("dns", "status")
	if code != 0 || errs != "" {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	for _, s := range []string{
		"Skein DNS: disabled.\n",
		"'skein set --accept-dns=true'",
		"MagicDNS: disabled tailnet-wide.\n",
		"Resolvers (in preference order):\n  - 1.1.1.1\n  - 9.9.9.9\n",
		"  (no routes configured: split DNS disabled)\n",
		"  (no search domains configured)\n",
		"Configured through: (nothing: --accept-dns=false)\n",
		"Applied: no, the system resolver is left alone\n",
		"\n# Warnings:\n#     - NetworkManager rewrote /etc/resolv.conf\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("missing %q in:\n%s", s, out)
		}
	}
	if strings.Contains(out, "System nameservers") || strings.Contains(out, "Other machines") {
		t.Errorf("unexpected section:\n%s", out)
	}

	// Wanted but not applied: point at the warnings.
	st.DNS.AcceptDNS, st.DNS.Mode, st.DNS.ModeReason = true, "resolv.conf", "no systemd-resolved"
	e.b.SetStatus(st)
	_, out, _ = e.run("dns", "status")
	for _, s := range []string{
		"Configured through: resolv.conf\nWhy: no systemd-resolved\nApplied: no, the system resolver does not use Skein (see the warnings below)\n",
		"#     - NetworkManager rewrote /etc/resolv.conf\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("missing %q in:\n%s", s, out)
		}
	}
}

func TestDNSStatusNotConnected(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateStopped})
	code, out, errs := e.run("dns", "status")
	if code != 1 || errs != "" || out != "Skein is stopped.\nDNS status is only available while connected.\n" {
		t.Errorf("stopped: code %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = e.run("dns", "status", "--json")
	if code != 1 || out != "" || !strings.Contains(errs, "not connected") {
		t.Errorf("stopped --json: code %d, stdout %q, stderr %q", code, out, errs)
	}
	// Running but no DNS status yet.
	e.b.SetStatus(runningStatus())
	code, out, _ = e.run("dns", "status")
	if code != 1 || !strings.Contains(out, "No DNS configuration yet") {
		t.Errorf("no DNS: code %d, stdout %q", code, out)
	}
}

func TestDNSStatusJSON(t *testing.T) {
	st := dnsStatus()
	st.DNS.Warnings = []string{"w"}
	e := newEnv(t, st)
	code, out, errs := e.run("dns", "status", "--json")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "{\n  \"acceptDNS\": true") {
		t.Fatalf("code %d, stderr %q, stdout %q", code, errs, out)
	}
	var got ipc.DNSStatus
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, st.DNS) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *st.DNS)
	}
}

// dnsQueries makes the backend answer from answer and records the queries.
func dnsQueries(e *env, answer func(name, qtype string) ipc.DNSQueryResult) func() [][2]string {
	var mu sync.Mutex
	var got [][2]string
	e.b.OnDNSQuery(func(_ context.Context, name, qtype string) (ipc.DNSQueryResult, error) {
		mu.Lock()
		got = append(got, [2]string{name, qtype})
		mu.Unlock()
		return answer(name, qtype), nil
	})
	return func() [][2]string {
		mu.Lock()
		defer mu.Unlock()
		return append([][2]string(nil), got...)
	}
}

func TestDNSQuery(t *testing.T) {
	e := newEnv(t, dnsStatus())
	queries := dnsQueries(e, func(name, qtype string) ipc.DNSQueryResult {
		switch {
		case name == "box" && qtype == "A":
			return ipc.DNSQueryResult{Name: "box.tail.example.", Type: "A", Rcode: "NOERROR", Via: "local", LatencyMs: 0.25,
				Answers: []string{"box.tail.example.\t600\tIN\tA\t100.64.0.1"}}
		case qtype == "TXT":
			return ipc.DNSQueryResult{Name: name + ".", Type: "TXT", Rcode: "NOERROR", Via: "split:corp.example.", LatencyMs: 12.4,
				Answers: []string{"wiki.corp.example.\t300\tIN\tTXT\t\"v=spf1  -all\" \"two\"", "garbage"}}
		case qtype == "MX":
			return ipc.DNSQueryResult{Name: name + ".", Type: "MX", Rcode: "NOERROR", Via: "upstream", LatencyMs: 30}
		}
		return ipc.DNSQueryResult{Name: name + ".", Type: qtype, Rcode: "NOERROR", Via: "upstream"}
	})

	code, out, errs := e.run("dns", "query", "box")
	want := `DNS query for "box" (A) using Skein's resolver:

Answered by: Skein (the tailnet's names)

Response code: NOERROR
Query time: 0.25ms

Name               TTL  Class  Type  Body
----               ---  -----  ----  ----
box.tail.example.  600  IN     A     100.64.0.1
`
	if code != 0 || errs != "" || out != want {
		t.Fatalf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}

	code, out, _ = e.run("dns", "query", "wiki.corp.example", "txt")
	for _, s := range []string{
		`DNS query for "wiki.corp.example" (TXT)`,
		"Forwarded to one of (split DNS for corp.example.):\n  - 10.0.0.53\n  - 10.0.0.54\n",
		"Query time: 12ms\n",
		"IN     TXT   \"v=spf1  -all\" \"two\"\n",
		"\ngarbage\n",
	} {
		if code != 0 || !strings.Contains(out, s) {
			t.Errorf("TXT: code %d, missing %q in:\n%s", code, s, out)
		}
	}

	code, out, _ = e.run("dns", "query", "example.com", "15")
	if code != 0 || !strings.Contains(out, "(MX)") || !strings.Contains(out, "Forwarded to: 192.168.1.1 (the system's resolver)\n") ||
		!strings.HasSuffix(out, "\n  (no answers found)\n") {
		t.Errorf("MX: code %d:\n%s", code, out)
	}

	if code, _, errs := e.run("dns", "query", "x.example", "65"); code != 0 {
		t.Errorf("type number: code %d, stderr %q", code, errs)
	}
	if code, _, errs := e.run("dns", "query", "x.example", "aaaa"); code != 0 {
		t.Errorf("aaaa: code %d, stderr %q", code, errs)
	}
	wantQ := [][2]string{{"box", "A"}, {"wiki.corp.example", "TXT"}, {"example.com", "MX"}, {"x.example", "65"}, {"x.example", "AAAA"}}
	if got := queries(); !reflect.DeepEqual(got, wantQ) {
		t.Errorf("queries %q, want %q", got, wantQ)
	}
}

func TestDNSQueryFailures(t *testing.T) {
	e := newEnv(t, dnsStatus())
	// The fake helper answers NXDOMAIN by default.
	code, out, errs := e.run("dns", "query", "ghost.tail.example")
	if code != 1 || errs != "" || !strings.Contains(out, "Response code: NXDOMAIN\n") || !strings.HasSuffix(out, "No answers were returned.\n") {
		t.Errorf("NXDOMAIN: code %d, stdout %q, stderr %q", code, out, errs)
	}
	dnsQueries(e, func(name, qtype string) ipc.DNSQueryResult {
		return ipc.DNSQueryResult{Name: name, Type: qtype, Rcode: "SERVFAIL", Via: "upstream"}
	})
	if code, out, _ := e.run("dns", "query", "broken.example"); code != 1 || !strings.Contains(out, "Response code: SERVFAIL\n") {
		t.Errorf("SERVFAIL: code %d, stdout %q", code, out)
	}
	e.b.OnDNSQuery(func(context.Context, string, string) (ipc.DNSQueryResult, error) {
		return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrNeedsLogin, Message: "not connected", Fix: "skein up"}
	})
	if code, out, errs := e.run("dns", "query", "box"); code != 1 || out != "" || errs != "skein: not connected\n  fix: skein up\n" {
		t.Errorf("error: code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestDNSUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"dns"},
		{"dns", "frob"},
		{"dns", "--all"},
		{"dns", "status", "extra"},
		{"dns", "status", "--nope"},
		{"dns", "query"},
		{"dns", "query", "a", "A", "extra"},
		{"dns", "query", "a", "FOO"},
		{"dns", "query", "a", "0"},
		{"dns", "query", "a", "65536"},
		{"dns", "query", ""},
	} {
		code, out, errs := runCLI(append([]string{"--socket", "/nonexistent/skeind.sock"}, args...)...)
		if code != 2 || out != "" || errs == "" || strings.Contains(errs, "cannot reach skeind") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and a usage message", args, code, out, errs)
		}
	}
	_, _, errs := runCLI("dns", "query", "a", "FOO")
	if !strings.Contains(errs, `invalid record type "FOO": want one of A, AAAA, PTR, CNAME, MX, TXT, SRV, NS, SOA, ANY, or a number`) {
		t.Errorf("bad type message: %q", errs)
	}
}

func TestDNSHelp(t *testing.T) {
	code, out, _ := runCLI("help")
	if code != 0 || !strings.Contains(out, "\n  dns       ") {
		t.Errorf("help does not list dns:\n%s", out)
	}
	for _, args := range [][]string{{"dns", "status", "--help"}, {"dns", "query", "-h"}} {
		code, out, errs := runCLI(args...)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: skein "+strings.Join(args[:2], " ")) {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}
