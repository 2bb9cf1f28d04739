package fsm_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

func testKeys(seeds ...[]byte) receipt.KeySet {
	var pubs []ed25519.PublicKey
	for _, s := range seeds {
		pubs = append(pubs, ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey))
	}
	return receipt.NewKeySet(pubs...)
}

// verifyAll checks every leaf of an entry's receipts against keys and returns
// the decoded checkpoint and leaves.
func verifyAll(t *testing.T, out *fsm.EntryResult, keys receipt.KeySet) (*receipt.Checkpoint, []*receipt.Leaf) {
	t.Helper()
	if out.Receipts == nil {
		t.Fatalf("entry %d has no receipts", out.Index)
	}
	var leaves []*receipt.Leaf
	var cp *receipt.Checkpoint
	for i := range out.Receipts.Leaves {
		r, err := out.Receipts.Receipt(uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		l, c, err := receipt.Verify(r, keys)
		if err != nil {
			t.Fatalf("entry %d leaf %d: %v", out.Index, i, err)
		}
		leaves, cp = append(leaves, l), c
	}
	return cp, leaves
}

// Every decision of an entry gets one leaf, in command order; the receipt
// reference in each result names it; the checkpoint chains to the previous.
func TestEveryDecisionHasAReceipt(t *testing.T) {
	h := newHarness(t)
	keys := testKeys(testSeed)
	first := h.applyEntry(t0, &fsm.CreateBudget{Tenant: tenant, RequestID: "c", Budget: spec("b", usd(t, "10"))})
	cp1, _ := verifyAll(t, first, keys)
	if cp1.Index != 1 || cp1.Prev != (receipt.Hash{}) || cp1.LeafCount != 1 || cp1.Term != 1 || cp1.TimeUnixMs != t0 {
		t.Fatalf("first checkpoint %+v", cp1)
	}

	out := h.applyEntry(t0+1,
		&fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "4")},
		&fsm.Consume{Tenant: tenant, BudgetID: "missing", AmountMicros: 1}, // NotFound: no leaf
		&fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{{BudgetID: "b", AmountMicros: usd(t, "5")}, {BudgetID: "b", AmountMicros: usd(t, "2")}}},
		&fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "4")}, // replay: no leaf
		&fsm.Noop{}, // no leaf
		&fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: usd(t, "0.5")},
	)
	cp2, leaves := verifyAll(t, out, keys)
	if cp2.Prev != cp1.Hash() || cp2.Index != 2 || cp2.LeafCount != 4 {
		t.Fatalf("second checkpoint %+v (prev must be %s)", cp2, cp1.Hash())
	}
	if err := receipt.VerifyLink(cp1, cp2); err != nil {
		t.Fatal(err)
	}
	rs := out.Results
	wantRefs := []*fsm.ReceiptRef{{Index: 2, Position: 0}, nil, {Index: 2, Position: 1}, {Index: 2, Position: 0}, nil, {Index: 2, Position: 3}}
	for i, want := range wantRefs {
		if (want == nil) != (rs[i].Receipt == nil) || (want != nil && *want != *rs[i].Receipt) {
			t.Errorf("result %d: receipt %+v, want %+v", i, rs[i].Receipt, want)
		}
	}
	type want struct {
		op, object, outcome, reason, amount, remaining string
	}
	wants := []want{
		{"budget.consume", "b", "allowed", "", "4", "6"},
		// 5 fits alone, 5+2 does not: the second item is over, the first aborted.
		{"budget.consume_atomic", "b", "denied", "batch_aborted", "5", "6"},
		{"budget.consume_atomic", "b", "denied", "budget_exceeded", "2", "6"},
		{"budget.consume", "b", "allowed", "", "0.5", "5.5"},
	}
	for i, w := range wants {
		l := leaves[i]
		got := want{l.Operation, l.Object, l.Outcome, l.Reason, field(l.Inputs, "amount"), field(l.Balances, "remaining")}
		if got != w || l.Tenant != tenant || l.Index != 2 || l.Position != uint32(i) || l.TimeUnixMs != t0+1 {
			t.Errorf("leaf %d: %+v, want %+v", i, got, w)
		}
	}
	if leaves[0].RequestID != "r1" {
		t.Errorf("leaf 0 request id %q", leaves[0].RequestID)
	}

	// An entry that decides nothing adds no checkpoint; the chain goes on.
	if none := h.applyEntry(t0+2, &fsm.Noop{}); none.Receipts != nil {
		t.Fatal("a no-op entry has receipts")
	}
	out = h.applyEntry(t0+3, &fsm.RateCheck{Tenant: tenant, PolicyID: "nope", Key: "k", Cost: 1}, &fsm.DeleteBudget{Tenant: tenant, BudgetID: "b"})
	cp4, leaves := verifyAll(t, out, keys)
	if cp4.Prev != cp2.Hash() || len(leaves) != 1 || leaves[0].Operation != "budget.delete" {
		t.Fatalf("checkpoint after a gapless no-op: %+v, leaves %+v", cp4, leaves)
	}
}

func field(fields []receipt.Field, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return "<none>"
}

// Two replicas applying the same log produce byte-identical receipts, also
// when one of them continues from a snapshot.
func TestReceiptsAreIdenticalOnReplicas(t *testing.T) {
	a, b := newHarness(t), newHarness(t)
	var outsA []*fsm.EntryResult
	for _, e := range busyLog(t) {
		outsA = append(outsA, a.applyEntry(e.at, e.cmds...))
	}
	for i, e := range a.entries {
		out := b.m.ApplyEntry(e.index, 1, e.data)
		if !sameReceipts(out.Receipts, outsA[i].Receipts) {
			t.Fatalf("entry %d: receipts differ between replicas", e.index)
		}
	}
	restored := a.restoredCopy()
	for _, e := range moreLog(t) {
		x, y := a.applyEntry(e.at, e.cmds...), restored.applyEntry(e.at, e.cmds...)
		if !sameReceipts(x.Receipts, y.Receipts) {
			t.Fatalf("entry %d: receipts differ after a snapshot restore", x.Index)
		}
	}
	ia, ha := a.m.ChainHead()
	ib, hb := restored.m.ChainHead()
	if ia != ib || ha != hb || ia == 0 {
		t.Fatalf("chain heads %d/%s and %d/%s", ia, ha, ib, hb)
	}
}

func sameReceipts(x, y *fsm.EntryReceipts) bool {
	if (x == nil) != (y == nil) {
		return false
	}
	if x == nil {
		return true
	}
	if !bytes.Equal(x.Checkpoint.Body, y.Checkpoint.Body) || !bytes.Equal(x.Checkpoint.Signature, y.Checkpoint.Signature) || len(x.Leaves) != len(y.Leaves) {
		return false
	}
	for i := range x.Leaves {
		if !bytes.Equal(x.Leaves[i], y.Leaves[i]) {
			return false
		}
	}
	return true
}

// A rotation's entry is signed with the old key, the next with the new one;
// the old key stays listed without its seed; a key cannot come back.
func TestSigningKeyRotation(t *testing.T) {
	h := newHarness(t)
	seed2 := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	old, both := testKeys(testSeed), testKeys(testSeed, seed2)
	out := h.applyEntry(t0, &fsm.RotateSigningKey{Seed: seed2})
	cp, leaves := verifyAll(t, out, old)
	newID := receipt.KeyID(ed25519.NewKeyFromSeed(seed2).Public().(ed25519.PublicKey))
	if leaves[0].Operation != "receipt.rotate_key" || leaves[0].Object != newID || cp.KeyID == newID {
		t.Fatalf("rotation leaf %+v signed by %s", leaves[0], cp.KeyID)
	}
	next := h.applyEntry(t0+1, &fsm.CreateBudget{Tenant: tenant, Budget: spec("b", 1)})
	cp2, _ := verifyAll(t, next, both)
	if cp2.KeyID != newID {
		t.Fatalf("entry after rotation signed by %s, want %s", cp2.KeyID, newID)
	}
	if r, _ := next.Receipts.Receipt(0); r != nil {
		if _, _, err := receipt.Verify(r, old); !errors.Is(err, receipt.ErrUnknownKey) {
			t.Fatalf("verified with only the old key: %v", err)
		}
	}
	var keys []fsm.SigningKey
	h.m.Read(t0+1, func(v fsm.View) error { keys = v.SigningKeys(); return nil })
	if len(keys) != 2 || keys[1].ID != newID || keys[1].FromIndex != 2 || keys[0].FromIndex != 0 {
		t.Fatalf("keys %+v", keys)
	}
	h.fail(t0+2, &fsm.RotateSigningKey{Seed: testSeed}, fsm.CodeAlreadyExists)
	h.restoredCopy() // the restored state re-validates the key history
}

// Without a signing key no decision is made, and the refusal is not
// remembered for the request id; the first key signs its own entry.
func TestDecisionsWaitForTheFirstKey(t *testing.T) {
	h := &harness{t: t, m: fsm.New()}
	c := &fsm.CreateBudget{Tenant: tenant, RequestID: "r", Budget: spec("b", 1)}
	if err := h.fail(t0, c, fsm.CodeUnavailable); !errors.Is(err, fsm.ErrUnavailable) {
		t.Fatalf("error %v", err)
	}
	if h.m.HasSigningKey() {
		t.Fatal("key before rotation")
	}
	out := h.applyEntry(t0, &fsm.RotateSigningKey{Seed: testSeed}, c)
	cp, leaves := verifyAll(t, out, testKeys(testSeed))
	if len(leaves) != 2 || out.Results[1].Replayed || out.Results[1].Err != nil || cp.Index != 2 {
		t.Fatalf("first key entry: %+v %+v", cp, out.Results)
	}
}
