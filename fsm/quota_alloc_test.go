package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func randomConsumers(rng *rand.Rand, n int, capacity int64) []fsm.AllocConsumer {
	cs := make([]fsm.AllocConsumer, n)
	for i := range cs {
		c := fsm.AllocConsumer{ID: fmt.Sprintf("c%02d", i), Weight: 1 + rng.Int64N(5), Priority: int32(rng.IntN(3)),
			Demand: rng.Int64N(capacity/2 + 1), Fixed: rng.Int64N(capacity/3 + 1)}
		if rng.IntN(3) == 0 {
			c.Min = rng.Int64N(capacity/(int64(n)*2) + 1)
		}
		if rng.IntN(3) == 0 {
			c.Max = c.Min + rng.Int64N(capacity/3+1)
		}
		cs[i] = c
	}
	return cs
}

// bounds are a consumer's floor and ceiling under a strategy (see Allocate).
func bounds(strategy fsm.Strategy, capacity int64, c fsm.AllocConsumer) (lo, hi int64) {
	lo = c.Min
	if c.Max > 0 {
		lo = min(lo, c.Max)
	}
	switch strategy {
	case fsm.StrategyFixed:
		hi = c.Fixed
	case fsm.StrategyProportional:
		hi = capacity
	default:
		hi = c.Demand
	}
	hi = max(hi, lo)
	if c.Max > 0 {
		hi = min(hi, max(c.Max, lo))
	}
	return lo, min(hi, capacity)
}

// TestAllocateProperties ([quotas] acceptance 1): for random pools and
// consumers under every strategy, the sum never passes the capacity, Max is
// never passed, minimums are met when they fit, FAIR_SHARE and PROPORTIONAL
// are weighted max-min fair (no consumer could gain a unit from one with a
// larger weighted share without that one dropping to its minimum or the
// first passing its ceiling), PRIORITY gives a level nothing beyond its
// minimums while a higher level is unsatisfied, and the result per consumer
// does not depend on their order.
func TestAllocateProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	strategies := []fsm.Strategy{fsm.StrategyFixed, fsm.StrategyProportional, fsm.StrategyFairShare, fsm.StrategyPriority}
	for round := 0; round < 3000; round++ {
		capacity := 1 + rng.Int64N(1_000_000)
		cs := randomConsumers(rng, 1+rng.IntN(12), capacity)
		strategy := strategies[round%len(strategies)]
		got := fsm.Allocate(capacity, strategy, cs)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("round %d, %v, capacity %d, consumers %+v -> %v: %s", round, strategy, capacity, cs, got, fmt.Sprintf(format, args...))
		}
		var sum, sumMin, sumHi int64
		lo := make([]int64, len(cs))
		hi := make([]int64, len(cs))
		for i, c := range cs {
			lo[i], hi[i] = bounds(strategy, capacity, c)
			sum += got[i]
			sumMin += lo[i]
			sumHi += hi[i]
			if got[i] < 0 || (c.Max > 0 && got[i] > max(c.Max, 0)) {
				fail("consumer %s got %d outside [0, max %d]", c.ID, got[i], c.Max)
			}
		}
		if sum > capacity {
			fail("sum %d exceeds the capacity", sum)
		}
		if sumMin <= capacity {
			for i, c := range cs {
				if got[i] < lo[i] {
					fail("consumer %s got %d below its minimum %d", c.ID, got[i], lo[i])
				}
				if got[i] > hi[i] {
					fail("consumer %s got %d above its ceiling %d", c.ID, got[i], hi[i])
				}
			}
			if sum != min(capacity, sumHi) {
				fail("sum %d, want min(capacity, ceilings) %d", sum, min(capacity, sumHi))
			}
		} else if sum != capacity {
			fail("minimums do not fit, yet only %d of the capacity is given", sum)
		}
		if (strategy == fsm.StrategyFairShare || strategy == fsm.StrategyProportional) && sumMin <= capacity {
			for i := range cs {
				for j := range cs {
					// i could take a unit from j and still have a smaller
					// weighted share than j (beyond rounding: one unit each).
					wi, wj := max(cs[i].Weight, 1), max(cs[j].Weight, 1)
					if (got[i]+1)*wj < (got[j]-1)*wi && got[i] < hi[i] && got[j] > lo[j] {
						fail("not max-min fair: %s has %d (w %d) below its ceiling %d while %s has %d (w %d) above its floor %d",
							cs[i].ID, got[i], wi, hi[i], cs[j].ID, got[j], wj, lo[j])
					}
				}
			}
		}
		if strategy == fsm.StrategyPriority && sumMin <= capacity {
			for i := range cs {
				for j := range cs {
					if cs[i].Priority > cs[j].Priority && got[i] < hi[i] && got[j] > lo[j] {
						fail("%s (priority %d) is unsatisfied (%d of %d) while %s (priority %d) got %d beyond its minimum %d",
							cs[i].ID, cs[i].Priority, got[i], hi[i], cs[j].ID, cs[j].Priority, got[j], lo[j])
					}
				}
			}
		}
		// Order does not matter.
		perm := rng.Perm(len(cs))
		shuffled := make([]fsm.AllocConsumer, len(cs))
		for k, p := range perm {
			shuffled[k] = cs[p]
		}
		again := fsm.Allocate(capacity, strategy, shuffled)
		for k, p := range perm {
			if again[k] != got[p] {
				fail("consumer %s gets %d in another order, %d before", cs[p].ID, again[k], got[p])
			}
		}
	}
}

// TestAllocateExamples pins small cases by hand.
func TestAllocateExamples(t *testing.T) {
	c := func(id string, weight, demand int64) fsm.AllocConsumer {
		return fsm.AllocConsumer{ID: id, Weight: weight, Demand: demand}
	}
	for _, tc := range []struct {
		name      string
		capacity  int64
		strategy  fsm.Strategy
		consumers []fsm.AllocConsumer
		want      string
	}{
		// Max-min: a needs 10, the rest is split evenly between b and c.
		{"fair share", 100, fsm.StrategyFairShare, []fsm.AllocConsumer{c("a", 1, 10), c("b", 1, 100), c("c", 1, 100)}, "[10 45 45]"},
		// Weights 1:3 over 100, both demanding everything.
		{"weighted", 100, fsm.StrategyFairShare, []fsm.AllocConsumer{c("a", 1, 100), c("b", 3, 100)}, "[25 75]"},
		// Nobody demands the rest: it stays unallocated.
		{"unused", 100, fsm.StrategyFairShare, []fsm.AllocConsumer{c("a", 1, 10), c("b", 1, 20)}, "[10 20]"},
		// Proportional ignores demand; 100 over weights 1:1:1 leaves one unit
		// for the smallest id.
		{"proportional", 100, fsm.StrategyProportional, []fsm.AllocConsumer{c("a", 1, 0), c("b", 1, 0), c("c", 1, 0)}, "[34 33 33]"},
		// Priority: the high level takes what it demands first.
		{"priority", 100, fsm.StrategyPriority, []fsm.AllocConsumer{
			{ID: "low", Weight: 1, Priority: 0, Demand: 100}, {ID: "high", Weight: 1, Priority: 1, Demand: 70}}, "[30 70]"},
		// Fixed amounts that do not fit are scaled down by their size.
		{"fixed over", 100, fsm.StrategyFixed, []fsm.AllocConsumer{{ID: "a", Fixed: 100}, {ID: "b", Fixed: 300}}, "[25 75]"},
		// A minimum is a guarantee, a maximum a cap.
		{"min max", 100, fsm.StrategyFairShare, []fsm.AllocConsumer{
			{ID: "a", Weight: 1, Demand: 5, Min: 20}, {ID: "b", Weight: 1, Demand: 100, Max: 50}, {ID: "c", Weight: 1, Demand: 100}}, "[20 40 40]"},
	} {
		if got := fmt.Sprint(fsm.Allocate(tc.capacity, tc.strategy, tc.consumers)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
