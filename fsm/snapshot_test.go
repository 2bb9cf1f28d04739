package fsm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
	"github.com/vmihailenco/msgpack/v5"
)

type scriptedEntry struct {
	at   int64
	cmds []fsm.Command
}

// busyLog builds state of every kind: budgets in two tenants with parents,
// every period and enforcement, thresholds and history, active holds, deleted
// budgets with holds, policies, and remembered request ids.
func busyLog(t *testing.T) []scriptedEntry {
	org := spec("org", usd(t, "100"))
	org.Period, org.Timezone, org.Thresholds = fsm.PeriodMonth, "Europe/Berlin", []uint32{50, 80}
	teamA := spec("team-a", usd(t, "40"))
	teamA.ParentID, teamA.Period, teamA.Timezone, teamA.Enforcement = "org", fsm.PeriodDay, "America/New_York", fsm.EnforcementSoft
	teamA.Thresholds = []uint32{100}
	teamB := spec("team-b", usd(t, "40"))
	teamB.ParentID, teamB.Period, teamB.CustomPeriodMs = "org", fsm.PeriodCustom, 36*hourMs
	solo := spec("solo", usd(t, "5"))
	solo.Period, solo.Enforcement, solo.Timezone = fsm.PeriodWeek, fsm.EnforcementShadow, "Asia/Tokyo"
	quarter := spec("quarter", usd(t, "1000"))
	quarter.Period, quarter.Currency = fsm.PeriodQuarter, "EUR"
	yearly := spec("yearly", usd(t, "1000"))
	yearly.Period = fsm.PeriodYear
	doomed := spec("doomed", usd(t, "10"))
	policy := fsm.PolicySpec{ID: "api", Algorithm: fsm.AlgorithmSlidingWindowLog, Limit: 100, WindowMs: 60_000, Burst: 100,
		Scales: []fsm.PriorityScale{{Priority: 1, Percent: 50}}}

	consume := func(ten, req, id, amount string) *fsm.Consume {
		return &fsm.Consume{Tenant: ten, RequestID: req, BudgetID: id, AmountMicros: usd(t, amount)}
	}
	return []scriptedEntry{
		{t0, []fsm.Command{
			&fsm.CreateBudget{Tenant: tenant, RequestID: "c-org", Budget: org},
			&fsm.CreateBudget{Tenant: tenant, Budget: teamA},
			&fsm.CreateBudget{Tenant: tenant, Budget: teamB},
			&fsm.CreateBudget{Tenant: "globex", RequestID: "c-solo", Budget: solo},
			&fsm.CreateBudget{Tenant: "globex", Budget: quarter},
			&fsm.CreateBudget{Tenant: "globex", Budget: yearly},
			&fsm.CreateBudget{Tenant: tenant, Budget: doomed},
			&fsm.CreatePolicy{Tenant: tenant, RequestID: "c-api", Policy: policy},
			&fsm.CreatePolicy{Tenant: "globex", Policy: policy},
		}},
		{t0 + 10, []fsm.Command{
			consume(tenant, "r1", "team-a", "30"),
			consume(tenant, "r2", "team-a", "15"), // SOFT: would deny
			consume(tenant, "", "team-b", "41"),   // denied
			consume("globex", "r1", "solo", "7"),  // SHADOW
			&fsm.ConsumeAtomic{Tenant: tenant, RequestID: "batch-1", Items: []fsm.ConsumeItem{
				{BudgetID: "team-b", AmountMicros: usd(t, "10")}, {BudgetID: "doomed", AmountMicros: usd(t, "2")}}},
			&fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{
				{BudgetID: "team-b", AmountMicros: usd(t, "10")}, {BudgetID: "org", AmountMicros: usd(t, "90")}}},
		}},
		{t0 + 20, []fsm.Command{
			reserveWithID("hold-1", "team-b", usd(t, "5")),                                                         // h3-0, 60 s
			&fsm.Reserve{Tenant: tenant, BudgetID: "org", AmountMicros: usd(t, "3"), TTLMs: fsm.HoldTTLMaxMs},      // h3-1
			&fsm.Reserve{Tenant: tenant, BudgetID: "doomed", AmountMicros: usd(t, "1"), TTLMs: fsm.HoldTTLMaxMs},   // h3-2
			&fsm.Reserve{Tenant: tenant, BudgetID: "team-a", AmountMicros: usd(t, "1"), TTLMs: 10_000},             // h3-3
			&fsm.Reserve{Tenant: "globex", BudgetID: "yearly", AmountMicros: usd(t, "9"), TTLMs: fsm.HoldTTLMaxMs}, // h3-4
			&fsm.Reserve{Tenant: tenant, BudgetID: "team-b", AmountMicros: usd(t, "2"), TTLMs: 3_600_000},          // h3-5
			&fsm.Reserve{Tenant: "globex", BudgetID: "quarter", AmountMicros: usd(t, "1"), TTLMs: 20 * hourMs},     // h3-6
		}},
		{t0 + 30, []fsm.Command{
			&fsm.Commit{Tenant: tenant, RequestID: "commit-1", HoldID: "h3-5", AmountMicros: usd(t, "1.5")},
			&fsm.UpdateBudget{Tenant: tenant, RequestID: "u-1", Fields: fsm.UpdateThresholds | fsm.UpdateAmount,
				Budget: fsm.BudgetSpec{ID: "team-b", AmountMicros: usd(t, "45"), Thresholds: []uint32{25, 90}}},
			&fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit, Policy: fsm.PolicySpec{ID: "api", Limit: 200}},
		}},
		// The next day in New York: team-a rolls over.
		{t0 + 13*hourMs, []fsm.Command{
			consume(tenant, "r3", "team-a", "2"),
			&fsm.DeleteBudget{Tenant: tenant, RequestID: "d-doomed", BudgetID: "doomed"}, // with hold h3-2
			&fsm.Noop{},
		}},
	}
}

// moreLog continues busyLog: retries, commits of existing holds, expiries,
// rollovers, deletes.
func moreLog(t *testing.T) []scriptedEntry {
	return []scriptedEntry{
		{t0 + 13*hourMs + 1, []fsm.Command{
			&fsm.Consume{Tenant: tenant, RequestID: "r3", BudgetID: "team-a", AmountMicros: usd(t, "2")}, // replay
			&fsm.DeleteBudget{Tenant: tenant, RequestID: "d-doomed", BudgetID: "doomed"},                 // replay
			&fsm.Consume{Tenant: tenant, RequestID: "r3", BudgetID: "team-a", AmountMicros: usd(t, "3")}, // reused id
			&fsm.Commit{Tenant: tenant, HoldID: "h3-1", AmountMicros: usd(t, "4")},
			&fsm.Commit{Tenant: tenant, HoldID: "h3-0", AmountMicros: usd(t, "1")}, // expired
			&fsm.Release{Tenant: "globex", HoldID: "h3-4"},
			&fsm.CreateBudget{Tenant: tenant, RequestID: "c-org", Budget: spec("org", 1)}, // id forgotten; exists
			reserveWithID("hold-1", "team-b", usd(t, "5")),                                // id forgotten; new hold
		}},
		{t0 + 20*dayMs, []fsm.Command{
			&fsm.Consume{Tenant: tenant, BudgetID: "team-b", AmountMicros: usd(t, "44")},
			&fsm.Consume{Tenant: "globex", BudgetID: "solo", AmountMicros: usd(t, "1")},
			&fsm.ConsumeAtomic{Tenant: "globex", Items: []fsm.ConsumeItem{
				{BudgetID: "quarter", AmountMicros: usd(t, "999")}, {BudgetID: "quarter", AmountMicros: usd(t, "2")}}},
			&fsm.DeletePolicy{Tenant: "globex", PolicyID: "api"},
			&fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "team-a", AmountMicros: usd(t, "31")}, // forgotten
		}},
		{t0 + 100*dayMs, []fsm.Command{
			&fsm.Consume{Tenant: tenant, BudgetID: "team-a", AmountMicros: usd(t, "1")},
			&fsm.DeleteBudget{Tenant: tenant, BudgetID: "team-a"},
			&fsm.DeleteBudget{Tenant: tenant, BudgetID: "team-b"},
			&fsm.DeleteBudget{Tenant: tenant, BudgetID: "org"},
		}},
	}
}

func play(t *testing.T, h *harness, log []scriptedEntry) [][]fsm.Result {
	t.Helper()
	var out [][]fsm.Result
	for _, e := range log {
		out = append(out, h.apply(e.at, e.cmds...))
	}
	return out
}

// encodeResults is a canonical form of results for comparing two machines:
// a restored idempotency table holds nil where the original held an empty
// slice, which encodes the same.
func encodeResults(t *testing.T, rs [][]fsm.Result) string {
	t.Helper()
	var b strings.Builder
	for _, entry := range rs {
		for _, r := range entry {
			raw, err := msgpack.Marshal(&r)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%x replayed=%v\n", raw, r.Replayed)
		}
	}
	return b.String()
}

func TestSnapshotRestoreContinuesIdentically(t *testing.T) {
	original := newHarness(t)
	first := play(t, original, busyLog(t))
	// Sanity: the script did what it says.
	if r := first[1][1].Spend; !r.WouldDeny || !r.Allowed {
		t.Fatalf("script: SOFT consume %+v", r)
	}
	if r := first[4][1]; r.Delete == nil || r.Delete.ReleasedHolds != 1 {
		t.Fatalf("script: delete %+v", r)
	}

	restored := original.restoredCopy()
	if restored.hash() != original.hash() {
		t.Fatal("restored state hash differs")
	}
	if !bytes.Equal(restored.snapshot(), original.snapshot()) {
		t.Fatal("restored snapshot bytes differ")
	}
	if restored.m.AppliedIndex() != original.m.AppliedIndex() || restored.m.LastLogTimeMs() != original.m.LastLogTimeMs() {
		t.Fatalf("restored at %d/%d, original at %d/%d", restored.m.AppliedIndex(), restored.m.LastLogTimeMs(),
			original.m.AppliedIndex(), original.m.LastLogTimeMs())
	}

	var more [][]fsm.Result
	for i, e := range moreLog(t) {
		want := original.apply(e.at, e.cmds...)
		got := restored.apply(e.at, e.cmds...)
		if a, b := encodeResults(t, [][]fsm.Result{got}), encodeResults(t, [][]fsm.Result{want}); a != b {
			t.Fatalf("entry %d after restore:\n%s\nwant\n%s", i, a, b)
		}
		if restored.hash() != original.hash() {
			t.Fatalf("state hashes differ after entry %d", i)
		}
		more = append(more, got)
	}
	// Sanity: the continuation replayed, refused and expired as scripted.
	e := more[0]
	if !e[0].Replayed || !e[1].Replayed || e[1].Delete.ReleasedHolds != 1 ||
		e[2].Err == nil || e[2].Err.Code != fsm.CodeFailedPrecondition ||
		!e[3].Spend.Allowed || e[4].Spend.Reason != fsm.ReasonHoldNotActive || e[5].Spend.ReleasedMicros != usd(t, "9") ||
		e[6].Err == nil || e[6].Err.Code != fsm.CodeAlreadyExists || e[7].Replayed || !e[7].Spend.Allowed {
		t.Fatalf("continuation entry 0: %s", encodeResults(t, [][]fsm.Result{e}))
	}
	if r := more[1][4]; r.Replayed || r.Spend == nil {
		t.Fatalf("forgotten request id: %+v", r)
	}
	if r := more[2][3]; r.Err != nil {
		t.Fatalf("final delete: %+v", r.Err)
	}
}

func TestRestoreReplaysRememberedRequests(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Thresholds = []uint32{50}
	h.create(t0, s)
	c := &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "6")}
	first := h.one(t0, c)
	restored := h.restoredCopy()
	again := restored.one(t0+1, c)
	if !again.Replayed {
		t.Fatalf("retry after restore not replayed: %+v", again)
	}
	again.Replayed = false
	if encodeResults(t, [][]fsm.Result{{again}}) != encodeResults(t, [][]fsm.Result{{first}}) ||
		again.Spend.SpentMicros != usd(t, "6") || again.Index != 2 || again.Spend.Thresholds[0] != 50 {
		t.Fatalf("retry after restore: %+v, first %+v", again, first)
	}
	if got := restored.spent(t0+1, "b"); got != usd(t, "6") {
		t.Fatalf("spent %d after the retry", got)
	}
}

// Applying the same log to fresh machines gives byte-identical snapshots.
func TestDeterminismSameLogSameBytes(t *testing.T) {
	a := newHarness(t)
	play(t, a, busyLog(t))
	mid := a.snapshot()
	resultsA := play(t, a, moreLog(t))

	b := newHarness(t)
	var resultsB [][]fsm.Result
	for i, e := range a.entries {
		out := b.m.ApplyEntry(e.index, 1, e.data)
		if i >= len(busyLog(t)) {
			resultsB = append(resultsB, out.Results)
		}
		if i == len(busyLog(t))-1 && !bytes.Equal(b.snapshot(), mid) {
			t.Fatal("snapshots differ after the same log")
		}
	}
	if !bytes.Equal(a.snapshot(), b.snapshot()) {
		t.Fatal("final snapshots differ after the same log")
	}
	if encodeResults(t, resultsA) != encodeResults(t, resultsB) {
		t.Fatal("results differ after the same log")
	}
	// And a snapshot is a pure function of the state.
	if !bytes.Equal(a.snapshot(), a.snapshot()) {
		t.Fatal("two snapshots of one state differ")
	}
}

func TestRestoreReplacesEverything(t *testing.T) {
	source := newHarness(t)
	source.create(t0, spec("kept", 1))
	target := newHarness(t)
	target.create(t0, spec("dropped", 1))
	target.create(t0, spec("also-dropped", 1))
	if err := target.m.Restore(bytes.NewReader(source.snapshot())); err != nil {
		t.Fatal(err)
	}
	target.index = source.index
	target.m.Read(t0, func(v fsm.View) error {
		page, _ := v.Budgets(tenant, "", 10)
		if len(page) != 1 || page[0].Spec.ID != "kept" {
			t.Errorf("after restore: %+v", page)
		}
		return nil
	})
	if target.hash() != source.hash() {
		t.Fatal("hash differs")
	}
	// An empty machine round-trips too.
	empty := newHarness(t)
	if empty.restoredCopy().hash() != empty.hash() {
		t.Fatal("empty machine round trip")
	}
}

// record is one record of a snapshot.
type record struct {
	typ  byte
	body []byte
}

const snapshotMagic = "TGSNAP"

func parseSnapshot(t *testing.T, snap []byte) []record {
	t.Helper()
	if !bytes.HasPrefix(snap, []byte(snapshotMagic)) {
		t.Fatalf("snapshot starts with %q", snap[:min(len(snap), 8)])
	}
	var out []record
	rest := snap[len(snapshotMagic):]
	for len(rest) > 0 {
		size, n := binary.Uvarint(rest[1:])
		if n <= 0 || uint64(len(rest)-1-n) < size {
			t.Fatalf("bad record framing")
		}
		out = append(out, record{typ: rest[0], body: rest[1+n : 1+n+int(size)]})
		rest = rest[1+n+int(size):]
	}
	return out
}

func buildSnapshot(records []record) []byte {
	out := []byte(snapshotMagic)
	for _, r := range records {
		out = append(out, r.typ)
		out = binary.AppendUvarint(out, uint64(len(r.body)))
		out = append(out, r.body...)
	}
	return out
}

// editRecord rewrites one msgpack field of every record of type typ.
func editRecord(t *testing.T, records []record, typ byte, field string, value any) []record {
	t.Helper()
	out := append([]record(nil), records...)
	edited := false
	for i, r := range out {
		if r.typ != typ {
			continue
		}
		var m map[string]any
		if err := msgpack.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		m[field] = value
		body, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out[i].body = body
		edited = true
	}
	if !edited {
		t.Fatalf("no record of type %d", typ)
	}
	return out
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	h := newHarness(t)
	play(t, h, busyLog(t))
	snap := h.snapshot()
	records := parseSnapshot(t, snap)
	// Record types, as written: 1 header, 2 budget, 3 hold, 4 policy,
	// 6 idempotency, 255 trailer.
	if records[0].typ != 1 || records[len(records)-1].typ != 255 {
		t.Fatalf("unexpected framing: first %d last %d", records[0].typ, records[len(records)-1].typ)
	}
	if got := buildSnapshot(records); !bytes.Equal(got, snap) {
		t.Fatal("the test's framing does not reproduce the snapshot")
	}
	withRecord := func(at int, r record) []record {
		out := append([]record(nil), records[:at]...)
		out = append(out, r)
		return append(out, records[at:]...)
	}
	without := func(typ byte) []record {
		var out []record
		dropped := false
		for _, r := range records {
			if r.typ == typ && !dropped {
				dropped = true
				continue
			}
			out = append(out, r)
		}
		if !dropped {
			t.Fatalf("no record of type %d", typ)
		}
		return out
	}

	cases := []struct {
		name string
		data []byte
		want string // in the error
	}{
		{"empty", nil, "not a tollgate snapshot"},
		{"bad magic", append([]byte("TGSNAQ"), snap[len(snapshotMagic):]...), "not a tollgate snapshot"},
		{"lower-case magic", append([]byte("tgsnap"), snap[len(snapshotMagic):]...), "not a tollgate snapshot"},
		{"magic only", []byte(snapshotMagic), "truncated"},
		{"unknown record type", buildSnapshot(withRecord(1, record{typ: 15, body: []byte{0x80}})), "unknown snapshot record type 15"},
		{"unknown record type 0", buildSnapshot(withRecord(2, record{typ: 0, body: []byte{0x80}})), "unknown snapshot record type 0"},
		{"no header", buildSnapshot(records[1:]), "header"},
		{"two headers", buildSnapshot(withRecord(1, records[0])), "header"},
		{"format version 2", buildSnapshot(editRecord(t, records, 1, "v", 2)), "format 2"},
		{"no trailer", buildSnapshot(records[:len(records)-1]), "truncated"},
		{"bytes after the trailer", append(append([]byte(nil), snap...), 0), "after the snapshot trailer"},
		{"trailer counts fewer budgets", buildSnapshot(editRecord(t, records, 255, "b", 1)), "trailer"},
		{"trailer counts more holds", buildSnapshot(editRecord(t, records, 255, "h", 99)), "trailer"},
		{"trailer counts fewer request ids", buildSnapshot(editRecord(t, records, 255, "r", 0)), "trailer"},
		{"a budget is missing", buildSnapshot(without(2)), "trailer"},
		{"a hold is missing", buildSnapshot(without(3)), "trailer"},
		{"held amount disagrees with the holds", buildSnapshot(editRecord(t, records, 2, "he", 12345)), "counters"},
		{"children disagree", buildSnapshot(editRecord(t, records, 2, "ch", 3)), "counters"},
		{"invalid budget", buildSnapshot(editRecord(t, records, 2, "s", map[string]any{"id": "", "am": 1})), "budget"},
		{"unknown field", buildSnapshot(editRecord(t, records, 1, "zz", 1)), "unknown field"},
		{"garbage body", buildSnapshot(withRecord(1, record{typ: 2, body: []byte{0xc1}})), ""},
		{"history of 2^32-1 periods", buildSnapshot(withRecord(1, record{typ: 2, body: []byte{0x81, 0xa2, 'h', 'i', 0xdd, 0xff, 0xff, 0xff, 0xff}})), "declares"},
	}
	before := h.hash()
	for _, c := range cases {
		err := h.m.Restore(bytes.NewReader(c.data))
		if err == nil {
			t.Errorf("%s: restore accepted it", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
	// Every strict prefix is refused.
	for n := 0; n < len(snap); n++ {
		if err := h.m.Restore(bytes.NewReader(snap[:n])); err == nil {
			t.Fatalf("restore accepted the first %d of %d bytes", n, len(snap))
		}
	}
	// A refused snapshot leaves the machine as it was.
	if h.hash() != before {
		t.Fatal("a failed restore changed the state")
	}
	if err := h.m.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("the intact snapshot: %v", err)
	}
}

// Admin removals of servers are replicated state: they survive a snapshot
// and are bounded.
func TestRemovedServersThroughSnapshot(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.MarkServerRemoved{ID: "n2", Incarnation: "aaa"})
	h.ok(t0, &fsm.MarkServerRemoved{ID: "n5"})
	h.fail(t0, &fsm.MarkServerRemoved{ID: ""}, fsm.CodeInvalidArgument)
	for _, m := range []*fsm.Machine{h.m, h.restoredCopy().m} {
		m.Read(0, func(v fsm.View) error {
			if !v.ServerRemoved("n2", "aaa") || v.ServerRemoved("n2", "bbb") || !v.ServerRemoved("n5", "any") || v.ServerRemoved("n3", "aaa") {
				t.Error("removed-server lookups are wrong")
			}
			return nil
		})
	}
	for i := 0; i < fsm.RemovedServersMax+5; i++ {
		h.ok(t0, &fsm.MarkServerRemoved{ID: fmt.Sprintf("x%d", i)})
	}
	h.m.Read(0, func(v fsm.View) error {
		if v.ServerRemoved("n2", "aaa") || !v.ServerRemoved(fmt.Sprintf("x%d", fsm.RemovedServersMax+4), "") {
			t.Error("the oldest removals are not the ones dropped at the bound")
		}
		return nil
	})
	if !bytes.Equal(h.snapshot(), h.restoredCopy().snapshot()) {
		t.Fatal("snapshot with removals does not round-trip")
	}
}
