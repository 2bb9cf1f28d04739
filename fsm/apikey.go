package fsm

import (
	"encoding/binary"
	"hash/fnv"
	"sort"
	"unicode/utf8"

	"github.com/tollgate/tollgate/receipt"
)

// API keys: long-lived credentials bound to a tenant and a role, of which
// the state machine keeps only the SHA-256 of the secret. The secret and
// the key id are made by the API handler (randomness stays out of Apply);
// Apply stores, replays and revokes.

const (
	// APIKeysMax bounds the stored keys, active or not.
	APIKeysMax = 10_000
	// APIKeyNameBytesMax bounds a key's label; apiKeyByBytesMax who made
	// or revoked it.
	APIKeyNameBytesMax = 128
	apiKeyByBytesMax   = 256
	// APIKeyTTLMaxMs bounds a key's lifetime (10 years).
	APIKeyTTLMaxMs = 10 * 366 * 24 * 3600 * 1000
	// apiKeyPurgeAfterMs: an inactive (revoked or expired) key is dropped
	// this long after it became inactive, when room is needed.
	apiKeyPurgeAfterMs = 30 * 24 * 3600 * 1000
	apiKeyIDLen        = 17 // "k" + 16 base32 characters
)

// APIKey is a stored key.
type APIKey struct {
	ID     string `msgpack:"id"`
	Tenant string `msgpack:"t"`
	// Role is admin, tenant-admin, spender or reader.
	Role string `msgpack:"r"`
	Name string `msgpack:"n,omitempty"`
	// Hash is the SHA-256 of the secret.
	Hash        []byte `msgpack:"h"`
	CreatedAtMs int64  `msgpack:"c"`
	CreatedBy   string `msgpack:"cb,omitempty"`
	// ExpiresAtMs is 0 for a key that does not expire.
	ExpiresAtMs int64  `msgpack:"x,omitempty"`
	RevokedAtMs int64  `msgpack:"v,omitempty"`
	RevokedBy   string `msgpack:"vb,omitempty"`
}

// Active reports whether the key may be used at nowMs.
func (k *APIKey) Active(nowMs int64) bool {
	return k.RevokedAtMs == 0 && (k.ExpiresAtMs == 0 || nowMs < k.ExpiresAtMs)
}

func (k *APIKey) inactiveSinceMs() int64 {
	if k.RevokedAtMs != 0 && (k.ExpiresAtMs == 0 || k.RevokedAtMs < k.ExpiresAtMs) {
		return k.RevokedAtMs
	}
	return k.ExpiresAtMs
}

// CreateAPIKey stores a new key.
type CreateAPIKey struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"q,omitempty"`
	ID        string `msgpack:"id"`
	Role      string `msgpack:"r"`
	Name      string `msgpack:"n,omitempty"`
	Hash      []byte `msgpack:"h"`
	TTLMs     int64  `msgpack:"ttl,omitempty"`
	CreatedBy string `msgpack:"cb,omitempty"`
}

func (*CreateAPIKey) Type() CommandType                  { return TypeCreateAPIKey }
func (c *CreateAPIKey) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }

// idempotencyFingerprint leaves out the id and the hash, which the handler
// draws afresh on every try: a retry of the request replays the first
// result (whose secret the retry cannot know) instead of failing as a reuse.
func (c *CreateAPIKey) idempotencyFingerprint() uint64 {
	h := fnv.New64a()
	for _, s := range []string{c.Tenant, c.Role, c.Name, c.CreatedBy} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(c.TTLMs))
	h.Write(b[:])
	return h.Sum64()
}

// RevokeAPIKey stops a key.
type RevokeAPIKey struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"q,omitempty"`
	ID        string `msgpack:"id"`
	RevokedBy string `msgpack:"vb,omitempty"`
}

func (*RevokeAPIKey) Type() CommandType                  { return TypeRevokeAPIKey }
func (c *RevokeAPIKey) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }

// APIKeyRoles are the roles a key may have.
var APIKeyRoles = map[string]bool{"admin": true, "tenant-admin": true, "spender": true, "reader": true}

// ValidateAPIKeyID checks the form of a key id.
func ValidateAPIKeyID(field, id string) *Error {
	if len(id) != apiKeyIDLen || id[0] != 'k' {
		return invalidf("%s %q is not an API key id (k and 16 base32 characters)", field, id)
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return invalidf("%s %q is not an API key id (k and 16 base32 characters)", field, id)
		}
	}
	return nil
}

func validatePrintable(field, s string, max int) *Error {
	if len(s) > max {
		return invalidf("%s is %d bytes long; at most %d", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return invalidf("%s is not UTF-8", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalidf("%s holds a control character", field)
		}
	}
	return nil
}

// validateKeyRef checks what both API key commands name.
func validateKeyRef(tenant, requestID, id string) *Error {
	if err := ValidateID("tenant", tenant); err != nil {
		return err
	}
	if err := ValidateRequestID("request_id", requestID); err != nil {
		return err
	}
	return ValidateAPIKeyID("id", id)
}

func validateCreateAPIKey(c *CreateAPIKey) *Error {
	if err := validateKeyRef(c.Tenant, c.RequestID, c.ID); err != nil {
		return err
	}
	if !APIKeyRoles[c.Role] {
		return invalidf("role %q: want admin, tenant-admin, spender or reader", c.Role)
	}
	if err := validatePrintable("name", c.Name, APIKeyNameBytesMax); err != nil {
		return err
	}
	if err := validatePrintable("created_by", c.CreatedBy, apiKeyByBytesMax); err != nil {
		return err
	}
	if len(c.Hash) != 32 {
		return invalidf("hash is %d bytes; want 32 (SHA-256)", len(c.Hash))
	}
	if c.TTLMs < 0 || c.TTLMs > APIKeyTTLMaxMs {
		return invalidf("ttl %dms: want 0 (no expiry) up to %dms", c.TTLMs, int64(APIKeyTTLMaxMs))
	}
	return nil
}

func validateRevokeAPIKey(c *RevokeAPIKey) *Error {
	if err := validateKeyRef(c.Tenant, c.RequestID, c.ID); err != nil {
		return err
	}
	return validatePrintable("revoked_by", c.RevokedBy, apiKeyByBytesMax)
}

func (s *state) createAPIKey(ctx applyCtx, c *CreateAPIKey) Result {
	if s.apiKeys[c.ID] != nil {
		return Result{Err: errorf(CodeAlreadyExists, "API key %s exists", c.ID)}
	}
	if len(s.apiKeys) >= APIKeysMax {
		for id, k := range s.apiKeys {
			if !k.Active(ctx.nowMs) && k.inactiveSinceMs()+apiKeyPurgeAfterMs <= ctx.nowMs {
				delete(s.apiKeys, id)
			}
		}
		if len(s.apiKeys) >= APIKeysMax {
			return Result{Err: errorf(CodeResourceExhausted, "the cluster holds its maximum of %d API keys; revoke some (inactive keys are dropped 30 days after)", APIKeysMax)}
		}
	}
	k := &APIKey{ID: c.ID, Tenant: c.Tenant, Role: c.Role, Name: c.Name, Hash: append([]byte(nil), c.Hash...),
		CreatedAtMs: ctx.nowMs, CreatedBy: c.CreatedBy}
	if c.TTLMs > 0 {
		k.ExpiresAtMs = ctx.nowMs + c.TTLMs
	}
	s.apiKeys[c.ID] = k
	out := *k
	out.Hash = nil
	return Result{APIKey: &out}
}

func (s *state) revokeAPIKey(ctx applyCtx, c *RevokeAPIKey) Result {
	k := s.apiKeys[c.ID]
	if k == nil || k.Tenant != c.Tenant {
		return Result{Err: errorf(CodeNotFound, "API key %s not found in tenant %q", c.ID, c.Tenant)}
	}
	if k.RevokedAtMs == 0 {
		k.RevokedAtMs, k.RevokedBy = ctx.nowMs, c.RevokedBy
	}
	out := *k
	out.Hash = nil
	return Result{APIKey: &out}
}

func apiKeyLeaf(b *leafBuilder, c Command, r *Result) ReceiptRef {
	switch c := c.(type) {
	case *CreateAPIKey:
		return b.add(c.Tenant, "apikey.create", c.ID, c.RequestID, "ok", "",
			[]receipt.Field{fs("role", c.Role), fs("name", c.Name), fs("by", c.CreatedBy), fi("ttl_ms", c.TTLMs)},
			[]receipt.Field{fi("expires_at_ms", r.APIKey.ExpiresAtMs)})
	case *RevokeAPIKey:
		return b.add(c.Tenant, "apikey.revoke", c.ID, c.RequestID, "ok", "",
			[]receipt.Field{fs("by", c.RevokedBy)}, []receipt.Field{fi("revoked_at_ms", r.APIKey.RevokedAtMs)})
	}
	return ReceiptRef{}
}

// APIKey returns a stored key by id, with its hash (for authentication).
func (v View) APIKey(id string) (APIKey, bool) {
	k := v.s.apiKeys[id]
	if k == nil {
		return APIKey{}, false
	}
	out := *k
	out.Hash = append([]byte(nil), k.Hash...)
	return out, true
}

// APIKeys lists a tenant's keys by id, without hashes; inactive ones only
// when asked.
func (v View) APIKeys(tenant string, includeInactive bool) []APIKey {
	var out []APIKey
	for _, k := range v.s.apiKeys {
		if k.Tenant == tenant && (includeInactive || k.Active(v.nowMs)) {
			c := *k
			c.Hash = nil
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *state) checkRestoredAPIKey(k *APIKey) *Error {
	c := &CreateAPIKey{Tenant: k.Tenant, ID: k.ID, Role: k.Role, Name: k.Name, Hash: k.Hash, CreatedBy: k.CreatedBy}
	if err := validateCreateAPIKey(c); err != nil {
		return err
	}
	if s.apiKeys[k.ID] != nil {
		return invalidf("API key %s appears twice", k.ID)
	}
	if len(s.apiKeys) >= APIKeysMax {
		return invalidf("more than %d API keys", APIKeysMax)
	}
	return nil
}
