package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeygenGossip: keygen --gossip writes the base64 of 32 random bytes,
// mode 0600, and refuses to overwrite without --force; serve refuses a key
// file that is not one.
func TestKeygenGossip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	wantCLI(t, runCLI(t, "keygen", "--gossip", "--out", path), 0, "gossip key  "+path+" (keep it secret; give every node the same file)\n")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != 32 {
		t.Fatalf("key file %q: %d bytes, %v", raw, len(key), err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	wantCLIError(t, runCLI(t, "keygen", "--gossip", "--out", path), 1, "error: "+path+" exists; use --force to overwrite it\n", false)
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("c2hvcnQ=\n"), 0o600)
	r := runCLI(t, "serve", "--node-id", "n1", "--data-dir", t.TempDir(), "--gossip-key-file", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "want the base64 of 32 bytes") {
		t.Errorf("serve with a short key: exit %d, %s", r.code, r.stderr)
	}
}
