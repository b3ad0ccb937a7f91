package sshpolicy

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

// FuzzEvaluate decodes a policy as it arrives in a map response and evaluates it for a fuzzed
// connection: no panic, and the promises hold — "=" never yields root, an accepted login has a
// local user the matching rule gives, a reject rule never accepts.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte(policy), "alice", "100.64.0.2", "alice@", "nA")
	f.Add([]byte(policy), "root", "100.64.0.2", "", "")
	f.Add([]byte(`{"rules":[{"principals":[{"any":true}],"sshUsers":{"*":"="},"action":{"accept":true}}]}`), "root", "::1", "x", "y")
	f.Add([]byte(`{"rules":[null,{"principals":[null],"action":null},{"ruleExpires":"2000-01-01T00:00:00Z","principals":[{"any":true}],"sshUsers":{"*":"root"},"action":{"accept":true}}]}`), "a", "1.2.3.4", "", "")
	f.Add([]byte(`{"rules":[{"principals":[{"userLogin":"u"}],"action":{"reject":true,"accept":true}}]}`), "u", "", "u", "")
	f.Fuzz(func(t *testing.T, js []byte, user, addr, login, stable string) {
		var p wire.SSHPolicy
		if json.Unmarshal(js, &p) != nil {
			return
		}
		a, _ := netip.ParseAddr(addr)
		peer := Peer{Addr: a, UserLogin: login, StableID: stable}
		d := Evaluate(&p, peer, user, time.Unix(1e9, 0))
		if d.Result != Matched {
			if d.Accepts() || d.Action != nil {
				t.Fatalf("no match but %+v", d)
			}
			return
		}
		r := p.Rules[d.Rule]
		if r == nil || r.Action != d.Action {
			t.Fatalf("decision names rule %d which is not its action", d.Rule)
		}
		if r.Action.Reject {
			if d.Accepts() {
				t.Fatal("a reject rule accepted")
			}
			return
		}
		if d.LocalUser == "" {
			t.Fatal("matched without a local user")
		}
		v, ok := r.SSHUsers[user]
		if !ok {
			v = r.SSHUsers["*"]
		}
		if v == "=" && (d.LocalUser != user || user == "root") {
			t.Fatalf("%q mapped through = to %q", user, d.LocalUser)
		}
		if v != "=" && v != d.LocalUser {
			t.Fatalf("rule maps %q to %q, decision says %q", user, v, d.LocalUser)
		}
		if !StillAllows(&p, peer, user, d.LocalUser, time.Unix(1e9, 0)) && d.Accepts() {
			t.Fatal("an accepted login is not still allowed by the same policy")
		}
	})
}
