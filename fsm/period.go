package fsm

import (
	"sync"
	"time"
)

// zoneCache memoizes time.LoadLocation. A zone's rules are a pure function of
// its name and the zone database compiled into (or shipped with) the binary,
// so caching does not affect determinism.
var zoneCache sync.Map // string -> *time.Location

func loadZone(name string) (*time.Location, error) {
	if loc, ok := zoneCache.Load(name); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zoneCache.Store(name, loc)
	return loc, nil
}

// zone returns a zone that was validated when the budget was created.
func zone(name string) *time.Location {
	loc, err := loadZone(name)
	if err != nil {
		// A replica that cannot load a zone it accepted before must stop,
		// not diverge.
		panic("fsm: timezone " + name + " no longer loads: " + err.Error())
	}
	return loc
}

// periodBounds returns the period containing nowMs: [start, end) in ms, with
// end 0 for PERIOD_NONE. Calendar periods are aligned in the budget's zone
// (so a day is 23 or 25 hours across a DST change); PERIOD_CUSTOM is aligned
// to anchorMs, the budget's creation time.
func periodBounds(spec *BudgetSpec, anchorMs, nowMs int64) (startMs, endMs int64) {
	if spec.Period == PeriodNone {
		return anchorMs, 0
	}
	if spec.Period == PeriodCustom {
		k := (nowMs - anchorMs) / spec.CustomPeriodMs
		if nowMs < anchorMs {
			k = 0 // log time never goes below the creation stamp; be safe anyway
		}
		startMs = anchorMs + k*spec.CustomPeriodMs
		return startMs, startMs + spec.CustomPeriodMs
	}
	loc := zone(spec.Timezone)
	t := time.UnixMilli(nowMs).In(loc)
	y, m, d := t.Date()
	var start, end time.Time
	switch spec.Period {
	case PeriodDay:
		start = localDayStart(y, m, d, loc)
		end = localDayStart(y, m, d+1, loc)
	case PeriodWeek:
		sinceMonday := (int(t.Weekday()) + 6) % 7
		start = localDayStart(y, m, d-sinceMonday, loc)
		end = localDayStart(y, m, d-sinceMonday+7, loc)
	case PeriodMonth:
		start = localDayStart(y, m, 1, loc)
		end = localDayStart(y, m+1, 1, loc)
	case PeriodQuarter:
		first := time.Month((int(m)-1)/3*3 + 1)
		start = localDayStart(y, first, 1, loc)
		end = localDayStart(y, first+3, 1, loc)
	case PeriodYear:
		start = localDayStart(y, 1, 1, loc)
		end = localDayStart(y+1, 1, 1, loc)
	default:
		panic("fsm: unknown period in a validated budget")
	}
	startMs, endMs = start.UnixMilli(), end.UnixMilli()
	if startMs > nowMs || nowMs >= endMs {
		// A zone whose midnight does not exist can shift the boundary; never
		// hand out a period that does not contain now.
		panic("fsm: period bounds do not contain now")
	}
	return startMs, endMs
}

// localDayStart returns the first instant whose date in loc is on or after the
// (normalized) date y-m-d. Usually that is time.Date(y, m, d, 0, 0, 0, 0, loc),
// but where midnight falls into a DST gap (America/Santiago, Atlantic/Azores,
// America/Havana spring forward at 00:00) time.Date may return the instant
// before the gap, which is still on the previous day; where midnight happens
// twice (a fall back from 01:00 to 00:00) it may return the later one; and a
// skipped day (Pacific/Apia 2011-12-30) has no midnight at all. Then the first
// such millisecond is found by bisection: the local date never decreases as
// time goes on, and zone offsets are far below the two-day search radius.
func localDayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	onOrAfter := func(ms int64) bool {
		ly, lm, ld := time.UnixMilli(ms).In(loc).Date()
		return !time.Date(ly, lm, ld, 0, 0, 0, 0, time.UTC).Before(want)
	}
	guess := time.Date(y, m, d, 0, 0, 0, 0, loc).UnixMilli()
	if onOrAfter(guess) && !onOrAfter(guess-1) {
		return time.UnixMilli(guess) // the common case
	}
	const radiusMs = 2 * 24 * 3600 * 1000
	lo, hi := guess-radiusMs, guess+radiusMs // !onOrAfter(lo) && onOrAfter(hi)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if onOrAfter(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return time.UnixMilli(hi)
}

// rollPeriod closes the current period of b if nowMs has passed its end,
// keeping the closed period in the history, and opens the period containing
// nowMs. Empty periods skipped in between are not recorded.
func rollPeriod(b *Budget, nowMs int64) {
	if b.PeriodEndMs == 0 || nowMs < b.PeriodEndMs {
		return
	}
	closed := PeriodUsage{
		StartMs:        b.PeriodStartMs,
		EndMs:          b.PeriodEndMs,
		AmountMicros:   b.Spec.AmountMicros,
		SpentMicros:    b.SpentMicros,
		AllowedCount:   b.AllowedCount,
		DeniedCount:    b.DeniedCount,
		WouldDenyCount: b.WouldDenyCount,
	}
	for _, c := range b.Crossed {
		closed.Thresholds = append(closed.Thresholds, c.Percent)
	}
	b.History = append([]PeriodUsage{closed}, b.History...)
	if len(b.History) > BudgetHistoryMax {
		b.History = b.History[:BudgetHistoryMax]
	}
	b.PeriodStartMs, b.PeriodEndMs = periodBounds(&b.Spec, b.CreatedAtMs, nowMs)
	b.SpentMicros = 0
	b.AllowedCount, b.DeniedCount, b.WouldDenyCount = 0, 0, 0
	b.Crossed = nil
}
