package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func keyHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// TestAPIKeyLifecycle: a key is stored with its hash only, expires, is
// revoked once (and stays revoked), survives a snapshot; a retry of the
// create with a fresh id and hash replays the first key; bad input names
// the field.
func TestAPIKeyLifecycle(t *testing.T) {
	h := newHarness(t)
	create := &fsm.CreateAPIKey{Tenant: tenant, RequestID: "r1", ID: "kaaaaaaaaaaaaaaaa", Role: "spender", Name: "ci",
		Hash: keyHash("s1"), TTLMs: 3600_000, CreatedBy: "alice"}
	r := h.ok(t0, create)
	if r.APIKey == nil || r.APIKey.ID != create.ID || r.APIKey.Hash != nil || r.APIKey.ExpiresAtMs != t0+3600_000 || r.APIKey.CreatedBy != "alice" {
		t.Fatalf("created %+v", r.APIKey)
	}
	if r.Receipt == nil {
		t.Fatal("the create has no receipt")
	}
	// The retry: the handler drew another id and secret.
	retry := *create
	retry.ID, retry.Hash = "kbbbbbbbbbbbbbbbb", keyHash("s2")
	rr := h.one(t0+1, &retry)
	if rr.Err != nil || !rr.Replayed || rr.APIKey.ID != create.ID {
		t.Fatalf("retry: %+v (err %v), want the first key replayed", rr.APIKey, rr.Err)
	}
	// The same request id for another key is a reuse.
	other := *create
	other.Role = "admin"
	h.fail(t0+2, &other, fsm.CodeFailedPrecondition)
	// Reads: the hash is there for authentication, not in listings.
	h.m.Read(t0+10, func(v fsm.View) error {
		k, ok := v.APIKey(create.ID)
		if !ok || !bytes.Equal(k.Hash, keyHash("s1")) || !k.Active(t0+10) || k.Active(t0+3600_000) {
			t.Errorf("lookup: %+v %v", k, ok)
		}
		if _, ok := v.APIKey("kbbbbbbbbbbbbbbbb"); ok {
			t.Error("the retry's key was stored")
		}
		if l := v.APIKeys(tenant, false); len(l) != 1 || l[0].Hash != nil {
			t.Errorf("list: %+v", l)
		}
		if l := v.APIKeys("other", true); len(l) != 0 {
			t.Errorf("another tenant lists %+v", l)
		}
		return nil
	})
	// Revoke: other tenant cannot; revoking twice keeps the first time.
	h.fail(t0+20, &fsm.RevokeAPIKey{Tenant: "other", ID: create.ID}, fsm.CodeNotFound)
	rv := h.ok(t0+30, &fsm.RevokeAPIKey{Tenant: tenant, ID: create.ID, RevokedBy: "bob"})
	if rv.APIKey.RevokedAtMs != t0+30 || rv.APIKey.RevokedBy != "bob" {
		t.Fatalf("revoked %+v", rv.APIKey)
	}
	again := h.ok(t0+40, &fsm.RevokeAPIKey{Tenant: tenant, ID: create.ID, RevokedBy: "carol"})
	if again.APIKey.RevokedAtMs != t0+30 || again.APIKey.RevokedBy != "bob" {
		t.Fatalf("second revoke changed it: %+v", again.APIKey)
	}
	copy := h.restoredCopy()
	copy.m.Read(t0+50, func(v fsm.View) error {
		k, ok := v.APIKey(create.ID)
		if !ok || k.Active(t0+50) || k.RevokedBy != "bob" || !bytes.Equal(k.Hash, keyHash("s1")) {
			t.Errorf("restored: %+v %v", k, ok)
		}
		if l := v.APIKeys(tenant, false); len(l) != 0 {
			t.Errorf("inactive listed: %+v", l)
		}
		if l := v.APIKeys(tenant, true); len(l) != 1 {
			t.Errorf("include inactive: %+v", l)
		}
		return nil
	})
	h.fail(t0+60, &fsm.CreateAPIKey{Tenant: tenant, ID: create.ID, Role: "reader", Hash: keyHash("x")}, fsm.CodeAlreadyExists)
	for name, c := range map[string]*fsm.CreateAPIKey{
		"bad id":       {Tenant: tenant, ID: "k123", Role: "reader", Hash: keyHash("x")},
		"upper id":     {Tenant: tenant, ID: "kAAAAAAAAAAAAAAAA", Role: "reader", Hash: keyHash("x")},
		"bad role":     {Tenant: tenant, ID: "kcccccccccccccccc", Role: "root", Hash: keyHash("x")},
		"short hash":   {Tenant: tenant, ID: "kcccccccccccccccc", Role: "reader", Hash: []byte{1}},
		"long name":    {Tenant: tenant, ID: "kcccccccccccccccc", Role: "reader", Hash: keyHash("x"), Name: string(bytes.Repeat([]byte("n"), 129))},
		"control":      {Tenant: tenant, ID: "kcccccccccccccccc", Role: "reader", Hash: keyHash("x"), Name: "a\nb"},
		"negative ttl": {Tenant: tenant, ID: "kcccccccccccccccc", Role: "reader", Hash: keyHash("x"), TTLMs: -1},
	} {
		if err := h.fail(t0+70, c, fsm.CodeInvalidArgument); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
