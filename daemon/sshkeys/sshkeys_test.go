package sshkeys

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadMakesOnceAndKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh")
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Public) != 3 {
		t.Fatalf("%d keys", len(a.Public))
	}
	for i, want := range []string{"ssh-ed25519 ", "ecdsa-sha2-nistp256 ", "ssh-rsa "} {
		if !strings.HasPrefix(a.Public[i], want) || strings.Count(a.Public[i], " ") != 1 {
			t.Errorf("key %d: %q, want %q and no comment", i, a.Public[i], want)
		}
	}
	for _, k := range kinds {
		fi, err := os.Stat(filepath.Join(dir, k.file))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", k.file, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", fi.Mode())
	}
	b, err := Load(dir)
	if err != nil || !slices.Equal(a.Public, b.Public) {
		t.Fatalf("second load changed the keys: %v", err)
	}
	signers, err := Signers(b.PEM)
	if err != nil || len(signers) != 3 || AuthorizedKey(signers[0].PublicKey()) != a.Public[0] {
		t.Fatalf("signers: %v", err)
	}
	// A damaged key is reported, not silently replaced.
	os.WriteFile(filepath.Join(dir, kinds[1].file), []byte("garbage"), 0o600)
	if _, err := Load(dir); err == nil {
		t.Fatal("a damaged key was accepted")
	}
}
