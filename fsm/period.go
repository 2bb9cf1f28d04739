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
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case PeriodWeek:
		sinceMonday := (int(t.Weekday()) + 6) % 7
		start = time.Date(y, m, d-sinceMonday, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d-sinceMonday+7, 0, 0, 0, 0, loc)
	case PeriodMonth:
		start = time.Date(y, m, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	case PeriodQuarter:
		first := time.Month((int(m)-1)/3*3 + 1)
		start = time.Date(y, first, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, first+3, 1, 0, 0, 0, 0, loc)
	case PeriodYear:
		start = time.Date(y, 1, 1, 0, 0, 0, 0, loc)
		end = time.Date(y+1, 1, 1, 0, 0, 0, 0, loc)
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
