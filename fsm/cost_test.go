package fsm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tollgate/tollgate/fsm"
)

func labels(kv ...string) []fsm.Label {
	var out []fsm.Label
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, fsm.Label{Key: kv[i], Value: kv[i+1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func selector(reqs ...fsm.LabelRequirement) *fsm.LabelSelector {
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].Key < reqs[j].Key })
	return &fsm.LabelSelector{Match: reqs}
}

func in(key string, values ...string) fsm.LabelRequirement {
	sort.Strings(values)
	return fsm.LabelRequirement{Key: key, Values: values}
}

func cost(t testing.TB, amount, currency, resource string, at int64, kv ...string) fsm.CostSpec {
	t.Helper()
	return fsm.CostSpec{AmountMicros: usd(t, amount), Currency: currency, Resource: resource, Labels: labels(kv...), OccurredAtMs: at}
}

func (h *harness) record(nowMs int64, costs ...fsm.CostSpec) []fsm.CostResult {
	h.t.Helper()
	r := h.ok(nowMs, &fsm.RecordCost{Tenant: tenant, Costs: costs})
	if len(r.Costs) != len(costs) {
		h.t.Fatalf("record: %d results for %d records", len(r.Costs), len(costs))
	}
	return r.Costs
}

func (h *harness) report(nowMs int64, q fsm.ReportQuery) []fsm.ReportRow {
	h.t.Helper()
	var rows []fsm.ReportRow
	if _, err := h.m.Read(nowMs, func(v fsm.View) (err error) {
		rows, err = v.Report(q)
		return err
	}); err != nil {
		h.t.Fatalf("report: %v", err)
	}
	return rows
}

func selectorBudget(id, currency string, amount int64, sel *fsm.LabelSelector) fsm.BudgetSpec {
	s := spec(id, amount)
	s.Currency = currency
	s.Selector = sel
	return s
}

// halfEven converts micros at a decimal rate the way the test expects:
// exact rational product, rounded half to even. Written apart from fsm.
func halfEven(micros *big.Int, rate string) *big.Int {
	r, ok := new(big.Rat).SetString(rate)
	if !ok {
		panic(rate)
	}
	x := new(big.Rat).Mul(new(big.Rat).SetInt(micros), r)
	fl := new(big.Int).Quo(x.Num(), x.Denom()) // x >= 0: truncation is floor
	frac := new(big.Rat).Sub(x, new(big.Rat).SetInt(fl))
	switch frac.Cmp(big.NewRat(1, 2)) {
	case 1:
		fl.Add(fl, big.NewInt(1))
	case 0:
		if fl.Bit(0) == 1 {
			fl.Add(fl, big.NewInt(1))
		}
	}
	return fl
}

// TestRecordCostChargesMatchingBudgets: a record charges every budget whose
// selector matches (equality and set membership, resource and service as
// reserved keys) and their ancestors once each, converted with the table's
// rate, never denies, and a retry replays the first result.
func TestRecordCostChargesMatchingBudgets(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.SetExchangeRates{Rates: []fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.0837"}, {From: "USD", To: "EUR", Rate: "0.9227"}}})
	h.create(t0, spec("org", usd(t, "1000")))
	ml := selectorBudget("ml", "USD", usd(t, "1"), selector(in("team", "ml")))
	ml.ParentID = "org"
	ml.Thresholds = []uint32{50, 100}
	h.create(t0, ml)
	// Matches the same records as "ml" for model a or b: "org" must still be
	// charged once.
	models := selectorBudget("models", "USD", usd(t, "100"), selector(in("model", "a", "b"), in(fsm.LabelResource, "llm")))
	models.ParentID = "org"
	h.create(t0, models)
	h.create(t0, selectorBudget("eur", "EUR", usd(t, "100"), selector(in("team", "ml", "web"))))
	h.create(t0, selectorBudget("other", "USD", usd(t, "100"), selector(in("team", "web"))))

	res := h.record(t0, cost(t, "2.5", "EUR", "llm", t0-1000, "team", "ml", "model", "a"))
	got := map[string]fsm.CostCharge{}
	for _, c := range res[0].Charges {
		got[c.BudgetID] = c
	}
	// 2.5 EUR * 1.0837 = 2.70925 USD exactly.
	want := map[string]struct {
		amount int64
		rate   string
	}{
		"eur": {usd(t, "2.5"), ""}, "ml": {usd(t, "2.70925"), "1.0837"},
		"models": {usd(t, "2.70925"), "1.0837"}, "org": {usd(t, "2.70925"), "1.0837"},
	}
	if len(got) != len(want) {
		t.Fatalf("charges %+v, want budgets %v", res[0].Charges, want)
	}
	for id, w := range want {
		if got[id].AmountMicros != w.amount || got[id].Rate != w.rate {
			t.Errorf("charge of %s: %+v, want %d at %q", id, got[id], w.amount, w.rate)
		}
	}
	// Over its amount, never denied; the thresholds it crossed are reported.
	if c := got["ml"]; c.RemainingMicros != usd(t, "1")-usd(t, "2.70925") || fmt.Sprint(c.Thresholds) != "[50 100]" {
		t.Errorf("ml after the record: %+v", c)
	}
	if s := h.spent(t0, "org"); s != usd(t, "2.70925") {
		t.Errorf("org spent %d: its two matching children must charge it once per record", s)
	}
	if s := h.spent(t0, "other"); s != 0 {
		t.Errorf("other (team=web) was charged %d", s)
	}
	// A record no selector matches charges nothing and is still recorded.
	if res := h.record(t0, cost(t, "1", "JPY", "gpu", t0, "team", "data")); len(res[0].Charges) != 0 {
		t.Errorf("unmatched record charged %+v", res[0].Charges)
	}
	// Idempotent: the retry replays the first result and charges nothing.
	first := h.ok(t0, &fsm.RecordCost{Tenant: tenant, RequestID: "r1", Costs: []fsm.CostSpec{cost(t, "1", "USD", "llm", t0, "team", "ml")}})
	again := h.one(t0+1000, &fsm.RecordCost{Tenant: tenant, RequestID: "r1", Costs: []fsm.CostSpec{cost(t, "1", "USD", "llm", t0, "team", "ml")}})
	if !again.Replayed || again.Costs[0].ID != first.Costs[0].ID || first.Costs[0].ID != fmt.Sprintf("c%d-0-0", first.Index) ||
		fmt.Sprint(again.Costs) != fmt.Sprint(first.Costs) {
		t.Errorf("retry: replayed %v %+v, want the first %+v", again.Replayed, again.Costs, first.Costs)
	}
	// The same replay from a restored copy (the idempotency table keeps a
	// compact form of cost results and the ids are derived).
	c := h.restoredCopy()
	again = c.one(t0+2000, &fsm.RecordCost{Tenant: tenant, RequestID: "r1", Costs: []fsm.CostSpec{cost(t, "1", "USD", "llm", t0, "team", "ml")}})
	if !again.Replayed || fmt.Sprint(again.Costs) != fmt.Sprint(first.Costs) {
		t.Errorf("retry on a restored copy: %+v, want %+v", again.Costs, first.Costs)
	}
	if s := h.spent(t0, "ml"); s != usd(t, "3.70925") {
		t.Errorf("ml spent %d after a retried record, want 3.70925", s)
	}
	// 2.5 EUR, then 1 USD at 0.9227.
	if s := h.spent(t0, "eur"); s != usd(t, "3.4227") {
		t.Errorf("eur spent %d, want 3.4227", s)
	}
}

// TestRecordCostBadInput: each bad record is InvalidArgument naming the
// field, and nothing of a rejected batch is recorded.
func TestRecordCostBadInput(t *testing.T) {
	h := newHarness(t)
	h.create(t0, selectorBudget("ml", "USD", usd(t, "100"), selector(in("team", "ml"))))
	long := strings.Repeat("x", fsm.LabelValueBytesMax+1)
	var many []string
	for i := 0; i <= fsm.CostLabelsMax; i++ {
		many = append(many, fmt.Sprintf("k%02d", i), "v")
	}
	cases := []struct {
		name string
		c    fsm.CostSpec
		want string
	}{
		{"unknown currency", cost(t, "1", "XYZ", "llm", t0), "currency"},
		{"missing rate", cost(t, "1", "EUR", "llm", t0, "team", "ml"), `currency: no exchange rate from EUR to USD (budget "ml")`},
		{"zero amount", cost(t, "0", "USD", "llm", t0), "amount"},
		{"no resource", cost(t, "1", "USD", "", t0), "resource is empty"},
		{"long label value", cost(t, "1", "USD", "llm", t0, "team", long), "labels.team is 129 bytes long"},
		{"long label key", cost(t, "1", "USD", "llm", t0, strings.Repeat("k", 65), "v"), "labels[0].key is 65 bytes long"},
		{"bad label key", cost(t, "1", "USD", "llm", t0, "Team", "v"), "labels[0].key \"Team\" has character 'T'"},
		{"reserved label", cost(t, "1", "USD", "llm", t0, "resource", "v"), "labels[0].key \"resource\" is reserved"},
		{"too many labels", cost(t, "1", "USD", "llm", t0, many...), "labels has 17 labels; at most 16"},
		{"future", cost(t, "1", "USD", "llm", t0+fsm.CostFutureSkewMs+1), "occurred_at is"},
		{"too old", cost(t, "1", "USD", "llm", t0-fsm.CostRetentionMs-1), "occurred_at is more than 400d before"},
	}
	before := h.hash()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := &fsm.RecordCost{Tenant: tenant, Costs: []fsm.CostSpec{cost(t, "1", "USD", "llm", t0, "team", "ml"), tc.c}}
			verr := fsm.Validate(cmd)
			var r fsm.Result
			if verr == nil {
				r = h.one(t0, cmd) // checks that need the log time or the state
			} else {
				r = fsm.Result{Err: verr}
			}
			if r.Err == nil || r.Err.Code != fsm.CodeInvalidArgument || !strings.Contains(r.Err.Message, tc.want) {
				t.Fatalf("got %+v, want InvalidArgument containing %q", r.Err, tc.want)
			}
			if !strings.Contains(r.Err.Message, "records[1].") {
				t.Errorf("message %q does not name the record", r.Err.Message)
			}
		})
	}
	// Rejected commands changed nothing, not even the first, valid record.
	// (Entries advance the index but not the tables.)
	if s := h.spent(t0, "ml"); s != 0 {
		t.Errorf("a rejected batch charged %d", s)
	}
	if h.hash() != before {
		t.Error("rejected records changed the state")
	}
}

// TestExchangeRateValidation: rates are positive canonical decimals with at
// most 12 fractional digits, one per pair.
func TestExchangeRateValidation(t *testing.T) {
	for _, tc := range []struct {
		rates []fsm.ExchangeRate
		want  string
	}{
		{[]fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "0"}}, "is zero"},
		{[]fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.10"}}, `not canonical (want "1.1")`},
		{[]fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "-1"}}, "not a positive decimal"},
		{[]fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1e3"}}, "not a positive decimal"},
		{[]fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "0.0000000000001"}}, "13 fractional digits"},
		{[]fsm.ExchangeRate{{From: "EUR", To: "EUR", Rate: "1"}}, "from and to are both EUR"},
		{[]fsm.ExchangeRate{{From: "EUR", To: "usd", Rate: "1"}}, "rates[0].to"},
		{[]fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1"}, {From: "EUR", To: "USD", Rate: "2"}}, "appears twice"},
	} {
		err := fsm.Validate(&fsm.SetExchangeRates{Rates: tc.rates})
		if err == nil || !strings.Contains(err.Message, tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.rates, err, tc.want)
		}
	}
	h := newHarness(t)
	h.ok(t0, &fsm.SetExchangeRates{Rates: []fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.1"}, {From: "GBP", To: "USD", Rate: "1.25"}}})
	r := h.ok(t0, &fsm.SetExchangeRates{Rates: []fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.2"}}})
	if len(r.Rates) != 2 || r.Rates[0].Rate != "1.2" || r.Rates[1].Rate != "1.25" {
		t.Errorf("upsert: table %+v", r.Rates)
	}
	r = h.ok(t0, &fsm.SetExchangeRates{ReplaceAll: true, Rates: []fsm.ExchangeRate{{From: "JPY", To: "USD", Rate: "0.0067"}}})
	if len(r.Rates) != 1 || r.Rates[0].From != "JPY" {
		t.Errorf("replace all: table %+v", r.Rates)
	}
}

// TestCostExactness (acceptance 1 at the state machine): 100k records with
// random decimal amounts in 3 currencies. Report totals equal the exact sum
// computed here independently (each currency's exact sum, converted once,
// half to even), budgets are charged exactly (each record converted,
// half to even), and a restored copy reports the same.
func TestCostExactness(t *testing.T) {
	const records, batch = 100_000, 1000
	h := newHarness(t)
	rates := map[string]string{"EUR": "1.083712345678", "JPY": "0.006712"}
	var xs []fsm.ExchangeRate
	for c, r := range rates {
		xs = append(xs, fsm.ExchangeRate{From: c, To: "USD", Rate: r})
	}
	h.ok(t0, &fsm.SetExchangeRates{Rates: xs})
	h.create(t0, selectorBudget("all-ml", "USD", usd(t, "1000000000"), selector(in("team", "ml"))))

	rng := rand.New(rand.NewPCG(1, 2))
	currencies := []string{"USD", "EUR", "JPY"}
	teams := []string{"ml", "web", "data"}
	perCurrency := map[string]*big.Int{}        // exact sum per currency, all records
	perTeam := map[string]map[string]*big.Int{} // team -> currency -> sum
	charged := new(big.Int)                     // what all-ml must have been charged
	now := t0
	for n := 0; n < records; n += batch {
		costs := make([]fsm.CostSpec, batch)
		for i := range costs {
			cur, team := currencies[rng.IntN(3)], teams[rng.IntN(3)]
			micros := rng.Int64N(50_000_000_000) + 1 // up to 50,000 units, 6 decimals
			costs[i] = fsm.CostSpec{AmountMicros: micros, Currency: cur, Resource: "llm",
				Labels: labels("team", team), OccurredAtMs: now - rng.Int64N(48*hourMs)}
			m := big.NewInt(micros)
			if perCurrency[cur] == nil {
				perCurrency[cur] = new(big.Int)
			}
			perCurrency[cur].Add(perCurrency[cur], m)
			if perTeam[team] == nil {
				perTeam[team] = map[string]*big.Int{}
			}
			if perTeam[team][cur] == nil {
				perTeam[team][cur] = new(big.Int)
			}
			perTeam[team][cur].Add(perTeam[team][cur], m)
			if team == "ml" {
				rate := "1"
				if cur != "USD" {
					rate = rates[cur]
				}
				charged.Add(charged, halfEven(m, rate))
			}
		}
		h.record(now, costs...)
		now += 1000
	}
	convert := func(sums map[string]*big.Int) int64 {
		total := new(big.Int)
		for cur, s := range sums {
			rate := "1"
			if cur != "USD" {
				rate = rates[cur]
			}
			total.Add(total, halfEven(s, rate))
		}
		return total.Int64()
	}
	q := fsm.ReportQuery{Tenant: tenant, FromMs: t0 - 72*hourMs, ToMs: now + hourMs, Bucket: fsm.BucketAll, Timezone: "UTC", Currency: "USD"}
	rows := h.report(now, q)
	if len(rows) != 1 || rows[0].AmountMicros != convert(perCurrency) || rows[0].Count != records {
		t.Fatalf("total report %+v, want %d over %d records", rows, convert(perCurrency), records)
	}
	q.GroupBy = []string{"team"}
	rows = h.report(now, q)
	if len(rows) != 3 {
		t.Fatalf("by team: %d rows, want 3", len(rows))
	}
	for _, r := range rows {
		if want := convert(perTeam[r.Group[0]]); r.AmountMicros != want {
			t.Errorf("team %s: %d, want %d", r.Group[0], r.AmountMicros, want)
		}
	}
	if got := h.spent(now, "all-ml"); got != charged.Int64() {
		t.Errorf("all-ml charged %d, want exactly %d", got, charged.Int64())
	}
	c := h.restoredCopy()
	if c.hash() != h.hash() {
		t.Fatal("a restored copy hashes differently")
	}
	if again := c.report(now, q); fmt.Sprint(again) != fmt.Sprint(rows) {
		t.Errorf("restored copy reports %v, want %v", again, rows)
	}
}

// TestReportBucketsInTimezone: day buckets follow local midnight, including
// across a DST change (Europe/Berlin, 2025-03-30: a 23-hour day), and month
// buckets in another zone.
func TestReportBucketsInTimezone(t *testing.T) {
	h := newHarness(t)
	now := localMs(t, "Europe/Berlin", "2025-04-01T12:00:00")
	// One 1 USD record every hour from 03-29 00:00 to 03-31 23:00 Berlin.
	start := localMs(t, "Europe/Berlin", "2025-03-29T00:00:00")
	end := localMs(t, "Europe/Berlin", "2025-04-01T00:00:00")
	var costs []fsm.CostSpec
	for at := start; at < end; at += hourMs {
		costs = append(costs, cost(t, "1", "USD", "llm", at))
	}
	h.record(now, costs...)
	rows := h.report(now, fsm.ReportQuery{Tenant: tenant, FromMs: start, ToMs: end, Bucket: fsm.BucketDay,
		Timezone: "Europe/Berlin", Currency: "USD"})
	want := []struct {
		day   string
		hours int64
	}{{"2025-03-29T00:00:00", 24}, {"2025-03-30T00:00:00", 23}, {"2025-03-31T00:00:00", 24}}
	if len(rows) != len(want) {
		t.Fatalf("%d day rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		if rows[i].BucketStartMs != localMs(t, "Europe/Berlin", w.day) || rows[i].AmountMicros != w.hours*usd(t, "1") {
			t.Errorf("day %s: %+v, want %d hours", w.day, rows[i], w.hours)
		}
	}
	// The same hours by month in New York: March only (UTC-4 then).
	rows = h.report(now, fsm.ReportQuery{Tenant: tenant, FromMs: start, ToMs: end, Bucket: fsm.BucketMonth,
		Timezone: "America/New_York", Currency: "USD"})
	if len(rows) != 1 || rows[0].BucketStartMs != localMs(t, "America/New_York", "2025-03-01T00:00:00") || rows[0].Count != 71 {
		t.Errorf("by month in New York: %+v", rows)
	}
	// A report in a currency without a rate names the currency.
	_, err := h.m.Read(now, func(v fsm.View) error {
		_, err := v.Report(fsm.ReportQuery{Tenant: tenant, FromMs: start, ToMs: end, Bucket: fsm.BucketAll, Timezone: "UTC", Currency: "EUR"})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "no exchange rate from USD to EUR") {
		t.Errorf("report in EUR without a rate: %v", err)
	}
}

// TestCostRollupRetentionAndSnapshot: rollup hours older than the retention
// are dropped; a snapshot carries rates, rollups and selectors exactly, and
// a snapshot with a duplicated rollup row is refused.
func TestCostRollupRetentionAndSnapshot(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.SetExchangeRates{Rates: []fsm.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.1"}}})
	h.create(t0, selectorBudget("ml", "USD", usd(t, "100"), selector(in("team", "ml"))))
	h.record(t0, cost(t, "1", "EUR", "llm", t0-2*hourMs, "team", "ml"), cost(t, "2", "USD", "llm", t0, "team", "ml"))
	c := h.restoredCopy()
	if c.hash() != h.hash() {
		t.Fatal("restored copy hashes differently")
	}
	// The copy charges the selector budget like the original.
	c.record(t0, cost(t, "1", "EUR", "llm", t0, "team", "ml"))
	h.record(t0, cost(t, "1", "EUR", "llm", t0, "team", "ml"))
	if c.hash() != h.hash() || c.spent(t0, "ml") != usd(t, "4.2") {
		t.Errorf("after restore: spent %d, want 4.2 and equal hashes", c.spent(t0, "ml"))
	}
	// Past the retention the old hour goes, the newer stays.
	later := t0 - 2*hourMs + fsm.CostRetentionMs + hourMs
	h.apply(later, &fsm.Noop{})
	rows := h.report(later, fsm.ReportQuery{Tenant: tenant, FromMs: t0 - 3*hourMs, ToMs: t0 + hourMs, Bucket: fsm.BucketAll,
		Timezone: "UTC", Currency: "USD"})
	if len(rows) != 1 || rows[0].Count != 2 {
		t.Errorf("after the oldest hour expired: %+v, want the 2 newer records", rows)
	}
	// A duplicated rollup row (record type 10) is refused.
	rec := func(typ byte, v any) []byte {
		body, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.AppendUvarint([]byte{typ}, uint64(len(body))), body...)
	}
	row := map[string]any{"t": tenant, "h": t0 - t0%hourMs, "r": map[string]any{"rs": "llm", "cu": "USD", "a": 5, "n": 1}}
	snap := []byte("TGSNAP")
	snap = append(snap, rec(1, map[string]any{"v": fsm.SnapshotFormatVersion, "i": 0, "t": t0})...)
	snap = append(snap, rec(10, row)...)
	good := append(append([]byte(nil), snap...), rec(255, map[string]any{"cr": 1})...)
	if err := fsm.New().Restore(bytes.NewReader(good)); err != nil {
		t.Fatalf("one rollup row: %v", err)
	}
	snap = append(snap, rec(10, row)...)
	snap = append(snap, rec(255, map[string]any{"cr": 2})...)
	if err := fsm.New().Restore(bytes.NewReader(snap)); err == nil || !strings.Contains(err.Error(), "a row appears twice") {
		t.Errorf("duplicated rollup row: %v", err)
	}
}
