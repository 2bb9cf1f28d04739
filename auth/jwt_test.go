package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

type signer struct {
	alg jwa.SignatureAlgorithm
	key jwk.Key // private, with kid
}

func newSigner(t testing.TB, alg jwa.SignatureAlgorithm, kid string) signer {
	t.Helper()
	var raw any
	var err error
	switch alg {
	case jwa.RS256():
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwa.ES256():
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA():
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		k.Set(jwk.KeyIDKey, kid)
	}
	return signer{alg: alg, key: k}
}

func (s signer) public(t testing.TB) jwk.Key {
	t.Helper()
	p, err := s.key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type claims struct {
	iss, aud, sub, role, tenant string
	exp, nbf                    time.Time
	noExp                       bool
}

func good() claims {
	return claims{iss: "https://idp.example", aud: "tollgate", sub: "svc-a", role: "spender", tenant: "acme", exp: now.Add(time.Hour)}
}

func (s signer) sign(t testing.TB, c claims) string {
	t.Helper()
	b := jwt.NewBuilder().Issuer(c.iss).Audience([]string{c.aud}).Subject(c.sub).IssuedAt(now.Add(-time.Minute))
	if !c.noExp {
		b = b.Expiration(c.exp)
	}
	if !c.nbf.IsZero() {
		b = b.NotBefore(c.nbf)
	}
	if c.role != "" {
		b = b.Claim("role", c.role)
	}
	if c.tenant != "" {
		b = b.Claim("tenant", c.tenant)
	}
	tok, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	out, err := jwt.Sign(tok, jwt.WithKey(s.alg, s.key))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func writeJWKS(t testing.TB, path string, keys ...jwk.Key) {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		set.AddKey(k)
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newVerifier(t *testing.T, cfg JWTConfig) *JWTVerifier {
	t.Helper()
	cfg.Issuer, cfg.Audience, cfg.Now = "https://idp.example", "tollgate", func() time.Time { return now }
	v, err := NewJWTVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// TestJWTAcceptsEachAlgorithm: RS256, ES256 and EdDSA tokens verify against a
// JWKS file, and the principal carries the claims.
func TestJWTAcceptsEachAlgorithm(t *testing.T) {
	signers := []signer{newSigner(t, jwa.RS256(), "rsa"), newSigner(t, jwa.ES256(), "ec"), newSigner(t, jwa.EdDSA(), "ed")}
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, signers[0].public(t), signers[1].public(t), signers[2].public(t))
	v := newVerifier(t, JWTConfig{KeyFiles: []string{path}})
	for _, s := range signers {
		p, err := v.Verify(context.Background(), s.sign(t, good()))
		if err != nil {
			t.Fatalf("%s: %v", s.alg, err)
		}
		want := Principal{Subject: "svc-a", Tenant: "acme", Role: RoleSpender, Method: "jwt"}
		if p != want {
			t.Fatalf("%s: principal %+v, want %+v", s.alg, p, want)
		}
	}
	// An admin token is bound to no tenant.
	c := good()
	c.role = "admin"
	p, err := v.Verify(context.Background(), signers[0].sign(t, c))
	if err != nil || p.Role != RoleAdmin || p.Tenant != "" {
		t.Fatalf("admin: %+v, %v", p, err)
	}
}

// TestJWTRefusals: each bad token is refused with a message naming the
// check that failed.
func TestJWTRefusals(t *testing.T) {
	s := newSigner(t, jwa.ES256(), "k1")
	other := newSigner(t, jwa.ES256(), "k1") // same kid, another key
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.pem")
	var priv ecdsa.PrivateKey
	if err := jwk.Export(s.key, &priv); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	v := newVerifier(t, JWTConfig{KeyFiles: []string{path}})

	if _, err := v.Verify(context.Background(), s.sign(t, good())); err != nil {
		t.Fatalf("good token from a PEM key: %v", err)
	}
	mod := func(f func(*claims)) claims { c := good(); f(&c); return c }
	hs, err := jwt.Sign(jwt.New(), jwt.WithKey(jwa.HS256(), []byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	goodTok := s.sign(t, good())
	parts := strings.Split(goodTok, ".")
	cases := []struct {
		name, token, want string
	}{
		{"expired", s.sign(t, mod(func(c *claims) { c.exp = now.Add(-time.Minute) })), "token expired"},
		{"expired within the skew is still good", "", ""},
		{"no exp", s.sign(t, mod(func(c *claims) { c.noExp = true })), "required claim"},
		{"not yet valid", s.sign(t, mod(func(c *claims) { c.nbf = now.Add(time.Hour) })), "not valid yet"},
		{"wrong audience", s.sign(t, mod(func(c *claims) { c.aud = "someone-else" })), "audience"},
		{"wrong issuer", s.sign(t, mod(func(c *claims) { c.iss = "https://evil.example" })), "issuer"},
		{"wrong signature", other.sign(t, good()), "signature does not verify"},
		{"tampered payload", parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2], ""},
		{"HS256", string(hs), "not accepted"},
		{"alg none", parts[0][:0] + "eyJhbGciOiJub25lIn0." + parts[1] + ".", "not accepted"},
		{"no role", s.sign(t, mod(func(c *claims) { c.role = "" })), `"role" claim`},
		{"unknown role", s.sign(t, mod(func(c *claims) { c.role = "root" })), "unknown role"},
		{"spender without tenant", s.sign(t, mod(func(c *claims) { c.tenant = "" })), `"tenant" claim`},
		{"no subject", s.sign(t, mod(func(c *claims) { c.sub = "" })), "subject"},
		{"garbage", "not-a-token", "malformed"},
	}
	for _, tc := range cases {
		if tc.token == "" {
			continue
		}
		_, err := v.Verify(context.Background(), tc.token)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want it to say %q", tc.name, err, tc.want)
		}
	}
	// Within the allowed skew (30s) an expired token still passes.
	if _, err := v.Verify(context.Background(), s.sign(t, mod(func(c *claims) { c.exp = now.Add(-10 * time.Second) }))); err != nil {
		t.Errorf("expired 10s ago, skew 30s: %v", err)
	}
}

// TestJWKSURLRotation: keys come from a JWKS URL (a loopback server); a
// token signed by a key added later is accepted once the unknown key id
// triggers a reload, and a removed key stops working after a reload.
func TestJWKSURLRotation(t *testing.T) {
	k1, k2 := newSigner(t, jwa.RS256(), "k1"), newSigner(t, jwa.EdDSA(), "k2")
	var mu sync.Mutex
	served := []jwk.Key{k1.public(t)}
	fetches := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		set := jwk.NewSet()
		for _, k := range served {
			set.AddKey(k)
		}
		json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	clock := now
	var clockMu sync.Mutex
	cfg := JWTConfig{JWKSURL: srv.URL, Issuer: "https://idp.example", Audience: "tollgate", Refresh: time.Hour,
		Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }}
	v, err := NewJWTVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Verify(context.Background(), k1.sign(t, good())); err != nil {
		t.Fatalf("k1: %v", err)
	}
	mu.Lock()
	served = append(served, k2.public(t))
	mu.Unlock()
	// Within 10s of the last load an unknown kid does not fetch again.
	if _, err := v.Verify(context.Background(), k2.sign(t, good())); err == nil || !strings.Contains(err.Error(), "unknown key id") {
		t.Fatalf("k2 right after the first load: %v, want unknown key id", err)
	}
	clockMu.Lock()
	clock = clock.Add(11 * time.Second)
	clockMu.Unlock()
	if _, err := v.Verify(context.Background(), k2.sign(t, good())); err != nil {
		t.Fatalf("k2 after it was published: %v", err)
	}
	mu.Lock()
	served = served[1:]
	if fetches != 2 {
		t.Errorf("%d fetches, want 2", fetches)
	}
	mu.Unlock()
	if err := v.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), k1.sign(t, good())); err == nil {
		t.Fatal("k1 still accepted after it left the JWKS")
	}
	// A failing fetch keeps the keys in use.
	srv.Close()
	if err := v.Reload(context.Background()); err == nil {
		t.Fatal("reload from a closed server succeeded")
	}
	if _, err := v.Verify(context.Background(), k2.sign(t, good())); err != nil {
		t.Fatalf("k2 after a failed reload: %v", err)
	}
}

func TestJWTConfigErrors(t *testing.T) {
	dir := t.TempDir()
	oct := filepath.Join(dir, "oct.json")
	os.WriteFile(oct, []byte(`{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}`), 0o600)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte(`{"keys":[]}`), 0o600)
	for name, cfg := range map[string]JWTConfig{
		"no keys":     {Issuer: "i", Audience: "a"},
		"no issuer":   {KeyFiles: []string{empty}, Audience: "a"},
		"symmetric":   {KeyFiles: []string{oct}, Issuer: "i", Audience: "a"},
		"empty JWKS":  {KeyFiles: []string{empty}, Issuer: "i", Audience: "a"},
		"missing":     {KeyFiles: []string{filepath.Join(dir, "nope")}, Issuer: "i", Audience: "a"},
		"tiny reload": {KeyFiles: []string{empty}, Issuer: "i", Audience: "a", Refresh: time.Millisecond},
	} {
		if v, err := NewJWTVerifier(cfg); err == nil {
			v.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAuthenticatorHeaders: the Authorization header forms, and the
// cluster token.
func TestAuthenticatorHeaders(t *testing.T) {
	a := &Authenticator{}
	token := []byte("0123456789abcdef0123456789abcdef")
	a.SetClusterToken(token)
	h := func(v string) http.Header {
		hd := http.Header{}
		if v != "" {
			hd.Set("Authorization", v)
		}
		return hd
	}
	if _, err := a.Authenticate(context.Background(), h("")); err != ErrNoCredentials {
		t.Fatalf("no header: %v", err)
	}
	for _, bad := range []string{"Basic abc", "Bearer", "Bearer ", "Bearer " + ClusterTokenPrefix + "d3Jvbmc", "Bearer eyJ.x.y"} {
		if _, err := a.Authenticate(context.Background(), h(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p, err := a.Authenticate(context.Background(), h(ClusterTokenHeader(token)))
	if err != nil || p.Role != RoleServer {
		t.Fatalf("cluster token: %+v %v", p, err)
	}
}

// BenchmarkVerify is what authentication costs per call, by algorithm:
//
//	go test -run XXX -bench Verify ./auth/
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []jwa.SignatureAlgorithm{jwa.RS256(), jwa.ES256(), jwa.EdDSA()} {
		b.Run(alg.String(), func(b *testing.B) {
			s := newSigner(b, alg, "k")
			path := filepath.Join(b.TempDir(), "jwks.json")
			writeJWKS(b, path, s.public(b))
			v, err := NewJWTVerifier(JWTConfig{KeyFiles: []string{path}, Issuer: "https://idp.example", Audience: "tollgate",
				Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			tok := s.sign(b, good())
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := v.Verify(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
