package fsm_test

import (
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

// idemSetup creates what the commands below act on: budget "b" (10 USD,
// threshold 50 %), budget "gone" to delete, hold "h3-0" of 2 USD on "b" to
// commit, hold "h4-0" of 1 USD on "b" to release, and policy "p".
func idemSetup(t *testing.T, h *harness) {
	t.Helper()
	b := spec("b", usd(t, "10"))
	b.Thresholds = []uint32{50}
	h.create(t0, b)
	h.create(t0, spec("gone", usd(t, "1")))
	if id := h.spend(t0, reserve("b", usd(t, "2"), 60_000)).HoldID; id != "h3-0" {
		t.Fatalf("hold id %s", id)
	}
	if id := h.spend(t0, reserve("b", usd(t, "1"), 60_000)).HoldID; id != "h4-0" {
		t.Fatalf("hold id %s", id)
	}
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmFixedWindow,
		Limit: 10, WindowMs: 1000, Burst: 10}})
}

// idemCommands are one command of every mutating type (except rate checks)
// with request id "r1"; each changes the state when first applied.
func idemCommands(t *testing.T) map[string]fsm.Command {
	return map[string]fsm.Command{
		"create": &fsm.CreateBudget{Tenant: tenant, RequestID: "r1", Budget: spec("new", usd(t, "5"))},
		"update": &fsm.UpdateBudget{Tenant: tenant, RequestID: "r1", Fields: fsm.UpdateAmount,
			Budget: fsm.BudgetSpec{ID: "b", AmountMicros: usd(t, "20")}},
		"delete":  &fsm.DeleteBudget{Tenant: tenant, RequestID: "r1", BudgetID: "gone"},
		"consume": &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "5")},
		"atomic": &fsm.ConsumeAtomic{Tenant: tenant, RequestID: "r1", Items: []fsm.ConsumeItem{
			{BudgetID: "b", AmountMicros: usd(t, "1")}, {BudgetID: "gone", AmountMicros: usd(t, "1")}}},
		"reserve": reserveWithID("r1", "b", usd(t, "3")),
		"commit":  &fsm.Commit{Tenant: tenant, RequestID: "r1", HoldID: "h3-0", AmountMicros: usd(t, "1")},
		"release": &fsm.Release{Tenant: tenant, RequestID: "r1", HoldID: "h4-0"},
		"create policy": &fsm.CreatePolicy{Tenant: tenant, RequestID: "r1", Policy: fsm.PolicySpec{ID: "q",
			Algorithm: fsm.AlgorithmTokenBucket, Limit: 5, WindowMs: 1000, Burst: 5}},
		"update policy": &fsm.UpdatePolicy{Tenant: tenant, RequestID: "r1", Fields: fsm.UpdateLimit,
			Policy: fsm.PolicySpec{ID: "p", Limit: 20}},
		"delete policy": &fsm.DeletePolicy{Tenant: tenant, RequestID: "r1", PolicyID: "p"},
	}
}

func reserveWithID(requestID, budgetID string, amount int64) *fsm.Reserve {
	return &fsm.Reserve{Tenant: tenant, RequestID: requestID, BudgetID: budgetID, AmountMicros: amount, TTLMs: 60_000}
}

// A retry returns the first result, marked Replayed, and changes nothing:
// the log with the retry leaves the same state as the log with a no-op.
func TestRetryReplaysTheFirstResult(t *testing.T) {
	for name, cmd := range idemCommands(t) {
		t.Run(name, func(t *testing.T) {
			retried, control := newHarness(t), newHarness(t)
			for _, h := range []*harness{retried, control} {
				idemSetup(t, h)
			}
			first := retried.one(t0+1, cmd)
			if first.Err != nil || first.Replayed {
				t.Fatalf("first apply: %+v (err %v)", first, first.Err)
			}
			if got := control.one(t0+1, cmd); !reflect.DeepEqual(got, first) {
				t.Fatalf("control differs: %+v vs %+v", got, first)
			}

			second := retried.one(t0+2000, cmd)
			control.one(t0+2000, &fsm.Noop{})
			if !second.Replayed {
				t.Fatalf("retry not marked replayed: %+v", second)
			}
			second.Replayed = false
			if !reflect.DeepEqual(second, first) {
				t.Fatalf("retry returned\n%+v\nfirst\n%+v", second, first)
			}
			if second.Index != first.Index || first.Index != 6 {
				t.Fatalf("result index %d, first %d; want 6", second.Index, first.Index)
			}
			if retried.hash() != control.hash() {
				t.Fatal("the retry changed the state")
			}
		})
	}
}

func TestRetryChargesOnce(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	c := &fsm.Consume{Tenant: tenant, RequestID: "r-1", BudgetID: "b", AmountMicros: usd(t, "4")}
	first := h.one(t0, c)
	// Retries in later entries and in the same entry.
	rs := append(h.apply(t0+1, c, c), h.one(t0+2, c))
	for i, r := range rs {
		if !r.Replayed {
			t.Fatalf("retry %d not replayed: %+v", i, r)
		}
		r.Replayed = false
		if !reflect.DeepEqual(r, first) {
			t.Fatalf("retry %d: %+v, want %+v", i, r, first)
		}
	}
	if got := h.spent(t0+2, "b"); got != usd(t, "4") {
		t.Fatalf("spent %d after retries, want one charge", got)
	}
	if b := h.budget(t0+2, "b"); b.AllowedCount != 1 {
		t.Fatalf("allowed %d times", b.AllowedCount)
	}
	h.m.Read(0, func(v fsm.View) error {
		if c := v.Counts(); c.IdempotencyEntries != 1 {
			t.Errorf("%d idempotency entries, want 1", c.IdempotencyEntries)
		}
		return nil
	})
}

// The first result is what a retry gets, even when it was a denial or an
// error that would go differently now.
func TestRetryReplaysDenialsAndErrors(t *testing.T) {
	h := newHarness(t)
	consume := &fsm.Consume{Tenant: tenant, RequestID: "early", BudgetID: "b", AmountMicros: usd(t, "1")}
	if r := h.one(t0, consume); r.Err == nil || r.Err.Code != fsm.CodeNotFound {
		t.Fatalf("consume before create: %+v", r)
	}
	h.create(t0, spec("b", usd(t, "10")))
	if r := h.one(t0, consume); !r.Replayed || r.Err == nil || r.Err.Code != fsm.CodeNotFound {
		t.Fatalf("retry after create: %+v", r)
	}

	big := &fsm.Consume{Tenant: tenant, RequestID: "big", BudgetID: "b", AmountMicros: usd(t, "11")}
	if d := h.spend(t0, big); d.Allowed {
		t.Fatalf("big consume allowed: %+v", d)
	}
	h.ok(t0, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: fsm.BudgetSpec{ID: "b", AmountMicros: usd(t, "100")}})
	if r := h.one(t0, big); !r.Replayed || r.Spend.Allowed || r.Spend.Reason != fsm.ReasonBudgetExceeded {
		t.Fatalf("retry of a denial after raising the amount: %+v", r)
	}
	if got := h.spent(t0, "b"); got != 0 {
		t.Fatalf("spent %d", got)
	}
}

func TestRequestIDReuseWithOtherParametersFails(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	h.create(t0, spec("c", usd(t, "10")))
	h.consume(t0, "b", 1) // an unrelated consume without id
	h.spend(t0, &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "2")})
	for _, c := range []fsm.Command{
		&fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "3")},
		&fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "c", AmountMicros: usd(t, "2")},
		reserveWithID("r1", "b", usd(t, "2")),
		&fsm.DeleteBudget{Tenant: tenant, RequestID: "r1", BudgetID: "c"},
	} {
		err := h.fail(t0, c, fsm.CodeFailedPrecondition)
		if err.Message == "" {
			t.Fatal("empty message")
		}
	}
	if b, c := h.spent(t0, "b"), h.spent(t0, "c"); b != usd(t, "2")+1 || c != 0 {
		t.Fatalf("spent b %d c %d", b, c)
	}
	h.budget(t0, "c") // not deleted
	if held := h.budget(t0, "b").HeldMicros; held != 0 {
		t.Fatalf("held %d", held)
	}
}

func TestRequestIDsAreScopedByTenant(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	h.ok(t0, &fsm.CreateBudget{Tenant: "globex", Budget: spec("b", usd(t, "10"))})
	a := h.one(t0, &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "1")})
	g := h.one(t0, &fsm.Consume{Tenant: "globex", RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "7")})
	if a.Replayed || g.Replayed || g.Err != nil || !g.Spend.Allowed {
		t.Fatalf("results %+v %+v", a, g)
	}
	var spentAcme, spentGlobex int64
	h.m.Read(t0, func(v fsm.View) error {
		x, _ := v.Budget(tenant, "b")
		y, _ := v.Budget("globex", "b")
		spentAcme, spentGlobex = x.SpentMicros, y.SpentMicros
		return nil
	})
	if spentAcme != usd(t, "1") || spentGlobex != usd(t, "7") {
		t.Fatalf("spent acme %d globex %d", spentAcme, spentGlobex)
	}
}

// A request id is remembered for IdempotencyRetentionMs of log time and then
// forgotten: a retry after that is a new request.
func TestRequestIDIsForgottenAfterRetention(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	c := &fsm.Consume{Tenant: tenant, RequestID: "r1", BudgetID: "b", AmountMicros: usd(t, "1")}
	at := t0 + 5
	h.one(at, c)
	h.one(at+1, &fsm.Consume{Tenant: tenant, RequestID: "r2", BudgetID: "b", AmountMicros: usd(t, "1")})

	if r := h.one(at+fsm.IdempotencyRetentionMs-1, c); !r.Replayed {
		t.Fatalf("retry just inside the retention: %+v", r)
	}
	// At the retention boundary r1 is forgotten, r2 (1 ms younger) is not.
	rs := h.apply(at+fsm.IdempotencyRetentionMs, c,
		&fsm.Consume{Tenant: tenant, RequestID: "r2", BudgetID: "b", AmountMicros: usd(t, "1")})
	if rs[0].Replayed || !rs[0].Spend.Allowed || rs[0].Spend.SpentMicros != usd(t, "3") {
		t.Fatalf("r1 after the retention: %+v", rs[0])
	}
	if !rs[1].Replayed {
		t.Fatalf("r2 forgotten early: %+v", rs[1])
	}
	// r1 is now remembered from its new application.
	if r := h.one(at+fsm.IdempotencyRetentionMs+1, c); !r.Replayed || r.Spend.SpentMicros != usd(t, "3") {
		t.Fatalf("retry of the re-applied r1: %+v", r)
	}
	// A forgotten id may carry a different request.
	other := &fsm.Consume{Tenant: tenant, RequestID: "r2", BudgetID: "b", AmountMicros: usd(t, "2")}
	if r := h.one(at+1+fsm.IdempotencyRetentionMs, other); r.Err != nil || r.Replayed || r.Spend.SpentMicros != usd(t, "5") {
		t.Fatalf("new request under a forgotten id: %+v", r)
	}
}
