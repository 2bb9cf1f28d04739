package transport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
)

// apiKeyHandler serves ApiKeyService. The key id and secret are drawn here
// (randomness stays out of the state machine); only the secret's SHA-256
// is proposed.
type apiKeyHandler struct{ node Node }

var _ tollgatev1connect.ApiKeyServiceHandler = (*apiKeyHandler)(nil)

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// auditBy names the caller in an admin command's receipt; empty when
// authentication is off.
func auditBy(ctx context.Context) string {
	if p, ok := PrincipalFrom(ctx); ok && p.Method != "none" {
		return actor(ctx)
	}
	return ""
}

// actor names the caller in audit fields.
func actor(ctx context.Context) string {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return ""
	}
	return p.Subject + " (" + p.Method + ")"
}

func (h *apiKeyHandler) CreateApiKey(ctx context.Context, req *connect.Request[tollgatev1.CreateApiKeyRequest]) (*connect.Response[tollgatev1.CreateApiKeyResponse], error) {
	p, _ := PrincipalFrom(ctx)
	role, err := auth.ParseRole(req.Msg.Role)
	if err != nil {
		return nil, invalid("role: %v", err)
	}
	if role > p.Role && p.Role != auth.RoleAdmin {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s (role %s) may not make a key with role %s", p.Subject, p.Role, role))
	}
	var ttlMs int64
	if d := req.Msg.Ttl; d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, invalid("ttl: want a non-negative duration")
		}
		if d.AsDuration() > 0 && d.AsDuration() < time.Minute {
			return nil, invalid("ttl %s: at least 1m (or unset: no expiry)", d.AsDuration())
		}
		ttlMs = d.AsDuration().Milliseconds()
	}
	var idBytes [10]byte
	secret := make([]byte, 32)
	if _, err := rand.Read(idBytes[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	id := "k" + lowerBase32.EncodeToString(idBytes[:])
	secretText := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(secretText))
	r, err := proposeOne(ctx, h.node, &fsm.CreateAPIKey{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, ID: id,
		Role: req.Msg.Role, Name: req.Msg.Name, Hash: sum[:], TTLMs: ttlMs, CreatedBy: actor(ctx)})
	if err != nil {
		return nil, err
	}
	if r.Replayed || r.APIKey.ID != id {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
			"API key %s was made by an earlier try of request %q and its secret was shown only to that try; revoke it and create another", r.APIKey.ID, req.Msg.RequestId))
	}
	return connect.NewResponse(&tollgatev1.CreateApiKeyResponse{Key: apiKeyToWire(r.APIKey),
		Secret: auth.APIKeyPrefix + id + "_" + secretText, Receipt: refToWire(r.Receipt, 0)}), nil
}

func (h *apiKeyHandler) ListApiKeys(ctx context.Context, req *connect.Request[tollgatev1.ListApiKeysRequest]) (*connect.Response[tollgatev1.ListApiKeysResponse], error) {
	if err := fsm.ValidateID("tenant", req.Msg.Tenant); err != nil {
		return nil, err
	}
	var keys []fsm.APIKey
	if _, err := h.node.Read(ctx, node.Linearizable, 0, func(v fsm.View) error {
		keys = v.APIKeys(req.Msg.Tenant, req.Msg.IncludeInactive)
		return nil
	}); err != nil {
		return nil, err
	}
	out := &tollgatev1.ListApiKeysResponse{}
	for i := range keys {
		out.Keys = append(out.Keys, apiKeyToWire(&keys[i]))
	}
	return connect.NewResponse(out), nil
}

func (h *apiKeyHandler) RevokeApiKey(ctx context.Context, req *connect.Request[tollgatev1.RevokeApiKeyRequest]) (*connect.Response[tollgatev1.RevokeApiKeyResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.RevokeAPIKey{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, ID: req.Msg.Id, RevokedBy: actor(ctx)})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.RevokeApiKeyResponse{Key: apiKeyToWire(r.APIKey), Receipt: refToWire(r.Receipt, 0)}), nil
}

func apiKeyToWire(k *fsm.APIKey) *tollgatev1.ApiKey {
	w := &tollgatev1.ApiKey{Id: k.ID, Tenant: k.Tenant, Role: k.Role, Name: k.Name, CreatedAt: timestampMs(k.CreatedAtMs),
		CreatedBy: k.CreatedBy, RevokedBy: k.RevokedBy}
	if k.ExpiresAtMs != 0 {
		w.ExpiresAt = timestampMs(k.ExpiresAtMs)
	}
	if k.RevokedAtMs != 0 {
		w.RevokedAt = timestampMs(k.RevokedAtMs)
	}
	return w
}

// APIKeyLookup returns a lookup of stored keys in n's local state (no
// round trip: a revocation takes effect on a node when it applies it),
// for auth.Authenticator.APIKeys.
func APIKeyLookup(n Node) func(ctx context.Context, id string) (auth.StoredAPIKey, bool) {
	return func(ctx context.Context, id string) (auth.StoredAPIKey, bool) {
		var k fsm.APIKey
		var found bool
		var nowMs int64
		if _, err := n.Read(ctx, node.Stale, 0, func(v fsm.View) error {
			k, found = v.APIKey(id)
			nowMs = v.NowMs()
			return nil
		}); err != nil || !found {
			return auth.StoredAPIKey{}, false
		}
		return auth.StoredAPIKey{ID: k.ID, Tenant: k.Tenant, Role: k.Role, Name: k.Name, Hash: k.Hash, Active: k.Active(max(nowMs, time.Now().UnixMilli()))}, true
	}
}
