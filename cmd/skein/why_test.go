package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

func relayedReport() ipc.WhyReport {
	return ipc.WhyReport{
		Peer: "laptop", PeerIP: netip.MustParseAddr("100.64.0.2"), Path: "relay", Relay: "fra",
		Pings: []ipc.WhyPing{{To: "198.51.100.7:41641", Sent: 1}, {To: "DERP(fra)", Sent: 1, Answered: 1, LatencyMs: 12.3}},
		Causes: []ipc.Cause{{
			Code: ipc.CauseFirewall, Summary: "This machine's firewall drops inbound UDP 41641.",
			Evidence: []string{"ufw (ip filter INPUT): policy drop"}, Fix: "sudo ufw allow 41641/udp",
		}, {Code: ipc.CauseNoPong, Summary: "Pings go unanswered.", Fix: "allow inbound UDP 41641 on laptop"}},
	}
}

func TestWhy(t *testing.T) {
	e := newEnv(t, runningStatus())
	e.b.OnWhy(func(_ context.Context, peer string) (ipc.WhyReport, error) {
		if peer != "laptop" {
			return ipc.WhyReport{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "no peer named " + peer}
		}
		return relayedReport(), nil
	})
	code, out, errs := e.run("why", "laptop")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{
		`laptop (100.64.0.2): relayed through DERP "fra"`,
		"pings answered: 198.51.100.7:41641 0/1, DERP(fra) 1/1 in 12.3ms",
		"1. This machine's firewall drops inbound UDP 41641. [firewall_inbound]",
		"   - ufw (ip filter INPUT): policy drop",
		"   fix: sudo ufw allow 41641/udp",
		"2. Pings go unanswered. [no_pong]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = e.run("why", "--json", "laptop")
	var rep ipc.WhyReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Causes[0].Fix != "sudo ufw allow 41641/udp" {
		t.Fatalf("--json: exit %d:\n%s", code, out)
	}
	if code, _, errs := e.run("why", "nobody"); code != 1 || !strings.Contains(errs, "no peer named nobody") {
		t.Errorf("unknown peer: exit %d, %q", code, errs)
	}
	if code, _, _ := e.run("why"); code != 2 {
		t.Errorf("no peer: exit %d, want 2", code)
	}
}

// A ping that ends without a direct path names the top cause and its fix.
func TestPingNamesTopCause(t *testing.T) {
	e := newEnv(t, runningStatus())
	e.b.OnPing(func(context.Context, string) (ipc.PingResult, error) {
		return ipc.PingResult{NodeName: "laptop", DERPRegionCode: "fra", LatencySeconds: 0.012}, nil
	})
	e.b.OnWhy(func(context.Context, string) (ipc.WhyReport, error) { return relayedReport(), nil })
	code, out, errs := e.run("ping", "-c", "1", "laptop")
	if code != 1 || !strings.Contains(out, "via DERP(fra)") {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{"direct connection not established", "cause: This machine's firewall drops inbound UDP 41641.", "fix: sudo ufw allow 41641/udp"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestNetcheckOfficialStyle(t *testing.T) {
	e := newEnv(t, runningStatus())
	vary := true
	e.b.OnNetcheck(func(ctx context.Context) (ipc.NetcheckReport, error) {
		return ipc.NetcheckReport{
			UDP: true, IPv4: true, GlobalV4: "203.0.113.5:41641", OSHasIPv6: true,
			MappingVariesByDestIP: &vary, PreferredDERP: 2,
			RegionLatency: map[int]float64{1: 0.030, 2: 0.0123, 4: 0.020},
			RegionCodes:   map[int]string{1: "nyc", 2: "fra", 3: "sin", 4: "par"},
			RegionNames:   map[int]string{2: "Frankfurt"},
			PortMapping:   &ipc.PortMapping{UPnP: true, NATPMP: true, PCP: true},
			Time:          time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC),
			Cached:        !ipc.CallerMayChange(ctx),
		}, nil
	})
	code, out, errs := e.run("netcheck")
	if code != 0 || strings.Contains(errs, "last report") {
		t.Fatalf("exit %d, stderr %q (root gets a fresh run)", code, errs)
	}
	want := "\nReport:\n\t* Time: 2026-12-07T12:00:00Z\n\t* UDP: true\n\t* IPv4: yes, 203.0.113.5:41641\n" +
		"\t* IPv6: no, but OS has support\n\t* MappingVariesByDestIP: true\n\t* PortMapping: UPnP, NAT-PMP, PCP\n" +
		"\t* Nearest DERP: Frankfurt\n\t* DERP latency:\n" +
		"\t\t- fra: 12.3ms  (Frankfurt)\n\t\t- par: 20ms    (par)\n\t\t- nyc: 30ms    (nyc)\n\t\t- sin:         (sin)\n"
	if out != want {
		t.Errorf("output:\n%q\nwant:\n%q", out, want)
	}
	code, out, _ = e.run("netcheck", "--format=json")
	var j map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
		t.Fatalf("--format=json: exit %d\n%s", code, out)
	}
	if j["MappingVariesByDestIP"] != "true" || j["UPnP"] != "true" || j["GlobalV4"] != "203.0.113.5:41641" ||
		j["RegionLatency"].(map[string]any)["2"] != float64(12300000) {
		t.Errorf("JSON not in the official shape:\n%s", out)
	}
	if code, out, _ := e.run("netcheck", "--format=json-line"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("json-line: exit %d\n%s", code, out)
	}
	if code, _, _ := e.run("netcheck", "--format=yaml"); code != 2 {
		t.Errorf("unknown format: exit %d, want 2", code)
	}
}
