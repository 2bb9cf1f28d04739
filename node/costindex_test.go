package node

import (
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// costEntry makes the receipts of an entry at index (log time nowMs) holding
// one cost record per occurred_at; fromPeer leaves out the keys Apply
// attaches, as for an entry fetched in a repair.
func costEntry(t *testing.T, index uint64, nowMs int64, fromPeer bool, occurred ...int64) *fsm.EntryResult {
	t.Helper()
	e := &fsm.EntryReceipts{Checkpoint: receipt.SignedCheckpoint{
		Body: (&receipt.Checkpoint{Index: index, TimeUnixMs: nowMs, LeafCount: uint32(len(occurred)), KeyID: "k"}).Encode()}}
	for i, at := range occurred {
		id := fmt.Sprintf("c%d-0-%d", index, i)
		team := []string{"ml", "web"}[i%2]
		l := receipt.Leaf{Index: index, Position: uint32(i), TimeUnixMs: nowMs, Tenant: "acme", Operation: fsm.OpRecordCost, Object: "llm",
			Inputs: []receipt.Field{{Name: "amount", Value: "1.5"}, {Name: "currency", Value: "USD"}, {Name: "label:team", Value: team},
				{Name: "occurred_at_ms", Value: fmt.Sprint(at)}, {Name: "resource", Value: "llm"}},
			Outcome:  "recorded",
			Balances: []receipt.Field{{Name: "charge:b1", Value: "1.5 USD; spent 3"}, {Name: "record_id", Value: id}}}
		b, err := l.Encode()
		if err != nil {
			t.Fatal(err)
		}
		e.Leaves = append(e.Leaves, b)
		if !fromPeer {
			e.Requests = append(e.Requests, fsm.RequestKey{Tenant: "acme"})
			e.Costs = append(e.Costs, fsm.CostKey{Tenant: "acme", OccurredAtMs: at, ID: id, Position: uint32(i)})
		}
	}
	return &fsm.EntryResult{Index: index, NowMs: nowMs, Receipts: e}
}

// TestCostIndex: records from Apply and from a peer are listed in
// (occurred_at, id) order across pages, filtered, found by id, and gone with
// their entries after a prune.
func TestCostIndex(t *testing.T) {
	s, err := openReceiptStore(t.TempDir(), 0, func(err error) { t.Errorf("store: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.put([]*fsm.EntryResult{costEntry(t, 1, 1000, false, 300, 100)})
	s.put([]*fsm.EntryResult{costEntry(t, 2, 2000, true, 200, 100, 5000)})
	s.put([]*fsm.EntryResult{costEntry(t, 3, 90_000_000, false, 90_000_000)})
	s.flush()

	var got []string
	var after []byte
	for page := 0; ; page++ {
		recs, next, err := s.costs(CostQuery{Tenant: "acme", FromMs: 0, ToMs: 10_000, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			sc, err := fsm.StoredCostOf(r.Leaf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d:%s", sc.Spec.OccurredAtMs, sc.ID))
		}
		if next == nil {
			break
		}
		after = next
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	want := "[100:c1-0-1 100:c2-0-1 200:c2-0-0 300:c1-0-0 5000:c2-0-2]"
	if fmt.Sprint(got) != want {
		t.Errorf("listed %v, want %s", got, want)
	}
	recs, _, err := s.costs(CostQuery{Tenant: "acme", FromMs: 0, ToMs: 10_000, Limit: 10, Match: func(l *receipt.Leaf) bool {
		sc, err := fsm.StoredCostOf(l)
		return err == nil && sc.Spec.Labels[0].Value == "web"
	}})
	if err != nil || len(recs) != 2 {
		t.Errorf("filtered: %d records, %v; want 2", len(recs), err)
	}
	if recs, _, _ := s.costs(CostQuery{Tenant: "globex", FromMs: 0, ToMs: 10_000, Limit: 10}); len(recs) != 0 {
		t.Errorf("another tenant sees %d records", len(recs))
	}
	rec, err := s.costByID("acme", "c2-0-2")
	if err != nil || rec.Ref != (fsm.ReceiptRef{Index: 2, Position: 2}) {
		t.Fatalf("by id: %+v %v", rec.Ref, err)
	}
	sc, err := fsm.StoredCostOf(rec.Leaf)
	if err != nil || sc.Spec.AmountMicros != 1_500_000 || len(sc.Charges) != 1 || sc.Charges[0].SpentMicros != 3_000_000 {
		t.Errorf("decoded %+v %v", sc, err)
	}
	if _, err := s.costByID("acme", "c9-0-0"); err != ErrNoCost {
		t.Errorf("unknown id: %v", err)
	}
	// Entries 1 and 2 (log time before 3000) go; entry 3 stays.
	if err := s.prune(3000); err != nil {
		t.Fatal(err)
	}
	if _, err := s.costByID("acme", "c1-0-0"); err != ErrNoCost {
		t.Errorf("pruned record found: %v", err)
	}
	recs, _, err = s.costs(CostQuery{Tenant: "acme", FromMs: 0, ToMs: 100_000_000, Limit: 10})
	if err != nil || len(recs) != 1 || recs[0].Ref.Index != 3 {
		t.Errorf("after prune: %d records %v", len(recs), err)
	}
	// The index keys went with the entries, not only their targets.
	s.db.View(func(tx *bolt.Tx) error {
		if n, m := tx.Bucket(bucketCosts).Stats().KeyN, tx.Bucket(bucketCostIDs).Stats().KeyN; n != 1 || m != 1 {
			t.Errorf("after prune the index holds %d and %d keys, want 1 and 1", n, m)
		}
		return nil
	})
}
