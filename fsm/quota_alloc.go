package fsm

import (
	"math/big"
	"sort"
)

// Quota allocation strategies ([quotas]). Allocate is a pure function of a
// pool's capacity and its consumers, recomputed in the state machine
// whenever one of them changes, so it must be deterministic and exact:
// amounts are int64 micro-units, the water level is a big.Rat, and the units
// that rounding down leaves over go one each to the largest remainders, ties
// broken by consumer id.

// Strategy values match tollgate.v1.QuotaStrategy.
type Strategy uint8

const (
	// StrategyFixed gives each consumer its Fixed amount (scaled down by
	// weight Fixed when the capacity no longer covers them all).
	StrategyFixed Strategy = 1
	// StrategyProportional splits the capacity in proportion to weights.
	StrategyProportional Strategy = 2
	// StrategyFairShare is max-min fair over demands, weights honoured.
	StrategyFairShare Strategy = 3
	// StrategyPriority satisfies higher priorities first, fair share within
	// a level.
	StrategyPriority Strategy = 4
)

// AllocConsumer is what allocation needs of a consumer. Min and Max of 0
// mean none; Max must be at least Min when set.
type AllocConsumer struct {
	ID       string
	Weight   int64 // >= 1
	Priority int32 // higher first (PRIORITY)
	Min      int64
	Max      int64
	Demand   int64 // reported need (FAIR_SHARE, PRIORITY)
	Fixed    int64 // FIXED
}

// Allocate returns each consumer's allocation, in the order given. For
// every strategy: the sum never exceeds capacity, no consumer gets more than
// its Max, and every consumer gets its Min when the minimums fit the
// capacity (they are guarantees: when they do not fit, the minimums
// themselves are shared fairly by weight). Beyond the minimums:
//   - FIXED: Fixed each (bounded by Max), scaled down fairly when they do not fit;
//   - PROPORTIONAL: the whole capacity, weighted max-min over Max;
//   - FAIR_SHARE: weighted max-min fair over min(Demand, Max); capacity
//     nobody demands stays unallocated;
//   - PRIORITY: levels from the highest priority, each weighted max-min fair
//     over min(Demand, Max) with what the levels above left; a level gets
//     nothing beyond its minimums while a higher level is unsatisfied.
func Allocate(capacity int64, strategy Strategy, consumers []AllocConsumer) []int64 {
	n := len(consumers)
	out := make([]int64, n)
	if n == 0 || capacity <= 0 {
		return out
	}
	lo := make([]int64, n)
	hi := make([]int64, n)
	w := make([]int64, n)
	var sumMin int64
	for i, c := range consumers {
		w[i] = max(c.Weight, 1)
		lo[i] = max(c.Min, 0)
		if c.Max > 0 {
			lo[i] = min(lo[i], c.Max)
		}
		sumMin = satAdd(sumMin, lo[i])
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	if sumMin >= capacity {
		// Not even the minimums fit: share the capacity over them.
		return waterFill(capacity, consumers, all, w, make([]int64, n), lo, out)
	}
	upper := func(c AllocConsumer) int64 {
		switch strategy {
		case StrategyFixed:
			return max(c.Fixed, 0)
		case StrategyProportional:
			return capacity
		}
		return max(c.Demand, 0)
	}
	for i, c := range consumers {
		hi[i] = max(upper(c), lo[i])
		if c.Max > 0 {
			hi[i] = min(hi[i], max(c.Max, lo[i]))
		}
		hi[i] = min(hi[i], capacity)
	}
	if strategy == StrategyFixed {
		// Scaled by the fixed amounts themselves, not by weights.
		for i, c := range consumers {
			w[i] = max(c.Fixed, 1)
		}
	}
	if strategy != StrategyPriority {
		return waterFill(capacity, consumers, all, w, lo, hi, out)
	}
	// PRIORITY: everyone's minimum first, then level by level.
	copy(out, lo)
	left := capacity - sumMin
	levels := map[int32][]int{}
	var prios []int32
	for i, c := range consumers {
		if levels[c.Priority] == nil {
			prios = append(prios, c.Priority)
		}
		levels[c.Priority] = append(levels[c.Priority], i)
	}
	sort.Slice(prios, func(a, b int) bool { return prios[a] > prios[b] })
	for _, p := range prios {
		idx := levels[p]
		var want, have int64
		for _, i := range idx {
			want = satAdd(want, hi[i])
			have += lo[i]
		}
		budget := min(left, want-have)
		if budget <= 0 {
			continue
		}
		level := waterFill(have+budget, consumers, idx, w, lo, hi, make([]int64, n))
		for _, i := range idx {
			out[i] = level[i]
		}
		left -= budget
	}
	return out
}

// waterFill gives the consumers idx amounts clamp(L·w, lo, hi) summing to
// min(total, Σhi) (at least Σlo is assumed to fit, except when lo is all
// zero), rounding down and handing the units left over to the largest
// remainders (ties by id). It writes into out and returns it.
func waterFill(total int64, consumers []AllocConsumer, idx []int, w, lo, hi, out []int64) []int64 {
	var sumHi, sumLo int64
	for _, i := range idx {
		sumHi = satAdd(sumHi, hi[i])
		sumLo = satAdd(sumLo, lo[i])
	}
	target := min(total, sumHi)
	if target <= sumLo {
		for _, i := range idx {
			out[i] = lo[i]
		}
		return out
	}
	// S(L) = Σ clamp(L·w_i, lo_i, hi_i) is piecewise linear and
	// nondecreasing; find L with S(L) = target between breakpoints.
	var points []*big.Rat
	for _, i := range idx {
		points = append(points, big.NewRat(lo[i], w[i]), big.NewRat(hi[i], w[i]))
	}
	sort.Slice(points, func(a, b int) bool { return points[a].Cmp(points[b]) < 0 })
	sum := func(l *big.Rat) *big.Rat {
		s := new(big.Rat)
		for _, i := range idx {
			s.Add(s, clampRat(new(big.Rat).Mul(l, big.NewRat(w[i], 1)), lo[i], hi[i]))
		}
		return s
	}
	t := new(big.Rat).SetInt64(target)
	level := points[len(points)-1]
	for k, p := range points {
		if sum(p).Cmp(t) < 0 {
			continue
		}
		// S is linear on [prev, p]: S(prev) < target <= S(p).
		if k == 0 {
			level = p
			break
		}
		prev := points[k-1]
		sPrev, sP := sum(prev), sum(p)
		if sP.Cmp(sPrev) == 0 {
			level = p
			break
		}
		// L = prev + (target - S(prev)) · (p - prev) / (S(p) - S(prev))
		frac := new(big.Rat).Quo(new(big.Rat).Sub(t, sPrev), new(big.Rat).Sub(sP, sPrev))
		level = new(big.Rat).Add(prev, new(big.Rat).Mul(frac, new(big.Rat).Sub(p, prev)))
		break
	}
	type rem struct {
		i    int
		frac *big.Rat
	}
	var rems []rem
	var given int64
	for _, i := range idx {
		exact := clampRat(new(big.Rat).Mul(level, big.NewRat(w[i], 1)), lo[i], hi[i])
		floor := new(big.Int).Quo(exact.Num(), exact.Denom()) // exact >= 0
		out[i] = floor.Int64()
		given += out[i]
		if f := new(big.Rat).Sub(exact, new(big.Rat).SetInt(floor)); f.Sign() > 0 && out[i] < hi[i] {
			rems = append(rems, rem{i, f})
		}
	}
	sort.Slice(rems, func(a, b int) bool {
		if c := rems[a].frac.Cmp(rems[b].frac); c != 0 {
			return c > 0
		}
		return consumers[rems[a].i].ID < consumers[rems[b].i].ID
	})
	for k := 0; given < target && k < len(rems); k++ {
		out[rems[k].i]++
		given++
	}
	return out
}

func clampRat(x *big.Rat, lo, hi int64) *big.Rat {
	if l := big.NewRat(lo, 1); x.Cmp(l) < 0 {
		return l
	}
	if h := big.NewRat(hi, 1); x.Cmp(h) > 0 {
		return h
	}
	return x
}
