package receipt_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

// baseTimeUnixMs is 2026-01-01T00:00:00Z, the log time test entries start from.
const baseTimeUnixMs = 1_767_225_600_000

// testKey returns a fixed Ed25519 key; different seeds give different keys.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func publicOf(key ed25519.PrivateKey) ed25519.PublicKey {
	return key.Public().(ed25519.PublicKey)
}

// testDecisions returns n distinct decisions without their entry coordinates.
func testDecisions(n int) []receipt.Leaf {
	leaves := make([]receipt.Leaf, n)
	for i := range leaves {
		leaves[i] = receipt.Leaf{
			Tenant:    "acme",
			Operation: "budget.consume",
			Object:    "llm-monthly",
			RequestID: fmt.Sprintf("r-%d", i),
			Inputs:    []receipt.Field{{Name: "amount", Value: "0.0125"}, {Name: "currency", Value: "USD"}},
			Outcome:   "allowed",
			Balances: []receipt.Field{
				{Name: "remaining", Value: fmt.Sprintf("%d.9875", 99-i)},
				{Name: "spent", Value: fmt.Sprintf("%d.0125", i)},
			},
		}
	}
	return leaves
}

// entry is one signed log entry with a receipt for each of its decisions.
type entry struct {
	checkpoint receipt.Checkpoint
	signed     receipt.SignedCheckpoint
	leaves     []receipt.Leaf
	receipts   []*receipt.Receipt
}

// newEntry stamps decisions with the entry's coordinates, builds the tree, signs
// the checkpoint with key and makes every receipt, the way a replica would.
func newEntry(t testing.TB, key ed25519.PrivateKey, index uint64, prev receipt.Hash, decisions []receipt.Leaf) entry {
	t.Helper()
	e := entry{leaves: decisions}
	encoded := make([][]byte, len(decisions))
	hashes := make([]receipt.Hash, len(decisions))
	timeUnixMs := baseTimeUnixMs + int64(index)*10
	for i := range decisions {
		decisions[i].Index, decisions[i].Position, decisions[i].TimeUnixMs = index, uint32(i), timeUnixMs
		b, err := decisions[i].Encode()
		if err != nil {
			t.Fatalf("encode leaf %d: %v", i, err)
		}
		encoded[i], hashes[i] = b, receipt.LeafHash(b)
	}
	e.checkpoint = receipt.Checkpoint{
		Index:      index,
		Term:       3,
		TimeUnixMs: timeUnixMs,
		Prev:       prev,
		Root:       receipt.Root(hashes),
		LeafCount:  uint32(len(decisions)),
		KeyID:      receipt.KeyID(publicOf(key)),
	}
	e.signed = receipt.SignedCheckpoint{Body: e.checkpoint.Encode(), Signature: receipt.Sign(key, &e.checkpoint)}
	for i := range decisions {
		proof, err := receipt.InclusionProof(hashes, i)
		if err != nil {
			t.Fatalf("proof for leaf %d: %v", i, err)
		}
		e.receipts = append(e.receipts, &receipt.Receipt{Leaf: encoded[i], Proof: proof, Checkpoint: e.signed})
	}
	return e
}

// cloneReceipt deep-copies r so a test can damage the copy.
func cloneReceipt(r *receipt.Receipt) *receipt.Receipt {
	return &receipt.Receipt{
		Leaf:  bytes.Clone(r.Leaf),
		Proof: append([]receipt.Hash(nil), r.Proof...),
		Checkpoint: receipt.SignedCheckpoint{
			Body:      bytes.Clone(r.Checkpoint.Body),
			Signature: bytes.Clone(r.Checkpoint.Signature),
		},
	}
}

var sentinels = []error{
	receipt.ErrMalformed, receipt.ErrUnknownKey, receipt.ErrSignature,
	receipt.ErrProof, receipt.ErrMismatch, receipt.ErrChain,
}

// wantSentinel fails the test unless err wraps want and no other sentinel, and
// reads "receipt: <sentinel>: <reason>".
func wantSentinel(t testing.TB, err, want error, context string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", context, want)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Fatalf("%s: error %q: errors.Is(%v) = %v, want only %v", context, err, s, got, want)
		}
	}
	prefix := "receipt: " + want.Error() + ": "
	if msg := err.Error(); len(msg) <= len(prefix) || msg[:len(prefix)] != prefix {
		t.Fatalf("%s: error %q does not start with %q and a reason", context, msg, prefix)
	}
}
