package node

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

func TestMissingRanges(t *testing.T) {
	var rs []IndexRange
	rs = addRange(rs, IndexRange{10, 20})
	rs = addRange(rs, IndexRange{30, 40})
	rs = addRange(rs, IndexRange{21, 25}) // adjacent: merges
	if want := []IndexRange{{10, 25}, {30, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after adds: %v, want %v", rs, want)
	}
	rs = addRange(rs, IndexRange{1, 35}) // overlaps both
	if want := []IndexRange{{1, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after an overlapping add: %v, want %v", rs, want)
	}
	rs = removeRange(rs, IndexRange{5, 9})
	if want := []IndexRange{{1, 4}, {10, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after a remove in the middle: %v, want %v", rs, want)
	}
	rs = removeRange(rs, IndexRange{0, 12})
	if want := []IndexRange{{13, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after a remove from the start: %v, want %v", rs, want)
	}
	if got := decodeRanges(encodeRanges(rs)); !reflect.DeepEqual(got, rs) {
		t.Fatalf("round trip %v", got)
	}
	if rs = removeRange(rs, IndexRange{13, 40}); len(rs) != 0 {
		t.Fatalf("after removing everything: %v", rs)
	}
	for i := uint64(0); i < missingMax+10; i++ {
		rs = addRange(rs, IndexRange{i * 10, i*10 + 1})
	}
	if len(rs) != missingMax || rs[0].From != 0 {
		t.Fatalf("%d ranges kept (first %v), want %d starting at 0", len(rs), rs[0], missingMax)
	}
}

// testEntry makes the receipts of an entry at index with one leaf per
// request id (not signed: the store does not verify what it is handed).
func testEntry(t *testing.T, index uint64, nowMs int64, requestIDs ...string) *fsm.EntryResult {
	t.Helper()
	e := &fsm.EntryReceipts{Checkpoint: receipt.SignedCheckpoint{
		Body: (&receipt.Checkpoint{Index: index, TimeUnixMs: nowMs, LeafCount: uint32(len(requestIDs)), KeyID: "k"}).Encode()}}
	for i, id := range requestIDs {
		l := receipt.Leaf{Index: index, Position: uint32(i), TimeUnixMs: nowMs, Tenant: "acme", Operation: "budget.consume", RequestID: id}
		b, err := l.Encode()
		if err != nil {
			t.Fatal(err)
		}
		e.Leaves = append(e.Leaves, b)
		if index%2 == 0 { // half as from Apply, half as from a peer
			e.Requests = append(e.Requests, fsm.RequestKey{Tenant: "acme", RequestID: id})
		}
	}
	return &fsm.EntryResult{Index: index, NowMs: nowMs, Receipts: e}
}

// The request index across sealed segments, the open one, a restart (the
// open segment is rebuilt), a replay after it, a repair of an old segment,
// and retention.
func TestRequestIndex(t *testing.T) {
	dir := t.TempDir()
	fail := func(err error) { t.Errorf("store: %v", err) }
	s, err := openReceiptStore(dir, 0, fail)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3*reqSegmentSpan + 100
	id := func(i uint64, j int) string { return fmt.Sprintf("r-%d-%d", i, j) }
	for i := uint64(1); i <= n; i++ {
		if i == 5000 {
			continue // left for a repair below
		}
		s.put([]*fsm.EntryResult{testEntry(t, i, int64(i), id(i, 0), id(i, 1))})
	}
	s.flush()
	lookup := func(s *receiptStore, i uint64, j int) (fsm.ReceiptRef, error) {
		return s.byRequest("acme", id(i, j))
	}
	check := func(s *receiptStore, when string) {
		t.Helper()
		for _, i := range []uint64{1, 2, reqSegmentSpan - 1, reqSegmentSpan, 2*reqSegmentSpan + 7, n - 1, n} {
			for j := range 2 {
				ref, err := lookup(s, i, j)
				if err != nil || ref != (fsm.ReceiptRef{Index: i, Position: uint32(j)}) {
					t.Fatalf("%s: request %s: %v %v", when, id(i, j), ref, err)
				}
			}
		}
		if _, err := s.byRequest("acme", "never"); err != errNoReceipt {
			t.Fatalf("%s: unknown request: %v", when, err)
		}
		if _, err := s.byRequest("other", id(1, 0)); err != errNoReceipt {
			t.Fatalf("%s: another tenant's request: %v", when, err)
		}
	}
	check(s, "before restart")
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s, err = openReceiptStore(dir, 0, fail)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	check(s, "after restart")
	// Raft replays the entries after the last snapshot: same bytes again.
	for i := uint64(n - 50); i <= n; i++ {
		s.put([]*fsm.EntryResult{testEntry(t, i, int64(i), id(i, 0), id(i, 1))})
	}
	s.flush()
	check(s, "after a replay")
	s.reqs.mu.Lock()
	open := len(s.reqs.open)
	s.reqs.mu.Unlock()
	if want := 2 * (n - 3*reqSegmentSpan + 1); open != want {
		t.Fatalf("open segment holds %d refs, want %d", open, want)
	}
	// A repair fills an entry of a sealed segment.
	if _, err := lookup(s, 5000, 0); err != errNoReceipt {
		t.Fatalf("missing entry found: %v", err)
	}
	if err := s.fill([]IndexedReceipts{{Index: 5000, Receipts: testEntry(t, 5000, 5000, id(5000, 0), id(5000, 1)).Receipts}}, 5000, 5000); err != nil {
		t.Fatal(err)
	}
	if ref, err := lookup(s, 5000, 1); err != nil || ref.Index != 5000 {
		t.Fatalf("repaired request: %v %v", ref, err)
	}
	check(s, "after a repair")
	// Retention drops whole segments before the new held-from.
	if err := s.prune(2*reqSegmentSpan + 10); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(s, 2, 0); err != errNoReceipt {
		t.Fatalf("pruned request still found: %v", err)
	}
	if ref, err := lookup(s, n, 1); err != nil || ref.Index != n {
		t.Fatalf("request after pruning: %v %v", ref, err)
	}
}
