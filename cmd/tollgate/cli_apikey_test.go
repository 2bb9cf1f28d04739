package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/auth/authtest"
	"github.com/tollgate/tollgate/tollgatetest"
)

// TestAPIKeyCLI: against a node with JWT authentication, a tenant-admin
// (--token-file) makes a spender key; the printed secret works as
// TOLLGATE_TOKEN; list never shows it; after revoke it is refused.
func TestAPIKeyCLI(t *testing.T) {
	issuer := authtest.New(t)
	v, err := auth.NewJWTVerifier(auth.JWTConfig{KeyFiles: []string{issuer.JWKSFile}, Issuer: authtest.Issuer, Audience: authtest.Audience})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	s := tollgatetest.StartServer(t, tollgatetest.Options{Auth: &auth.Authenticator{JWT: v}})
	adminFile := filepath.Join(t.TempDir(), "tadmin.jwt")
	os.WriteFile(adminFile, []byte(issuer.Token(t, "tenant-admin", "acme", nil)), 0o600)
	as := func(args ...string) cliResult {
		t.Helper()
		return runCLI(t, append(args, "--addr", s.APIAddr(), "--tenant", "acme", "--token-file", adminFile)...)
	}
	if r := as("budget", "create", "llm", "--amount", "5", "--currency", "USD"); r.code != 0 {
		t.Fatalf("budget create: %d %s", r.code, r.stderr)
	}
	r := as("apikey", "create", "--role", "spender", "--name", "ci", "--ttl", "24h")
	m := regexp.MustCompile(`(?m)^secret +(tgk_(k[a-z2-7]{16})_\S+)$`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stderr, "shown only now") {
		t.Fatalf("apikey create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	secret, id := m[1], m[2]
	if r := as("apikey", "create", "--role", "admin"); r.code != exitFailure || !strings.Contains(r.stderr, "permission_denied") {
		t.Fatalf("a tenant-admin makes an admin key: exit %d %s", r.code, r.stderr)
	}
	t.Setenv("TOLLGATE_TOKEN", secret)
	consume := func() cliResult {
		return runCLI(t, "budget", "consume", "llm", "--amount", "1", "--addr", s.APIAddr(), "--tenant", "acme")
	}
	if r := consume(); r.code != 0 || !strings.HasPrefix(r.stdout, "ALLOWED") {
		t.Fatalf("consume with the key: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	r = as("apikey", "list")
	if r.code != 0 || !strings.Contains(r.stdout, id+"  spender  ci") || strings.Contains(r.stdout, secret[len("tgk_"+id+"_"):]) {
		t.Fatalf("apikey list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := as("apikey", "revoke", id); r.code != 0 || !strings.Contains(r.stdout, "revoked by") {
		t.Fatalf("apikey revoke: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := consume(); r.code != exitFailure || !strings.Contains(r.stderr, "revoked") {
		t.Fatalf("consume with the revoked key: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := as("apikey", "list", "--all"); r.code != 0 || !strings.Contains(r.stdout, "revoked ") {
		t.Fatalf("apikey list --all: exit %d\n%s", r.code, r.stdout)
	}
}
