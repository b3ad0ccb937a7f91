package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

func ptr[T any](v T) *T { return &v }

// exitNodeStatus is runningStatus plus exit nodes in several countries; fra is in use.
func exitNodeStatus() ipc.Status {
	st := runningStatus()
	exit := func(id int64, name, loc string, online bool) ipc.Peer {
		return ipc.Peer{ID: id, StableID: "n" + strings.ToUpper(name), HostName: name, DNSName: name + ".tail.example.",
			OS: "linux", UserID: 7, Addresses: addrs("100.64.0."+strconv.FormatInt(id, 10), "fd7a:115c:a1e0::"+strconv.FormatInt(id, 16)),
			Online: online, ExitNodeOption: true, Location: loc}
	}
	fra := exit(12, "fra", "Frankfurt, Germany", true)
	fra.ExitNode, fra.Active, fra.CurAddr, fra.TxBytes, fra.RxBytes = true, true, "198.51.100.7:41641", 100, 200
	st.Peers = append(st.Peers,
		exit(10, "nyc1", "New York, United States", true),
		exit(11, "nyc0", "New York, United States", false),
		fra,
		exit(13, "home", "", true),
		exit(14, "ber", "Berlin, Germany", true),
		exit(15, "sea", "Seattle, United States", true),
		exit(16, "lonely", "Iceland", true),
	)
	st.ExitNode = &ipc.ExitNodeStatus{ID: "nFRA", Name: "fra.tail.example.", IP: netip.MustParseAddr("100.64.0.12"), Online: true}
	return st
}

// recordPatches makes the backend record every patch instead of applying it.
func recordPatches(e *env) func() []ipc.PrefsPatch {
	var mu sync.Mutex
	var got []ipc.PrefsPatch
	e.b.OnSetPrefs(func(_ context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p)
		return ipc.Prefs{}, nil
	})
	return func() []ipc.PrefsPatch {
		mu.Lock()
		defer mu.Unlock()
		return append([]ipc.PrefsPatch(nil), got...)
	}
}

func patchJSON(p ipc.PrefsPatch) string {
	b, _ := json.Marshal(p)
	return string(b)
}

// Each flag lands in its own field, and only the flags given are sent.
func TestSetPrefsFlags(t *testing.T) {
	e := newEnv(t, exitNodeStatus())
	patches := recordPatches(e)
	for _, tc := range []struct {
		args []string
		want ipc.PrefsPatch
	}{
		{[]string{"--exit-node=fra"}, ipc.PrefsPatch{ExitNode: ptr("fra")}},
		{[]string{"--exit-node", "100.64.0.12"}, ipc.PrefsPatch{ExitNode: ptr("100.64.0.12")}},
		{[]string{"--exit-node="}, ipc.PrefsPatch{ExitNode: ptr("")}},
		{[]string{"--exit-node-allow-lan-access"}, ipc.PrefsPatch{ExitNodeAllowLANAccess: ptr(true)}},
		{[]string{"--exit-node-allow-lan-access=false"}, ipc.PrefsPatch{ExitNodeAllowLANAccess: ptr(false)}},
		{[]string{"--exit-node-bypass=10.0.0.0/8, 192.168.1.0/24,"}, ipc.PrefsPatch{ExitNodeBypass: ptr([]string{"10.0.0.0/8", "192.168.1.0/24"})}},
		{[]string{"--exit-node-bypass="}, ipc.PrefsPatch{ExitNodeBypass: ptr([]string{})}},
		{[]string{"--bypass-vpn-routes"}, ipc.PrefsPatch{BypassVPNRoutes: ptr(true)}},
		{[]string{"--bypass-vpn-routes=false"}, ipc.PrefsPatch{BypassVPNRoutes: ptr(false)}},
		{[]string{"--advertise-exit-node"}, ipc.PrefsPatch{AdvertiseExitNode: ptr(true)}},
		{[]string{"--advertise-exit-node=false"}, ipc.PrefsPatch{AdvertiseExitNode: ptr(false)}},
		{[]string{"--advertise-routes=10.1.0.0/16,fd00:1::/64"}, ipc.PrefsPatch{AdvertiseRoutes: ptr([]string{"10.1.0.0/16", "fd00:1::/64"})}},
		{[]string{"--advertise-routes="}, ipc.PrefsPatch{AdvertiseRoutes: ptr([]string{})}},
		// The official spelling of --advertise-exit-node.
		{[]string{"--advertise-routes=0.0.0.0/0,::/0,10.1.0.0/16"}, ipc.PrefsPatch{AdvertiseRoutes: ptr([]string{"10.1.0.0/16"}), AdvertiseExitNode: ptr(true)}},
		{[]string{"--snat-subnet-routes=false"}, ipc.PrefsPatch{SNATSubnetRoutes: ptr(false)}},
		{[]string{"--snat-subnet-routes"}, ipc.PrefsPatch{SNATSubnetRoutes: ptr(true)}},
		{[]string{"--accept-routes"}, ipc.PrefsPatch{AcceptRoutes: ptr(true)}},
		{[]string{"--accept-routes=false"}, ipc.PrefsPatch{AcceptRoutes: ptr(false)}},
		{[]string{"--persist-forwarding"}, ipc.PrefsPatch{PersistForwarding: ptr(true)}},
		{[]string{"--lan-uses-cgnat"}, ipc.PrefsPatch{LANUsesCGNAT: ptr(true)}},
		{[]string{"--lan-uses-cgnat=false", "--stateful-filtering"}, ipc.PrefsPatch{LANUsesCGNAT: ptr(false), StatefulFiltering: ptr(true)}},
		{[]string{"--persist-forwarding=false", "--hostname=h"}, ipc.PrefsPatch{PersistForwarding: ptr(false), Hostname: ptr("h")}},
		{[]string{"--exit-node=fra", "--exit-node-allow-lan-access", "--exit-node-bypass=10.0.0.0/8", "--bypass-vpn-routes",
			"--accept-routes=false", "--operator=root"},
			ipc.PrefsPatch{ExitNode: ptr("fra"), ExitNodeAllowLANAccess: ptr(true), ExitNodeBypass: ptr([]string{"10.0.0.0/8"}),
				BypassVPNRoutes: ptr(true), AcceptRoutes: ptr(false), Operator: ptr("root")}},
	} {
		before := len(patches())
		code, out, errs := e.run(append([]string{"set"}, tc.args...)...)
		if code != 0 || out != "" || errs != "" {
			t.Errorf("%q: code %d, stdout %q, stderr %q", tc.args, code, out, errs)
			continue
		}
		got := patches()[before:]
		// Compared as JSON, as sent: an empty list must go out as [] ("clear"), never as null.
		if len(got) != 1 || patchJSON(got[0]) != patchJSON(tc.want) || !reflect.DeepEqual(got[0], tc.want) {
			t.Errorf("%q: sent %d patches %v, want %s", tc.args, len(got), func() (s []string) {
				for _, p := range got {
					s = append(s, patchJSON(p))
				}
				return s
			}(), patchJSON(tc.want))
		}
	}
}

// Through the fake helper's real validation: the prefs change as asked, and back.
func TestSetExitNodeRoundTrip(t *testing.T) {
	e := newEnv(t, exitNodeStatus())
	if code, _, errs := e.run("set", "--exit-node=fra", "--exit-node-allow-lan-access", "--exit-node-bypass=192.168.50.0/24,10.0.0.0/16",
		"--bypass-vpn-routes", "--accept-routes", "--persist-forwarding", "--snat-subnet-routes=false"); code != 0 {
		t.Fatalf("set: %d %q", code, errs)
	}
	p := e.b.Prefs()
	want := ipc.Prefs{LoginServer: p.LoginServer, WantRunning: true, ExitNodeID: "nFRA", ExitNodeAllowLANAccess: true,
		ExitNodeBypass:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("192.168.50.0/24")},
		BypassVPNRoutes: true, AcceptRoutes: true, PersistForwarding: true, NoSNAT: true, LastExitNodeID: "nFRA"}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("prefs\n got %+v\nwant %+v", p, want)
	}
	// By IP and by FQDN too.
	for _, arg := range []string{"100.64.0.14", "ber.tail.example"} {
		if code, _, errs := e.run("set", "--exit-node="+arg); code != 0 || e.b.Prefs().ExitNodeID != "nBER" {
			t.Fatalf("--exit-node=%s: %d %q, prefs %+v", arg, code, errs, e.b.Prefs())
		}
	}
	if code, _, errs := e.run("set", "--exit-node=", "--exit-node-bypass="); code != 0 {
		t.Fatalf("clear: %d %q", code, errs)
	}
	if p := e.b.Prefs(); p.ExitNodeID != "" || p.ExitNodeBypass != nil || !p.ExitNodeAllowLANAccess {
		t.Fatalf("after clearing: %+v", p)
	}
	if code, _, errs := e.run("set", "--advertise-exit-node", "--advertise-routes=10.9.0.0/16"); code != 0 {
		t.Fatalf("advertise: %d %q", code, errs)
	}
	if p := e.b.Prefs(); !p.AdvertiseExitNode || !reflect.DeepEqual(p.AdvertiseRoutes, []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}) {
		t.Fatalf("after advertising: %+v", p)
	}
}

// The helper's refusals reach the user as they are, with exit status 1, and change nothing.
func TestSetRejected(t *testing.T) {
	e := newEnv(t, exitNodeStatus())
	if code, _, errs := e.run("set", "--exit-node=fra", "--exit-node-bypass=10.0.0.0/8"); code != 0 {
		t.Fatalf("set: %d %q", code, errs)
	}
	before := e.b.Prefs()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--exit-node-bypass=10.0.0.0/8,10.0.0.300/24"}, `skein: exit-node bypass: "10.0.0.300/24" is not a CIDR like 10.0.0.0/16` + "\n"},
		{[]string{"--advertise-routes=192.168.1.1/24"}, "skein: advertised routes: 192.168.1.1/24 has host bits set; did you mean 192.168.1.0/24?\n"},
		{[]string{"--exit-node=ghost"}, `skein: no peer named "ghost"` + "\n"},
		{[]string{"--exit-node=alpha", "--accept-routes"}, "skein: alpha does not offer to be an exit node\n"},
		{[]string{"--advertise-exit-node"}, "skein: cannot use an exit node while offering to be one\n  fix: skein set --exit-node= (or --advertise-exit-node=false)\n"},
	} {
		code, out, errs := e.run(append([]string{"set"}, tc.args...)...)
		if code != 1 || out != "" || errs != tc.want {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 1, %q", tc.args, code, out, errs, tc.want)
		}
		if p := e.b.Prefs(); !reflect.DeepEqual(p, before) {
			t.Fatalf("%q changed the prefs: %+v", tc.args, p)
		}
	}
}

// up sends the other prefs before connecting and the exit node once Running.
func TestUpWithPrefs(t *testing.T) {
	st := exitNodeStatus()
	st.State = ipc.StateStopped
	e := newEnv(t, st)
	var mu sync.Mutex
	var log []string
	e.b.OnSetPrefs(func(_ context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
		mu.Lock()
		defer mu.Unlock()
		log = append(log, "set "+patchJSON(p)+" while "+string(e.b.Status().State))
		return ipc.Prefs{}, nil
	})
	e.b.OnUp(func(context.Context, ipc.UpRequest) (ipc.UpResponse, error) {
		mu.Lock()
		log = append(log, "up")
		mu.Unlock()
		go func() {
			for e.b.Watchers() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			e.b.SetState(ipc.StateStarting, "")
			e.b.SetState(ipc.StateRunning, "")
		}()
		return ipc.UpResponse{State: ipc.StateStarting}, nil
	})
	code, out, errs := e.run("up", "--timeout=10s", "--exit-node=fra", "--accept-routes", "--exit-node-bypass=10.0.0.0/8")
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	mu.Lock()
	want := []string{
		`set {"exitNodeBypass":["10.0.0.0/8"],"acceptRoutes":true} while Stopped`,
		"up",
		`set {"exitNode":"fra"} while Running`,
	}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("calls\n got %q\nwant %q", log, want)
	}
	log = nil
	mu.Unlock()

	// Without preference flags, up sends no patch.
	e.b.SetState(ipc.StateStopped, "")
	if code, _, errs := e.run("up", "--timeout=10s", "--hostname=box"); code != 0 {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(log, []string{"up"}) {
		t.Fatalf("calls %q, want only up", log)
	}
}

func TestUpWithPrefsApplied(t *testing.T) {
	st := exitNodeStatus()
	st.State = ipc.StateStopped
	e := newEnv(t, st)
	if code, out, errs := e.run("up", "--exit-node=nyc1", "--exit-node-allow-lan-access", "--advertise-routes=10.5.0.0/16"); code != 0 || out != "" || errs != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	if p := e.b.Prefs(); p.ExitNodeID != "nNYC1" || !p.ExitNodeAllowLANAccess || len(p.AdvertiseRoutes) != 1 {
		t.Fatalf("prefs %+v", p)
	}
	// Clearing the exit node goes first, so that offering to be one is not refused.
	if code, _, errs := e.run("up", "--exit-node=", "--advertise-exit-node"); code != 0 {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	if p := e.b.Prefs(); p.ExitNodeID != "" || !p.AdvertiseExitNode {
		t.Fatalf("prefs %+v", p)
	}
	if got := len(e.b.UpRequests()); got != 2 {
		t.Fatalf("%d Up calls", got)
	}
}

func TestUpWithBadPrefs(t *testing.T) {
	st := exitNodeStatus()
	st.State = ipc.StateStopped
	e := newEnv(t, st)
	// A bad value is refused before connecting.
	code, _, errs := e.run("up", "--advertise-routes=10.0.0.0/33", "--exit-node=fra")
	if code != 1 || errs != `skein: advertised routes: "10.0.0.0/33" is not a CIDR like 10.0.0.0/16`+"\n" {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	if n := len(e.b.UpRequests()); n != 0 || e.b.Prefs().ExitNodeID != "" {
		t.Fatalf("up went ahead: %d Up calls, prefs %+v", n, e.b.Prefs())
	}
	// An unknown exit node is found once connected; the error says so and exits 1.
	code, _, errs = e.run("up", "--exit-node=ghost")
	if code != 1 || errs != `skein: no peer named "ghost"`+"\n" {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	if e.b.Prefs().ExitNodeID != "" {
		t.Fatalf("prefs %+v", e.b.Prefs())
	}
}

func TestExitNodeList(t *testing.T) {
	e := newEnv(t, exitNodeStatus())
	code, out, errs := e.run("exit-node", "list")
	want := "\n" +
		" IP              HOSTNAME                COUNTRY           CITY          STATUS       \n" +
		" 100.64.0.13     home.tail.example       -                 -             -            \n" +
		" 100.64.0.14     ber.tail.example        Germany           Berlin        -            \n" +
		" 100.64.0.12     fra.tail.example        Germany           Frankfurt     selected     \n" +
		" 100.64.0.16     lonely.tail.example     Iceland           -             -            \n" +
		" 100.64.0.11     nyc0.tail.example       United States     New York      offline      \n" +
		" 100.64.0.10     nyc1.tail.example       United States     New York      -            \n" +
		" 100.64.0.15     sea.tail.example        United States     Seattle       -            \n" +
		"\n" +
		"# To view the complete list of exit nodes for a country, use `skein exit-node list --filter=` followed by the country name.\n" +
		"# To use an exit node, use `skein set --exit-node=` followed by the hostname or IP.\n"
	if code != 0 || errs != "" || out != want {
		t.Fatalf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}

	code, out, _ = e.run("exit-node", "list", "--filter=united states")
	lines := strings.Split(out, "\n")
	if code != 0 || len(lines) != 9 || !strings.HasPrefix(lines[1], " IP ") ||
		!strings.HasPrefix(lines[2], " 100.64.0.11 ") || !strings.HasPrefix(lines[4], " 100.64.0.15 ") || lines[5] != "" {
		t.Fatalf("--filter: code %d, stdout:\n%s", code, out)
	}

	// The selected node gone offline.
	st := exitNodeStatus()
	st.Peers[6].Online = false
	st.ExitNode.Online = false
	e.b.SetStatus(st)
	_, out, _ = e.run("exit-node", "list", "--filter", "GERMANY")
	if lines := strings.Split(out, "\n"); len(lines) < 4 || strings.Join(strings.Fields(lines[3]), " ") != "100.64.0.12 fra.tail.example Germany Frankfurt selected but offline" {
		t.Fatalf("selected but offline:\n%s", out)
	}

	if code, out, errs := e.run("exit-node", "list", "--filter=Narnia"); code != 1 || out != "" || errs != "skein: no exit nodes found for \"Narnia\"\n" {
		t.Fatalf("unknown country: %d %q %q", code, out, errs)
	}
	e.b.SetStatus(runningStatus())
	if code, out, errs := e.run("exit-node", "list"); code != 1 || out != "" || errs != "skein: no exit nodes found\n" {
		t.Fatalf("none: %d %q %q", code, out, errs)
	}
}

func TestStatusExitNodes(t *testing.T) {
	e := newEnv(t, exitNodeStatus())
	code, out, errs := e.run("status", "--self=false")
	if code != 0 || errs != "" {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	for _, line := range []string{
		"100.64.0.12       fra                  alice@         linux   active; exit node; direct 198.51.100.7:41641, tx 100 rx 200\n",
		"100.64.0.14       ber                  alice@         linux   idle; offers exit node\n",
		"100.64.0.11       nyc0                 alice@         linux   idle; offers exit node; offline\n",
		"100.64.0.2        alpha                alice@         macOS   -\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("missing %q in:\n%s", line, out)
		}
	}
	if strings.Contains(strings.TrimSuffix(out, "# Login server: https://hs.example\n"), "#") {
		t.Errorf("warning while the exit node is online:\n%s", out)
	}

	// Selected but offline: the line says so, and a warning follows the table.
	st := exitNodeStatus()
	st.Peers[6].Online, st.Peers[6].Active = false, false
	st.ExitNode.Online = false
	st.Health = []ipc.Issue{{Code: "x", Message: "something else"}}
	e.b.SetStatus(st)
	_, out, _ = e.run("status", "--self=false")
	if !strings.Contains(out, "100.64.0.12       fra                  alice@         linux   idle; exit node; offline, tx 100 rx 200\n") {
		t.Errorf("offline exit node line:\n%s", out)
	}
	wantTail := "\n# Exit node fra.tail.example (100.64.0.12) is offline: internet traffic is blocked until it is back.\n" +
		"# To use another one, see `skein exit-node list`; to stop using one, run `skein set --exit-node=`.\n" +
		"# Login server: https://hs.example\n" +
		"\n# Health check:\n#     - something else\n"
	if !strings.HasSuffix(out, wantTail) {
		t.Errorf("want the warning then health at the end:\n%s", out)
	}
	// Also when the peers are not listed, and when the node left the tailnet.
	st.Peers = st.Peers[:4]
	st.Health = nil
	e.b.SetStatus(st)
	if _, out, _ = e.run("status", "--peers=false"); !strings.HasSuffix(out, "# Exit node fra.tail.example (100.64.0.12) is offline: internet traffic is blocked until it is back.\n"+
		"# To use another one, see `skein exit-node list`; to stop using one, run `skein set --exit-node=`.\n"+
		"# Login server: https://hs.example\n") {
		t.Errorf("--peers=false:\n%s", out)
	}
}

// The JSON status carries the exit node, packet filter counters and routing state.
func TestStatusJSONExitNodeAndFilter(t *testing.T) {
	st := exitNodeStatus()
	st.Filter = &ipc.FilterStatus{Rules: 3, Accepted: 42, Dropped: 7, DroppedBy: map[string]uint64{"no rule": 5, "not for us": 2}}
	st.Routing = &ipc.RoutingStatus{Bypass: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Forwarding: true}
	st.Peers[7].PrimaryRoutes = []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}
	e := newEnv(t, st)
	code, out, _ := e.run("status", "--json")
	if code != 0 || !strings.Contains(out, `"dropped": 7`) || !strings.Contains(out, `"exitNodeOption": true`) {
		t.Fatalf("code %d:\n%s", code, out)
	}
	var got ipc.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, got, st)
	}
}
