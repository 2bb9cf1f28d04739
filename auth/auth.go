// Package auth says who is calling: it verifies a request's credential (a
// JWT bearer token, or the cluster token nodes use with each other) and
// returns the Principal it names. What a principal may do is decided by
// transport's interceptor (one table for every RPC); this package only
// authenticates.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Role is what a principal may do. The roles nest: each may do what the
// ones below it may.
type Role int

const (
	RoleNone Role = iota
	// RoleReader reads its tenant's objects, reports and alerts.
	RoleReader
	// RoleSpender also checks, consumes, reserves and records cost.
	RoleSpender
	// RoleTenantAdmin also creates, changes and deletes its tenant's objects
	// and acknowledges alerts.
	RoleTenantAdmin
	// RoleAdmin may do anything in every tenant and manage the cluster.
	RoleAdmin
	// RoleServer is another tollgate server (the cluster token): it may
	// use InternalService and read status, nothing else.
	RoleServer
)

var roleNames = map[Role]string{RoleReader: "reader", RoleSpender: "spender", RoleTenantAdmin: "tenant-admin", RoleAdmin: "admin", RoleServer: "server"}

func (r Role) String() string {
	if s, ok := roleNames[r]; ok {
		return s
	}
	return "none"
}

// ParseRole parses a role a credential names (server is not one: only the
// cluster token carries it).
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if name == s && r != RoleServer {
			return r, nil
		}
	}
	return RoleNone, fmt.Errorf("unknown role %q (want admin, tenant-admin, spender or reader)", s)
}

// Principal is an authenticated caller.
type Principal struct {
	// Subject names the caller (the token's sub; "server" for the cluster
	// token; "anonymous" when authentication is off).
	Subject string
	// Tenant is the only tenant the principal may touch; empty for admin
	// (every tenant) and server.
	Tenant string
	Role   Role
	// Method is how it was authenticated: jwt, cluster-token or none.
	Method string
}

// Anonymous is the principal of every call when authentication is off
// (--dev, --insecure): an admin.
var Anonymous = Principal{Subject: "anonymous", Role: RoleAdmin, Method: "none"}

// ErrNoCredentials: the request carries no Authorization header.
var ErrNoCredentials = errors.New("no credentials: send 'Authorization: Bearer <token>'")

// StoredAPIKey is what the cluster keeps of an API key.
type StoredAPIKey struct {
	ID, Tenant, Role, Name string
	// Hash is the SHA-256 of the secret part.
	Hash []byte
	// Active: neither revoked nor expired.
	Active bool
}

// APIKeyPrefix starts an API key credential: tgk_<id>_<secret>.
const APIKeyPrefix = "tgk_"

// Authenticator turns a request's headers into a Principal.
type Authenticator struct {
	// JWT verifies bearer tokens (nil: none are accepted).
	JWT *JWTVerifier
	// APIKeys looks up a stored key by id (nil: API keys are not accepted).
	APIKeys func(ctx context.Context, id string) (StoredAPIKey, bool)
	// clusterToken is the SHA-256 of the cluster token (nil: none).
	clusterToken []byte
}

// ClusterTokenPrefix starts a cluster token in an Authorization header.
const ClusterTokenPrefix = "tgc_"

// SetClusterToken sets the secret servers present to each other.
func (a *Authenticator) SetClusterToken(token []byte) {
	if len(token) == 0 {
		a.clusterToken = nil // an empty token is no token
		return
	}
	sum := sha256.Sum256(token)
	a.clusterToken = sum[:]
}

// ClusterTokenHeader is the Authorization header value for a cluster token.
func ClusterTokenHeader(token []byte) string {
	return "Bearer " + ClusterTokenPrefix + base64.RawURLEncoding.EncodeToString(token)
}

// Authenticate verifies the bearer credential in h.
func (a *Authenticator) Authenticate(ctx context.Context, h http.Header) (Principal, error) {
	raw := h.Get("Authorization")
	if raw == "" {
		return Principal{}, ErrNoCredentials
	}
	scheme, cred, ok := strings.Cut(raw, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
		return Principal{}, errors.New("malformed Authorization header: want 'Bearer <token>'")
	}
	cred = strings.TrimSpace(cred)
	if len(cred) > 16<<10 {
		return Principal{}, errors.New("credential longer than 16 KiB")
	}
	if strings.HasPrefix(cred, ClusterTokenPrefix) {
		if a.clusterToken == nil {
			return Principal{}, errors.New("cluster token not accepted: this server has none configured")
		}
		tok, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(cred, ClusterTokenPrefix))
		sum := sha256.Sum256(tok)
		if err != nil || subtle.ConstantTimeCompare(sum[:], a.clusterToken) != 1 {
			return Principal{}, errors.New("wrong cluster token")
		}
		return Principal{Subject: "server", Role: RoleServer, Method: "cluster-token"}, nil
	}
	if strings.HasPrefix(cred, APIKeyPrefix) {
		return a.apiKey(ctx, cred)
	}
	if a.JWT == nil {
		return Principal{}, errors.New("bearer tokens (JWT) are not accepted: this server has no JWT keys configured")
	}
	return a.JWT.Verify(ctx, cred)
}

// apiKey verifies tgk_<id>_<secret> against the stored hash.
func (a *Authenticator) apiKey(ctx context.Context, cred string) (Principal, error) {
	if a.APIKeys == nil {
		return Principal{}, errors.New("API keys are not accepted by this server")
	}
	id, secret, ok := strings.Cut(strings.TrimPrefix(cred, APIKeyPrefix), "_")
	if !ok || id == "" || secret == "" {
		return Principal{}, errors.New("malformed API key: want tgk_<id>_<secret>")
	}
	k, found := a.APIKeys(ctx, id)
	sum := sha256.Sum256([]byte(secret))
	if !found || len(k.Hash) != len(sum) || subtle.ConstantTimeCompare(sum[:], k.Hash) != 1 {
		return Principal{}, errors.New("unknown API key or wrong secret")
	}
	if !k.Active {
		return Principal{}, fmt.Errorf("API key %s is revoked or expired", id)
	}
	role, err := ParseRole(k.Role)
	if err != nil {
		return Principal{}, err
	}
	tenant := k.Tenant
	if role == RoleAdmin {
		tenant = ""
	}
	subject := "key " + k.ID
	if k.Name != "" {
		subject += " " + k.Name
	}
	return Principal{Subject: subject, Tenant: tenant, Role: role, Method: "api-key"}, nil
}
