package fsm_test

import (
	"bytes"
	"fmt"
	"math"
	"runtime/metrics"
	"slices"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tollgate/tollgate/fsm"
)

// snapshotSeedState builds a state with something of every kind a snapshot
// holds: budgets in two tenants with parents, every period and enforcement,
// a threshold crossed; active and committed holds; policies of all six
// algorithms with live counters, some denied (two policies updated after
// their counters were made, so those are adapted at their next check);
// remembered request ids; and admin removals of servers.
func snapshotSeedState(tb testing.TB) *harness {
	tb.Helper()
	h := newHarness(tb)
	org := spec("org", usd(tb, "100"))
	org.Period, org.Timezone, org.Thresholds = fsm.PeriodMonth, "Europe/Berlin", []uint32{50, 80}
	team := spec("team", usd(tb, "40"))
	team.ParentID, team.Period, team.Timezone, team.Enforcement = "org", fsm.PeriodDay, "America/New_York", fsm.EnforcementSoft
	team.Thresholds = []uint32{100}
	custom := spec("custom", usd(tb, "10"))
	custom.ParentID, custom.Period, custom.CustomPeriodMs = "org", fsm.PeriodCustom, 36*hourMs
	solo := spec("solo", usd(tb, "5"))
	solo.Period, solo.Enforcement, solo.Timezone = fsm.PeriodWeek, fsm.EnforcementShadow, "Asia/Tokyo"
	quarter := spec("quarter", usd(tb, "1000"))
	quarter.Period, quarter.Currency = fsm.PeriodQuarter, "EUR"
	yearly := spec("yearly", usd(tb, "1000"))
	yearly.Period = fsm.PeriodYear

	scales := []fsm.PriorityScale{{Priority: 1, Percent: 50}, {Priority: 2, Percent: 10}}
	policies := []fsm.PolicySpec{
		{ID: "tb", Algorithm: fsm.AlgorithmTokenBucket, Limit: 10, WindowMs: 1000, Burst: 20, Scales: scales},
		{ID: "lb", Algorithm: fsm.AlgorithmLeakyBucket, Limit: 10, WindowMs: 1000, Burst: 5},
		{ID: "fw", Algorithm: fsm.AlgorithmFixedWindow, Limit: 5, WindowMs: 60_000, Burst: 5},
		{ID: "swl", Algorithm: fsm.AlgorithmSlidingWindowLog, Limit: 5, WindowMs: 60_000, Burst: 5, Scales: scales[:1]},
		{ID: "swc", Algorithm: fsm.AlgorithmSlidingWindowCounter, Limit: 7, WindowMs: 10_000, Burst: 7},
		{ID: "gcra", Algorithm: fsm.AlgorithmGCRA, Limit: 100, WindowMs: 60_000, Burst: 10},
	}
	setup := []fsm.Command{
		&fsm.CreateBudget{Tenant: tenant, RequestID: "c-org", Budget: org},
		&fsm.CreateBudget{Tenant: tenant, Budget: team},
		&fsm.CreateBudget{Tenant: tenant, Budget: custom},
		&fsm.CreateBudget{Tenant: "globex", RequestID: "c-solo", Budget: solo},
		&fsm.CreateBudget{Tenant: "globex", Budget: quarter},
		&fsm.CreateBudget{Tenant: "globex", Budget: yearly},
		&fsm.MarkServerRemoved{ID: "n2", Incarnation: "3f2a"},
		&fsm.MarkServerRemoved{ID: "n5"},
	}
	for i, p := range policies {
		ten := tenant
		if i%2 == 1 {
			ten = "globex"
		}
		setup = append(setup, &fsm.CreatePolicy{Tenant: ten, RequestID: "c-" + p.ID, Policy: p})
	}
	h.apply(t0, setup...)

	checks := func(cost int64) []fsm.Command {
		var out []fsm.Command
		for i, p := range policies {
			ten := tenant
			if i%2 == 1 {
				ten = "globex"
			}
			out = append(out,
				&fsm.RateCheck{Tenant: ten, PolicyID: p.ID, Key: "user:1", Cost: cost},
				&fsm.RateCheck{Tenant: ten, RequestID: fmt.Sprintf("rc-%s-%d", p.ID, cost), PolicyID: p.ID, Key: "user:2", Cost: 1, Priority: 1},
				&fsm.RateCheck{Tenant: ten, PolicyID: p.ID, Key: "user:3", Cost: 4, Priority: 2})
		}
		return out
	}
	h.apply(t0+10, checks(2)...)
	h.apply(t0+11, checks(3)...) // a second record in each sliding log; some denials
	h.apply(t0+20,
		&fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "team", AmountMicros: usd(tb, "30")},
		&fsm.Consume{Tenant: tenant, RequestID: "r2", BudgetID: "team", AmountMicros: usd(tb, "15")}, // SOFT: would deny
		&fsm.Consume{Tenant: "globex", RequestID: "r1", BudgetID: "solo", AmountMicros: usd(tb, "7")},
		&fsm.ConsumeAtomic{Tenant: tenant, RequestID: "batch-1", Items: []fsm.ConsumeItem{
			{BudgetID: "custom", AmountMicros: usd(tb, "2")}, {BudgetID: "org", AmountMicros: usd(tb, "1")}}},
		reserveWithID("hold-1", "custom", usd(tb, "3")),                                                          // h4-4
		&fsm.Reserve{Tenant: tenant, BudgetID: "org", AmountMicros: usd(tb, "3"), TTLMs: fsm.HoldTTLMaxMs},       // h4-5
		&fsm.Reserve{Tenant: "globex", BudgetID: "yearly", AmountMicros: usd(tb, "9"), TTLMs: fsm.HoldTTLMaxMs},  // h4-6
		&fsm.Reserve{Tenant: tenant, BudgetID: "team", AmountMicros: usd(tb, "1"), TTLMs: 3_600_000},             // h4-7
		&fsm.Reserve{Tenant: "globex", BudgetID: "quarter", AmountMicros: usd(tb, "1"), TTLMs: fsm.HoldTTLMinMs}, // h4-8
		&fsm.Reserve{Tenant: "globex", BudgetID: "solo", AmountMicros: usd(tb, "100"), TTLMs: fsm.HoldTTLMaxMs})  // SHADOW over
	h.apply(t0+30,
		&fsm.Commit{Tenant: tenant, RequestID: "commit-1", HoldID: "h4-7", AmountMicros: usd(tb, "1.5")},
		&fsm.UpdateBudget{Tenant: tenant, RequestID: "u-1", Fields: fsm.UpdateThresholds | fsm.UpdateAmount,
			Budget: fsm.BudgetSpec{ID: "custom", AmountMicros: usd(tb, "12"), Thresholds: []uint32{25, 90}}},
		// Counters of tb and gcra now carry an older policy version.
		&fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit | fsm.UpdateBurst, Policy: fsm.PolicySpec{ID: "tb", Limit: 3, Burst: 6}},
		&fsm.UpdatePolicy{Tenant: "globex", Fields: fsm.UpdateWindow, Policy: fsm.PolicySpec{ID: "gcra", WindowMs: 30_000}})
	return h
}

// snapshotSeeds returns real snapshots: an empty machine, the seed state,
// and the seed state after a day in New York (a rolled period with history,
// an expired hold, an expired request id) and some deletes.
func snapshotSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	empty := newHarness(tb).snapshot()
	h := snapshotSeedState(tb)
	busy := h.snapshot()
	h.apply(t0+dayMs,
		&fsm.Consume{Tenant: tenant, BudgetID: "team", AmountMicros: usd(tb, "2")},
		&fsm.DeletePolicy{Tenant: "globex", PolicyID: "lb"},
		&fsm.Release{Tenant: "globex", HoldID: "h4-6"},
		&fsm.MarkServerRemoved{ID: "n7", Incarnation: "77"})
	later := h.snapshot()
	return [][]byte{empty, busy, later}
}

// heapAllocBytes is the cumulative heap allocation of the process. Reading
// it does not stop the world, unlike runtime.ReadMemStats.
func heapAllocBytes() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// restoreAllocBytesMax bounds what restoring data may allocate: the decoder
// may hold one record of up to 64 MiB (snapshotRecordMax) before reading it,
// and what it builds is linear in the input (a decoded element takes at
// least one input byte and becomes at most a few hundred bytes of state).
func restoreAllocBytesMax(data []byte) uint64 {
	return 64<<20 + 4<<20 + 1024*uint64(len(data))
}

// FuzzSnapshotRestore restores arbitrary bytes. Restore must never panic nor
// allocate beyond a bound linear in the input. A snapshot it accepts must
// be usable as a state: it writes a snapshot that restores again to the
// same bytes and hash (canonical form), and commands on every object it holds
// apply without panicking and exactly as on the state restored from the
// canonical form (nothing of the state is lost by writing it).
func FuzzSnapshotRestore(f *testing.F) {
	for _, snap := range snapshotSeeds(f) {
		f.Add(snap)
		for _, n := range []int{len(snap) - 1, len(snap) * 3 / 4, len(snap) / 2, 20} {
			if n > 0 && n < len(snap) {
				f.Add(snap[:n])
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte("TGSNAP"))
	f.Fuzz(checkRestore)
}

// checkRestore restores data and, if Restore accepts it, checks that the
// state is usable (see FuzzSnapshotRestore).
func checkRestore(t *testing.T, data []byte) {
	restored := fsm.New()
	before := heapAllocBytes()
	err := restored.Restore(bytes.NewReader(data))
	if used, limit := heapAllocBytes()-before, restoreAllocBytesMax(data); used > limit {
		t.Fatalf("restoring %d bytes allocated %d bytes (bound %d)", len(data), used, limit)
	}
	if err != nil {
		return
	}
	canonical := writeSnapshot(t, restored)
	again := fsm.New()
	if err := again.Restore(bytes.NewReader(canonical)); err != nil {
		t.Fatalf("the snapshot of a restored state does not restore: %v", err)
	}
	if !bytes.Equal(writeSnapshot(t, again), canonical) {
		t.Fatal("restoring a written snapshot and writing it again changes its bytes")
	}
	hash := stateHash(t, restored)
	if stateHash(t, restored) != hash || stateHash(t, again) != hash {
		t.Fatal("the state hash is not stable across restore")
	}
	if restored.AppliedIndex() > math.MaxUint64-8 {
		return // no index is left to apply an entry at
	}
	probes := snapshotProbes(t, canonical, restored.AppliedIndex(), restored.LastLogTimeMs())
	for _, e := range probes {
		got, want := e.apply(t, restored), e.apply(t, again)
		if a, b := encodeResults(t, [][]fsm.Result{got}), encodeResults(t, [][]fsm.Result{want}); a != b {
			t.Fatalf("entry %d gives different results on the restored state and on its canonical copy:\n%s\nwant\n%s", e.index, a, b)
		}
	}
	if stateHash(t, restored) != stateHash(t, again) {
		t.Fatal("the same entries leave the restored state and its canonical copy with different hashes")
	}
	// What the commands left is a state that snapshots and restores.
	if err := fsm.New().Restore(bytes.NewReader(writeSnapshot(t, restored))); err != nil {
		t.Fatalf("after applying commands to a restored state, its snapshot does not restore: %v", err)
	}
}

// FuzzRestoreEditedSnapshot is FuzzSnapshotRestore with edits that keep the
// framing and the msgpack well formed: byte mutations rarely get a snapshot
// past its trailer counts and counter checks, so most never reach Apply.
// Each input picks a seed snapshot and sets up to two fields of its records
// (any leaf of the decoded record: number, string, flag, or list element)
// to a fuzzed value, or deletes them.
func FuzzRestoreEditedSnapshot(f *testing.F) {
	seeds := snapshotSeeds(f)
	// Benign edits of the busy seed (records: header, budgets, holds,
	// policies with their counters, request ids, removals, trailer).
	f.Add(uint8(1), uint16(0), uint16(1), int64(12345), uint16(1), uint16(5), int64(0), "")
	f.Add(uint8(1), uint16(3), uint16(0x8000), int64(0), uint16(3), uint16(3), int64(7), "x")
	f.Add(uint8(2), uint16(20), uint16(2), int64(1), uint16(21), uint16(4), int64(-1), "user:9")
	f.Add(uint8(0), uint16(0), uint16(2), int64(1<<62), uint16(0), uint16(0), int64(1), "")
	f.Fuzz(func(t *testing.T, seed uint8, record1, field1 uint16, value1 int64, record2, field2 uint16, value2 int64, text string) {
		records := parseSnapshot(t, seeds[int(seed)%len(seeds)])
		editLeaf(t, records, record1, field1, value1, text)
		editLeaf(t, records, record2, field2, value2, text)
		checkRestore(t, buildSnapshot(records))
	})
}

// editLeaf rewrites leaf number field%leaves of record number
// record%len(records) in place: deletes it when field has its top bit set,
// else sets a string to text, a flag to value&1, and a number to value.
func editLeaf(t *testing.T, records []record, recordN, field uint16, value int64, text string) {
	r := &records[int(recordN)%len(records)]
	var top any
	if err := msgpack.Unmarshal(r.body, &top); err != nil {
		t.Fatalf("record of a seed snapshot: %v", err)
	}
	var leaves []func(keep bool) // each sets one leaf, or deletes it unless keep
	var walk func(v any, set func(any), del func())
	walk = func(v any, set func(any), del func()) {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				walk(v[k], func(x any) { v[k] = x }, func() { delete(v, k) })
			}
		case []any:
			for i := range v {
				walk(v[i], func(x any) { v[i] = x }, func() { v[i] = nil })
			}
		default:
			leaves = append(leaves, func(keep bool) {
				if !keep {
					del()
					return
				}
				switch v.(type) {
				case string:
					set(text)
				case bool:
					set(value&1 == 1)
				default:
					set(value)
				}
			})
		}
	}
	walk(top, nil, nil)
	if len(leaves) == 0 {
		return
	}
	leaves[int(field&0x7fff)%len(leaves)](field&0x8000 == 0)
	body, err := msgpack.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	r.body = body
}

func writeSnapshot(t *testing.T, m *fsm.Machine) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := m.WriteSnapshot(&buf); err != nil {
		t.Fatalf("write snapshot: %v", err)
	}
	return buf.Bytes()
}

func stateHash(t *testing.T, m *fsm.Machine) string {
	t.Helper()
	sum, index, err := m.StateHash()
	if err != nil {
		t.Fatalf("state hash: %v", err)
	}
	if index != m.AppliedIndex() {
		t.Fatalf("state hash reflects index %d, applied index is %d", index, m.AppliedIndex())
	}
	return sum
}

// probeEntry is one log entry applied to a restored state, with the reads
// that follow it.
type probeEntry struct {
	index uint64
	nowMs int64
	cmds  []fsm.Command
	reads func(v fsm.View)
}

func (e probeEntry) apply(t *testing.T, m *fsm.Machine) []fsm.Result {
	t.Helper()
	entry := fsm.Entry{NowMs: e.nowMs, Commands: make([][]byte, len(e.cmds))}
	for i, c := range e.cmds {
		entry.Commands[i] = mustEncode(t, c)
	}
	out := m.ApplyEntry(e.index, 1, fsm.EncodeEntry(entry))
	if e.reads != nil {
		m.Read(e.nowMs, func(v fsm.View) error {
			e.reads(v)
			return nil
		})
	}
	return out.Results
}

// The names a probe needs from the records of a snapshot.
type (
	budgetNames struct {
		Tenant string `msgpack:"t"`
		Spec   struct {
			ID string `msgpack:"id"`
		} `msgpack:"s"`
	}
	holdNames struct {
		Tenant string `msgpack:"t"`
		ID     string `msgpack:"id"`
	}
	policyNames struct {
		Tenant string `msgpack:"t"`
		Spec   struct {
			ID     string              `msgpack:"id"`
			Scales []fsm.PriorityScale `msgpack:"sc"`
		} `msgpack:"s"`
	}
	rateKeyNames struct {
		Tenant   string `msgpack:"t"`
		PolicyID string `msgpack:"p"`
		Entry    struct {
			Key string `msgpack:"k"`
		} `msgpack:"e"`
	}
	idemNames struct {
		Tenant    string `msgpack:"t"`
		RequestID string `msgpack:"r"`
	}
)

// probeObjectsMax bounds the objects of each kind a probe touches, so that
// one fuzz input stays fast.
const probeObjectsMax = 6

// snapshotProbes builds entries that touch every kind of object in the
// canonical snapshot snap (up to probeObjectsMax of each, two counters per
// policy): spend on each budget, commit or release each hold, check each
// counter (also after a policy change and after every counter expired),
// replay each request id, then, a year on, roll every period, expire
// everything, and delete.
func snapshotProbes(t *testing.T, snap []byte, index uint64, lastNowMs int64) []probeEntry {
	var budgets []budgetNames
	var holds []holdNames
	var policies []policyNames
	var keys []rateKeyNames
	keysOf := map[string]int{}
	var idem []idemNames
	for _, r := range parseSnapshot(t, snap) {
		var err error
		switch r.typ {
		case 2:
			var b budgetNames
			if err = msgpack.Unmarshal(r.body, &b); len(budgets) < probeObjectsMax {
				budgets = append(budgets, b)
			}
		case 3:
			var h holdNames
			if err = msgpack.Unmarshal(r.body, &h); len(holds) < probeObjectsMax {
				holds = append(holds, h)
			}
		case 4:
			var p policyNames
			if err = msgpack.Unmarshal(r.body, &p); len(policies) < probeObjectsMax {
				policies = append(policies, p)
			}
		case 5:
			// The first two counters of each policy: policies of every
			// algorithm get their counters checked.
			var k rateKeyNames
			if err = msgpack.Unmarshal(r.body, &k); len(keys) < 2*probeObjectsMax && keysOf[k.Tenant+"/"+k.PolicyID] < 2 {
				keys = append(keys, k)
				keysOf[k.Tenant+"/"+k.PolicyID]++
			}
		case 6:
			var r2 idemNames
			if err = msgpack.Unmarshal(r.body, &r2); len(idem) < probeObjectsMax {
				idem = append(idem, r2)
			}
		}
		if err != nil {
			t.Fatalf("record type %d of a canonical snapshot: %v", r.typ, err)
		}
	}

	// Entry times must be valid log times; the machine clamps them to its
	// restored log time anyway.
	const yearMs = 366 * dayMs
	nowMs := min(max(lastNowMs, 0), 1<<62-2*yearMs) + 1

	var spend, later []fsm.Command
	for _, b := range budgets {
		spend = append(spend,
			&fsm.Consume{Tenant: b.Tenant, BudgetID: b.Spec.ID, AmountMicros: 1},
			&fsm.Reserve{Tenant: b.Tenant, BudgetID: b.Spec.ID, AmountMicros: 2, TTLMs: fsm.HoldTTLMinMs},
			&fsm.ConsumeAtomic{Tenant: b.Tenant, Items: []fsm.ConsumeItem{{BudgetID: b.Spec.ID, AmountMicros: 1}, {BudgetID: b.Spec.ID, AmountMicros: fsm.AmountMaxMicros}}},
			&fsm.UpdateBudget{Tenant: b.Tenant, Fields: fsm.UpdateAmount | fsm.UpdateThresholds,
				Budget: fsm.BudgetSpec{ID: b.Spec.ID, AmountMicros: fsm.AmountMaxMicros, Thresholds: []uint32{1, fsm.ThresholdPercentMax}}})
		later = append(later, &fsm.Consume{Tenant: b.Tenant, BudgetID: b.Spec.ID, AmountMicros: 3})
	}
	for i, h := range holds {
		if i%2 == 0 {
			spend = append(spend, &fsm.Commit{Tenant: h.Tenant, HoldID: h.ID, AmountMicros: int64(i)})
		} else {
			spend = append(spend, &fsm.Release{Tenant: h.Tenant, HoldID: h.ID})
		}
	}
	var checks []fsm.Command
	for _, k := range keys {
		checks = append(checks,
			&fsm.RateCheck{Tenant: k.Tenant, PolicyID: k.PolicyID, Key: k.Entry.Key, Cost: 1},
			&fsm.RateCheck{Tenant: k.Tenant, PolicyID: k.PolicyID, Key: k.Entry.Key, Cost: 2, Priority: 1})
	}
	var updates, deletes []fsm.Command
	for _, p := range policies {
		checks = append(checks, &fsm.RateCheck{Tenant: p.Tenant, PolicyID: p.Spec.ID, Key: "probe", Cost: 1})
		for _, s := range p.Spec.Scales {
			checks = append(checks, &fsm.RateCheck{Tenant: p.Tenant, PolicyID: p.Spec.ID, Key: "probe", Cost: 1, Priority: s.Priority})
		}
		updates = append(updates, &fsm.UpdatePolicy{Tenant: p.Tenant, Fields: fsm.UpdateLimit | fsm.UpdateBurst | fsm.UpdateWindow,
			Policy: fsm.PolicySpec{ID: p.Spec.ID, Limit: 2, Burst: 3, WindowMs: 7_000}})
		deletes = append(deletes, &fsm.DeletePolicy{Tenant: p.Tenant, PolicyID: p.Spec.ID})
	}
	for _, r := range idem {
		spend = append(spend, &fsm.DeleteBudget{Tenant: r.Tenant, RequestID: r.RequestID, BudgetID: "probe"})
	}
	// Children before parents: canonical order is by id, so delete in
	// reverse and once more.
	for range 2 {
		for i := len(budgets) - 1; i >= 0; i-- {
			deletes = append(deletes, &fsm.DeleteBudget{Tenant: budgets[i].Tenant, BudgetID: budgets[i].Spec.ID})
		}
	}

	reads := func(v fsm.View) {
		for _, b := range budgets {
			v.Budget(b.Tenant, b.Spec.ID)
			v.CheckBudget(b.Tenant, b.Spec.ID, 1)
			v.Budgets(b.Tenant, "", 3)
		}
		for _, p := range policies {
			v.Policy(p.Tenant, p.Spec.ID)
			v.Policies(p.Tenant, "", 3)
		}
		v.Counts()
		v.ServerRemoved("n2", "3f2a")
	}
	steps := []struct {
		atMs int64
		cmds []fsm.Command
	}{
		{nowMs, append(spend, checks...)},
		{nowMs + 1, append(updates, checks...)},
		{nowMs + hourMs, checks},
		{nowMs + yearMs, append(append(later, checks...), deletes...)},
	}
	out := make([]probeEntry, len(steps))
	for i, s := range steps {
		out[i] = probeEntry{index: index + uint64(i) + 1, nowMs: s.atMs, cmds: s.cmds, reads: reads}
	}
	return out
}

// ---- Reproducers of gaps in Restore's checks ----
//
// The fuzz targets above crash on broken rate counters within seconds;
// the other gaps were found reading restoreRecord while triaging that crash.
// Each test crafts the smallest snapshot that shows one gap: Restore
// accepts it, and the restored state then panics on an ordinary command or
// no longer snapshots. A fix may refuse the snapshot at Restore or make the
// command safe; either passes.

// editNested rewrites the field at path (msgpack keys, outermost first) in
// the body of every record of type typ that contains the bytes of match.
func editNested(t *testing.T, records []record, typ byte, match string, value any, path ...string) []record {
	t.Helper()
	out := append([]record(nil), records...)
	edited := false
	for i, r := range out {
		if r.typ != typ || !bytes.Contains(r.body, []byte(match)) {
			continue
		}
		var top map[string]any
		if err := msgpack.Unmarshal(r.body, &top); err != nil {
			t.Fatal(err)
		}
		m := top
		for _, k := range path[:len(path)-1] {
			m = m[k].(map[string]any)
		}
		m[path[len(path)-1]] = value
		body, err := msgpack.Marshal(top)
		if err != nil {
			t.Fatal(err)
		}
		out[i].body = body
		edited = true
	}
	if !edited {
		t.Fatalf("no record of type %d with %q", typ, match)
	}
	return out
}

// applyNoPanic applies cmds in one entry and fails the test, instead of
// crashing the test binary, if Apply panics.
func applyNoPanic(t *testing.T, h *harness, nowMs int64, cmds ...fsm.Command) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Apply on a restored state panicked: %v", r)
		}
	}()
	h.apply(nowMs, cmds...)
}

// restoreCrafted restores snap into a fresh harness at index; ok is false
// when Restore refused it (the snapshot is caught, which is a fix).
func restoreCrafted(t *testing.T, snap []byte, index uint64) (*harness, bool) {
	t.Helper()
	h := &harness{t: t, m: fsm.New(), index: index}
	if err := h.m.Restore(bytes.NewReader(snap)); err != nil {
		t.Logf("Restore refuses the crafted snapshot: %v", err)
		return nil, false
	}
	return h, true
}

// fixedWindowState is a FIXED_WINDOW policy "fw" (5 per minute) with one
// live counter "k", at index 2.
func fixedWindowState(t *testing.T) (*harness, []record) {
	h := newHarness(t)
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "fw", Algorithm: fsm.AlgorithmFixedWindow, Limit: 5, WindowMs: 60_000, Burst: 5}})
	h.ok(t0, &fsm.RateCheck{Tenant: tenant, PolicyID: "fw", Key: "k", Cost: 1})
	return h, parseSnapshot(t, h.snapshot())
}

// Restore does not check a counter's state against its algorithm's
// invariants (snapshot.go, case recRateKey), and the next check of that key
// panics in rateAssert (ratealgo.go): in rateCheck's checkInvariants when
// the counter is of the policy's current version, in rateAdapt's when the
// policy changed since. One corrupt record in a snapshot a follower
// installs crashes it on the next rate check of that key.
func TestRestoreRejectsBrokenRateCounter(t *testing.T) {
	t.Run("current policy", func(t *testing.T) {
		_, records := fixedWindowState(t)
		// The window start 2025-01-15 12:00:00.001 is not a multiple of the window.
		snap := buildSnapshot(editNested(t, records, 5, "", t0+1, "e", "s", "a"))
		if h, ok := restoreCrafted(t, snap, 2); ok {
			applyNoPanic(t, h, t0+2, &fsm.RateCheck{Tenant: tenant, PolicyID: "fw", Key: "k", Cost: 1})
		}
	})
	t.Run("changed policy", func(t *testing.T) {
		h := newHarness(t)
		h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "tb", Algorithm: fsm.AlgorithmTokenBucket, Limit: 1, WindowMs: 60_000, Burst: 5}})
		h.ok(t0, &fsm.RateCheck{Tenant: tenant, PolicyID: "tb", Key: "k", Cost: 5})
		h.ok(t0, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit, Policy: fsm.PolicySpec{ID: "tb", Limit: 2}})
		// The last refill before the epoch.
		snap := buildSnapshot(editNested(t, parseSnapshot(t, h.snapshot()), 5, "", -1, "e", "s", "c"))
		if r, ok := restoreCrafted(t, snap, 3); ok {
			applyNoPanic(t, r, t0+1, &fsm.RateCheck{Tenant: tenant, PolicyID: "tb", Key: "k", Cost: 1})
		}
	})
}

// Restore counts rate-key records rather than the live counters
// (snapshot.go, case recRateKey: s.rateKeys++ after p.keys[e.Key] = &e): a
// record with an empty key, which WriteSnapshot then skips (sortedKeys
// lists keys after ""), two records with one key, or a policy record
// repeated after its counters (case recPolicy replaces the policy) leave a
// state whose own snapshot does not restore (its trailer counts counters it
// does not write), and whose rateKeys count never comes back down.
func TestRestoredRateKeysSnapshotAgain(t *testing.T) {
	_, records := fixedWindowState(t)
	dup := append([]record(nil), records[:len(records)-1]...)
	for _, r := range records {
		if r.typ == 5 {
			dup = append(dup, r)
		}
	}
	dup = append(dup, records[len(records)-1])
	var dupPolicy []record // the policy again after its counter
	for _, r := range records {
		if r.typ == 255 {
			dupPolicy = append(dupPolicy, records[1])
		}
		dupPolicy = append(dupPolicy, r)
	}
	for name, snap := range map[string][]byte{
		"empty key":     buildSnapshot(editNested(t, records, 5, "", "", "e", "k")),
		"duplicate key": buildSnapshot(editRecord(t, dup, 255, "k", 2)),
		// The second record replaces the policy; its counter stays
		// counted but belongs to no policy.
		"duplicate policy": buildSnapshot(dupPolicy),
	} {
		t.Run(name, func(t *testing.T) {
			h, ok := restoreCrafted(t, snap, 2)
			if !ok {
				return
			}
			if err := fsm.New().Restore(bytes.NewReader(h.snapshot())); err != nil {
				t.Fatalf("the restored state's own snapshot does not restore: %v", err)
			}
		})
	}
}

// twoHoldsState is a budget "b" of 10 with two holds, h2-0 of 5 and h3-0
// of 3, at index 3.
func twoHoldsState(t *testing.T) []record {
	h := newHarness(t)
	h.create(t0, spec("b", 10))
	h.ok(t0, reserve("b", 5, fsm.HoldTTLMaxMs))
	h.ok(t0, reserve("b", 3, fsm.HoldTTLMaxMs))
	return parseSnapshot(t, h.snapshot())
}

// Restore does not check hold amounts (snapshot.go, case recHold;
// checkRestored only compares their sum with the budget's held amount): a
// hold of -5 beside one of 5 on a budget holding 0 passes, and releasing
// the positive one panics in dropHold (budget.go, "negative held amount").
func TestRestoreRejectsNegativeHold(t *testing.T) {
	records := editNested(t, twoHoldsState(t), 3, "h3-0", -5, "a")
	snap := buildSnapshot(editNested(t, records, 2, "", 0, "he"))
	if h, ok := restoreCrafted(t, snap, 3); ok {
		applyNoPanic(t, h, t0+1, &fsm.Release{Tenant: tenant, HoldID: "h2-0"})
	}
}

// Restore does not check a hold's id against the log position: a hold
// named as a later index would name its hold (h<index>-<position>) is
// accepted, and the Reserve at that index silently replaces it in the hold
// table (budget.go, addHold) while its amount stays held, so the state no
// longer snapshots.
func TestRestoreRejectsHoldFromTheFuture(t *testing.T) {
	snap := buildSnapshot(editNested(t, twoHoldsState(t), 3, "h3-0", "h4-0", "id"))
	h, ok := restoreCrafted(t, snap, 3)
	if !ok {
		return
	}
	applyNoPanic(t, h, t0+1, reserve("b", 1, fsm.HoldTTLMaxMs)) // index 4, position 0: h4-0
	if err := fsm.New().Restore(bytes.NewReader(h.snapshot())); err != nil {
		t.Fatalf("after a Reserve on the restored state, its snapshot does not restore: %v", err)
	}
}

// Restore accepts any log time in the header, although DecodeEntry refuses
// a time above 2^62 (so no log reaches one). After a header time of
// MaxInt64, every later entry is clamped to it and rolling a daily budget
// panics in periodBounds (period.go, "period bounds do not contain now").
func TestRestoreRejectsLogTimeBeyondEntries(t *testing.T) {
	h := newHarness(t)
	daily := spec("b", 10)
	daily.Period = fsm.PeriodDay
	h.create(t0, daily)
	records := parseSnapshot(t, h.snapshot())
	snap := buildSnapshot(editRecord(t, records, 1, "t", int64(math.MaxInt64)))
	if r, ok := restoreCrafted(t, snap, 1); ok {
		applyNoPanic(t, r, t0+1, &fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: 1})
	}
}

// Restore does not refuse two request-id records with the same tenant and
// request id (snapshot.go, case recIdem: s.idem.put appends to the queue
// and overwrites the index). When the older one expires, expire deletes the
// index entry of the newer one (idempotency.go), which stays queued: the
// state writes one record more than its trailer counts and its snapshot no
// longer restores (and the newer request id is forgotten early).
func TestRestoreRejectsDuplicateRequestID(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", 10))
	h.ok(t0, &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: 1})
	h.ok(t0+60_000, &fsm.Consume{Tenant: tenant, RequestID: "r2", BudgetID: "b", AmountMicros: 1})
	records := editNested(t, parseSnapshot(t, h.snapshot()), 6, "r2", "r1", "r")
	snap := buildSnapshot(editRecord(t, records, 255, "r", 1))
	r, ok := restoreCrafted(t, snap, 3)
	if !ok {
		return
	}
	applyNoPanic(t, r, t0+fsm.IdempotencyRetentionMs) // the first r1 expires
	if err := fsm.New().Restore(bytes.NewReader(r.snapshot())); err != nil {
		t.Fatalf("after the older record expired, the snapshot does not restore: %v", err)
	}
}
