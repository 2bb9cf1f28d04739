package fsm_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func TestCreateAndGetBudget(t *testing.T) {
	h := newHarness(t)
	s := spec("llm-monthly", usd(t, "1000"))
	s.Period, s.Timezone = fsm.PeriodMonth, "Europe/Berlin"
	s.Thresholds = []uint32{50, 80, 100}
	created := h.create(t0, s)
	want := &fsm.Budget{
		Tenant:        tenant,
		Spec:          s,
		CreatedAtMs:   t0,
		UpdatedAtMs:   t0,
		Version:       1,
		PeriodStartMs: localMs(t, "Europe/Berlin", "2025-01-01T00:00:00"),
		PeriodEndMs:   localMs(t, "Europe/Berlin", "2025-02-01T00:00:00"),
	}
	if !reflect.DeepEqual(normalize(created), want) {
		t.Fatalf("create returned\n%+v\nwant\n%+v", created, want)
	}
	if got := h.budget(t0, "llm-monthly"); !reflect.DeepEqual(normalize(got), want) {
		t.Fatalf("read\n%+v\nwant\n%+v", got, want)
	}
	if got := created.RemainingMicros(); got != usd(t, "1000") {
		t.Fatalf("remaining %d", got)
	}

	h.fail(t0, &fsm.CreateBudget{Tenant: tenant, Budget: s}, fsm.CodeAlreadyExists)
	// The same id in another tenant is another budget.
	h.ok(t0, &fsm.CreateBudget{Tenant: "globex", Budget: s})

	_, err := h.m.Read(t0, func(v fsm.View) error {
		_, err := v.Budget(tenant, "nope")
		return err
	})
	if !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("reading a missing budget: %v, want ErrNotFound", err)
	}
}

// normalize makes a view comparable with a literal: empty slices become nil.
func normalize(b *fsm.Budget) *fsm.Budget {
	c := *b
	if len(c.History) == 0 {
		c.History = nil
	}
	if len(c.Crossed) == 0 {
		c.Crossed = nil
	}
	if len(c.Spec.Thresholds) == 0 {
		c.Spec.Thresholds = nil
	}
	return &c
}

func TestListBudgetsPages(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"e", "a", "c", "b", "d"} {
		h.create(t0, spec(id, 1_000_000))
	}
	h.ok(t0, &fsm.CreateBudget{Tenant: "other", Budget: spec("aa", 1_000_000)})

	ids := func(page []*fsm.Budget) string {
		var out []string
		for _, b := range page {
			if b.Tenant != tenant {
				t.Fatalf("listed %s of tenant %s", b.Spec.ID, b.Tenant)
			}
			out = append(out, b.Spec.ID)
		}
		return strings.Join(out, ",")
	}
	cases := []struct {
		after     string
		limit     int
		want      string
		wantNext  string
		forTenant string
	}{
		{"", 2, "a,b", "b", tenant},
		{"b", 2, "c,d", "d", tenant},
		{"d", 2, "e", "", tenant},
		{"c", 2, "d,e", "", tenant}, // a full last page has no next token
		{"", 10, "a,b,c,d,e", "", tenant},
		{"", 0, "a", "a", tenant}, // the limit is at least 1
		{"", -5, "a", "a", tenant},
		{"e", 2, "", "", tenant},
		{"bb", 1, "c", "c", tenant}, // after an id that does not exist
		{"", 10, "", "", "nobody"},
	}
	for _, c := range cases {
		h.m.Read(t0, func(v fsm.View) error {
			page, next := v.Budgets(c.forTenant, c.after, c.limit)
			if got := ids(page); got != c.want || next != c.wantNext {
				t.Errorf("Budgets(%s, after %q, limit %d) = [%s] next %q; want [%s] next %q",
					c.forTenant, c.after, c.limit, got, next, c.want, c.wantNext)
			}
			return nil
		})
	}
}

func TestUpdateBudgetByMask(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "100"))
	s.Thresholds = []uint32{50}
	h.create(t0, s)
	h.consume(t0, "b", usd(t, "40"))

	// Amount only: enforcement and thresholds in the request are ignored.
	r := h.ok(t0+1, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: fsm.BudgetSpec{
		ID: "b", AmountMicros: usd(t, "50"), Enforcement: fsm.EnforcementSoft, Thresholds: []uint32{10}}})
	b := r.Budget
	if b.Spec.AmountMicros != usd(t, "50") || b.Spec.Enforcement != fsm.EnforcementHard ||
		!reflect.DeepEqual(b.Spec.Thresholds, []uint32{50}) || b.Version != 2 || b.UpdatedAtMs != t0+1 ||
		b.CreatedAtMs != t0 || b.SpentMicros != usd(t, "40") || b.RemainingMicros() != usd(t, "10") {
		t.Fatalf("after amount update: %+v", b)
	}
	// The new amount decides: 11 no longer fits.
	if d := h.consume(t0+2, "b", usd(t, "11")); d.Allowed {
		t.Fatalf("consume beyond the lowered amount: %+v", d)
	}

	// Enforcement only.
	b = h.ok(t0+3, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateEnforcement, Budget: fsm.BudgetSpec{
		ID: "b", AmountMicros: 1, Enforcement: fsm.EnforcementSoft}}).Budget
	if b.Spec.AmountMicros != usd(t, "50") || b.Spec.Enforcement != fsm.EnforcementSoft || b.Version != 3 {
		t.Fatalf("after enforcement update: %+v", b)
	}
	if d := h.consume(t0+4, "b", usd(t, "11")); !d.Allowed || !d.WouldDeny || d.RemainingMicros != -usd(t, "1") {
		t.Fatalf("SOFT consume beyond the amount: %+v", d)
	}

	// Thresholds only, then all three at once.
	b = h.ok(t0+5, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateThresholds, Budget: fsm.BudgetSpec{
		ID: "b", Thresholds: []uint32{90, 200}}}).Budget
	if !reflect.DeepEqual(b.Spec.Thresholds, []uint32{90, 200}) || b.Spec.Enforcement != fsm.EnforcementSoft || b.Version != 4 {
		t.Fatalf("after thresholds update: %+v", b)
	}
	b = h.ok(t0+6, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount | fsm.UpdateEnforcement | fsm.UpdateThresholds,
		Budget: fsm.BudgetSpec{ID: "b", AmountMicros: usd(t, "70"), Enforcement: fsm.EnforcementShadow}}).Budget
	if b.Spec.AmountMicros != usd(t, "70") || b.Spec.Enforcement != fsm.EnforcementShadow || len(b.Spec.Thresholds) != 0 || b.Version != 5 {
		t.Fatalf("after full update: %+v", b)
	}
	// Identity, currency and period never change.
	if b.Spec.ID != "b" || b.Spec.Currency != "USD" || b.Spec.Period != fsm.PeriodNone || b.Spec.Timezone != "UTC" {
		t.Fatalf("update changed fixed fields: %+v", b.Spec)
	}
	if got := h.budget(t0+6, "b"); !reflect.DeepEqual(normalize(got), normalize(b)) {
		t.Fatalf("read after update\n%+v\nwant\n%+v", got, b)
	}

	h.fail(t0, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: spec("nope", 1)}, fsm.CodeNotFound)
	h.fail(t0, &fsm.UpdateBudget{Tenant: "other", Fields: fsm.UpdateAmount, Budget: spec("b", 1)}, fsm.CodeNotFound)
}

func TestDeleteBudget(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("parent", usd(t, "100")))
	child := spec("child", usd(t, "100"))
	child.ParentID = "parent"
	h.create(t0, child)
	if got := h.budget(t0, "parent").Children; got != 1 {
		t.Fatalf("parent has %d children, want 1", got)
	}

	err := h.fail(t0, &fsm.DeleteBudget{Tenant: tenant, BudgetID: "parent"}, fsm.CodeFailedPrecondition)
	if !errors.Is(err, fsm.ErrFailedPrecondition) {
		t.Fatalf("errors.Is(%v, ErrFailedPrecondition) is false", err)
	}

	hold1 := h.spend(t0, &fsm.Reserve{Tenant: tenant, BudgetID: "child", AmountMicros: usd(t, "10"), TTLMs: 60_000}).HoldID
	h.spend(t0, &fsm.Reserve{Tenant: tenant, BudgetID: "child", AmountMicros: usd(t, "15"), TTLMs: 60_000})
	h.spend(t0, &fsm.Reserve{Tenant: tenant, BudgetID: "parent", AmountMicros: usd(t, "1"), TTLMs: 60_000})
	h.consume(t0, "child", usd(t, "5"))
	if p := h.budget(t0, "parent"); p.HeldMicros != usd(t, "26") || p.SpentMicros != usd(t, "5") {
		t.Fatalf("parent before delete: held %d spent %d", p.HeldMicros, p.SpentMicros)
	}

	r := h.ok(t0+1, &fsm.DeleteBudget{Tenant: tenant, BudgetID: "child"})
	if r.Delete == nil || r.Delete.ReleasedHolds != 2 {
		t.Fatalf("delete child: %+v", r)
	}
	p := h.budget(t0+1, "parent")
	// The child's holds are released from the parent; its spend stays.
	if p.HeldMicros != usd(t, "1") || p.SpentMicros != usd(t, "5") || p.Children != 0 || p.ActiveHolds != 1 {
		t.Fatalf("parent after deleting the child: %+v", p)
	}
	if d := h.spend(t0+1, &fsm.Commit{Tenant: tenant, HoldID: hold1, AmountMicros: 1}); d.Allowed || d.Reason != fsm.ReasonHoldNotActive {
		t.Fatalf("commit of a hold released by delete: %+v", d)
	}
	h.fail(t0+1, &fsm.Consume{Tenant: tenant, BudgetID: "child", AmountMicros: 1}, fsm.CodeNotFound)
	h.fail(t0+1, &fsm.DeleteBudget{Tenant: tenant, BudgetID: "child"}, fsm.CodeNotFound)

	r = h.ok(t0+2, &fsm.DeleteBudget{Tenant: tenant, BudgetID: "parent"})
	if r.Delete == nil || r.Delete.ReleasedHolds != 1 {
		t.Fatalf("delete parent: %+v", r)
	}
	h.m.Read(t0+2, func(v fsm.View) error {
		if c := v.Counts(); c.Budgets != 0 || c.Holds != 0 {
			t.Errorf("after deleting everything: %+v", c)
		}
		return nil
	})
	// A re-created budget starts from nothing.
	if b := h.create(t0+3, spec("child", usd(t, "1"))); b.SpentMicros != 0 || b.HeldMicros != 0 || b.Version != 1 {
		t.Fatalf("re-created budget: %+v", b)
	}
}

func TestHardBudgetDeniesWhatDoesNotFit(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "10")))
	steps := []struct {
		amount    string
		allowed   bool
		spent     string
		remaining string
	}{
		{"4", true, "4", "6"},
		{"7", false, "4", "6"},
		{"6.000001", false, "4", "6"},
		{"2.5", true, "6.5", "3.5"},
		{"3.5", true, "10", "0"},
		{"0.000001", false, "10", "0"},
	}
	for i, s := range steps {
		d := h.consume(t0, "b", usd(t, s.amount))
		want := fsm.SpendResult{Allowed: s.allowed, BudgetID: "b", Currency: "USD",
			SpentMicros: usd(t, s.spent), RemainingMicros: usd(t, s.remaining)}
		if !s.allowed {
			want.Reason, want.DeniedBy = fsm.ReasonBudgetExceeded, "b"
		}
		if !reflect.DeepEqual(*d, want) {
			t.Fatalf("step %d: consume %s = %+v, want %+v", i, s.amount, *d, want)
		}
	}
	b := h.budget(t0, "b")
	if b.AllowedCount != 3 || b.DeniedCount != 3 || b.WouldDenyCount != 0 || b.SpentMicros != usd(t, "10") {
		t.Fatalf("counters: %+v", b)
	}
	h.fail(t0, &fsm.Consume{Tenant: tenant, BudgetID: "nope", AmountMicros: 1}, fsm.CodeNotFound)
	h.fail(t0, &fsm.Consume{Tenant: "other", BudgetID: "b", AmountMicros: 1}, fsm.CodeNotFound)
}

func TestThousandConsumesExactlyExhaustABudget(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("b", usd(t, "1000.00")))
	one := &fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: usd(t, "1.00")}
	cmds := make([]fsm.Command, 100)
	for i := range cmds {
		cmds[i] = one
	}
	for entry := 0; entry < 10; entry++ {
		for i, r := range h.apply(t0+int64(entry), cmds...) {
			n := entry*100 + i + 1
			if r.Err != nil || !r.Spend.Allowed || r.Spend.SpentMicros != int64(n)*1_000_000 {
				t.Fatalf("consume %d: %+v", n, r)
			}
		}
	}
	d := h.spend(t0+10, one)
	if d.Allowed || d.Reason != fsm.ReasonBudgetExceeded || d.SpentMicros != usd(t, "1000") || d.RemainingMicros != 0 {
		t.Fatalf("consume 1001: %+v", d)
	}
	if b := h.budget(t0+10, "b"); b.AllowedCount != 1000 || b.DeniedCount != 1 {
		t.Fatalf("counters: allowed %d denied %d", b.AllowedCount, b.DeniedCount)
	}
}

func TestSoftAndShadowAllowOverspend(t *testing.T) {
	type step struct {
		amount     string
		wouldDeny  bool
		remaining  string
		thresholds []uint32 // for SOFT; SHADOW records none
	}
	steps := []step{
		{"6", false, "4", []uint32{50}},
		{"4", false, "0", []uint32{100}},
		{"1", true, "-1", nil},
		{"4", true, "-5", []uint32{150}},
		{"100", true, "-105", nil},
	}
	for _, enforcement := range []fsm.Enforcement{fsm.EnforcementSoft, fsm.EnforcementShadow} {
		h := newHarness(t)
		s := spec("b", usd(t, "10"))
		s.Enforcement = enforcement
		s.Thresholds = []uint32{50, 100, 150}
		h.create(t0, s)
		for i, st := range steps {
			d := h.consume(t0, "b", usd(t, st.amount))
			want := fsm.SpendResult{Allowed: true, BudgetID: "b", Currency: "USD", WouldDeny: st.wouldDeny,
				RemainingMicros: mustSigned(t, st.remaining), SpentMicros: usd(t, "10") - mustSigned(t, st.remaining)}
			if enforcement == fsm.EnforcementSoft {
				want.Thresholds = st.thresholds
			}
			if !reflect.DeepEqual(*d, want) {
				t.Fatalf("enforcement %d step %d: %+v, want %+v", enforcement, i, *d, want)
			}
		}
		b := h.budget(t0, "b")
		if b.AllowedCount != 5 || b.DeniedCount != 0 || b.WouldDenyCount != 3 || b.SpentMicros != usd(t, "115") {
			t.Fatalf("enforcement %d counters: %+v", enforcement, b)
		}
		var crossed []uint32
		for _, c := range b.Crossed {
			crossed = append(crossed, c.Percent)
		}
		if enforcement == fsm.EnforcementSoft && !reflect.DeepEqual(crossed, []uint32{50, 100, 150}) ||
			enforcement == fsm.EnforcementShadow && crossed != nil {
			t.Fatalf("enforcement %d crossed %v", enforcement, crossed)
		}
	}
}

// mustSigned parses an amount that may carry a leading minus.
func mustSigned(t *testing.T, s string) int64 {
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		return -usd(t, rest)
	}
	return usd(t, s)
}

func TestThresholdsOncePerPeriod(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "100"))
	s.Period = fsm.PeriodDay
	s.Thresholds = []uint32{50, 80, 100}
	h.create(t0, s)

	// One consume may cross several thresholds; they are listed ascending.
	steps := []struct {
		at     int64
		amount string
		want   []uint32
	}{
		{t0, "49.999999", nil},
		{t0 + 1, "0.000001", []uint32{50}},
		{t0 + 2, "10", nil},
		{t0 + 3, "40", []uint32{80, 100}},
		{t0 + 4, "0.5", nil}, // denied: HARD and full
	}
	for i, st := range steps {
		d := h.consume(st.at, "b", usd(t, st.amount))
		if !reflect.DeepEqual(d.Thresholds, st.want) {
			t.Fatalf("step %d: thresholds %v, want %v (%+v)", i, d.Thresholds, st.want, d)
		}
	}
	b := h.budget(t0+4, "b")
	wantCrossed := []fsm.ThresholdCrossing{
		{Percent: 50, AtMs: t0 + 1, LogIndex: 3},
		{Percent: 80, AtMs: t0 + 3, LogIndex: 5},
		{Percent: 100, AtMs: t0 + 3, LogIndex: 5},
	}
	if !reflect.DeepEqual(b.Crossed, wantCrossed) {
		t.Fatalf("crossed %+v, want %+v", b.Crossed, wantCrossed)
	}

	// The next day starts without crossings and crosses again.
	nextDay := t0 + 12*hourMs // 2025-01-16 00:00 UTC
	d := h.consume(nextDay, "b", usd(t, "80"))
	if !reflect.DeepEqual(d.Thresholds, []uint32{50, 80}) || d.SpentMicros != usd(t, "80") {
		t.Fatalf("next day: %+v", d)
	}
	b = h.budget(nextDay, "b")
	if len(b.History) != 1 || !reflect.DeepEqual(b.History[0].Thresholds, []uint32{50, 80, 100}) {
		t.Fatalf("history %+v", b.History)
	}
	if !reflect.DeepEqual(b.Crossed, []fsm.ThresholdCrossing{
		{Percent: 50, AtMs: nextDay, LogIndex: 7}, {Percent: 80, AtMs: nextDay, LogIndex: 7}}) {
		t.Fatalf("crossed on the next day %+v", b.Crossed)
	}
}

func TestParentBudgetMustFitEveryAncestor(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("org", usd(t, "10")))
	for _, id := range []string{"team-a", "team-b"} {
		s := spec(id, usd(t, "8"))
		s.ParentID = "org"
		h.create(t0, s)
	}
	if got := h.budget(t0, "org").Children; got != 2 {
		t.Fatalf("org has %d children", got)
	}

	if d := h.consume(t0, "team-a", usd(t, "6")); !d.Allowed || d.SpentMicros != usd(t, "6") {
		t.Fatalf("team-a 6: %+v", d)
	}
	// team-b has room (8) but the shared parent only 4.
	d := h.consume(t0, "team-b", usd(t, "5"))
	want := fsm.SpendResult{Reason: fsm.ReasonBudgetExceeded, DeniedBy: "org", BudgetID: "team-b", Currency: "USD",
		RemainingMicros: usd(t, "8")}
	if !reflect.DeepEqual(*d, want) {
		t.Fatalf("team-b 5: %+v, want %+v", *d, want)
	}
	if a, b, org := h.spent(t0, "team-a"), h.spent(t0, "team-b"), h.spent(t0, "org"); a != usd(t, "6") || b != 0 || org != usd(t, "6") {
		t.Fatalf("after the parent's denial: team-a %d team-b %d org %d", a, b, org)
	}
	if b := h.budget(t0, "team-b"); b.DeniedCount != 1 || b.AllowedCount != 0 {
		t.Fatalf("team-b counters %+v", b)
	}
	if d := h.consume(t0, "team-b", usd(t, "4")); !d.Allowed || d.RemainingMicros != usd(t, "4") {
		t.Fatalf("team-b 4: %+v", d)
	}
	if org := h.budget(t0, "org"); org.SpentMicros != usd(t, "10") || org.RemainingMicros() != 0 {
		t.Fatalf("org %+v", org)
	}
	// The child's own limit denies first when neither has room.
	if d := h.consume(t0, "team-a", usd(t, "3")); d.Allowed || d.DeniedBy != "team-a" {
		t.Fatalf("team-a 3: %+v", d)
	}
	// Spending on the parent directly counts against the children's room
	// only through the parent.
	if d := h.consume(t0, "org", 1); d.Allowed || d.DeniedBy != "org" {
		t.Fatalf("org direct: %+v", d)
	}
}

func TestParentEnforcementMix(t *testing.T) {
	h := newHarness(t)
	hardParent := spec("hard-parent", usd(t, "5"))
	softParent := spec("soft-parent", usd(t, "5"))
	softParent.Enforcement = fsm.EnforcementSoft
	h.create(t0, hardParent)
	h.create(t0, softParent)
	softChild := spec("soft-child", usd(t, "1"))
	softChild.ParentID, softChild.Enforcement = "hard-parent", fsm.EnforcementSoft
	hardChild := spec("hard-child", usd(t, "10"))
	hardChild.ParentID = "soft-parent"
	h.create(t0, softChild)
	h.create(t0, hardChild)

	// A SOFT child cannot overspend a HARD ancestor.
	if d := h.consume(t0, "soft-child", usd(t, "6")); d.Allowed || d.DeniedBy != "hard-parent" || d.WouldDeny {
		t.Fatalf("soft child over a hard parent: %+v", d)
	}
	if h.spent(t0, "soft-child") != 0 || h.spent(t0, "hard-parent") != 0 {
		t.Fatal("a denied consume charged something")
	}
	// Over the SOFT child only: allowed, would deny.
	if d := h.consume(t0, "soft-child", usd(t, "3")); !d.Allowed || !d.WouldDeny || d.RemainingMicros != -usd(t, "2") {
		t.Fatalf("soft child over itself: %+v", d)
	}
	// A HARD child with room under a SOFT parent without room: allowed, would
	// deny, and both are charged.
	if d := h.consume(t0, "hard-child", usd(t, "7")); !d.Allowed || !d.WouldDeny || d.RemainingMicros != usd(t, "3") {
		t.Fatalf("hard child over a soft parent: %+v", d)
	}
	if got := h.spent(t0, "soft-parent"); got != usd(t, "7") {
		t.Fatalf("soft parent spent %d", got)
	}
	if got := h.budget(t0, "hard-child").WouldDenyCount; got != 1 {
		t.Fatalf("hard child would-deny count %d", got)
	}
}

func TestParentRules(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("usd", usd(t, "10")))

	orphan := spec("orphan", 1)
	orphan.ParentID = "missing"
	if err := h.fail(t0, &fsm.CreateBudget{Tenant: tenant, Budget: orphan}, fsm.CodeNotFound); !strings.Contains(err.Message, "budget.parent_id") {
		t.Fatalf("missing parent: %v", err)
	}
	// The parent is looked up in the child's tenant.
	other := spec("x", 1)
	other.ParentID = "usd"
	h.fail(t0, &fsm.CreateBudget{Tenant: "globex", Budget: other}, fsm.CodeNotFound)

	euro := spec("euro", 1)
	euro.ParentID, euro.Currency = "usd", "EUR"
	if err := h.fail(t0, &fsm.CreateBudget{Tenant: tenant, Budget: euro}, fsm.CodeInvalidArgument); !strings.Contains(err.Message, "budget.currency") {
		t.Fatalf("currency mismatch: %v", err)
	}

	// A chain of BudgetDepthMax budgets is fine; one more is refused.
	parent := "usd"
	for depth := 2; depth <= fsm.BudgetDepthMax; depth++ {
		s := spec("level-"+string(rune('0'+depth)), 1)
		s.ParentID = parent
		h.create(t0, s)
		parent = s.ID
	}
	tooDeep := spec("too-deep", 1)
	tooDeep.ParentID = parent
	if err := h.fail(t0, &fsm.CreateBudget{Tenant: tenant, Budget: tooDeep}, fsm.CodeInvalidArgument); !strings.Contains(err.Message, "budget.parent_id") {
		t.Fatalf("too deep: %v", err)
	}
	// A consume on the deepest budget charges the whole chain.
	h.consume(t0, parent, 1)
	if got := h.spent(t0, "usd"); got != 1 {
		t.Fatalf("root spent %d after a consume at depth %d", got, fsm.BudgetDepthMax)
	}
}

func TestConsumeAtomicAllOrNothing(t *testing.T) {
	h := newHarness(t)
	a := spec("a", usd(t, "10"))
	a.Thresholds = []uint32{50}
	h.create(t0, a)
	h.create(t0, spec("b", usd(t, "10")))
	atomic := func(items ...fsm.ConsumeItem) []fsm.SpendResult {
		t.Helper()
		r := h.ok(t0, &fsm.ConsumeAtomic{Tenant: tenant, Items: items})
		if len(r.Batch) != len(items) {
			t.Fatalf("%d results for %d items", len(r.Batch), len(items))
		}
		return r.Batch
	}
	item := func(id, amount string) fsm.ConsumeItem {
		return fsm.ConsumeItem{BudgetID: id, AmountMicros: usd(t, amount)}
	}

	got := atomic(item("a", "5"), item("b", "4"))
	want := []fsm.SpendResult{
		{Allowed: true, BudgetID: "a", Currency: "USD", SpentMicros: usd(t, "5"), RemainingMicros: usd(t, "5"), Thresholds: []uint32{50}},
		{Allowed: true, BudgetID: "b", Currency: "USD", SpentMicros: usd(t, "4"), RemainingMicros: usd(t, "6")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fitting batch:\n%+v\nwant\n%+v", got, want)
	}

	// The second item does not fit: nothing is charged.
	got = atomic(item("a", "1"), item("b", "7"))
	want = []fsm.SpendResult{
		{Reason: fsm.ReasonBatchAborted, BudgetID: "a", Currency: "USD", SpentMicros: usd(t, "5"), RemainingMicros: usd(t, "5")},
		{Reason: fsm.ReasonBudgetExceeded, DeniedBy: "b", BudgetID: "b", Currency: "USD", SpentMicros: usd(t, "4"), RemainingMicros: usd(t, "6")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("failing batch:\n%+v\nwant\n%+v", got, want)
	}

	// Two items on one budget cannot together pass it, though each fits.
	got = atomic(item("a", "3"), item("a", "3"), item("b", "1"))
	if got[0].Reason != fsm.ReasonBatchAborted || got[1].Reason != fsm.ReasonBudgetExceeded || got[1].DeniedBy != "a" ||
		got[2].Reason != fsm.ReasonBatchAborted || got[0].Allowed || got[1].Allowed || got[2].Allowed {
		t.Fatalf("same-budget overflow: %+v", got)
	}
	if h.spent(t0, "a") != usd(t, "5") || h.spent(t0, "b") != usd(t, "4") {
		t.Fatalf("aborted batches charged: a %d b %d", h.spent(t0, "a"), h.spent(t0, "b"))
	}
	// ... but exactly filling it works, and the results show the running spend.
	got = atomic(item("a", "2.5"), item("a", "2.5"))
	if !got[0].Allowed || !got[1].Allowed || got[0].SpentMicros != usd(t, "7.5") || got[1].SpentMicros != usd(t, "10") ||
		got[1].RemainingMicros != 0 {
		t.Fatalf("same-budget exact fill: %+v", got)
	}
	if ba := h.budget(t0, "a"); ba.AllowedCount != 3 || ba.DeniedCount != 3 {
		t.Fatalf("a counters allowed %d denied %d", ba.AllowedCount, ba.DeniedCount)
	}

	// An unknown budget refuses the whole batch with the item named.
	r := h.one(t0, &fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{item("b", "1"), item("zzz", "1")}})
	if r.Err == nil || r.Err.Code != fsm.CodeNotFound || !strings.HasPrefix(r.Err.Message, "items[1]: ") {
		t.Fatalf("unknown budget in a batch: %+v", r)
	}
	if h.spent(t0, "b") != usd(t, "4") {
		t.Fatalf("a refused batch charged b")
	}
}

func TestConsumeAtomicSharedParent(t *testing.T) {
	h := newHarness(t)
	h.create(t0, spec("p", usd(t, "10")))
	for _, id := range []string{"c1", "c2"} {
		s := spec(id, usd(t, "10"))
		s.ParentID = "p"
		h.create(t0, s)
	}
	r := h.ok(t0, &fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{
		{BudgetID: "c1", AmountMicros: usd(t, "6")}, {BudgetID: "c2", AmountMicros: usd(t, "6")}}})
	if r.Batch[0].Reason != fsm.ReasonBatchAborted || r.Batch[1].Reason != fsm.ReasonBudgetExceeded || r.Batch[1].DeniedBy != "p" {
		t.Fatalf("siblings over the parent: %+v", r.Batch)
	}
	for _, id := range []string{"p", "c1", "c2"} {
		if got := h.spent(t0, id); got != 0 {
			t.Fatalf("%s spent %d after an aborted batch", id, got)
		}
	}
}

// Every item of an aborted batch reports, and counts its denial in, the
// period of the batch, even items after the one that failed.
func TestConsumeAtomicAbortReportsCurrentPeriod(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"a", "b"} {
		s := spec(id, usd(t, "10"))
		s.Period = fsm.PeriodDay
		h.create(t0, s)
	}
	h.consume(t0, "b", usd(t, "3"))
	nextDay := t0 + 12*hourMs
	r := h.ok(nextDay, &fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{
		{BudgetID: "a", AmountMicros: usd(t, "11")}, {BudgetID: "b", AmountMicros: usd(t, "1")}}})
	want := fsm.SpendResult{Reason: fsm.ReasonBatchAborted, BudgetID: "b", Currency: "USD", RemainingMicros: usd(t, "10")}
	if !reflect.DeepEqual(r.Batch[1], want) {
		t.Fatalf("aborted item after the failed one: %+v, want %+v", r.Batch[1], want)
	}
	b := h.budget(nextDay, "b")
	if b.DeniedCount != 1 || len(b.History) != 1 || b.History[0].DeniedCount != 0 || b.History[0].SpentMicros != usd(t, "3") {
		t.Fatalf("b after the aborted batch: denied %d history %+v", b.DeniedCount, b.History)
	}
}

func TestCheckBudgetIsADryRun(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Thresholds = []uint32{50}
	h.create(t0, s)
	h.consume(t0, "b", usd(t, "4"))
	before := h.hash()
	h.m.Read(t0, func(v fsm.View) error {
		d, err := v.CheckBudget(tenant, "b", usd(t, "2"))
		if err != nil || !d.Allowed || d.SpentMicros != usd(t, "6") || !reflect.DeepEqual(d.Thresholds, []uint32{50}) {
			t.Errorf("check 2: %+v, %v", d, err)
		}
		d, err = v.CheckBudget(tenant, "b", usd(t, "7"))
		if err != nil || d.Allowed || d.DeniedBy != "b" || d.SpentMicros != usd(t, "4") {
			t.Errorf("check 7: %+v, %v", d, err)
		}
		if _, err := v.CheckBudget(tenant, "b", 0); !errors.Is(err, fsm.ErrInvalidArgument) {
			t.Errorf("check 0: %v", err)
		}
		if _, err := v.CheckBudget(tenant, "nope", 1); !errors.Is(err, fsm.ErrNotFound) {
			t.Errorf("check a missing budget: %v", err)
		}
		return nil
	})
	if h.hash() != before {
		t.Fatal("CheckBudget changed the state")
	}
	if b := h.budget(t0, "b"); b.SpentMicros != usd(t, "4") || b.DeniedCount != 0 || b.AllowedCount != 1 || len(b.Crossed) != 0 {
		t.Fatalf("after dry runs: %+v", b)
	}
}

func TestNoopAndBatchedEntry(t *testing.T) {
	h := newHarness(t)
	// Commands of one entry apply in order and see each other's effects.
	rs := h.apply(t0,
		&fsm.Noop{},
		&fsm.CreateBudget{Tenant: tenant, Budget: spec("b", usd(t, "3"))},
		&fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: usd(t, "2")},
		&fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: usd(t, "2")},
		&fsm.Noop{},
	)
	if !reflect.DeepEqual(rs[0], fsm.Result{Index: 1}) || !reflect.DeepEqual(rs[4], fsm.Result{Index: 1}) {
		t.Fatalf("noop results %+v %+v", rs[0], rs[4])
	}
	if rs[1].Budget == nil || !rs[2].Spend.Allowed || rs[3].Spend.Allowed {
		t.Fatalf("batched entry: %+v", rs)
	}
	for i, r := range rs {
		if r.Index != 1 {
			t.Fatalf("result %d has index %d", i, r.Index)
		}
	}
	if out := h.applyEntry(t0); len(out.Results) != 0 || h.m.AppliedIndex() != 2 {
		t.Fatalf("empty entry: %+v", out)
	}
}

// An entry stamped before the previous one is applied at the previous time.
func TestLogTimeNeverGoesBack(t *testing.T) {
	h := newHarness(t)
	h.applyEntry(t0 + 5000)
	out := h.applyEntry(t0, &fsm.CreateBudget{Tenant: tenant, Budget: spec("b", 1)},
		&fsm.Reserve{Tenant: tenant, BudgetID: "b", AmountMicros: 1, TTLMs: 1000})
	if out.NowMs != t0+5000 || h.m.LastLogTimeMs() != t0+5000 {
		t.Fatalf("entry applied at %d (machine %d), want %d", out.NowMs, h.m.LastLogTimeMs(), t0+5000)
	}
	if b := out.Results[0].Budget; b.CreatedAtMs != t0+5000 {
		t.Fatalf("budget created at %d", b.CreatedAtMs)
	}
	if got := out.Results[1].Spend.HoldExpiresAtMs; got != t0+6000 {
		t.Fatalf("hold expires at %d, want %d", got, t0+6000)
	}
	// Reads never evaluate before the last log time either.
	h.m.Read(0, func(v fsm.View) error {
		if v.NowMs() != t0+5000 || v.AppliedIndex() != 2 {
			t.Errorf("view at %d index %d", v.NowMs(), v.AppliedIndex())
		}
		return nil
	})
	if out := h.applyEntry(t0 + 5001); out.NowMs != t0+5001 {
		t.Fatalf("later entry applied at %d", out.NowMs)
	}
}

// Reads and results hand out copies: changing them does not change the state.
func TestViewsAreCopies(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Thresholds = []uint32{50}
	s.Period = fsm.PeriodDay
	created := h.create(t0, s)
	h.consume(t0, "b", usd(t, "6"))
	h.consume(t0+dayMs, "b", usd(t, "6"))
	before := h.hash()

	created.Spec.Thresholds[0] = 99
	b := h.budget(t0+dayMs, "b")
	b.Spec.Thresholds[0] = 1
	b.Crossed[0].Percent = 1
	b.History[0].Thresholds[0] = 1
	b.SpentMicros = 0
	if h.hash() != before {
		t.Fatal("changing a view changed the state")
	}
	if got := h.budget(t0+dayMs, "b"); got.Spec.Thresholds[0] != 50 || got.Crossed[0].Percent != 50 ||
		got.History[0].Thresholds[0] != 50 || got.SpentMicros != usd(t, "6") {
		t.Fatalf("budget after changing views: %+v", got)
	}
}

// Rate-limit policies: create, read, list, update by mask, delete. (Checks
// against them are tested with the algorithms.)
func TestPolicyCRUD(t *testing.T) {
	h := newHarness(t)
	policy := fsm.PolicySpec{ID: "api", Algorithm: fsm.AlgorithmTokenBucket, Limit: 100, WindowMs: 60_000, Burst: 20,
		Scales: []fsm.PriorityScale{{Priority: 1, Percent: 50}}}
	p := h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: policy}).Policy
	want := &fsm.Policy{Tenant: tenant, Spec: policy, CreatedAtMs: t0, UpdatedAtMs: t0, Version: 1}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("create returned %+v, want %+v", p, want)
	}
	h.fail(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: policy}, fsm.CodeAlreadyExists)
	other := policy
	other.ID = "zeta"
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: other})
	other.ID = "beta"
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: other})
	h.ok(t0, &fsm.CreatePolicy{Tenant: "globex", Policy: policy})

	p.Spec.Scales[0].Percent = 1 // a copy
	h.m.Read(t0, func(v fsm.View) error {
		got, err := v.Policy(tenant, "api")
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("read %+v, %v", got, err)
		}
		if _, err := v.Policy(tenant, "nope"); !errors.Is(err, fsm.ErrNotFound) {
			t.Errorf("read a missing policy: %v", err)
		}
		page, next := v.Policies(tenant, "", 2)
		if len(page) != 2 || page[0].Spec.ID != "api" || page[1].Spec.ID != "beta" || next != "beta" {
			t.Errorf("first page %+v next %q", page, next)
		}
		page, next = v.Policies(tenant, next, 2)
		if len(page) != 1 || page[0].Spec.ID != "zeta" || next != "" {
			t.Errorf("second page %+v next %q", page, next)
		}
		if c := v.Counts(); c.Policies != 4 || c.RateKeys != 0 {
			t.Errorf("counts %+v", c)
		}
		return nil
	})

	// Only the masked fields change.
	p = h.ok(t0+1, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit | fsm.UpdateScales,
		Policy: fsm.PolicySpec{ID: "api", Algorithm: fsm.AlgorithmGCRA, Limit: 20_000, WindowMs: 1, Burst: 1}}).Policy
	want.Spec.Limit, want.Spec.Scales, want.Version, want.UpdatedAtMs = 20_000, nil, 2, t0+1
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("update returned %+v, want %+v", p, want)
	}
	// The merged spec is validated: a sliding log may not have this limit.
	err := h.fail(t0+2, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateAlgorithm,
		Policy: fsm.PolicySpec{ID: "api", Algorithm: fsm.AlgorithmSlidingWindowLog}}, fsm.CodeInvalidArgument)
	if !strings.Contains(err.Message, "policy.limit") {
		t.Fatalf("merged validation: %v", err)
	}
	h.m.Read(t0+2, func(v fsm.View) error {
		if got, _ := v.Policy(tenant, "api"); !reflect.DeepEqual(got, want) {
			t.Errorf("a refused update changed the policy: %+v", got)
		}
		return nil
	})
	h.fail(t0+2, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit, Policy: fsm.PolicySpec{ID: "nope", Limit: 1}}, fsm.CodeNotFound)

	r := h.ok(t0+3, &fsm.DeletePolicy{Tenant: tenant, PolicyID: "api"})
	if r.Delete == nil || r.Delete.RemovedKeys != 0 {
		t.Fatalf("delete: %+v", r)
	}
	h.fail(t0+3, &fsm.DeletePolicy{Tenant: tenant, PolicyID: "api"}, fsm.CodeNotFound)
	h.m.Read(t0+3, func(v fsm.View) error {
		if _, err := v.Policy(tenant, "api"); !errors.Is(err, fsm.ErrNotFound) {
			t.Errorf("read a deleted policy: %v", err)
		}
		if _, err := v.Policy("globex", "api"); err != nil {
			t.Errorf("the other tenant's policy: %v", err)
		}
		return nil
	})
}
