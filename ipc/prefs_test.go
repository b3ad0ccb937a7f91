package ipc

import (
	"errors"
	"testing"
)

func resolveOnly(ids ...string) func(string) (string, error) {
	return func(q string) (string, error) {
		for _, id := range ids {
			if id == q {
				return id, nil
			}
		}
		return "", &Error{Code: ErrNotFound, Message: "no peer " + q}
	}
}

func ptr[T any](v T) *T { return &v }

// The exit node: by name, automatic, the one-click toggle that remembers the last one, and
// errors that leave the prefs alone.
func TestApplyPatchExitNode(t *testing.T) {
	res := resolveOnly("n1", "n2")
	var p Prefs
	steps := []struct {
		patch              PrefsPatch
		wantID, wantAuto   string
		wantLast           string
		wantErr            ErrorCode
		alsoAdvertiseFirst bool
	}{
		{patch: PrefsPatch{UseExitNode: ptr(true)}, wantErr: ErrBadRequest}, // nothing used before
		{patch: PrefsPatch{ExitNode: ptr("n1")}, wantID: "n1", wantLast: "n1"},
		{patch: PrefsPatch{UseExitNode: ptr(false)}, wantLast: "n1"},
		{patch: PrefsPatch{UseExitNode: ptr(true)}, wantID: "n1", wantLast: "n1"},
		{patch: PrefsPatch{UseExitNode: ptr(true)}, wantID: "n1", wantLast: "n1"}, // already on
		{patch: PrefsPatch{ExitNode: ptr("nope")}, wantID: "n1", wantLast: "n1", wantErr: ErrNotFound},
		{patch: PrefsPatch{ExitNode: ptr("auto:any")}, wantAuto: "any", wantLast: AutoExitNodeAny},
		{patch: PrefsPatch{ExitNode: ptr("auto:fastest")}, wantAuto: "any", wantLast: AutoExitNodeAny, wantErr: ErrBadRequest},
		{patch: PrefsPatch{UseExitNode: ptr(false)}, wantLast: AutoExitNodeAny},
		{patch: PrefsPatch{UseExitNode: ptr(true)}, wantAuto: "any", wantLast: AutoExitNodeAny},
		{patch: PrefsPatch{ExitNode: ptr(" n2 ")}, wantID: "n2", wantLast: "n2"},
		{patch: PrefsPatch{ExitNode: ptr("n1"), UseExitNode: ptr(true)}, wantID: "n2", wantLast: "n2", wantErr: ErrBadRequest},
		{patch: PrefsPatch{ExitNode: ptr("")}, wantLast: "n2"},
		{patch: PrefsPatch{AdvertiseExitNode: ptr(true), ExitNode: ptr("auto:any")}, wantLast: "n2", wantErr: ErrBadRequest},
	}
	for i, s := range steps {
		next, err := p.ApplyPatch(s.patch, res)
		var e *Error
		switch {
		case s.wantErr != "" && (!errors.As(err, &e) || e.Code != s.wantErr):
			t.Fatalf("step %d: err %v, want %s", i, err, s.wantErr)
		case s.wantErr == "" && err != nil:
			t.Fatalf("step %d: %v", i, err)
		}
		if next.ExitNodeID != s.wantID || next.AutoExitNode != s.wantAuto || next.LastExitNodeID != s.wantLast {
			t.Fatalf("step %d: id %q auto %q last %q; want %q %q %q", i, next.ExitNodeID, next.AutoExitNode, next.LastExitNodeID, s.wantID, s.wantAuto, s.wantLast)
		}
		p = next
	}
	on, err := p.ApplyPatch(PrefsPatch{ShieldsUp: ptr(true)}, res)
	if err != nil || !on.ShieldsUp || p.ShieldsUp {
		t.Fatalf("shields up: %+v %v (old %v)", on.ShieldsUp, err, p.ShieldsUp)
	}
}

func TestLookupProfile(t *testing.T) {
	ps := []Profile{
		{ID: "a1b2", Name: "work", LoginName: "alice@corp", Tailnet: "corp.ts.net"},
		{ID: "c3d4", Name: "home", LoginName: "alice@home", Tailnet: "home.ts.net"},
		{ID: "e5f6", Name: "lab", LoginName: "alice@corp", Tailnet: "lab.ts.net"},
	}
	for q, want := range map[string]string{"a1b2": "a1b2", "HOME": "c3d4", "alice@home": "c3d4", "lab.ts.net": "e5f6", " work ": "a1b2"} {
		p, err := LookupProfile(q, ps)
		if err != nil || p.ID != want {
			t.Errorf("LookupProfile(%q) = %s, %v; want %s", q, p.ID, err, want)
		}
	}
	for q, code := range map[string]ErrorCode{"alice@corp": ErrBadRequest, "nope": ErrNotFound, "": ErrBadRequest} {
		_, err := LookupProfile(q, ps)
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("LookupProfile(%q) = %v, want %s", q, err, code)
		}
	}
}
