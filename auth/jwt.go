package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Limits on key material: a JWKS document, and how many keys it may hold.
const (
	jwksBytesMax = 1 << 20
	jwksKeysMax  = 100
	// refreshMin bounds how often an unknown key id triggers a reload.
	refreshMin = 10 * time.Second
)

// allowedAlgs are the signature algorithms accepted (asymmetric only: a
// shared HMAC secret would let any verifier mint tokens).
var allowedAlgs = map[string]bool{jwa.RS256().String(): true, jwa.ES256().String(): true, jwa.EdDSA().String(): true}

// JWTConfig configures a JWTVerifier.
type JWTConfig struct {
	// KeyFiles hold public keys: a JWKS or JWK (JSON) or PEM public keys.
	KeyFiles []string
	// JWKSURL is fetched for keys (http or https).
	JWKSURL string
	// Issuer and Audience must match the token's iss and aud (required).
	Issuer   string
	Audience string
	// Refresh is how often keys are reloaded (default 5m); a token with an
	// unknown key id also triggers a reload (at most every 10s).
	Refresh time.Duration
	// Skew is the clock skew allowed on exp/nbf/iat (default 30s).
	Skew time.Duration
	// TenantClaim and RoleClaim name the private claims (default "tenant"
	// and "role").
	TenantClaim, RoleClaim string
	HTTPClient             *http.Client
	Logger                 *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// JWTVerifier verifies bearer JWTs against keys it reloads in the
// background.
type JWTVerifier struct {
	cfg  JWTConfig
	keys atomic.Pointer[jwk.Set]

	mu         sync.Mutex
	lastReload time.Time
	stop       chan struct{}
	done       chan struct{}
}

// NewJWTVerifier loads the keys (an error if none load) and starts
// reloading them every cfg.Refresh until Close.
func NewJWTVerifier(cfg JWTConfig) (*JWTVerifier, error) {
	if len(cfg.KeyFiles) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("auth: JWT needs key files or a JWKS URL")
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("auth: JWT needs an issuer and an audience to check")
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 5 * time.Minute
	}
	if cfg.Refresh < time.Second {
		return nil, fmt.Errorf("auth: key refresh interval %s is under 1s", cfg.Refresh)
	}
	if cfg.Skew == 0 {
		cfg.Skew = 30 * time.Second
	}
	if cfg.Skew < 0 || cfg.Skew > 10*time.Minute {
		return nil, fmt.Errorf("auth: clock skew %s must be between 0 and 10m", cfg.Skew)
	}
	if cfg.TenantClaim == "" {
		cfg.TenantClaim = "tenant"
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = "role"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &JWTVerifier{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
	set, err := v.load(context.Background())
	if err != nil {
		return nil, err
	}
	v.keys.Store(&set)
	v.lastReload = cfg.Now()
	go v.refreshLoop()
	return v, nil
}

// Close stops the background reloads.
func (v *JWTVerifier) Close() {
	close(v.stop)
	<-v.done
}

func (v *JWTVerifier) refreshLoop() {
	defer close(v.done)
	t := time.NewTicker(v.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.Reload(context.Background())
		}
	}
}

// Reload loads the keys again; on failure the old keys stay in use.
func (v *JWTVerifier) Reload(ctx context.Context) error {
	v.mu.Lock()
	v.lastReload = v.cfg.Now()
	v.mu.Unlock()
	set, err := v.load(ctx)
	if err != nil {
		v.cfg.Logger.Warn("JWT keys not reloaded; the previous keys stay in use", "err", err)
		return err
	}
	v.keys.Store(&set)
	return nil
}

// load reads every key source into one set of public keys.
func (v *JWTVerifier) load(ctx context.Context) (jwk.Set, error) {
	all := jwk.NewSet()
	add := func(src string, data []byte) error {
		set, err := parseKeys(data)
		if err != nil {
			return fmt.Errorf("auth: keys from %s: %w", src, err)
		}
		for i := 0; i < set.Len(); i++ {
			k, _ := set.Key(i)
			if err := all.AddKey(k); err != nil {
				return fmt.Errorf("auth: keys from %s: %w", src, err)
			}
		}
		return nil
	}
	for _, f := range v.cfg.KeyFiles {
		data, err := readLimited(f)
		if err != nil {
			return nil, err
		}
		if err := add(f, data); err != nil {
			return nil, err
		}
	}
	if v.cfg.JWKSURL != "" {
		data, err := v.fetch(ctx)
		if err != nil {
			return nil, err
		}
		if err := add(v.cfg.JWKSURL, data); err != nil {
			return nil, err
		}
	}
	if all.Len() == 0 {
		return nil, errors.New("auth: no public keys found")
	}
	if all.Len() > jwksKeysMax {
		return nil, fmt.Errorf("auth: %d keys, more than %d", all.Len(), jwksKeysMax)
	}
	return all, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, jwksBytesMax+1))
	if err != nil {
		return nil, fmt.Errorf("auth: key file %s: %w", path, err)
	}
	if len(data) > jwksBytesMax {
		return nil, fmt.Errorf("auth: key file %s is larger than %d bytes", path, jwksBytesMax)
	}
	return data, nil
}

func (v *JWTVerifier) fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS URL: %w", err)
	}
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("auth: fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("auth: fetch JWKS %s: HTTP %d", v.cfg.JWKSURL, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, jwksBytesMax+1))
	if err != nil {
		return nil, fmt.Errorf("auth: fetch JWKS: %w", err)
	}
	if len(data) > jwksBytesMax {
		return nil, fmt.Errorf("auth: JWKS at %s is larger than %d bytes", v.cfg.JWKSURL, jwksBytesMax)
	}
	return data, nil
}

// parseKeys reads JSON (a JWKS or one JWK) or PEM, and keeps public keys
// only (a private key given by mistake is reduced to its public half;
// symmetric keys are refused).
func parseKeys(data []byte) (jwk.Set, error) {
	trimmed := bytes.TrimSpace(data)
	var set jwk.Set
	var err error
	if len(trimmed) > 0 && trimmed[0] == '{' {
		set, err = jwk.Parse(trimmed)
	} else {
		set, err = jwk.Parse(trimmed, jwk.WithPEM(true))
	}
	if err != nil {
		return nil, err
	}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if k.KeyType() == jwa.OctetSeq() {
			return nil, errors.New("symmetric (oct) keys are not accepted: use RS256, ES256 or EdDSA")
		}
	}
	return jwk.PublicSetOf(set)
}

// Verify checks a compact JWT: an allowed algorithm, a signature by one of
// the keys, exp (required), nbf and iat with the allowed skew, iss, aud, and
// the role and tenant claims.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (Principal, error) {
	msg, err := jws.Parse([]byte(token), jws.WithCompact())
	if err != nil {
		return Principal{}, errors.New("malformed token: not a compact JWS")
	}
	sigs := msg.Signatures()
	if len(sigs) != 1 {
		return Principal{}, errors.New("malformed token: want exactly one signature")
	}
	alg, _ := sigs[0].ProtectedHeaders().Algorithm()
	if !allowedAlgs[alg.String()] {
		return Principal{}, fmt.Errorf("token algorithm %q not accepted (RS256, ES256 or EdDSA)", alg.String())
	}
	kid, hasKid := sigs[0].ProtectedHeaders().KeyID()
	candidates := candidateKeys(*v.keys.Load(), kid, hasKid)
	if len(candidates) == 0 {
		v.reloadSoon(ctx)
		if candidates = candidateKeys(*v.keys.Load(), kid, hasKid); len(candidates) == 0 {
			return Principal{}, fmt.Errorf("token signed with unknown key id %q", kid)
		}
	}
	verified := false
	for _, k := range candidates {
		if _, err := jws.Verify([]byte(token), jws.WithKey(alg, k)); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Principal{}, errors.New("token signature does not verify with any configured key")
	}
	tok, err := jwt.Parse([]byte(token),
		jwt.WithVerify(false), // verified above, with the algorithm pinned
		jwt.WithValidate(true),
		jwt.WithIssuer(v.cfg.Issuer),
		jwt.WithAudience(v.cfg.Audience),
		jwt.WithRequiredClaim("exp"),
		jwt.WithAcceptableSkew(v.cfg.Skew),
		jwt.WithClock(jwt.ClockFunc(v.cfg.Now)),
	)
	if err != nil {
		return Principal{}, tokenError(err)
	}
	sub, _ := tok.Subject()
	if sub == "" {
		return Principal{}, errors.New("token has no subject (sub)")
	}
	var roleName, tenant string
	if err := tok.Get(v.cfg.RoleClaim, &roleName); err != nil {
		return Principal{}, fmt.Errorf("token has no string %q claim", v.cfg.RoleClaim)
	}
	role, err := ParseRole(roleName)
	if err != nil {
		return Principal{}, fmt.Errorf("token claim %q: %w", v.cfg.RoleClaim, err)
	}
	_ = tok.Get(v.cfg.TenantClaim, &tenant)
	if role != RoleAdmin && tenant == "" {
		return Principal{}, fmt.Errorf("token with role %s has no %q claim", role, v.cfg.TenantClaim)
	}
	if role == RoleAdmin {
		tenant = "" // admin is not bound to a tenant
	}
	return Principal{Subject: sub, Tenant: tenant, Role: role, Method: "jwt"}, nil
}

// candidateKeys are the keys that may have signed a token: those with its
// key id, and those without one (PEM keys have none).
func candidateKeys(set jwk.Set, kid string, hasKid bool) []jwk.Key {
	var out []jwk.Key
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if kk, ok := k.KeyID(); !ok || kk == "" || !hasKid || kk == kid {
			out = append(out, k)
		}
	}
	return out
}

// reloadSoon reloads the keys now unless that was done in the last
// refreshMin (a flood of bad key ids must not become a flood of fetches).
func (v *JWTVerifier) reloadSoon(ctx context.Context) {
	v.mu.Lock()
	recent := v.cfg.Now().Sub(v.lastReload) < refreshMin
	v.mu.Unlock()
	if !recent {
		v.Reload(ctx)
	}
}

// tokenError says which check failed, without echoing the token.
func tokenError(err error) error {
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return errors.New("token expired")
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return errors.New("token not valid yet (nbf or iat in the future)")
	case errors.Is(err, jwt.InvalidAudienceError()):
		return errors.New("token audience does not name this cluster")
	case errors.Is(err, jwt.InvalidIssuerError()):
		return errors.New("token issuer not accepted")
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return errors.New("token lacks a required claim (exp)")
	}
	return fmt.Errorf("token not valid: %v", err)
}
