package sshpolicy

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

var (
	alice = Peer{Addr: netip.MustParseAddr("100.64.0.2"), StableID: "nA", UserLogin: "alice@"}
	bob   = Peer{Addr: netip.MustParseAddr("100.64.0.3"), StableID: "nB", UserLogin: "bob@"}
)

// policy is the JSON Headscale v0.27.1 sends for an `ssh` section with autogroup:nonroot for
// alice's node, and root for bob's.
const policy = `{"rules":[
 {"principals":[{"nodeIP":"100.64.0.2"},{"nodeIP":"fd7a:115c:a1e0::2"}],"sshUsers":{"*":"=","root":""},
  "action":{"accept":true,"allowAgentForwarding":true,"allowLocalPortForwarding":true,"allowRemotePortForwarding":true}},
 {"principals":[{"nodeIP":"100.64.0.3"}],"sshUsers":{"root":"root"},
  "action":{"accept":true,"sessionDuration":30000000000}}
]}`

func parse(t *testing.T, s string) *wire.SSHPolicy {
	t.Helper()
	var p wire.SSHPolicy
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestEvaluate(t *testing.T) {
	p := parse(t, policy)
	now := time.Now()
	cases := []struct {
		peer   Peer
		user   string
		result Result
		local  string
	}{
		{alice, "alice", Matched, "alice"},
		{alice, "postgres", Matched, "postgres"},
		{alice, "root", RejectedUser, ""},
		{bob, "root", Matched, "root"},
		{bob, "bob", RejectedUser, ""},
		{Peer{Addr: netip.MustParseAddr("100.64.0.9")}, "alice", Rejected, ""},
		{Peer{Addr: netip.MustParseAddr("fd7a:115c:a1e0::2")}, "alice", Matched, "alice"},
		{alice, "", RejectedUser, ""},
	}
	for _, c := range cases {
		d := Evaluate(p, c.peer, c.user, now)
		if d.Result != c.result || d.LocalUser != c.local {
			t.Errorf("%v as %q: %v %q, want %v %q", c.peer.Addr, c.user, d.Result, d.LocalUser, c.result, c.local)
		}
	}
	if d := Evaluate(p, bob, "root", now); d.Action.SessionDuration != 30*time.Second {
		t.Errorf("session duration %v", d.Action.SessionDuration)
	}
	if d := Evaluate(nil, alice, "alice", now); d.Result != NoPolicy || d.Accepts() {
		t.Errorf("nil policy: %+v", d)
	}
	if d := Evaluate(&wire.SSHPolicy{}, alice, "alice", now); d.Result != Rejected {
		t.Errorf("empty policy: %+v", d)
	}
}

// "=" never maps to root, whatever rule says it; root must be named.
func TestEqualsNeverRoot(t *testing.T) {
	for _, users := range []map[string]string{{"*": "="}, {"root": "="}, {"*": "=", "root": "="}} {
		if got := LocalUser(users, "root"); got != "" {
			t.Errorf("%v: root mapped to %q", users, got)
		}
	}
	if got := LocalUser(map[string]string{"*": "=", "root": "root"}, "root"); got != "root" {
		t.Errorf("explicit root: %q", got)
	}
	if got := LocalUser(map[string]string{"alice": "bob"}, "alice"); got != "bob" {
		t.Errorf("explicit mapping: %q", got)
	}
}

func TestFirstMatchWinsAndExpiry(t *testing.T) {
	now := time.Now()
	past := now.Add(-time.Minute)
	p := &wire.SSHPolicy{Rules: []*wire.SSHRule{
		nil,
		{Principals: []*wire.SSHPrincipal{{Any: true}}, SSHUsers: map[string]string{"*": "="}}, // no action: skipped
		{RuleExpires: &past, Principals: []*wire.SSHPrincipal{{Any: true}}, SSHUsers: map[string]string{"*": "="}, Action: &wire.SSHAction{Accept: true}},
		{Principals: []*wire.SSHPrincipal{{UserLogin: "bob@"}}, Action: &wire.SSHAction{Reject: true, Message: "no bob"}},
		{Principals: []*wire.SSHPrincipal{{Node: "nA"}, {Node: "nB"}}, SSHUsers: map[string]string{"*": "="}, Action: &wire.SSHAction{Accept: true}},
	}}
	if d := Evaluate(p, alice, "alice", now); !d.Accepts() || d.Rule != 4 {
		t.Errorf("alice: %+v", d)
	}
	if d := Evaluate(p, bob, "bob", now); d.Result != Matched || !d.Action.Reject || d.Accepts() || d.Action.Message != "no bob" {
		t.Errorf("bob: %+v", d)
	}
	if !StillAllows(p, alice, "alice", "alice", now) || StillAllows(p, alice, "alice", "root", now) || StillAllows(p, bob, "bob", "bob", now) {
		t.Error("StillAllows")
	}
}

func TestUnsupported(t *testing.T) {
	if Unsupported(&wire.SSHAction{Accept: true}) != "" {
		t.Error("plain accept unsupported")
	}
	if Unsupported(&wire.SSHAction{HoldAndDelegate: "https://x/"}) == "" || Unsupported(&wire.SSHAction{Accept: true, Recorders: []string{"1.2.3.4:80"}}) == "" {
		t.Error("hold and delegate or recorders not refused")
	}
}
