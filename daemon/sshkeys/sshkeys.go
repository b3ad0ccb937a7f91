// Package sshkeys keeps this machine's SSH host keys for Tailscale SSH: one Ed25519, one ECDSA
// (P-256) and one RSA key, made once and kept in the state directory (mode 0600), so the keys
// advertised to the tailnet (Hostinfo.sshHostKeys) stay the keys the server presents across
// restarts — `tailscale ssh` checks them strictly.
package sshkeys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/internal/atomicfile"
)

// Keys are the host keys: the private keys in OpenSSH's PEM form, and the public ones as
// authorized_keys lines without a comment, in the same order.
type Keys struct {
	PEM    [][]byte
	Public []string
}

// kinds are the key files, in the order they are offered.
var kinds = []struct {
	file string
	gen  func() (any, error)
}{
	{"ssh_host_ed25519_key", func() (any, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err }},
	{"ssh_host_ecdsa_key", func() (any, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	{"ssh_host_rsa_key", func() (any, error) { return rsa.GenerateKey(rand.Reader, 3072) }},
}

// Load reads the host keys in dir, making the directory (0700) and any key that is missing.
// A key file that cannot be parsed is an error, not replaced: a changed key would lock out
// every client that pinned the old one, so a human should look.
func Load(dir string) (*Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var k Keys
	for _, kind := range kinds {
		path := filepath.Join(dir, kind.file)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			b, err = generate(path, kind.gen)
		}
		if err != nil {
			return nil, fmt.Errorf("SSH host key %s: %w", path, err)
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("SSH host key %s: %w", path, err)
		}
		k.PEM = append(k.PEM, b)
		k.Public = append(k.Public, AuthorizedKey(s.PublicKey()))
	}
	return &k, nil
}

func generate(path string, gen func() (any, error)) ([]byte, error) {
	priv, err := gen()
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(blk)
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, err
	}
	return b, nil
}

// AuthorizedKey is a public key as one authorized_keys line without a comment, the form the
// tailnet carries.
func AuthorizedKey(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// Signers parses private keys (as Keys.PEM holds them) for an SSH server.
func Signers(pems [][]byte) ([]ssh.Signer, error) {
	var out []ssh.Signer
	for _, b := range pems {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no SSH host keys")
	}
	return out, nil
}
