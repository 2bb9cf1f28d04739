// Package authtest makes JWTs for tests: an issuer with an ES256 key whose
// public half it writes as a JWKS file a tollgate server can be given.
package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Issuer and Audience are what the issuer's tokens carry.
const (
	Issuer   = "https://idp.tollgate.test"
	Audience = "tollgate-test"
)

// TokenIssuer signs tokens with one key.
type TokenIssuer struct {
	key jwk.Key
	// JWKSFile holds the public key (for --auth-jwt-key-file).
	JWKSFile string
}

// New makes an issuer with a fresh key and writes its JWKS under t.TempDir().
func New(t testing.TB) *TokenIssuer {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	key.Set(jwk.KeyIDKey, "authtest")
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	set.AddKey(pub)
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return &TokenIssuer{key: key, JWKSFile: path}
}

// Token is a token for role in tenant (empty for admin), valid for an
// hour; edit may change it before it is signed.
func (i *TokenIssuer) Token(t testing.TB, role, tenant string, edit func(*jwt.Builder) *jwt.Builder) string {
	t.Helper()
	b := jwt.NewBuilder().Issuer(Issuer).Audience([]string{Audience}).Subject(role+"@"+tenant).
		Expiration(time.Now().Add(time.Hour)).Claim("role", role)
	if tenant != "" {
		b = b.Claim("tenant", tenant)
	}
	if edit != nil {
		b = edit(b)
	}
	tok, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	out, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), i.key))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
