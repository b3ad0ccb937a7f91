package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/skeinvpn/skein/ipc"
)

func profilesStatus() ipc.Status {
	st := runningStatus()
	st.Profiles = []ipc.Profile{
		{ID: "a1b2", Name: "alice@example.com", LoginServer: "https://hs.example", LoginName: "alice@example.com", Tailnet: "tail.example", LoggedIn: true, Current: true},
		{ID: "c3d4", Name: "work", LoginServer: "https://corp.example", LoginName: "alice@corp", Tailnet: "corp.example", LoggedIn: true},
		{ID: "e5f6", Name: "old", LoginServer: "https://old.example"},
	}
	st.Profile = &st.Profiles[0]
	return st
}

func TestSwitch(t *testing.T) {
	e := newEnv(t, profilesStatus())
	code, out, errs := e.run("switch", "--list")
	if code != 0 || errs != "" {
		t.Fatalf("list: %d %q", code, errs)
	}
	want := "ID    Tailnet       Account             Login server\n" +
		"a1b2  tail.example  alice@example.com*  https://hs.example\n" +
		"c3d4  corp.example  work                https://corp.example\n" +
		"e5f6  -             old (logged out)    https://old.example\n"
	if out != want {
		t.Errorf("list:\n%s\nwant:\n%s", out, want)
	}
	code, out, _ = e.run("switch", "--list", "--json")
	var ps []ipc.Profile
	if code != 0 || json.Unmarshal([]byte(out), &ps) != nil || len(ps) != 3 || !ps[0].Current {
		t.Errorf("list --json: %d %s", code, out)
	}

	code, out, errs = e.run("switch", "corp.example")
	if code != 0 || out != "" || errs != "Switched to work.\n" || strings.Join(e.b.Switches(), ",") != "c3d4" {
		t.Errorf("switch: %d %q %q %v", code, out, errs, e.b.Switches())
	}
	code, _, errs = e.run("switch", "nobody")
	if code != 1 || !strings.Contains(errs, `no profile named "nobody"`) || !strings.Contains(errs, "fix: skein switch --list") {
		t.Errorf("switch to nobody: %d %q", code, errs)
	}
	// The profile in use cannot be removed; another one can.
	if code, _, errs := e.run("switch", "--remove", "work"); code != 1 || !strings.Contains(errs, "in use") {
		t.Errorf("remove current: %d %q", code, errs)
	}
	if code, _, errs := e.run("switch", "--remove", "old"); code != 0 || errs != "" || len(e.b.Status().Profiles) != 2 {
		t.Errorf("remove: %d %q %d", code, errs, len(e.b.Status().Profiles))
	}
}

func TestLoginNickname(t *testing.T) {
	e := newEnv(t, ipc.Status{State: ipc.StateRunning, LoginServer: "https://hs.example"})
	patches := recordPatches(e)
	if code, _, errs := e.run("login", "--nickname", "work", "--auth-key=k", "--login-server=https://corp.example", "--accept-routes"); code != 0 {
		t.Fatalf("code %d: %s", code, errs)
	}
	want := ipc.UpRequest{AuthKey: "k", LoginServer: "https://corp.example", ForceReauth: true, NewProfile: true, Nickname: "work"}
	if got := e.b.UpRequests(); len(got) != 1 || got[0] != want {
		t.Fatalf("Up requests %+v", got)
	}
	// The new profile's settings go to it once it runs, never to the profile in use before.
	if p := patches(); len(p) != 1 || p[0].AcceptRoutes == nil || !*p[0].AcceptRoutes {
		t.Errorf("patches %+v", p)
	}
}

func TestExitNodeSuggestAndAuto(t *testing.T) {
	st := exitNodeStatus()
	st.SuggestedExitNode = &ipc.ExitNodeSuggestion{ID: "nBER", Name: "ber", IP: "100.64.0.14", LatencyMs: 4.25, Location: "Berlin, Germany"}
	e := newEnv(t, st)
	code, out, errs := e.run("exit-node", "suggest")
	if code != 0 || errs != "" || out != "Suggested exit node: ber (Berlin, Germany), 4.2 ms\nTo accept the suggestion, use `skein set --exit-node=ber`.\n" {
		t.Errorf("suggest: %d %q %q", code, out, errs)
	}
	code, out, _ = e.run("exit-node", "suggest", "--json")
	if code != 0 || !strings.Contains(out, `"name": "ber"`) {
		t.Errorf("suggest --json: %d %s", code, out)
	}
	if code, _, errs := e.run("set", "--exit-node=auto:any", "--shields-up"); code != 0 {
		t.Fatalf("set auto:any: %d %q", code, errs)
	}
	if p := e.b.Prefs(); p.AutoExitNode != "any" || !p.ShieldsUp || p.LastExitNodeID != ipc.AutoExitNodeAny {
		t.Errorf("prefs %+v", p)
	}
	e2 := newEnv(t, runningStatus())
	if code, _, errs := e2.run("exit-node", "suggest"); code != 1 || !strings.Contains(errs, "no peer") {
		t.Errorf("suggest without exit nodes: %d %q", code, errs)
	}
}
