package fsm_test

import (
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

// newFamily creates org (10 USD) with children team-a (8) and team-b (8).
func newFamily(t *testing.T, h *harness) {
	t.Helper()
	h.create(t0, spec("org", usd(t, "10")))
	for _, id := range []string{"team-a", "team-b"} {
		s := spec(id, usd(t, "8"))
		s.ParentID = "org"
		h.create(t0, s)
	}
}

func reserve(id string, amount, ttlMs int64) *fsm.Reserve {
	return &fsm.Reserve{Tenant: tenant, BudgetID: id, AmountMicros: amount, TTLMs: ttlMs}
}

func commit(holdID string, amount int64) *fsm.Commit {
	return &fsm.Commit{Tenant: tenant, HoldID: holdID, AmountMicros: amount}
}

func TestReserveCountsAgainstBudgetAndAncestors(t *testing.T) {
	h := newHarness(t)
	newFamily(t, h) // indexes 1-3
	d := h.spend(t0, reserve("team-a", usd(t, "5"), 60_000))
	want := fsm.SpendResult{Allowed: true, BudgetID: "team-a", Currency: "USD", RemainingMicros: usd(t, "3"),
		HoldID: "h4-0", HoldExpiresAtMs: t0 + 60_000}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("reserve: %+v, want %+v", *d, want)
	}
	org := h.budget(t0, "org")
	if org.HeldMicros != usd(t, "5") || org.SpentMicros != 0 || org.RemainingMicros() != usd(t, "5") || org.ActiveHolds != 0 {
		t.Fatalf("org after the child's hold: %+v", org)
	}
	if a := h.budget(t0, "team-a"); a.HeldMicros != usd(t, "5") || a.ActiveHolds != 1 {
		t.Fatalf("team-a after its hold: %+v", a)
	}

	// The held amount is not available to the parent or a sibling.
	if d := h.consume(t0, "org", usd(t, "6")); d.Allowed || d.DeniedBy != "org" {
		t.Fatalf("consume on org past the hold: %+v", d)
	}
	d = h.spend(t0, reserve("team-b", usd(t, "6"), 60_000))
	want = fsm.SpendResult{Reason: fsm.ReasonBudgetExceeded, DeniedBy: "org", BudgetID: "team-b", Currency: "USD",
		RemainingMicros: usd(t, "8")}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("sibling reserve past the parent: %+v, want %+v", *d, want)
	}
	if b := h.budget(t0, "team-b"); b.HeldMicros != 0 || b.ActiveHolds != 0 || b.DeniedCount != 1 {
		t.Fatalf("team-b after a denied reserve: %+v", b)
	}
	// Exactly what is left fits.
	if d := h.spend(t0, reserve("team-b", usd(t, "5"), 60_000)); !d.Allowed || d.HoldID != "h7-0" {
		t.Fatalf("sibling reserve of the rest: %+v", d)
	}
	h.m.Read(t0, func(v fsm.View) error {
		if c := v.Counts(); c.Holds != 2 {
			t.Errorf("%d holds, want 2", c.Holds)
		}
		return nil
	})
	h.fail(t0, reserve("nope", 1, 60_000), fsm.CodeNotFound)
}

func TestCommitLessReleasesTheRest(t *testing.T) {
	h := newHarness(t)
	newFamily(t, h)
	s := h.spend(t0, reserve("team-a", usd(t, "5"), 60_000))
	d := h.spend(t0+1, commit(s.HoldID, usd(t, "3")))
	want := fsm.SpendResult{Allowed: true, BudgetID: "team-a", Currency: "USD", SpentMicros: usd(t, "3"), RemainingMicros: usd(t, "5")}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("commit 3 of 5: %+v, want %+v", *d, want)
	}
	for id, wantSpent := range map[string]int64{"team-a": usd(t, "3"), "org": usd(t, "3"), "team-b": 0} {
		if b := h.budget(t0+1, id); b.SpentMicros != wantSpent || b.HeldMicros != 0 || b.ActiveHolds != 0 {
			t.Fatalf("%s after commit: spent %d held %d holds %d", id, b.SpentMicros, b.HeldMicros, b.ActiveHolds)
		}
	}
	// A hold commits once.
	d = h.spend(t0+2, commit(s.HoldID, usd(t, "3")))
	if !reflect.DeepEqual(*d, fsm.SpendResult{Reason: fsm.ReasonHoldNotActive}) {
		t.Fatalf("second commit: %+v", *d)
	}
	if got := h.spent(t0+2, "team-a"); got != usd(t, "3") {
		t.Fatalf("second commit charged: %d", got)
	}
}

func TestCommitZeroReleasesEverything(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	s := h.spend(t0, reserve("b", usd(t, "4"), 60_000))
	d := h.spend(t0, commit(s.HoldID, 0))
	if !d.Allowed || d.SpentMicros != 0 || d.RemainingMicros != usd(t, "10") {
		t.Fatalf("commit 0: %+v", d)
	}
	if b := h.budget(t0, "b"); b.HeldMicros != 0 || b.ActiveHolds != 0 {
		t.Fatalf("after commit 0: %+v", b)
	}
}

func TestCommitMoreNeedsTheExcessToFit(t *testing.T) {
	h := newHarness(t)
	newFamily(t, h)
	s := h.spend(t0, reserve("team-a", usd(t, "5"), 60_000))
	h.consume(t0, "team-a", usd(t, "2")) // team-a: 2 spent + 5 held of 8

	d := h.spend(t0, commit(s.HoldID, usd(t, "7"))) // excess 2, room 1
	want := fsm.SpendResult{Reason: fsm.ReasonBudgetExceeded, DeniedBy: "team-a", BudgetID: "team-a", Currency: "USD",
		SpentMicros: usd(t, "2"), RemainingMicros: usd(t, "1")}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("commit past the budget: %+v, want %+v", *d, want)
	}
	// The denial keeps the hold.
	if a := h.budget(t0, "team-a"); a.HeldMicros != usd(t, "5") || a.ActiveHolds != 1 || a.SpentMicros != usd(t, "2") {
		t.Fatalf("team-a after a denied commit: %+v", a)
	}
	// An excess that fits the child but not the parent is denied by the parent.
	h.consume(t0, "team-b", usd(t, "2.5")) // org: 4.5 spent + 5 held of 10
	if d := h.spend(t0, commit(s.HoldID, usd(t, "6"))); d.Allowed || d.DeniedBy != "org" {
		t.Fatalf("commit past the parent: %+v", d)
	}
	d = h.spend(t0, commit(s.HoldID, usd(t, "5.5"))) // excess 0.5 = room of org
	if !d.Allowed || d.SpentMicros != usd(t, "7.5") || d.RemainingMicros != usd(t, "0.5") || d.WouldDeny {
		t.Fatalf("commit of exactly the room: %+v", d)
	}
	if org := h.budget(t0, "org"); org.SpentMicros != usd(t, "10") || org.HeldMicros != 0 {
		t.Fatalf("org after commit: %+v", org)
	}
}

func TestCommitOnSoftBudgetAndLoweredAmount(t *testing.T) {
	h := newHarness(t)
	soft := spec("soft", usd(t, "10"))
	soft.Enforcement = fsm.EnforcementSoft
	soft.Thresholds = []uint32{100, 120}
	h.create(t0, soft)
	s := h.spend(t0, reserve("soft", usd(t, "9"), 60_000))
	d := h.spend(t0, commit(s.HoldID, usd(t, "12")))
	want := fsm.SpendResult{Allowed: true, BudgetID: "soft", Currency: "USD", SpentMicros: usd(t, "12"),
		RemainingMicros: -usd(t, "2"), WouldDeny: true, Thresholds: []uint32{100, 120}}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("soft commit past the amount: %+v, want %+v", *d, want)
	}

	// What was reserved is always granted, even when the amount was lowered
	// below it in the meantime.
	h.create(t0, spec("hard", usd(t, "10")))
	s = h.spend(t0, reserve("hard", usd(t, "8"), 60_000))
	h.ok(t0, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: fsm.BudgetSpec{ID: "hard", AmountMicros: usd(t, "5")}})
	d = h.spend(t0, commit(s.HoldID, usd(t, "7")))
	if !d.Allowed || d.SpentMicros != usd(t, "7") || d.RemainingMicros != -usd(t, "2") || d.WouldDeny {
		t.Fatalf("commit below the hold on a lowered budget: %+v", d)
	}
}

func TestReserveOnShadowBudget(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Enforcement = fsm.EnforcementShadow
	h.create(t0, s)
	d := h.spend(t0, reserve("b", usd(t, "15"), 60_000))
	if !d.Allowed || !d.WouldDeny || d.RemainingMicros != -usd(t, "5") || d.HoldID != "h2-0" {
		t.Fatalf("shadow reserve: %+v", d)
	}
	if b := h.budget(t0, "b"); b.WouldDenyCount != 1 || b.HeldMicros != usd(t, "15") {
		t.Fatalf("shadow budget: %+v", b)
	}
}

func TestRelease(t *testing.T) {
	h := newHarness(t)
	newFamily(t, h)
	s := h.spend(t0, reserve("team-a", usd(t, "5"), 60_000))
	h.consume(t0, "team-a", usd(t, "1"))
	d := h.spend(t0, &fsm.Release{Tenant: tenant, HoldID: s.HoldID})
	want := fsm.SpendResult{Allowed: true, BudgetID: "team-a", Currency: "USD", SpentMicros: usd(t, "1"),
		RemainingMicros: usd(t, "7"), ReleasedMicros: usd(t, "5")}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("release: %+v, want %+v", *d, want)
	}
	if org := h.budget(t0, "org"); org.HeldMicros != 0 || org.SpentMicros != usd(t, "1") {
		t.Fatalf("org after release: %+v", org)
	}
	h.fail(t0, &fsm.Release{Tenant: tenant, HoldID: s.HoldID}, fsm.CodeNotFound)
	if d := h.spend(t0, commit(s.HoldID, 1)); d.Reason != fsm.ReasonHoldNotActive || d.Allowed {
		t.Fatalf("commit after release: %+v", d)
	}
	h.fail(t0, &fsm.Release{Tenant: tenant, HoldID: "h999-0"}, fsm.CodeNotFound)
}

// Hold ids belong to their tenant.
func TestHoldsAreScopedByTenant(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	h.ok(t0, &fsm.CreateBudget{Tenant: "globex", Budget: spec("b", usd(t, "10"))})
	id := h.spend(t0, reserve("b", usd(t, "5"), 60_000)).HoldID
	if d := h.spend(t0, &fsm.Commit{Tenant: "globex", HoldID: id, AmountMicros: 1}); d.Reason != fsm.ReasonHoldNotActive {
		t.Fatalf("commit from another tenant: %+v", d)
	}
	h.fail(t0, &fsm.Release{Tenant: "globex", HoldID: id}, fsm.CodeNotFound)
	if b := h.budget(t0, "b"); b.HeldMicros != usd(t, "5") {
		t.Fatalf("another tenant touched the hold: %+v", b)
	}
}

// Hold ids are a function of the log position, so every replica names a hold
// the same way.
func TestHoldIDsAreDeterministic(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	rs := h.apply(t0, reserve("b", 1, 60_000), &fsm.Noop{}, reserve("b", 2, 60_000))
	if rs[0].Spend.HoldID != "h2-0" || rs[2].Spend.HoldID != "h2-2" {
		t.Fatalf("hold ids %q %q", rs[0].Spend.HoldID, rs[2].Spend.HoldID)
	}
}

// Holds expire by log time exactly at ExpiresAtMs: a command at expires-1
// still sees the hold.
func TestHoldExpiresExactlyAtItsExpiry(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	holdA := h.spend(t0, reserve("b", usd(t, "6"), 10_000))
	holdB := h.spend(t0, reserve("b", usd(t, "3"), 10_000))
	expires := t0 + 10_000
	if holdA.HoldExpiresAtMs != expires || holdB.HoldExpiresAtMs != expires {
		t.Fatalf("expiries %d %d", holdA.HoldExpiresAtMs, holdB.HoldExpiresAtMs)
	}

	if d := h.consume(expires-1, "b", usd(t, "2")); d.Allowed {
		t.Fatalf("consume at expires-1 ignored the holds: %+v", d)
	}
	if d := h.spend(expires-1, commit(holdB.HoldID, usd(t, "3"))); !d.Allowed || d.SpentMicros != usd(t, "3") {
		t.Fatalf("commit at expires-1: %+v", d)
	}
	if d := h.consume(expires-1, "b", usd(t, "1")); !d.Allowed || d.RemainingMicros != 0 {
		t.Fatalf("consume of the last unit at expires-1: %+v", d)
	}

	// At the expiry the remaining hold is gone before the entry's commands run.
	rs := h.apply(expires, commit(holdA.HoldID, usd(t, "6")), &fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: usd(t, "6")})
	if d := rs[0].Spend; d.Allowed || d.Reason != fsm.ReasonHoldNotActive {
		t.Fatalf("commit at expiry: %+v", d)
	}
	if d := rs[1].Spend; !d.Allowed || d.SpentMicros != usd(t, "10") || d.RemainingMicros != 0 {
		t.Fatalf("consume at expiry: %+v", d)
	}
	if b := h.budget(expires, "b"); b.HeldMicros != 0 || b.ActiveHolds != 0 {
		t.Fatalf("after expiry: %+v", b)
	}
}

// Expiry also happens on entries that carry no commands for the budget, and
// releases the ancestors too.
func TestHoldExpiryOnAnyEntry(t *testing.T) {
	h := newHarness(t)
	newFamily(t, h)
	h.spend(t0, reserve("team-a", usd(t, "5"), fsm.HoldTTLMinMs))
	h.spend(t0+500, reserve("team-b", usd(t, "2"), fsm.HoldTTLMinMs))
	h.applyEntry(t0 + fsm.HoldTTLMinMs) // the first hold expires
	if org := h.budget(t0+fsm.HoldTTLMinMs, "org"); org.HeldMicros != usd(t, "2") {
		t.Fatalf("org holds %d after the first expiry", org.HeldMicros)
	}
	h.applyEntry(t0 + 10*fsm.HoldTTLMinMs) // and the second
	h.m.Read(0, func(v fsm.View) error {
		if c := v.Counts(); c.Holds != 0 {
			t.Errorf("%d holds left", c.Holds)
		}
		return nil
	})
	for _, id := range []string{"org", "team-a", "team-b"} {
		if b := h.budget(0, id); b.HeldMicros != 0 || b.ActiveHolds != 0 || b.SpentMicros != 0 {
			t.Fatalf("%s after every hold expired: %+v", id, b)
		}
	}
}

// A hold outlives the period it was made in; the commit charges the period
// it happens in.
func TestCommitAfterThePeriodRolled(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Period = fsm.PeriodDay
	h.create(t0, s)
	midnight := t0 + 12*hourMs
	h.consume(midnight-hourMs, "b", usd(t, "3"))
	hold := h.spend(midnight-hourMs, reserve("b", usd(t, "4"), 2*hourMs))

	// The release result reports the budget in the period of the release.
	d := h.spend(midnight+1, &fsm.Release{Tenant: tenant, HoldID: hold.HoldID})
	if d.SpentMicros != 0 || d.RemainingMicros != usd(t, "10") || d.ReleasedMicros != usd(t, "4") {
		t.Fatalf("release in the next period: %+v", d)
	}

	tomorrow := midnight + dayMs
	hold = h.spend(tomorrow-hourMs, reserve("b", usd(t, "4"), 2*hourMs))
	h.consume(tomorrow-1, "b", usd(t, "1"))
	d = h.spend(tomorrow+1, commit(hold.HoldID, usd(t, "4")))
	if !d.Allowed || d.SpentMicros != usd(t, "4") || d.RemainingMicros != usd(t, "6") {
		t.Fatalf("commit in the next period: %+v", d)
	}
	b := h.budget(tomorrow+1, "b")
	if len(b.History) != 2 || b.History[0].SpentMicros != usd(t, "1") || b.History[1].SpentMicros != usd(t, "3") {
		t.Fatalf("history %+v", b.History)
	}
}

// Reads see expired holds as released, like the next entry would: a dry run
// at the expiry agrees with the consume that follows it.
func TestReadsReleaseExpiredHolds(t *testing.T) {
	h := newHarness(t)
	newFamily(t, h)
	hold := h.spend(t0, reserve("team-a", usd(t, "5"), fsm.HoldTTLMinMs))
	expires := hold.HoldExpiresAtMs
	for _, id := range []string{"org", "team-a"} {
		if b := h.budget(expires-1, id); b.HeldMicros != usd(t, "5") {
			t.Fatalf("%s holds %d before the expiry, want 5", id, b.HeldMicros)
		}
	}
	for _, id := range []string{"org", "team-a"} {
		b := h.budget(expires, id)
		if b.HeldMicros != 0 || (id == "team-a" && b.ActiveHolds != 0) {
			t.Fatalf("%s read at the expiry: held %d, %d active holds; want both 0", id, b.HeldMicros, b.ActiveHolds)
		}
	}
	if b := h.budget(expires, "team-b"); b.HeldMicros != 0 {
		t.Fatalf("team-b (not an ancestor) holds %d", b.HeldMicros)
	}
	// The state itself is unchanged until an entry applies the expiry.
	if b := h.budget(expires-1, "team-a"); b.ActiveHolds != 1 {
		t.Fatalf("reading changed the state: %d active holds", b.ActiveHolds)
	}
}
