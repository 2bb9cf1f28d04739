package fsm_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func pool(id string, capacity int64, period fsm.Period, tz string, strategy fsm.Strategy) *fsm.CreateQuotaPool {
	return &fsm.CreateQuotaPool{Tenant: tenant, Pool: fsm.QuotaPoolSpec{ID: id, Resource: "gpu-hours", CapacityMicros: capacity,
		Period: period, Timezone: tz, Enforcement: fsm.EnforcementHard, Strategy: strategy}}
}

func (h *harness) quota(nowMs int64, c fsm.Command) *fsm.QuotaResult {
	h.t.Helper()
	r := h.ok(nowMs, c)
	if r.Quota == nil {
		h.t.Fatalf("%T: no quota result", c)
	}
	return r.Quota
}

func allocs(p *fsm.QuotaPool) string {
	var parts []string
	for _, q := range p.Consumers {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", q.Spec.ID, fsm.FormatAmount(q.UsedMicros, 0), fsm.FormatAmount(q.AllocatedMicros, 0)))
	}
	return strings.Join(parts, " ")
}

// TestQuotaAllocateAndConsume: allocations follow demands (FAIR_SHARE),
// a HARD pool denies use beyond a consumer's allocation and a SOFT one
// allows it as would-deny, and every allocation change is deterministic.
func TestQuotaAllocateAndConsume(t *testing.T) {
	h := newHarness(t)
	h.quota(t0, pool("gpu", usd(t, "100"), fsm.PeriodNone, "UTC", fsm.StrategyFairShare))
	for _, id := range []string{"a", "b", "c"} {
		h.quota(t0, &fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "gpu", Consumer: fsm.QuotaConsumerSpec{ID: id, Weight: 1}})
	}
	h.quota(t0, &fsm.SetQuotaDemand{Tenant: tenant, PoolID: "gpu", ConsumerID: "a", DemandMicros: usd(t, "10")})
	h.quota(t0, &fsm.SetQuotaDemand{Tenant: tenant, PoolID: "gpu", ConsumerID: "b", DemandMicros: usd(t, "100")})
	r := h.quota(t0, &fsm.SetQuotaDemand{Tenant: tenant, PoolID: "gpu", ConsumerID: "c", DemandMicros: usd(t, "100")})
	if got := allocs(r.Pool); got != "a=0/10 b=0/45 c=0/45" {
		t.Fatalf("allocations %s", got)
	}
	if r := h.quota(t0, &fsm.QuotaConsume{Tenant: tenant, PoolID: "gpu", ConsumerID: "a", AmountMicros: usd(t, "10")}); !r.Allowed {
		t.Fatal("a's whole allocation was denied")
	}
	r = h.quota(t0, &fsm.QuotaConsume{Tenant: tenant, PoolID: "gpu", ConsumerID: "a", AmountMicros: 1})
	if r.Allowed || r.Reason != fsm.ReasonQuotaExhausted || allocs(r.Pool) != "a=10/10 b=0/45 c=0/45" {
		t.Fatalf("past the allocation: %+v %s", r, allocs(r.Pool))
	}
	// A consumer leaving frees its share for the others.
	r = h.quota(t0, &fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "gpu", Consumer: fsm.QuotaConsumerSpec{ID: "c"}, Delete: true})
	if got := allocs(r.Pool); got != "a=10/10 b=0/90" {
		t.Fatalf("after c left: %s", got)
	}
	// SOFT: allowed, flagged.
	soft := pool("soft", usd(t, "5"), fsm.PeriodNone, "UTC", fsm.StrategyProportional)
	soft.Pool.Enforcement = fsm.EnforcementSoft
	h.quota(t0, soft)
	h.quota(t0, &fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "soft", Consumer: fsm.QuotaConsumerSpec{ID: "x", Weight: 1}})
	if r := h.quota(t0, &fsm.QuotaConsume{Tenant: tenant, PoolID: "soft", ConsumerID: "x", AmountMicros: usd(t, "6")}); !r.Allowed || !r.WouldDeny {
		t.Fatalf("soft pool: %+v", r)
	}
	// Bad input names the field; unknown objects are NotFound.
	if err := fsm.Validate(&fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "gpu", Consumer: fsm.QuotaConsumerSpec{ID: "d", Weight: 1, MinMicros: 5, MaxMicros: 2}}); err == nil ||
		!strings.Contains(err.Message, "consumer.max is below consumer.min") {
		t.Errorf("max below min: %v", err)
	}
	h.fail(t0, &fsm.QuotaConsume{Tenant: tenant, PoolID: "gpu", ConsumerID: "zz", AmountMicros: 1}, fsm.CodeNotFound)
	// A restored copy has the same pools and allocations.
	if c := h.restoredCopy(); c.hash() != h.hash() {
		t.Error("restored copy hashes differently")
	}
}

// TestQuotaRenewsAtPeriodBoundaries ([quotas] acceptance 2): a daily pool in
// Berlin renews at local midnight across the spring DST change (a 23-hour
// day), a monthly pool in New York at local midnight of the 1st across its
// DST change; usage moves to the history.
func TestQuotaRenewsAtPeriodBoundaries(t *testing.T) {
	h := newHarness(t)
	start := localMs(t, "Europe/Berlin", "2025-03-29T12:00:00")
	h.quota(start, pool("day", usd(t, "10"), fsm.PeriodDay, "Europe/Berlin", fsm.StrategyProportional))
	h.quota(start, &fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "day", Consumer: fsm.QuotaConsumerSpec{ID: "a", Weight: 1}})
	h.quota(localMs(t, "Europe/Berlin", "2025-03-29T23:59:59.999"), &fsm.QuotaConsume{Tenant: tenant, PoolID: "day", ConsumerID: "a", AmountMicros: usd(t, "10")})
	// The DST day: 00:00 to 24:00 local is 23 hours.
	r := h.quota(localMs(t, "Europe/Berlin", "2025-03-30T00:00:00"), &fsm.QuotaConsume{Tenant: tenant, PoolID: "day", ConsumerID: "a", AmountMicros: usd(t, "4")})
	p := r.Pool
	if !r.Allowed || p.PeriodStartMs != localMs(t, "Europe/Berlin", "2025-03-30T00:00:00") ||
		p.PeriodEndMs != localMs(t, "Europe/Berlin", "2025-03-31T00:00:00") || p.PeriodEndMs-p.PeriodStartMs != 23*hourMs {
		t.Fatalf("DST day: allowed %v, period [%d, %d)", r.Allowed, p.PeriodStartMs, p.PeriodEndMs)
	}
	if len(p.History) != 1 || p.History[0].UsedMicros != usd(t, "10") || p.History[0].ByConsumer["a"] != usd(t, "10") ||
		p.History[0].EndMs != p.PeriodStartMs || allocs(p) != "a=4/10" {
		t.Fatalf("after renewal: history %+v, %s", p.History, allocs(p))
	}

	ny := localMs(t, "America/New_York", "2025-03-05T09:00:00")
	h.quota(ny, pool("month", usd(t, "100"), fsm.PeriodMonth, "America/New_York", fsm.StrategyFixed))
	h.quota(ny, &fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "month", Consumer: fsm.QuotaConsumerSpec{ID: "a", Weight: 1, FixedMicros: usd(t, "60")}})
	h.quota(ny, &fsm.QuotaConsume{Tenant: tenant, PoolID: "month", ConsumerID: "a", AmountMicros: usd(t, "60")})
	before := localMs(t, "America/New_York", "2025-03-31T23:59:59.999")
	if r := h.quota(before, &fsm.QuotaConsume{Tenant: tenant, PoolID: "month", ConsumerID: "a", AmountMicros: 1}); r.Allowed {
		t.Fatal("allowed past the allocation before the month ended")
	}
	r = h.quota(localMs(t, "America/New_York", "2025-04-01T00:00:00"), &fsm.QuotaConsume{Tenant: tenant, PoolID: "month", ConsumerID: "a", AmountMicros: usd(t, "60")})
	if !r.Allowed || r.Pool.PeriodStartMs != localMs(t, "America/New_York", "2025-04-01T00:00:00") ||
		r.Pool.History[0].StartMs != localMs(t, "America/New_York", "2025-03-01T00:00:00") {
		t.Fatalf("new month: %+v", r)
	}
	// A manual renewal closes the period now and keeps the calendar end.
	now := localMs(t, "America/New_York", "2025-04-10T12:00:00")
	r = h.quota(now, &fsm.RenewQuotaPool{Tenant: tenant, PoolID: "month"})
	if r.Pool.PeriodStartMs != now || r.Pool.PeriodEndMs != localMs(t, "America/New_York", "2025-05-01T00:00:00") ||
		r.Pool.History[0].EndMs != now || allocs(r.Pool) != "a=0/60" {
		t.Fatalf("manual renewal: %+v", r.Pool)
	}
}

// TestQuotaUpdateDeleteBatchList: a batch of consumers reallocates once, a
// capacity or strategy update reallocates, pools list by id in pages, and a
// deleted pool is gone.
func TestQuotaUpdateDeleteBatchList(t *testing.T) {
	h := newHarness(t)
	h.quota(t0, pool("p2", usd(t, "90"), fsm.PeriodNone, "UTC", fsm.StrategyProportional))
	h.quota(t0, pool("p1", usd(t, "1"), fsm.PeriodNone, "UTC", fsm.StrategyProportional))
	r := h.quota(t0, &fsm.SetQuotaConsumers{Tenant: tenant, PoolID: "p2", Consumers: []fsm.QuotaConsumerSpec{
		{ID: "x", Weight: 1}, {ID: "y", Weight: 2}}})
	if got := allocs(r.Pool); got != "x=0/30 y=0/60" {
		t.Fatalf("batch: %s", got)
	}
	r = h.quota(t0, &fsm.UpdateQuotaPool{Tenant: tenant, Fields: fsm.UpdatePoolCapacity | fsm.UpdatePoolStrategy,
		Pool: fsm.QuotaPoolSpec{ID: "p2", CapacityMicros: usd(t, "60"), Strategy: fsm.StrategyFixed}})
	if got := allocs(r.Pool); got != "x=0/0 y=0/0" || r.Pool.Version != 3 {
		t.Fatalf("after update to FIXED without fixed amounts: %s (v%d)", got, r.Pool.Version)
	}
	if err := fsm.Validate(&fsm.SetQuotaConsumers{Tenant: tenant, PoolID: "p2", Consumers: []fsm.QuotaConsumerSpec{{ID: "x", Weight: 1}, {ID: "x", Weight: 1}}}); err == nil ||
		!strings.Contains(err.Message, `consumers[1]: "x" appears twice`) {
		t.Errorf("duplicate in a batch: %v", err)
	}
	var page []*fsm.QuotaPool
	var next string
	h.m.Read(t0, func(v fsm.View) error { page, next = v.QuotaPools(tenant, "", 1); return nil })
	if len(page) != 1 || page[0].Spec.ID != "p1" || next != "p1" {
		t.Fatalf("first page: %d pools, next %q", len(page), next)
	}
	h.m.Read(t0, func(v fsm.View) error { page, next = v.QuotaPools(tenant, next, 1); return nil })
	if len(page) != 1 || page[0].Spec.ID != "p2" || next != "" {
		t.Fatalf("second page: %d pools, next %q", len(page), next)
	}
	h.quota(t0, &fsm.DeleteQuotaPool{Tenant: tenant, PoolID: "p2"})
	h.fail(t0, &fsm.QuotaConsume{Tenant: tenant, PoolID: "p2", ConsumerID: "x", AmountMicros: 1}, fsm.CodeNotFound)
}
