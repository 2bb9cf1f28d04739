package fsm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func TestValidateRejects(t *testing.T) {
	long := strings.Repeat("a", fsm.IDBytesMax+1)
	withBudget := func(edit func(b *fsm.BudgetSpec)) *fsm.CreateBudget {
		b := spec("b", 1_000_000)
		edit(&b)
		return &fsm.CreateBudget{Tenant: tenant, Budget: b}
	}
	thresholds17 := make([]uint32, fsm.ThresholdsMax+1)
	for i := range thresholds17 {
		thresholds17[i] = uint32(i + 1)
	}
	items1001 := make([]fsm.ConsumeItem, fsm.BatchItemsMax+1)
	for i := range items1001 {
		items1001[i] = fsm.ConsumeItem{BudgetID: "b", AmountMicros: 1}
	}
	policy := func(edit func(p *fsm.PolicySpec)) *fsm.CreatePolicy {
		p := fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmTokenBucket, Limit: 10, WindowMs: 1000, Burst: 10}
		edit(&p)
		return &fsm.CreatePolicy{Tenant: tenant, Policy: p}
	}

	cases := []struct {
		name  string
		cmd   fsm.Command
		field string // the message must name it
	}{
		{"empty tenant", &fsm.Consume{BudgetID: "b", AmountMicros: 1}, "tenant"},
		{"tenant with a space", &fsm.Consume{Tenant: "ac me", BudgetID: "b", AmountMicros: 1}, "tenant"},
		{"tenant with a slash", &fsm.Consume{Tenant: "acme/x", BudgetID: "b", AmountMicros: 1}, "tenant"},
		{"tenant with non-ASCII", &fsm.Consume{Tenant: "acmé", BudgetID: "b", AmountMicros: 1}, "tenant"},
		{"oversized tenant", &fsm.Consume{Tenant: long, BudgetID: "b", AmountMicros: 1}, "tenant"},
		{"oversized request id", &fsm.Consume{Tenant: tenant, RequestID: strings.Repeat("r", fsm.RequestIDBytesMax+1), BudgetID: "b", AmountMicros: 1}, "request_id"},
		{"request id with a space", &fsm.Consume{Tenant: tenant, RequestID: "r 1", BudgetID: "b", AmountMicros: 1}, "request_id"},
		{"request id with a control byte", &fsm.Consume{Tenant: tenant, RequestID: "r\x01", BudgetID: "b", AmountMicros: 1}, "request_id"},
		{"empty budget id", &fsm.Consume{Tenant: tenant, AmountMicros: 1}, "budget_id"},
		{"budget id with a star", &fsm.Consume{Tenant: tenant, BudgetID: "b*", AmountMicros: 1}, "budget_id"},
		{"oversized budget id", &fsm.Consume{Tenant: tenant, BudgetID: long, AmountMicros: 1}, "budget_id"},
		{"consume 0", &fsm.Consume{Tenant: tenant, BudgetID: "b"}, "amount"},
		{"consume negative", &fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: -1}, "amount"},
		{"consume too much", &fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: fsm.AmountMaxMicros + 1}, "amount"},

		{"create: empty id", withBudget(func(b *fsm.BudgetSpec) { b.ID = "" }), "budget.id"},
		{"create: id with a space", withBudget(func(b *fsm.BudgetSpec) { b.ID = "my budget" }), "budget.id"},
		{"create: oversized id", withBudget(func(b *fsm.BudgetSpec) { b.ID = long }), "budget.id"},
		{"create: bad parent id", withBudget(func(b *fsm.BudgetSpec) { b.ParentID = "p#" }), "budget.parent_id"},
		{"create: own parent", withBudget(func(b *fsm.BudgetSpec) { b.ParentID = b.ID }), "budget.parent_id"},
		{"create: lower-case currency", withBudget(func(b *fsm.BudgetSpec) { b.Currency = "usd" }), "budget.currency"},
		{"create: unknown currency", withBudget(func(b *fsm.BudgetSpec) { b.Currency = "XYZ" }), "budget.currency"},
		{"create: empty currency", withBudget(func(b *fsm.BudgetSpec) { b.Currency = "" }), "budget.currency"},
		{"create: unknown timezone", withBudget(func(b *fsm.BudgetSpec) { b.Timezone = "Mars/Olympus_Mons" }), "budget.timezone"},
		{"create: empty timezone", withBudget(func(b *fsm.BudgetSpec) { b.Timezone = "" }), "budget.timezone"},
		{"create: Local timezone", withBudget(func(b *fsm.BudgetSpec) { b.Timezone = "Local" }), "budget.timezone"},
		{"create: oversized timezone", withBudget(func(b *fsm.BudgetSpec) { b.Timezone = strings.Repeat("Z", fsm.TimezoneBytesMax+1) }), "budget.timezone"},
		{"create: period 0", withBudget(func(b *fsm.BudgetSpec) { b.Period = 0 }), "budget.period"},
		{"create: period 8", withBudget(func(b *fsm.BudgetSpec) { b.Period = 8 }), "budget.period"},
		{"create: custom period too short", withBudget(func(b *fsm.BudgetSpec) {
			b.Period, b.CustomPeriodMs = fsm.PeriodCustom, fsm.CustomPeriodMinMs-1
		}), "budget.custom_period"},
		{"create: custom period too long", withBudget(func(b *fsm.BudgetSpec) {
			b.Period, b.CustomPeriodMs = fsm.PeriodCustom, fsm.CustomPeriodMaxMs+1
		}), "budget.custom_period"},
		{"create: custom period missing", withBudget(func(b *fsm.BudgetSpec) { b.Period = fsm.PeriodCustom }), "budget.custom_period"},
		{"create: custom length on a day period", withBudget(func(b *fsm.BudgetSpec) {
			b.Period, b.CustomPeriodMs = fsm.PeriodDay, 36*hourMs
		}), "budget.custom_period"},
		{"create: amount 0", withBudget(func(b *fsm.BudgetSpec) { b.AmountMicros = 0 }), "budget.amount"},
		{"create: amount negative", withBudget(func(b *fsm.BudgetSpec) { b.AmountMicros = -5 }), "budget.amount"},
		{"create: amount too large", withBudget(func(b *fsm.BudgetSpec) { b.AmountMicros = fsm.AmountMaxMicros + 1 }), "budget.amount"},
		{"create: enforcement 0", withBudget(func(b *fsm.BudgetSpec) { b.Enforcement = 0 }), "budget.enforcement"},
		{"create: enforcement 4", withBudget(func(b *fsm.BudgetSpec) { b.Enforcement = 4 }), "budget.enforcement"},
		{"create: equal thresholds", withBudget(func(b *fsm.BudgetSpec) { b.Thresholds = []uint32{50, 50} }), "budget.thresholds_percent"},
		{"create: descending thresholds", withBudget(func(b *fsm.BudgetSpec) { b.Thresholds = []uint32{80, 50} }), "budget.thresholds_percent"},
		{"create: threshold 0", withBudget(func(b *fsm.BudgetSpec) { b.Thresholds = []uint32{0, 50} }), "budget.thresholds_percent"},
		{"create: threshold above max", withBudget(func(b *fsm.BudgetSpec) { b.Thresholds = []uint32{fsm.ThresholdPercentMax + 1} }), "budget.thresholds_percent"},
		{"create: too many thresholds", withBudget(func(b *fsm.BudgetSpec) { b.Thresholds = thresholds17 }), "budget.thresholds_percent"},

		{"update: empty mask", &fsm.UpdateBudget{Tenant: tenant, Budget: spec("b", 1)}, "update_mask"},
		{"update: unknown mask bit", &fsm.UpdateBudget{Tenant: tenant, Fields: 1 << 4, Budget: spec("b", 1)}, "update_mask"},
		{"update: empty id", &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: spec("", 1)}, "budget.id"},
		{"update: amount 0", &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: spec("b", 0)}, "budget.amount"},
		{"update: bad enforcement", &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateEnforcement,
			Budget: fsm.BudgetSpec{ID: "b", Enforcement: 9}}, "budget.enforcement"},
		{"update: thresholds not ascending", &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateThresholds,
			Budget: fsm.BudgetSpec{ID: "b", Thresholds: []uint32{100, 90}}}, "budget.thresholds_percent"},

		{"delete: empty id", &fsm.DeleteBudget{Tenant: tenant}, "budget_id"},

		{"atomic: no items", &fsm.ConsumeAtomic{Tenant: tenant}, "items"},
		{"atomic: too many items", &fsm.ConsumeAtomic{Tenant: tenant, Items: items1001}, "items"},
		{"atomic: bad item id", &fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{
			{BudgetID: "b", AmountMicros: 1}, {BudgetID: "", AmountMicros: 1}}}, "items[1]"},
		{"atomic: item amount 0", &fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{{BudgetID: "b"}}}, "items[0].amount"},

		{"reserve: ttl too short", &fsm.Reserve{Tenant: tenant, BudgetID: "b", AmountMicros: 1, TTLMs: fsm.HoldTTLMinMs - 1}, "ttl"},
		{"reserve: ttl too long", &fsm.Reserve{Tenant: tenant, BudgetID: "b", AmountMicros: 1, TTLMs: fsm.HoldTTLMaxMs + 1}, "ttl"},
		{"reserve: amount 0", &fsm.Reserve{Tenant: tenant, BudgetID: "b", TTLMs: 60_000}, "amount"},
		{"reserve: empty budget id", &fsm.Reserve{Tenant: tenant, AmountMicros: 1, TTLMs: 60_000}, "budget_id"},
		{"commit: negative amount", &fsm.Commit{Tenant: tenant, HoldID: "h1-0", AmountMicros: -1}, "amount"},
		{"commit: amount too large", &fsm.Commit{Tenant: tenant, HoldID: "h1-0", AmountMicros: fsm.AmountMaxMicros + 1}, "amount"},
		{"commit: empty hold id", &fsm.Commit{Tenant: tenant, AmountMicros: 1}, "hold_id"},
		{"release: bad hold id", &fsm.Release{Tenant: tenant, HoldID: "h 1"}, "hold_id"},

		{"policy: empty id", policy(func(p *fsm.PolicySpec) { p.ID = "" }), "policy.id"},
		{"policy: algorithm 0", policy(func(p *fsm.PolicySpec) { p.Algorithm = 0 }), "policy.algorithm"},
		{"policy: algorithm 7", policy(func(p *fsm.PolicySpec) { p.Algorithm = 7 }), "policy.algorithm"},
		{"policy: limit 0", policy(func(p *fsm.PolicySpec) { p.Limit = 0 }), "policy.limit"},
		{"policy: limit too large", policy(func(p *fsm.PolicySpec) { p.Limit = fsm.RateLimitMax + 1 }), "policy.limit"},
		{"policy: window 0", policy(func(p *fsm.PolicySpec) { p.WindowMs = 0 }), "policy.window"},
		{"policy: window too long", policy(func(p *fsm.PolicySpec) { p.WindowMs = fsm.RateWindowMaxMs + 1 }), "policy.window"},
		{"policy: burst 0", policy(func(p *fsm.PolicySpec) { p.Burst = 0 }), "policy.burst"},
		{"policy: sliding log limit", policy(func(p *fsm.PolicySpec) {
			p.Algorithm, p.Limit = fsm.AlgorithmSlidingWindowLog, fsm.SlidingLogLimitMax+1
		}), "policy.limit"},
		{"policy: scale percent 0", policy(func(p *fsm.PolicySpec) { p.Scales = []fsm.PriorityScale{{Priority: 1, Percent: 0}} }), "policy.priority_scales[0].percent"},
		{"policy: scale percent 101", policy(func(p *fsm.PolicySpec) { p.Scales = []fsm.PriorityScale{{Priority: 1, Percent: 101}} }), "policy.priority_scales[0].percent"},
		{"policy: unsorted scales", policy(func(p *fsm.PolicySpec) {
			p.Scales = []fsm.PriorityScale{{Priority: 2, Percent: 50}, {Priority: 1, Percent: 50}}
		}), "policy.priority_scales"},
		{"policy update: empty mask", &fsm.UpdatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p"}}, "update_mask"},
		{"policy update: empty id", &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit}, "policy.id"},
		{"policy delete: empty id", &fsm.DeletePolicy{Tenant: tenant}, "policy_id"},
		{"check: empty key", &fsm.RateCheck{Tenant: tenant, PolicyID: "p", Cost: 1}, "key"},
		{"check: oversized key", &fsm.RateCheck{Tenant: tenant, PolicyID: "p", Key: strings.Repeat("k", fsm.RateKeyBytesMax+1), Cost: 1}, "key"},
		{"check: cost 0", &fsm.RateCheck{Tenant: tenant, PolicyID: "p", Key: "k"}, "cost"},
		{"check: empty policy", &fsm.RateCheck{Tenant: tenant, Key: "k", Cost: 1}, "policy_id"},
	}
	h := newHarness(t)
	for _, c := range cases {
		err := fsm.Validate(c.cmd)
		if err == nil {
			t.Errorf("%s: Validate accepted %+v", c.name, c.cmd)
			continue
		}
		if err.Code != fsm.CodeInvalidArgument || !errors.Is(err, fsm.ErrInvalidArgument) {
			t.Errorf("%s: code %d, want InvalidArgument", c.name, err.Code)
		}
		if !strings.Contains(err.Message, c.field) {
			t.Errorf("%s: message %q does not name %q", c.name, err.Message, c.field)
		}
		// Apply re-validates: the replicated path refuses the same command
		// with the same error.
		if got := h.fail(t0, c.cmd, fsm.CodeInvalidArgument); *got != *err {
			t.Errorf("%s: apply returned %v, Validate %v", c.name, got, err)
		}
	}
	// ... and nothing of them was stored.
	h.m.Read(t0, func(v fsm.View) error {
		if got := v.Counts(); got != (fsm.Counts{}) {
			t.Errorf("after refused commands: %+v, want empty tables", got)
		}
		return nil
	})
}

func TestValidateAccepts(t *testing.T) {
	maxID := strings.Repeat("a", fsm.IDBytesMax)
	full := spec("b.1_x:y-Z", fsm.AmountMaxMicros)
	full.Period, full.CustomPeriodMs = fsm.PeriodCustom, fsm.CustomPeriodMaxMs
	full.Timezone = "America/New_York"
	full.Enforcement = fsm.EnforcementShadow
	full.Thresholds = []uint32{1, 50, 100, fsm.ThresholdPercentMax}
	for _, c := range []fsm.Command{
		&fsm.Noop{},
		&fsm.Consume{Tenant: maxID, RequestID: strings.Repeat("~", fsm.RequestIDBytesMax), BudgetID: maxID, AmountMicros: fsm.AmountMaxMicros},
		&fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: 1},
		&fsm.CreateBudget{Tenant: tenant, Budget: full},
		&fsm.CreateBudget{Tenant: tenant, Budget: fsm.BudgetSpec{ID: "c", ParentID: "b", AmountMicros: 1, Currency: "EUR",
			Period: fsm.PeriodCustom, CustomPeriodMs: fsm.CustomPeriodMinMs, Timezone: "UTC", Enforcement: fsm.EnforcementSoft}},
		&fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: fsm.BudgetSpec{ID: "b", AmountMicros: 1}},
		&fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateThresholds, Budget: fsm.BudgetSpec{ID: "b"}}, // clears them
		&fsm.Reserve{Tenant: tenant, BudgetID: "b", AmountMicros: 1, TTLMs: fsm.HoldTTLMinMs},
		&fsm.Reserve{Tenant: tenant, BudgetID: "b", AmountMicros: 1, TTLMs: fsm.HoldTTLMaxMs},
		&fsm.Commit{Tenant: tenant, HoldID: "h1-0"}, // committing nothing releases the hold
		&fsm.Release{Tenant: tenant, HoldID: "h1-0"},
		&fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{{BudgetID: "b", AmountMicros: 1}}},
		&fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmGCRA, Limit: fsm.RateLimitMax,
			WindowMs: fsm.RateWindowMaxMs, Burst: 1, Scales: []fsm.PriorityScale{{Priority: 0, Percent: 100}, {Priority: 1, Percent: 1}}}},
		&fsm.RateCheck{Tenant: tenant, PolicyID: "p", Key: strings.Repeat("k", fsm.RateKeyBytesMax), Cost: fsm.RateLimitMax},
	} {
		if err := fsm.Validate(c); err != nil {
			t.Errorf("Validate(%T %+v) = %v, want nil", c, c, err)
		}
	}
}

// A command refused by validation is not remembered under its request id: a
// corrected retry with the same id is applied.
func TestInvalidCommandIsNotRemembered(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	h.fail(t0, &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b"}, fsm.CodeInvalidArgument)
	r := h.spend(t0, &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "1")})
	if !r.Allowed || r.SpentMicros != usd(t, "1") {
		t.Fatalf("corrected retry: %+v", r)
	}
}
