package fsm_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

// periodCase is a budget created at createdAt (wall time in zone) whose
// current period must be [start, end) (wall times in zone). Wall times are
// "2006-01-02T15:04:05[.000]"; where a wall time is ambiguous or does not
// exist the case uses zone "UTC" for the instants and zone only for the budget.
type periodCase struct {
	name           string
	period         fsm.Period
	customMs       int64
	budgetZone     string
	wallZone       string // zone of the three wall times; budgetZone if ""
	createdAt      string
	start, end     string
	wantDurationMs int64
}

var periodCases = []periodCase{
	{name: "day", period: fsm.PeriodDay, budgetZone: "Europe/Berlin",
		createdAt: "2025-01-15T09:30:00", start: "2025-01-15T00:00:00", end: "2025-01-16T00:00:00", wantDurationMs: 24 * hourMs},
	{name: "day of spring DST in Berlin (23 h)", period: fsm.PeriodDay, budgetZone: "Europe/Berlin",
		createdAt: "2025-03-30T12:00:00", start: "2025-03-30T00:00:00", end: "2025-03-31T00:00:00", wantDurationMs: 23 * hourMs},
	{name: "day of autumn DST in Berlin (25 h)", period: fsm.PeriodDay, budgetZone: "Europe/Berlin",
		createdAt: "2025-10-26T12:00:00", start: "2025-10-26T00:00:00", end: "2025-10-27T00:00:00", wantDurationMs: 25 * hourMs},
	{name: "day of spring DST in New York (23 h)", period: fsm.PeriodDay, budgetZone: "America/New_York",
		createdAt: "2025-03-09T01:59:59.999", start: "2025-03-09T00:00:00", end: "2025-03-10T00:00:00", wantDurationMs: 23 * hourMs},
	{name: "day of autumn DST in New York (25 h)", period: fsm.PeriodDay, budgetZone: "America/New_York",
		createdAt: "2025-11-02T23:00:00", start: "2025-11-02T00:00:00", end: "2025-11-03T00:00:00", wantDurationMs: 25 * hourMs},
	{name: "day starting at its first ms", period: fsm.PeriodDay, budgetZone: "America/New_York",
		createdAt: "2025-06-01T00:00:00", start: "2025-06-01T00:00:00", end: "2025-06-02T00:00:00", wantDurationMs: 24 * hourMs},
	{name: "week from Wednesday", period: fsm.PeriodWeek, budgetZone: "Europe/Berlin",
		createdAt: "2025-01-15T12:00:00", start: "2025-01-13T00:00:00", end: "2025-01-20T00:00:00", wantDurationMs: 7 * dayMs},
	{name: "week on Monday 00:00", period: fsm.PeriodWeek, budgetZone: "Europe/Berlin",
		createdAt: "2025-01-13T00:00:00", start: "2025-01-13T00:00:00", end: "2025-01-20T00:00:00", wantDurationMs: 7 * dayMs},
	{name: "week on Sunday's last ms", period: fsm.PeriodWeek, budgetZone: "Europe/Berlin",
		createdAt: "2025-01-19T23:59:59.999", start: "2025-01-13T00:00:00", end: "2025-01-20T00:00:00", wantDurationMs: 7 * dayMs},
	{name: "week across the new year", period: fsm.PeriodWeek, budgetZone: "America/New_York",
		createdAt: "2025-01-01T08:00:00", start: "2024-12-30T00:00:00", end: "2025-01-06T00:00:00", wantDurationMs: 7 * dayMs},
	{name: "week with the spring DST change", period: fsm.PeriodWeek, budgetZone: "Europe/Berlin",
		createdAt: "2025-03-27T12:00:00", start: "2025-03-24T00:00:00", end: "2025-03-31T00:00:00", wantDurationMs: 7*dayMs - hourMs},
	{name: "month of 31 days at its last ms", period: fsm.PeriodMonth, budgetZone: "Europe/Berlin",
		createdAt: "2025-01-31T23:59:59.999", start: "2025-01-01T00:00:00", end: "2025-02-01T00:00:00", wantDurationMs: 31 * dayMs},
	{name: "February of a leap year on the 29th", period: fsm.PeriodMonth, budgetZone: "Europe/Berlin",
		createdAt: "2024-02-29T12:00:00", start: "2024-02-01T00:00:00", end: "2024-03-01T00:00:00", wantDurationMs: 29 * dayMs},
	{name: "February of a common year", period: fsm.PeriodMonth, budgetZone: "America/New_York",
		createdAt: "2025-02-28T23:00:00", start: "2025-02-01T00:00:00", end: "2025-03-01T00:00:00", wantDurationMs: 28 * dayMs},
	{name: "month with the autumn DST change", period: fsm.PeriodMonth, budgetZone: "America/New_York",
		createdAt: "2025-11-15T12:00:00", start: "2025-11-01T00:00:00", end: "2025-12-01T00:00:00", wantDurationMs: 30*dayMs + hourMs},
	{name: "first quarter at its last ms", period: fsm.PeriodQuarter, budgetZone: "America/New_York",
		createdAt: "2025-03-31T23:59:59.999", start: "2025-01-01T00:00:00", end: "2025-04-01T00:00:00", wantDurationMs: 90*dayMs - hourMs},
	{name: "second quarter at its first ms", period: fsm.PeriodQuarter, budgetZone: "America/New_York",
		createdAt: "2025-04-01T00:00:00", start: "2025-04-01T00:00:00", end: "2025-07-01T00:00:00", wantDurationMs: 91 * dayMs},
	{name: "fourth quarter", period: fsm.PeriodQuarter, budgetZone: "Europe/Berlin",
		createdAt: "2025-12-31T12:00:00", start: "2025-10-01T00:00:00", end: "2026-01-01T00:00:00", wantDurationMs: 92*dayMs + hourMs},
	{name: "leap year", period: fsm.PeriodYear, budgetZone: "Europe/Berlin",
		createdAt: "2024-12-31T23:59:59.999", start: "2024-01-01T00:00:00", end: "2025-01-01T00:00:00", wantDurationMs: 366 * dayMs},
	{name: "year in UTC", period: fsm.PeriodYear, budgetZone: "UTC",
		createdAt: "2025-07-04T00:00:00", start: "2025-01-01T00:00:00", end: "2026-01-01T00:00:00", wantDurationMs: 365 * dayMs},
	{name: "custom 36 h aligned to creation", period: fsm.PeriodCustom, customMs: 36 * hourMs, budgetZone: "Europe/Berlin",
		createdAt: "2025-01-15T09:30:00", start: "2025-01-15T09:30:00", end: "2025-01-16T21:30:00", wantDurationMs: 36 * hourMs},
	{name: "custom 1 s", period: fsm.PeriodCustom, customMs: 1000, budgetZone: "UTC",
		createdAt: "2025-01-15T09:30:00.250", start: "2025-01-15T09:30:00.250", end: "2025-01-15T09:30:01.250", wantDurationMs: 1000},

	// Zones whose midnight falls into a DST gap: the day before the change
	// ends, and the day of the change starts, when the gap ends (01:00 local).
	{name: "Azores: day before the gap at midnight", period: fsm.PeriodDay, budgetZone: "Atlantic/Azores", wallZone: "UTC",
		createdAt: "2025-03-30T00:30:00", start: "2025-03-29T01:00:00", end: "2025-03-30T01:00:00", wantDurationMs: 24 * hourMs},
	{name: "Azores: day of the gap at midnight (23 h)", period: fsm.PeriodDay, budgetZone: "Atlantic/Azores", wallZone: "UTC",
		createdAt: "2025-03-30T01:00:00", start: "2025-03-30T01:00:00", end: "2025-03-31T00:00:00", wantDurationMs: 23 * hourMs},
	{name: "Azores: week ending at the gap", period: fsm.PeriodWeek, budgetZone: "Atlantic/Azores", wallZone: "UTC",
		createdAt: "2025-03-30T00:59:59.999", start: "2025-03-24T01:00:00", end: "2025-03-31T00:00:00", wantDurationMs: 7*dayMs - hourMs},
	{name: "Santiago: day before the gap at midnight", period: fsm.PeriodDay, budgetZone: "America/Santiago", wallZone: "UTC",
		createdAt: "2024-09-08T03:30:00", start: "2024-09-07T04:00:00", end: "2024-09-08T04:00:00", wantDurationMs: 24 * hourMs},
	{name: "Havana: day before the gap at midnight", period: fsm.PeriodDay, budgetZone: "America/Havana", wallZone: "UTC",
		createdAt: "2025-03-09T04:30:00", start: "2025-03-08T05:00:00", end: "2025-03-09T05:00:00", wantDurationMs: 24 * hourMs},
}

func (c periodCase) wall() string {
	if c.wallZone != "" {
		return c.wallZone
	}
	return c.budgetZone
}

func (c periodCase) spec(t *testing.T) fsm.BudgetSpec {
	s := spec("b", usd(t, "10"))
	s.Period, s.CustomPeriodMs, s.Timezone = c.period, c.customMs, c.budgetZone
	return s
}

func TestPeriodBounds(t *testing.T) {
	for _, c := range periodCases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			b := h.create(localMs(t, c.wall(), c.createdAt), c.spec(t))
			start, end := localMs(t, c.wall(), c.start), localMs(t, c.wall(), c.end)
			if b.PeriodStartMs != start || b.PeriodEndMs != end {
				t.Fatalf("period [%s, %s), want [%s, %s)", fmtMs(b.PeriodStartMs, c.budgetZone), fmtMs(b.PeriodEndMs, c.budgetZone),
					fmtMs(start, c.budgetZone), fmtMs(end, c.budgetZone))
			}
			if got := end - start; got != c.wantDurationMs {
				t.Fatalf("period lasts %d ms, want %d", got, c.wantDurationMs)
			}
		})
	}
}

// Spend resets exactly at the boundary: a consume at end-1 ms counts in the
// old period, at end in the new one, and the closed period goes to history.
func TestSpendResetsExactlyAtTheBoundary(t *testing.T) {
	for _, c := range periodCases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			createdAt := localMs(t, c.wall(), c.createdAt)
			start, end := localMs(t, c.wall(), c.start), localMs(t, c.wall(), c.end)
			h.create(createdAt, c.spec(t))

			if d := h.consume(end-1, "b", usd(t, "10")); !d.Allowed || d.SpentMicros != usd(t, "10") {
				t.Fatalf("consume at end-1: %+v", d)
			}
			if d := h.consume(end-1, "b", 1); d.Allowed {
				t.Fatalf("second consume at end-1 was allowed: %+v", d)
			}
			d := h.consume(end, "b", usd(t, "10"))
			if !d.Allowed || d.SpentMicros != usd(t, "10") || d.RemainingMicros != 0 {
				t.Fatalf("consume at end: %+v", d)
			}
			b := h.budget(end, "b")
			if b.PeriodStartMs != end || b.AllowedCount != 1 || b.DeniedCount != 0 {
				t.Fatalf("new period: %+v", b)
			}
			want := []fsm.PeriodUsage{{StartMs: start, EndMs: end, AmountMicros: usd(t, "10"), SpentMicros: usd(t, "10"),
				AllowedCount: 1, DeniedCount: 1}}
			if !reflect.DeepEqual(b.History, want) {
				t.Fatalf("history %+v, want %+v", b.History, want)
			}
		})
	}
}

func fmtMs(ms int64, zone string) string {
	loc, _ := time.LoadLocation(zone)
	return time.UnixMilli(ms).In(loc).Format("2006-01-02T15:04:05.000 -0700")
}

// For days around every DST change of 2024-2026 in zones with ordinary and
// with unusual (midnight) changes, the period of a day budget is exactly the
// local day containing now: it starts at the first ms of now's local date and
// ends at the first ms of a later date.
func TestDayPeriodIsTheLocalDayAroundDSTChanges(t *testing.T) {
	zones := []string{"Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
		"Atlantic/Azores", "America/Santiago", "America/Havana", "America/Asuncion", "Asia/Gaza", "Pacific/Chatham"}
	offsets := []time.Duration{-25 * time.Hour, -24 * time.Hour, -2 * time.Hour, -time.Hour - time.Millisecond, -time.Hour,
		-30 * time.Minute, -time.Millisecond, 0, time.Millisecond, 30 * time.Minute, time.Hour, 2 * time.Hour, 23 * time.Hour, 25 * time.Hour}
	for _, zone := range zones {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatalf("load %s: %v", zone, err)
		}
		localDate := func(ms int64) time.Time {
			y, m, d := time.UnixMilli(ms).In(loc).Date()
			return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		}
		h := newHarness(t)
		n := 0
		from := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		for at := from; at.Year() < 2027; {
			_, change := at.In(loc).ZoneBounds()
			if change.IsZero() {
				break
			}
			for _, off := range offsets {
				now := change.Add(off).UnixMilli()
				if now < h.m.LastLogTimeMs() {
					continue // log time only goes forward
				}
				n++
				s := spec("d-"+time.UnixMilli(now).UTC().Format("20060102T150405.000"), 1)
				s.Period, s.Timezone = fsm.PeriodDay, zone
				r := h.one(now, &fsm.CreateBudget{Tenant: tenant, Budget: s})
				if r.Err != nil {
					continue // the same instant from an overlapping offset
				}
				b := r.Budget
				today := localDate(now)
				if b.PeriodStartMs > now || now >= b.PeriodEndMs ||
					!localDate(b.PeriodStartMs).Equal(today) || !localDate(b.PeriodStartMs-1).Before(today) ||
					!localDate(b.PeriodEndMs-1).Equal(today) || !localDate(b.PeriodEndMs).After(today) {
					t.Errorf("%s at %s: period [%s, %s)", zone, fmtMs(now, zone), fmtMs(b.PeriodStartMs, zone), fmtMs(b.PeriodEndMs, zone))
				}
			}
			at = change
		}
		if n < 20 {
			t.Fatalf("%s: only %d instants checked", zone, n)
		}
	}
}

func TestCustomPeriodIsAlignedToCreation(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Period, s.CustomPeriodMs = fsm.PeriodCustom, 36*hourMs
	created := t0 + 1234
	h.create(created, s)
	h.consume(created, "b", usd(t, "4"))

	// 100 h later is in the third period after the first: [72 h, 108 h).
	later := created + 100*hourMs
	d := h.consume(later, "b", usd(t, "1"))
	if d.SpentMicros != usd(t, "1") {
		t.Fatalf("after skipping periods: %+v", d)
	}
	b := h.budget(later, "b")
	if b.PeriodStartMs != created+72*hourMs || b.PeriodEndMs != created+108*hourMs {
		t.Fatalf("period [%d, %d), want [%d, %d)", b.PeriodStartMs, b.PeriodEndMs, created+72*hourMs, created+108*hourMs)
	}
	// Empty periods skipped in between are not recorded.
	want := []fsm.PeriodUsage{{StartMs: created, EndMs: created + 36*hourMs, AmountMicros: usd(t, "10"),
		SpentMicros: usd(t, "4"), AllowedCount: 1}}
	if !reflect.DeepEqual(b.History, want) {
		t.Fatalf("history %+v, want %+v", b.History, want)
	}
}

func TestPeriodNoneNeverResets(t *testing.T) {
	h := newHarness(t)
	b := h.create(t0, spec("b", usd(t, "10")))
	if b.PeriodStartMs != t0 || b.PeriodEndMs != 0 {
		t.Fatalf("period [%d, %d)", b.PeriodStartMs, b.PeriodEndMs)
	}
	h.consume(t0, "b", usd(t, "6"))
	tenYears := t0 + 3653*dayMs
	if d := h.consume(tenYears, "b", usd(t, "5")); d.Allowed {
		t.Fatalf("a budget without period reset: %+v", d)
	}
	if d := h.consume(tenYears, "b", usd(t, "4")); !d.Allowed || d.SpentMicros != usd(t, "10") {
		t.Fatalf("consume ten years later: %+v", d)
	}
	if b := h.budget(tenYears+1, "b"); len(b.History) != 0 || b.PeriodStartMs != t0 {
		t.Fatalf("budget %+v", b)
	}
}

func TestHistoryIsNewestFirstAndBounded(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Period, s.Timezone = fsm.PeriodDay, "America/New_York"
	s.Thresholds = []uint32{1}
	start := localMs(t, "America/New_York", "2025-01-01T00:00:00")
	h.create(start, s)
	days := fsm.BudgetHistoryMax + 4
	for day := 0; day < days; day++ {
		// day+1 micros on day; the day of the DST change is shorter, so go
		// by the calendar, not by 24 h steps.
		at := time.UnixMilli(start).In(mustZone(t, "America/New_York")).AddDate(0, 0, day).Add(12 * time.Hour).UnixMilli()
		h.consume(at, "b", int64(day+1)*10_000)
	}
	final := time.UnixMilli(start).In(mustZone(t, "America/New_York")).AddDate(0, 0, days)
	b := h.budget(final.UnixMilli(), "b")
	if len(b.History) != fsm.BudgetHistoryMax {
		t.Fatalf("history has %d periods, want %d", len(b.History), fsm.BudgetHistoryMax)
	}
	for i, p := range b.History {
		day := days - 1 - i
		dayStart := time.UnixMilli(start).In(mustZone(t, "America/New_York")).AddDate(0, 0, day)
		want := fsm.PeriodUsage{StartMs: dayStart.UnixMilli(), EndMs: dayStart.AddDate(0, 0, 1).UnixMilli(),
			AmountMicros: usd(t, "10"), SpentMicros: int64(day+1) * 10_000, AllowedCount: 1, Thresholds: []uint32{1}}
		if day < 9 {
			want.Thresholds = nil // below 1 % (0.1 USD)
		}
		if !reflect.DeepEqual(p, want) {
			t.Fatalf("history[%d] = %+v, want %+v", i, p, want)
		}
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// A read at a later time sees the budget rolled over without changing it.
func TestReadRollsWithoutMutating(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Period = fsm.PeriodDay
	s.Thresholds = []uint32{50}
	h.create(t0, s)
	h.consume(t0, "b", usd(t, "6"))
	before := h.hash()

	tomorrow := t0 + 12*hourMs
	b := h.budget(tomorrow+5, "b")
	wantHistory := []fsm.PeriodUsage{{StartMs: t0 - 12*hourMs, EndMs: tomorrow, AmountMicros: usd(t, "10"),
		SpentMicros: usd(t, "6"), AllowedCount: 1, Thresholds: []uint32{50}}}
	if b.SpentMicros != 0 || b.AllowedCount != 0 || len(b.Crossed) != 0 || b.PeriodStartMs != tomorrow ||
		b.PeriodEndMs != tomorrow+dayMs || !reflect.DeepEqual(b.History, wantHistory) {
		t.Fatalf("read tomorrow: %+v", b)
	}
	h.m.Read(tomorrow, func(v fsm.View) error {
		page, _ := v.Budgets(tenant, "", 10)
		if len(page) != 1 || page[0].SpentMicros != 0 || len(page[0].History) != 1 {
			t.Errorf("list tomorrow: %+v", page)
		}
		d, err := v.CheckBudget(tenant, "b", usd(t, "10"))
		if err != nil || !d.Allowed {
			t.Errorf("check tomorrow: %+v %v", d, err)
		}
		return nil
	})
	if h.hash() != before {
		t.Fatal("reads changed the state")
	}
	if b := h.budget(t0, "b"); b.SpentMicros != usd(t, "6") || len(b.History) != 0 || len(b.Crossed) != 1 {
		t.Fatalf("read today after reading tomorrow: %+v", b)
	}
}

// Changing the amount closes the period with the old amount first.
func TestUpdateRollsBeforeChanging(t *testing.T) {
	h := newHarness(t)
	s := spec("b", usd(t, "10"))
	s.Period = fsm.PeriodDay
	h.create(t0, s)
	h.consume(t0, "b", usd(t, "3"))
	tomorrow := t0 + 12*hourMs
	b := h.ok(tomorrow, &fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateAmount, Budget: fsm.BudgetSpec{ID: "b", AmountMicros: usd(t, "20")}}).Budget
	if len(b.History) != 1 || b.History[0].AmountMicros != usd(t, "10") || b.History[0].SpentMicros != usd(t, "3") ||
		b.SpentMicros != 0 || b.Spec.AmountMicros != usd(t, "20") {
		t.Fatalf("after update on the next day: %+v", b)
	}
}
