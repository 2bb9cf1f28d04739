package fsm

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// ---- helpers ----

var rateAllAlgorithms = []Algorithm{
	AlgorithmTokenBucket, AlgorithmLeakyBucket, AlgorithmFixedWindow,
	AlgorithmSlidingWindowLog, AlgorithmSlidingWindowCounter, AlgorithmGCRA,
}

var rateBucketAlgorithms = []Algorithm{AlgorithmTokenBucket, AlgorithmLeakyBucket, AlgorithmGCRA}

func rateAlgorithmName(a Algorithm) string {
	return [...]string{"?", "TOKEN_BUCKET", "LEAKY_BUCKET", "FIXED_WINDOW",
		"SLIDING_WINDOW_LOG", "SLIDING_WINDOW_COUNTER", "GCRA"}[a]
}

// rp builds full-priority params.
func rp(a Algorithm, limit, burst, windowMs int64) rateParams {
	return rateParams{Algorithm: a, Limit: limit, Burst: burst, WindowMs: windowMs, Percent: 100}
}

func allowed(remaining, limit, resetMs int64) rateDecision {
	return rateDecision{Allowed: true, Remaining: remaining, Limit: limit, ResetAfterMs: resetMs}
}

func limited(remaining, limit, resetMs, retryMs int64) rateDecision {
	return rateDecision{Reason: ReasonRateLimited, Remaining: remaining, Limit: limit, ResetAfterMs: resetMs, RetryAfterMs: retryMs}
}

func tooBig(remaining, limit, resetMs int64) rateDecision {
	return rateDecision{Reason: ReasonCostExceedsLimit, Remaining: remaining, Limit: limit, ResetAfterMs: resetMs}
}

// rateStep is a check (cost at atMs, at percent, 0 meaning 100) with its
// exact expected decision, or, when adapt is set, a policy update applied
// with rateAdapt at atMs.
type rateStep struct {
	atMs    int64
	cost    int64
	percent int64
	want    rateDecision

	adapt            *rateParams
	algorithmChanged bool
}

func chk(atMs, cost int64, want rateDecision) rateStep {
	return rateStep{atMs: atMs, cost: cost, want: want}
}

func chkP(atMs, cost, percent int64, want rateDecision) rateStep {
	return rateStep{atMs: atMs, cost: cost, percent: percent, want: want}
}

func adaptTo(atMs int64, p rateParams) rateStep {
	return rateStep{atMs: atMs, adapt: &p}
}

// runRateSteps starts a fresh key under p at startMs and plays steps,
// returning the final state and params.
func runRateSteps(t *testing.T, p rateParams, startMs int64, steps []rateStep) (rateState, rateParams) {
	t.Helper()
	s := newRateState(p, startMs)
	for i, st := range steps {
		if st.adapt != nil {
			p = *st.adapt
			rateAdapt(&s, p, st.algorithmChanged, st.atMs)
			continue
		}
		q := p
		if st.percent != 0 {
			q.Percent = st.percent
		}
		if got := rateCheck(&s, q, st.atMs, st.cost); got != st.want {
			t.Fatalf("step %d (cost %d at %d ms, %d%%):\n got %+v\nwant %+v", i, st.cost, st.atMs, q.Percent, got, st.want)
		}
	}
	return s, p
}

// cloneRateState copies s with its own Log, so checking the copy cannot touch s.
func cloneRateState(s rateState) rateState {
	s.Log = slices.Clone(s.Log)
	return s
}

// settledRateState is s brought to nowMs with no traffic, as a denied check
// leaves it.
func settledRateState(s rateState, p rateParams, nowMs int64) rateState {
	c := cloneRateState(s)
	algo := rateAlgorithmOf(p)
	atMs := max(nowMs, algo.lastMs(&c))
	algo.advance(&c, p, atMs)
	c.ExpiresAtMs = algo.freshAtMs(&c, p, atMs)
	return c
}

// checkCopy runs a check on a copy of s.
func checkCopy(s rateState, p rateParams, nowMs, cost int64) rateDecision {
	c := cloneRateState(s)
	return rateCheck(&c, p, nowMs, cost)
}

// assertDeletableAt checks that s equals a fresh state from ExpiresAtMs on and
// not one ms earlier (unless ExpiresAtMs <= afterMs, the time it was set).
func assertDeletableAt(t *testing.T, s rateState, p rateParams, afterMs int64) {
	t.Helper()
	expMs := s.ExpiresAtMs
	if got, want := settledRateState(s, p, expMs), newRateState(p, expMs); !reflect.DeepEqual(got, want) {
		t.Fatalf("at ExpiresAtMs %d the state is not fresh:\n got %+v\nwant %+v", expMs, got, want)
	}
	if expMs > afterMs {
		if got, fresh := settledRateState(s, p, expMs-1), newRateState(p, expMs-1); reflect.DeepEqual(got, fresh) {
			t.Fatalf("ExpiresAtMs %d is late: the state is already fresh at %d", expMs, expMs-1)
		}
	}
}

// gcraTAT is a GCRA state's theoretical arrival time in ms, exactly.
func gcraTAT(s rateState, p rateParams) *big.Rat {
	num := new(big.Int).Mul(big.NewInt(s.A), big.NewInt(p.WindowMs))
	num.Add(num, big.NewInt(s.B))
	tat := new(big.Rat).SetFrac(num, big.NewInt(p.Limit))
	return tat.Add(tat, new(big.Rat).SetInt64(s.C))
}

// ---- table tests: exact decisions at stamped times ----

// The three bucket algorithms take the same decisions with the same numbers
// (a token bucket's tokens are Burst less a leaky bucket's level, and a
// GCRA's TAT - now is that level times the emission interval), so these
// tables run against all three.
func TestRateBucketDecisions(t *testing.T) {
	cases := []struct {
		name                   string
		limit, burst, windowMs int64
		steps                  []rateStep
	}{{
		// 3 per 1000 ms refills at 333.3 ms intervals: tokens become
		// available at 334, 667 and 1000 ms, never earlier.
		name: "refill rounding, 3 per second", limit: 3, burst: 3, windowMs: 1000,
		steps: []rateStep{
			chk(0, 3, allowed(0, 3, 1000)),
			chk(333, 1, limited(0, 3, 667, 1)),
			chk(334, 1, allowed(0, 3, 1000)),
			chk(666, 1, limited(0, 3, 668, 1)),
			chk(667, 1, allowed(0, 3, 1000)),
			chk(999, 1, limited(0, 3, 668, 1)),
			chk(1000, 1, allowed(0, 3, 1000)),
			chk(2000, 3, allowed(0, 3, 1000)),
			chk(2000, 4, tooBig(0, 3, 1000)),
		},
	}, {
		name: "burst then steady rate, cost > 1", limit: 1, burst: 5, windowMs: 1000,
		steps: []rateStep{
			chk(0, 5, allowed(0, 5, 5000)),
			chk(0, 1, limited(0, 5, 5000, 1000)),
			chk(2500, 3, limited(2, 5, 2500, 500)),
			chk(2999, 3, limited(2, 5, 2001, 1)),
			chk(3000, 3, allowed(0, 5, 5000)),
			chk(3999, 1, limited(0, 5, 4001, 1)),
			chk(4000, 6, tooBig(1, 5, 4000)),
			chk(4000, 1, allowed(0, 5, 5000)),
			chk(100_000, 5, allowed(0, 5, 5000)),
		},
	}, {
		name: "cost above the capacity never passes", limit: 10, burst: 4, windowMs: 1000,
		steps: []rateStep{
			chk(0, 5, tooBig(4, 4, 0)),
			chk(0, 4, allowed(0, 4, 400)),
			chk(10_000, 5, tooBig(4, 4, 0)),
		},
	}, {
		// Percent 50 may use half of the burst; the other half stays for
		// full-priority checks.
		name: "priority scaling", limit: 10, burst: 10, windowMs: 1000,
		steps: []rateStep{
			chkP(0, 5, 50, allowed(0, 5, 500)),
			chkP(0, 1, 50, limited(0, 5, 500, 100)),
			chk(0, 5, allowed(0, 10, 1000)),
			chkP(0, 1, 50, limited(0, 5, 1000, 600)),
			chkP(0, 4, 33, tooBig(0, 3, 1000)), // floor(10*33/100) = 3
			chkP(0, 1, 1, tooBig(0, 0, 1000)),  // floor(10*1/100) = 0
			chkP(600, 1, 50, allowed(0, 5, 500)),
			chk(600, 5, allowed(0, 10, 1000)),
			chkP(1100, 3, 50, limited(0, 5, 500, 300)),
			chkP(1399, 3, 50, limited(2, 5, 201, 1)),
			chkP(1400, 3, 50, allowed(0, 5, 500)),
		},
	}, {
		// A fractional emission interval T = 333.3 ms with burst 1: the
		// bucket is full at 333.3 ms and what would refill beyond it until
		// the check at 334 is lost (GCRA: TAT = max(TAT, now) + T), so the
		// conforming times are 0, 334, 668, 1002.
		name: "fractional emission interval, burst 1", limit: 3, burst: 1, windowMs: 1000,
		steps: []rateStep{
			chk(0, 1, allowed(0, 1, 334)),
			chk(333, 1, limited(0, 1, 1, 1)),
			chk(334, 1, allowed(0, 1, 334)),
			chk(667, 1, limited(0, 1, 1, 1)),
			chk(668, 1, allowed(0, 1, 334)),
			chk(1001, 1, limited(0, 1, 1, 1)),
			chk(1002, 1, allowed(0, 1, 334)),
		},
	}, {
		name: "window of 1 ms", limit: 2, burst: 3, windowMs: 1,
		steps: []rateStep{
			chk(0, 3, allowed(0, 3, 2)),
			chk(0, 1, limited(0, 3, 2, 1)),
			chk(1, 2, allowed(0, 3, 2)),
			chk(2, 3, limited(2, 3, 1, 1)),
			chk(5, 3, allowed(0, 3, 2)),
		},
	}}
	for _, algo := range rateBucketAlgorithms {
		for _, c := range cases {
			t.Run(rateAlgorithmName(algo)+"/"+c.name, func(t *testing.T) {
				runRateSteps(t, rp(algo, c.limit, c.burst, c.windowMs), 0, c.steps)
			})
		}
	}
}

// TestRateBucketStateMeaning pins what each bucket stores for the same history.
func TestRateBucketStateMeaning(t *testing.T) {
	steps := []rateStep{chk(0, 3, allowed(0, 3, 1000)), chk(500, 3, limited(1, 3, 500, 500))}
	want := map[Algorithm]rateState{
		// 1 token and half of the next one, refilled at 500 ms.
		AlgorithmTokenBucket: {A: 1, B: 500, C: 500, ExpiresAtMs: 1000, WindowMs: 1000},
		// Level 2 of which half a unit has drained: 1.5.
		AlgorithmLeakyBucket: {A: 2, B: 500, C: 500, ExpiresAtMs: 1000, WindowMs: 1000},
		// TAT = 500 + (1*1000 + 500)/3 ms = 1000 ms.
		AlgorithmGCRA: {A: 1, B: 500, C: 500, ExpiresAtMs: 1000, WindowMs: 1000},
	}
	for _, algo := range rateBucketAlgorithms {
		s, p := runRateSteps(t, rp(algo, 3, 3, 1000), 0, steps)
		if !reflect.DeepEqual(s, want[algo]) {
			t.Errorf("%s: state %+v, want %+v", rateAlgorithmName(algo), s, want[algo])
		}
		if algo == AlgorithmGCRA {
			if tat := gcraTAT(s, p); tat.Cmp(big.NewRat(1000, 1)) != 0 {
				t.Errorf("GCRA TAT = %v, want 1000", tat)
			}
		}
	}
}

// TestRateGCRATheoreticalArrivalTime follows TAT through checks: an allowed
// check moves it to max(TAT, now) + cost*T; a denied one leaves it alone.
func TestRateGCRATheoreticalArrivalTime(t *testing.T) {
	p := rp(AlgorithmGCRA, 10, 5, 1000) // T = 100 ms, 5 back to back
	s := newRateState(p, 0)
	steps := []struct {
		atMs, cost int64
		want       rateDecision
		tatMs      int64
	}{
		{0, 5, allowed(0, 5, 500), 500},
		{0, 1, limited(0, 5, 500, 100), 500},
		{100, 1, allowed(0, 5, 500), 600},
		{350, 2, allowed(0, 5, 450), 800},
		{350, 1, limited(0, 5, 450, 50), 800},
		{400, 1, allowed(0, 5, 500), 900},
		{2000, 1, allowed(4, 5, 100), 2100}, // TAT in the past: from now
	}
	for i, st := range steps {
		if got := rateCheck(&s, p, st.atMs, st.cost); got != st.want {
			t.Fatalf("step %d: got %+v want %+v", i, got, st.want)
		}
		if tat := gcraTAT(s, p); tat.Cmp(big.NewRat(st.tatMs, 1)) != 0 {
			t.Fatalf("step %d: TAT %v, want %d", i, tat, st.tatMs)
		}
	}
}

func TestRateFixedWindowDecisions(t *testing.T) {
	cases := []struct {
		name    string
		limit   int64
		startMs int64
		steps   []rateStep
	}{{
		name: "edges of the window", limit: 3,
		steps: []rateStep{
			chk(0, 4, tooBig(3, 3, 0)),
			chk(0, 2, allowed(1, 3, 1000)),
			chk(999, 1, allowed(0, 3, 1)),
			chk(999, 1, limited(0, 3, 1, 1)),
			chk(1000, 3, allowed(0, 3, 1000)),
			chk(1500, 4, tooBig(0, 3, 500)),
			chk(1999, 1, limited(0, 3, 1, 1)),
			chk(2000, 1, allowed(2, 3, 1000)),
			chk(5234, 3, allowed(0, 3, 766)), // windows are aligned to the epoch
		},
	}, {
		name: "priority scaling", limit: 10, startMs: 10,
		steps: []rateStep{
			chkP(10, 5, 50, allowed(0, 5, 990)),
			chkP(10, 1, 50, limited(0, 5, 990, 990)),
			chk(10, 5, allowed(0, 10, 990)),
			chk(10, 1, limited(0, 10, 990, 990)),
			chkP(1000, 6, 50, tooBig(5, 5, 0)),
			chkP(1000, 5, 50, allowed(0, 5, 1000)),
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runRateSteps(t, rp(AlgorithmFixedWindow, c.limit, 1, 1000), c.startMs, c.steps)
		})
	}
}

func TestRateSlidingWindowLogDecisions(t *testing.T) {
	t.Run("edges of the window", func(t *testing.T) {
		s, _ := runRateSteps(t, rp(AlgorithmSlidingWindowLog, 3, 1, 1000), 0, []rateStep{
			chk(0, 1, allowed(2, 3, 1000)),
			chk(500, 2, allowed(0, 3, 1000)),
			chk(999, 1, limited(0, 3, 501, 1)),     // the record at 0 counts until 999
			chk(1000, 1, allowed(0, 3, 1000)),      // and is gone at 1000
			chk(1000, 1, limited(0, 3, 1000, 500)), // the 2 at 500 must leave
			chk(1499, 2, limited(0, 3, 501, 1)),
			chk(1500, 2, allowed(0, 3, 1000)),
			chk(1500, 4, tooBig(0, 3, 1000)),
			chk(2499, 1, allowed(0, 3, 1000)),
		})
		want := []rateLogEntry{{AtMs: 1500, Cost: 2}, {AtMs: 2499, Cost: 1}}
		if !reflect.DeepEqual(s.Log, want) {
			t.Fatalf("log %+v, want %+v", s.Log, want)
		}
	})
	t.Run("records at the same ms merge", func(t *testing.T) {
		s, _ := runRateSteps(t, rp(AlgorithmSlidingWindowLog, 5, 1, 1000), 0, []rateStep{
			chk(10, 1, allowed(4, 5, 1000)),
			chk(10, 2, allowed(2, 5, 1000)),
			chk(10, 3, limited(2, 5, 1000, 1000)),
		})
		if want := []rateLogEntry{{AtMs: 10, Cost: 3}}; !reflect.DeepEqual(s.Log, want) {
			t.Fatalf("log %+v, want %+v", s.Log, want)
		}
	})
	t.Run("priority scaling", func(t *testing.T) {
		runRateSteps(t, rp(AlgorithmSlidingWindowLog, 10, 1, 1000), 0, []rateStep{
			chkP(0, 5, 50, allowed(0, 5, 1000)),
			chkP(100, 1, 50, limited(0, 5, 900, 900)),
			chk(100, 5, allowed(0, 10, 1000)),
			chkP(1000, 1, 50, limited(0, 5, 100, 100)),
			chkP(1100, 5, 50, allowed(0, 5, 1000)),
		})
	})
}

func TestRateSlidingWindowCounterDecisions(t *testing.T) {
	cases := []struct {
		name  string
		limit int64
		steps []rateStep
	}{{
		name: "weighted previous window", limit: 10,
		steps: []rateStep{
			chk(0, 10, allowed(0, 10, 2000)),
			// At 1100 the previous 10 weigh 900/1000: 9, leaving 1.
			chk(999, 1, limited(0, 10, 1001, 101)),
			chk(1099, 1, limited(0, 10, 901, 1)),
			chk(1100, 1, allowed(0, 10, 1900)),
			chk(1500, 3, allowed(1, 10, 1500)),
			chk(1500, 2, limited(1, 10, 1500, 100)),
			// At 2000 the 4 of [1000, 2000) weigh fully and fade until 3000.
			chk(2000, 10, limited(6, 10, 1000, 1000)),
			chk(2000, 11, tooBig(6, 10, 1000)),
			chk(3000, 10, allowed(0, 10, 2000)),
			chk(5500, 1, allowed(9, 10, 1500)), // two windows idle: both counts gone
		},
	}, {
		// 3 in the previous window weigh 3*(1000-e)/1000, rounded up: a check
		// of 1 fits once that is at most 2, at e = 334.
		name: "rounding of the estimate", limit: 3,
		steps: []rateStep{
			chk(0, 3, allowed(0, 3, 2000)),
			chk(1001, 1, limited(0, 3, 999, 333)),
			chk(1333, 1, limited(0, 3, 667, 1)),
			chk(1334, 1, allowed(0, 3, 1666)),
		},
	}, {
		name: "priority scaling", limit: 10,
		steps: []rateStep{
			chkP(0, 5, 50, allowed(0, 5, 2000)),
			chkP(1500, 1, 50, allowed(1, 5, 1500)), // 5 * 500/1000 = 2.5 -> 3, +1
			chkP(1500, 2, 50, limited(1, 5, 1500, 100)),
			chk(1500, 6, allowed(0, 10, 1500)),
			chkP(1500, 6, 50, tooBig(0, 5, 1500)),
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runRateSteps(t, rp(AlgorithmSlidingWindowCounter, c.limit, 1, 1000), 0, c.steps)
		})
	}
}

// TestRateExpiresAtMs checks ExpiresAtMs against newRateState: the state
// equals a fresh one exactly from then on, and not a ms before.
func TestRateExpiresAtMs(t *testing.T) {
	cases := []struct {
		name   string
		p      rateParams
		steps  []rateStep
		wantMs int64
	}{
		{"token bucket full again", rp(AlgorithmTokenBucket, 3, 3, 1000),
			[]rateStep{chk(0, 3, allowed(0, 3, 1000)), chk(334, 1, allowed(0, 3, 1000))}, 1334},
		{"leaky bucket drained", rp(AlgorithmLeakyBucket, 10, 5, 1000),
			[]rateStep{chk(0, 3, allowed(2, 5, 300))}, 300},
		{"GCRA TAT reached", rp(AlgorithmGCRA, 3, 5, 1000),
			[]rateStep{chk(0, 2, allowed(3, 5, 667))}, 667}, // TAT 666.7 rounded up
		{"fixed window ends", rp(AlgorithmFixedWindow, 3, 1, 1000),
			[]rateStep{chk(100, 1, allowed(2, 3, 900))}, 1000},
		{"sliding log last record leaves", rp(AlgorithmSlidingWindowLog, 3, 1, 1000),
			[]rateStep{chk(100, 1, allowed(2, 3, 1000)), chk(700, 1, allowed(1, 3, 1000))}, 1700},
		{"sliding counter current count fades", rp(AlgorithmSlidingWindowCounter, 10, 1, 1000),
			[]rateStep{chk(100, 1, allowed(9, 10, 1900))}, 2000},
		{"sliding counter previous count fades", rp(AlgorithmSlidingWindowCounter, 10, 1, 1000),
			[]rateStep{chk(100, 1, allowed(9, 10, 1900)), chk(1500, 11, tooBig(9, 10, 500))}, 2000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, p := runRateSteps(t, c.p, 0, c.steps)
			if s.ExpiresAtMs != c.wantMs {
				t.Fatalf("ExpiresAtMs = %d, want %d", s.ExpiresAtMs, c.wantMs)
			}
			assertDeletableAt(t, s, p, c.steps[len(c.steps)-1].atMs)
		})
	}
	for _, algo := range rateAllAlgorithms {
		p := rp(algo, 5, 5, 1000)
		s := newRateState(p, 1234)
		if s.ExpiresAtMs != 1234 {
			t.Errorf("%s: fresh state expires at %d, want 1234", rateAlgorithmName(algo), s.ExpiresAtMs)
		}
		// A check that is denied for its cost leaves a fresh state fresh.
		if d := rateCheck(&s, p, 1500, 6); d != tooBig(5, 5, 0) || s.ExpiresAtMs != 1500 {
			t.Errorf("%s: %+v, expires %d", rateAlgorithmName(algo), d, s.ExpiresAtMs)
		}
	}
}

// TestRateLogTimeStepsBack: log time never goes back for a key, but should
// it, a check is decided at the time the state has reached, and the waits it
// reports are counted from the earlier time (so they are longer).
func TestRateLogTimeStepsBack(t *testing.T) {
	for _, algo := range rateAllAlgorithms {
		p := rp(algo, 5, 5, 1000)
		s := newRateState(p, 0)
		rateCheck(&s, p, 500, 2)
		rateCheck(&s, p, 1000, 2)
		for _, cost := range []int64{1, 4} { // one that passes, one that does not
			atReached, stepsBack := cloneRateState(s), cloneRateState(s)
			want := rateCheck(&atReached, p, 1000, cost)
			got := rateCheck(&stepsBack, p, 900, cost)
			want.ResetAfterMs += 100
			if !want.Allowed {
				want.RetryAfterMs += 100
			}
			if got != want || !reflect.DeepEqual(atReached, stepsBack) {
				t.Errorf("%s cost %d: at 900 %+v, want %+v", rateAlgorithmName(algo), cost, got, want)
			}
		}
	}
}

// ---- rateAdapt ----

func TestRateAdaptTokenBucket(t *testing.T) {
	base := rp(AlgorithmTokenBucket, 10, 10, 1000)
	with := func(limit, burst, windowMs int64) rateParams {
		return rp(AlgorithmTokenBucket, limit, burst, windowMs)
	}
	cases := []struct {
		name  string
		p     rateParams
		steps []rateStep
	}{{
		// The 100 ms since the last check refill at the new rate: 0.1 token.
		name: "limit lowered mid-refill", p: base,
		steps: []rateStep{
			chk(0, 8, allowed(2, 10, 800)),
			adaptTo(100, with(1, 10, 1000)),
			chk(100, 3, limited(2, 10, 7900, 900)),
			chk(1000, 3, allowed(0, 10, 10000)),
		},
	}, {
		name: "limit raised", p: base,
		steps: []rateStep{
			chk(0, 8, allowed(2, 10, 800)),
			adaptTo(100, with(100, 10, 1000)),
			chk(100, 10, allowed(0, 10, 100)),
		},
	}, {
		name: "burst lowered clamps the tokens", p: base,
		steps: []rateStep{
			chk(0, 2, allowed(8, 10, 200)),
			adaptTo(0, with(10, 5, 1000)),
			chk(0, 5, allowed(0, 5, 500)),
			chk(0, 1, limited(0, 5, 500, 100)),
		},
	}, {
		// Raising the burst does not hand out the new tokens at once: the
		// bucket keeps its 8 and refills towards 20.
		name: "burst raised keeps the tokens", p: base,
		steps: []rateStep{
			chk(0, 2, allowed(8, 10, 200)),
			adaptTo(0, with(10, 20, 1000)),
			chk(0, 9, limited(8, 20, 1200, 100)),
			chk(100, 9, allowed(0, 20, 2000)),
		},
	}, {
		// Half a token of carry is rescaled to the new window exactly.
		name: "window changed keeps the fraction", p: with(3, 3, 1000),
		steps: []rateStep{
			chk(0, 3, allowed(0, 3, 1000)),
			chk(500, 3, limited(1, 3, 500, 500)),
			adaptTo(500, with(3, 3, 3000)),
			chk(500, 2, limited(1, 3, 1500, 500)),
			chk(999, 2, limited(1, 3, 1001, 1)),
			chk(1000, 2, allowed(0, 3, 3000)),
		},
	}, {
		// Full under the old policy: the key could have been deleted, so it
		// is fresh under the new one (20 tokens, not 10).
		name: "already full becomes fresh", p: base,
		steps: []rateStep{
			chk(0, 2, allowed(8, 10, 200)),
			adaptTo(200, with(10, 20, 1000)),
			chk(200, 20, allowed(0, 20, 2000)),
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runRateSteps(t, c.p, 0, c.steps) })
	}

	t.Run("shrinking the window drops a fraction that no longer fits", func(t *testing.T) {
		s := rateState{A: 1, B: 1, C: 0, ExpiresAtMs: 5000, WindowMs: 1000}
		rateAdapt(&s, with(3, 3, 300), false, 10)
		// 1/1000 of a token is 0.3/300: rounded down to 0, against the caller.
		if want := (rateState{A: 1, B: 0, C: 0, ExpiresAtMs: 200, WindowMs: 300}); !reflect.DeepEqual(s, want) {
			t.Fatalf("got %+v, want %+v", s, want)
		}
	})
}

func TestRateAdaptLeakyBucket(t *testing.T) {
	base := rp(AlgorithmLeakyBucket, 10, 10, 1000)
	with := func(limit, burst, windowMs int64) rateParams {
		return rp(AlgorithmLeakyBucket, limit, burst, windowMs)
	}
	cases := []struct {
		name  string
		p     rateParams
		steps []rateStep
	}{{
		// The level (what was spent) is kept: 2 of the new 5, so 3 more
		// pass, where a token bucket would have clamped 8 tokens to 5.
		name: "burst lowered keeps the level", p: base,
		steps: []rateStep{
			chk(0, 2, allowed(8, 10, 200)),
			adaptTo(0, with(10, 5, 1000)),
			chk(0, 4, limited(3, 5, 200, 100)),
			chk(0, 3, allowed(0, 5, 500)),
		},
	}, {
		name: "level above the new burst is clamped to it", p: base,
		steps: []rateStep{
			chk(0, 8, allowed(2, 10, 800)),
			adaptTo(0, with(10, 5, 1000)),
			chk(0, 1, limited(0, 5, 500, 100)),
		},
	}, {
		name: "limit lowered drains slower", p: base,
		steps: []rateStep{
			chk(0, 8, allowed(2, 10, 800)),
			adaptTo(100, with(1, 10, 1000)),
			chk(100, 3, limited(2, 10, 7900, 900)),
		},
	}, {
		name: "window changed keeps the drained fraction", p: with(3, 3, 1000),
		steps: []rateStep{
			chk(0, 3, allowed(0, 3, 1000)),
			chk(500, 3, limited(1, 3, 500, 500)),
			adaptTo(500, with(3, 3, 3000)),
			chk(500, 2, limited(1, 3, 1500, 500)),
			chk(1000, 2, allowed(0, 3, 3000)),
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runRateSteps(t, c.p, 0, c.steps) })
	}
}

// TestRateAdaptRescaleRoundsAgainstTheCaller: a fraction in 1/W that the new
// window cannot hold exactly is rounded so the key has less room, not more.
func TestRateAdaptRescaleRoundsAgainstTheCaller(t *testing.T) {
	cases := []struct {
		name     string
		from, to rateState
		p        rateParams
	}{{
		// 1 unit of level of which 1/1000 drained: 0.3/300 drains nothing.
		name: "leaky bucket keeps the whole unit",
		from: rateState{A: 1, B: 1, ExpiresAtMs: 5000, WindowMs: 1000},
		to:   rateState{A: 1, B: 0, ExpiresAtMs: 100, WindowMs: 300},
		p:    rp(AlgorithmLeakyBucket, 3, 3, 300),
	}, {
		// TAT 999/1000 of an interval after C becomes a whole interval.
		name: "GCRA rounds the debt up",
		from: rateState{A: 0, B: 999, ExpiresAtMs: 5000, WindowMs: 1000},
		to:   rateState{A: 1, B: 0, ExpiresAtMs: 100, WindowMs: 300},
		p:    rp(AlgorithmGCRA, 3, 3, 300),
	}, {
		name: "GCRA keeps an exact fraction",
		from: rateState{A: 2, B: 500, C: 7, ExpiresAtMs: 5000, WindowMs: 1000},
		to:   rateState{A: 2, B: 150, C: 7, ExpiresAtMs: 7 + 250, WindowMs: 300}, // (2*300+150)/3
		p:    rp(AlgorithmGCRA, 3, 3, 300),
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.from
			rateAdapt(&s, c.p, false, 10)
			if !reflect.DeepEqual(s, c.to) {
				t.Fatalf("got %+v, want %+v", s, c.to)
			}
		})
	}
}

// TestRateAdaptFixedWindowEndedWithLateExpiry: ExpiresAtMs may be later than
// exact; a count whose window has ended is still dropped.
func TestRateAdaptFixedWindowEndedWithLateExpiry(t *testing.T) {
	s := rateState{A: 0, B: 6, ExpiresAtMs: 5000, WindowMs: 1000}
	rateAdapt(&s, rp(AlgorithmFixedWindow, 10, 1, 1000), false, 1500)
	if want := (rateState{A: 1000, ExpiresAtMs: 1500, WindowMs: 1000}); !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v, want %+v", s, want)
	}
}

func TestRateAdaptGCRA(t *testing.T) {
	base := rp(AlgorithmGCRA, 10, 5, 1000)
	with := func(limit, burst, windowMs int64) rateParams { return rp(AlgorithmGCRA, limit, burst, windowMs) }
	cases := []struct {
		name  string
		p     rateParams
		steps []rateStep
	}{{
		// The debt of 5 intervals stays 5 intervals: at 1 per second TAT is 5000.
		name: "limit lowered keeps the debt in intervals", p: base,
		steps: []rateStep{
			chk(0, 5, allowed(0, 5, 500)),
			adaptTo(0, with(1, 5, 1000)),
			chk(0, 1, limited(0, 5, 5000, 1000)),
			chk(1000, 1, allowed(0, 5, 5000)),
		},
	}, {
		name: "burst lowered clamps the debt", p: base,
		steps: []rateStep{
			chk(0, 5, allowed(0, 5, 500)),
			adaptTo(0, with(10, 2, 1000)),
			chk(0, 1, limited(0, 2, 200, 100)),
			chk(100, 1, allowed(0, 2, 200)),
		},
	}, {
		// 4.5 intervals of debt at T = 100 ms become 4.5 at T = 200 ms.
		name: "window changed keeps the fraction", p: base,
		steps: []rateStep{
			chk(0, 5, allowed(0, 5, 500)),
			chk(50, 1, limited(0, 5, 450, 50)),
			adaptTo(50, with(10, 5, 2000)),
			chk(50, 1, limited(0, 5, 900, 100)),
			chk(149, 1, limited(0, 5, 801, 1)),
			chk(150, 1, allowed(0, 5, 1000)),
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runRateSteps(t, c.p, 0, c.steps) })
	}
}

func TestRateAdaptFixedWindow(t *testing.T) {
	base := rp(AlgorithmFixedWindow, 10, 1, 1000)
	with := func(limit, windowMs int64) rateParams { return rp(AlgorithmFixedWindow, limit, 1, windowMs) }
	cases := []struct {
		name  string
		steps []rateStep
	}{{
		name: "limit lowered keeps the count",
		steps: []rateStep{
			chk(100, 6, allowed(4, 10, 900)),
			adaptTo(500, with(5, 1000)),
			chk(500, 1, limited(0, 5, 500, 500)),
			chk(1000, 5, allowed(0, 5, 1000)),
		},
	}, {
		name: "limit raised keeps the count",
		steps: []rateStep{
			chk(100, 6, allowed(4, 10, 900)),
			adaptTo(500, with(20, 1000)),
			chk(500, 14, allowed(0, 20, 500)),
			chk(999, 1, limited(0, 20, 1, 1)),
		},
	}, {
		name: "window lengthened carries the count into the longer window",
		steps: []rateStep{
			chk(100, 6, allowed(4, 10, 900)),
			adaptTo(500, with(10, 10_000)),
			chk(500, 4, allowed(0, 10, 9500)),
			chk(9999, 1, limited(0, 10, 1, 1)),
			chk(10_000, 10, allowed(0, 10, 10_000)),
		},
	}, {
		name: "window shortened carries the count into the window holding now",
		steps: []rateStep{
			chk(100, 6, allowed(4, 10, 900)),
			adaptTo(500, with(10, 200)),
			chk(599, 5, limited(4, 10, 1, 1)),
			chk(600, 10, allowed(0, 10, 200)),
		},
	}, {
		name: "window ended before the update",
		steps: []rateStep{
			chk(100, 6, allowed(4, 10, 900)),
			adaptTo(1500, with(5, 1000)),
			chk(1500, 5, allowed(0, 5, 500)),
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runRateSteps(t, base, 0, c.steps) })
	}
}

func TestRateAdaptSlidingWindowLog(t *testing.T) {
	base := rp(AlgorithmSlidingWindowLog, 5, 1, 1000)
	with := func(limit, windowMs int64) rateParams { return rp(AlgorithmSlidingWindowLog, limit, 1, windowMs) }
	spend := []rateStep{chk(0, 2, allowed(3, 5, 1000)), chk(400, 2, allowed(1, 5, 1000))}
	cases := []struct {
		name  string
		steps []rateStep
	}{
		{"limit lowered", []rateStep{adaptTo(500, with(3, 1000)), chk(500, 1, limited(0, 3, 900, 500))}},
		{"limit raised", []rateStep{adaptTo(500, with(7, 1000)), chk(500, 3, allowed(0, 7, 1000))}},
		{"window shortened", []rateStep{adaptTo(500, with(5, 300)), chk(500, 3, allowed(0, 5, 300))}},
		{"window lengthened", []rateStep{adaptTo(500, with(5, 2000)), chk(500, 2, limited(1, 5, 1900, 1500))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runRateSteps(t, base, 0, append(slices.Clone(spend), c.steps...)) })
	}
}

func TestRateAdaptSlidingWindowCounter(t *testing.T) {
	base := rp(AlgorithmSlidingWindowCounter, 10, 1, 1000)
	with := func(limit, windowMs int64) rateParams { return rp(AlgorithmSlidingWindowCounter, limit, 1, windowMs) }
	spend := []rateStep{chk(500, 6, allowed(4, 10, 1500))}
	cases := []struct {
		name  string
		steps []rateStep
	}{
		// 6 in the current window, 1 more needs the 6 to weigh at most 4
		// in the next window: 6*(1000-e)/1000 <= 4 at e = 334.
		{"limit lowered", []rateStep{adaptTo(700, with(5, 1000)), chk(700, 1, limited(0, 5, 1300, 634))}},
		{"limit raised", []rateStep{adaptTo(700, with(20, 1000)), chk(700, 14, allowed(0, 20, 1300))}},
		// [0, 1000) ends after the new window [0, 2000) starts: the 6 are
		// current there, weighing fully.
		{"window lengthened", []rateStep{adaptTo(1200, with(10, 2000)), chk(1200, 5, limited(4, 10, 2800, 1134))}},
		// [0, 1000) ends before the new window [1000, 1500) starts but
		// after [500, 1000) does: the 6 become the previous count,
		// weighing 300/500 at 1200 (3.6, rounded up to 4).
		{"window shortened", []rateStep{adaptTo(1200, with(10, 500)), chk(1200, 6, allowed(0, 10, 800))}},
		{"counts faded before the update", []rateStep{adaptTo(2000, with(5, 1000)), chk(2000, 5, allowed(0, 5, 2000))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runRateSteps(t, base, 0, append(slices.Clone(spend), c.steps...)) })
	}
}

// TestRateAdaptAlgorithmChanged: a new algorithm starts from a fresh state.
func TestRateAdaptAlgorithmChanged(t *testing.T) {
	for _, from := range rateAllAlgorithms {
		for _, to := range rateAllAlgorithms {
			if from == to {
				continue
			}
			s, _ := runRateSteps(t, rp(from, 5, 5, 1000), 0, []rateStep{chk(100, 5, allowed(0, 5, s5(from)))})
			rateAdapt(&s, rp(to, 7, 3, 500), true, 300)
			if want := newRateState(rp(to, 7, 3, 500), 300); !reflect.DeepEqual(s, want) {
				t.Errorf("%s -> %s: %+v, want %+v", rateAlgorithmName(from), rateAlgorithmName(to), s, want)
			}
		}
	}
}

// s5 is the reset time after a check of 5 at 100 ms under rp(a, 5, 5, 1000).
func s5(a Algorithm) int64 {
	switch a {
	case AlgorithmFixedWindow:
		return 900
	case AlgorithmSlidingWindowCounter:
		return 1900
	}
	return 1000
}

// TestRateAdaptUnchangedParams: an update that leaves limit, burst and window
// alone (priority scales only) changes no decision.
func TestRateAdaptUnchangedParams(t *testing.T) {
	for _, algo := range rateAllAlgorithms {
		for seed := uint64(1); seed <= 40; seed++ {
			g := newRateGen(seed, algo)
			p := g.params(algo)
			nowMs := g.rng.Int64N(5000)
			plain := newRateState(p, nowMs)
			adapted := newRateState(p, nowMs)
			for i := 0; i < 60; i++ {
				nowMs += g.gapMs(p)
				if g.rng.IntN(3) == 0 {
					rateAdapt(&adapted, p, false, nowMs)
				}
				q, cost := g.check(p)
				want := rateCheck(&plain, q, nowMs, cost)
				if got := rateCheck(&adapted, q, nowMs, cost); got != want {
					t.Fatalf("%s seed %d step %d: adapted %+v, plain %+v", rateAlgorithmName(algo), seed, i, got, want)
				}
			}
		}
	}
}

// ---- large numbers ----

func TestRateExtremeValues(t *testing.T) {
	w := RateWindowMaxMs
	t.Run("buckets: a debt of 1e12 units at 1 per 366 days", func(t *testing.T) {
		for _, algo := range rateBucketAlgorithms {
			p := rp(algo, 1, RateLimitMax, w)
			s := newRateState(p, 0)
			// Back to full after 1e12 windows: 3.2e22 ms, beyond int64.
			if d := rateCheck(&s, p, 0, RateLimitMax); d != allowed(0, RateLimitMax, math.MaxInt64) {
				t.Fatalf("%s: %+v", rateAlgorithmName(algo), d)
			}
			if s.ExpiresAtMs != math.MaxInt64 {
				t.Fatalf("%s: ExpiresAtMs %d", rateAlgorithmName(algo), s.ExpiresAtMs)
			}
			// One unit drains in exactly one window.
			if d := rateCheck(&s, p, 1, 1); d != limited(0, RateLimitMax, math.MaxInt64-1, w-1) {
				t.Fatalf("%s: %+v", rateAlgorithmName(algo), d)
			}
			if d := rateCheck(&s, p, w-1, 1); d.Allowed {
				t.Fatalf("%s: allowed a ms early", rateAlgorithmName(algo))
			}
			if d := rateCheck(&s, p, w, 1); !d.Allowed || d.Remaining != 0 {
				t.Fatalf("%s: %+v", rateAlgorithmName(algo), d)
			}
		}
	})
	t.Run("buckets: idle for 2^62 ms at 1e12 per ms", func(t *testing.T) {
		for _, algo := range rateBucketAlgorithms {
			p := rp(algo, RateLimitMax, RateLimitMax, 1)
			s := newRateState(p, 0)
			rateCheck(&s, p, 0, RateLimitMax)
			if d := rateCheck(&s, p, 1<<62, RateLimitMax); d != allowed(0, RateLimitMax, 1) {
				t.Fatalf("%s: %+v", rateAlgorithmName(algo), d)
			}
		}
	})
	t.Run("sliding counter: 1e12 over 366 days", func(t *testing.T) {
		p := rp(AlgorithmSlidingWindowCounter, RateLimitMax, 1, w)
		s := newRateState(p, 0)
		rateCheck(&s, p, 0, RateLimitMax)
		// Half way through the next window the previous count weighs half.
		if d := rateCheck(&s, p, w+w/2, RateLimitMax/2); d != allowed(0, RateLimitMax, w+w/2) {
			t.Fatalf("%+v", d)
		}
		if d := rateCheck(&s, p, w+w/2, 1); d != limited(0, RateLimitMax, w+w/2, 1) {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("fixed window at the end of time", func(t *testing.T) {
		p := rp(AlgorithmFixedWindow, RateLimitMax, 1, w)
		nowMs := int64(math.MaxInt64 - 5)
		s := newRateState(p, nowMs)
		d := rateCheck(&s, p, nowMs, 1)
		if !d.Allowed || d.ResetAfterMs <= 0 || s.ExpiresAtMs < nowMs {
			t.Fatalf("%+v, expires %d", d, s.ExpiresAtMs)
		}
	})
}

// ---- properties over pseudo-random sequences ----

// newRateRand is a deterministic source: the same seeds give the same
// sequence on every run.
func newRateRand(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

// rateGen draws params and traffic from a fixed seed.
type rateGen struct{ rng *rand.Rand }

func newRateGen(seed uint64, algo Algorithm) rateGen {
	return rateGen{rng: newRateRand(seed, uint64(algo))}
}

var rateWindowsMs = []int64{1, 2, 3, 7, 10, 60, 100, 1000}
var ratePercents = []int64{100, 100, 100, 90, 50, 33, 1}

func (g rateGen) params(algo Algorithm) rateParams {
	return rp(algo, 1+g.rng.Int64N(12), 1+g.rng.Int64N(12), rateWindowsMs[g.rng.IntN(len(rateWindowsMs))])
}

func (g rateGen) gapMs(p rateParams) int64 {
	switch g.rng.IntN(10) {
	case 0, 1:
		return 0
	case 2:
		return g.rng.Int64N(3*p.WindowMs + 1)
	}
	return g.rng.Int64N(p.WindowMs/2 + 2)
}

// check draws a priority and a cost up to a little above the capacity.
func (g rateGen) check(p rateParams) (rateParams, int64) {
	q := p
	q.Percent = ratePercents[g.rng.IntN(len(ratePercents))]
	capacity := max(p.Limit, p.Burst)
	return q, 1 + g.rng.Int64N(min(capacity, 4)+1)
}

type rateAllowed struct{ atMs, cost int64 }

// TestRateProperties plays pseudo-random traffic against every algorithm and
// checks, at each check: the decision's numbers are exact (Remaining is the
// largest cost that passes now, RetryAfterMs the shortest wait, ResetAfterMs
// and ExpiresAtMs the time the state is fresh again), a denied check only
// advances the state, and advancing in 1 ms steps equals one step. At the
// end, no trailing window let more through than the algorithm allows.
func TestRateProperties(t *testing.T) {
	for _, algo := range rateAllAlgorithms {
		t.Run(rateAlgorithmName(algo), func(t *testing.T) {
			for seed := uint64(1); seed <= 150; seed++ {
				g := newRateGen(seed, algo)
				p := g.params(algo)
				nowMs := g.rng.Int64N(5000)
				s := newRateState(p, nowMs)
				var passed []rateAllowed
				for i := 0; i < 80; i++ {
					nowMs += g.gapMs(p)
					assertStepsEqualOneJump(t, s, p, nowMs)
					q, cost := g.check(p)
					before := cloneRateState(s)
					d := rateCheck(&s, q, nowMs, cost)
					where := fmt.Sprintf("seed %d step %d (%+v, cost %d at %d)", seed, i, q, cost, nowMs)
					assertDecisionExact(t, where, before, s, q, nowMs, cost, d)
					if d.Allowed {
						passed = append(passed, rateAllowed{nowMs, cost})
					}
				}
				assertRateBound(t, fmt.Sprintf("seed %d %+v", seed, p), p, passed)
			}
		})
	}
}

// TestRateAdaptProperties mixes policy updates into the traffic: every
// decision stays exact and every state stays valid (rateCheck asserts it).
func TestRateAdaptProperties(t *testing.T) {
	for _, algo := range rateAllAlgorithms {
		t.Run(rateAlgorithmName(algo), func(t *testing.T) {
			for seed := uint64(1); seed <= 100; seed++ {
				g := newRateGen(seed+1000, algo)
				p := g.params(algo)
				nowMs := g.rng.Int64N(5000)
				s := newRateState(p, nowMs)
				for i := 0; i < 80; i++ {
					nowMs += g.gapMs(p)
					if g.rng.IntN(6) == 0 {
						next := g.params(p.Algorithm)
						changed := g.rng.IntN(8) == 0
						if changed {
							next = g.params(rateAllAlgorithms[g.rng.IntN(len(rateAllAlgorithms))])
							changed = next.Algorithm != p.Algorithm
						}
						rateAdapt(&s, next, changed, nowMs)
						p = next
						if s.ExpiresAtMs < math.MaxInt64 && s.ExpiresAtMs >= nowMs {
							assertDeletableAt(t, s, p, nowMs)
						}
					}
					q, cost := g.check(p)
					before := cloneRateState(s)
					d := rateCheck(&s, q, nowMs, cost)
					where := fmt.Sprintf("seed %d step %d (%+v, cost %d at %d)", seed, i, q, cost, nowMs)
					assertDecisionExact(t, where, before, s, q, nowMs, cost, d)
				}
			}
		})
	}
}

// TestRateLargeNumberProperties uses limits, bursts and costs up to 1e12,
// windows up to 366 days and idle gaps of years, where products need 128
// bits: decisions stay exact wherever the times fit int64.
func TestRateLargeNumberProperties(t *testing.T) {
	for _, algo := range rateAllAlgorithms {
		t.Run(rateAlgorithmName(algo), func(t *testing.T) {
			for seed := uint64(1); seed <= 60; seed++ {
				rng := newRateRand(seed+5000, uint64(algo))
				limitMax := RateLimitMax
				if algo == AlgorithmSlidingWindowLog {
					limitMax = SlidingLogLimitMax
				}
				p := rp(algo, 1+rng.Int64N(limitMax), 1+rng.Int64N(RateLimitMax), 1+rng.Int64N(RateWindowMaxMs))
				nowMs := rng.Int64N(1 << 50)
				s := newRateState(p, nowMs)
				for i := 0; i < 40; i++ {
					switch rng.IntN(4) {
					case 0:
						nowMs += rng.Int64N(1 << 40) // up to 35 years
					case 1:
						nowMs += rng.Int64N(p.WindowMs + 1)
					}
					assertSplitEqualsOneJump(t, s, p, nowMs, rng)
					q := p
					q.Percent = ratePercents[rng.IntN(len(ratePercents))]
					cost := 1 + rng.Int64N(max(rateEffectiveCapacity(q), 1)+1)
					before := cloneRateState(s)
					d := rateCheck(&s, q, nowMs, cost)
					where := fmt.Sprintf("seed %d step %d (%+v, cost %d at %d)", seed, i, q, cost, nowMs)
					assertDecisionExact(t, where, before, s, q, nowMs, cost, d)
				}
			}
		})
	}
}

// assertDecisionExact checks one decision d of a check of cost at nowMs that
// took the state from before to after.
func assertDecisionExact(t *testing.T, where string, before, after rateState, p rateParams, nowMs, cost int64, d rateDecision) {
	t.Helper()
	effective := rateEffectiveCapacity(p)
	if d.Limit != effective || d.Remaining < 0 || d.Remaining > effective {
		t.Fatalf("%s: limit/remaining %+v, effective %d", where, d, effective)
	}
	switch {
	case d.Allowed:
		if d.Reason != ReasonNone || d.RetryAfterMs != 0 {
			t.Fatalf("%s: allowed with %+v", where, d)
		}
	case d.Reason == ReasonCostExceedsLimit:
		if cost <= effective || d.RetryAfterMs != 0 {
			t.Fatalf("%s: %+v", where, d)
		}
	case d.Reason == ReasonRateLimited:
		if cost > effective || d.RetryAfterMs < 1 {
			t.Fatalf("%s: %+v", where, d)
		}
		if d.RetryAfterMs < math.MaxInt64-nowMs {
			retryMs := nowMs + d.RetryAfterMs
			if got := checkCopy(after, p, retryMs, cost); !got.Allowed {
				t.Fatalf("%s: denied at now+retry_after %d: %+v", where, retryMs, got)
			}
			if got := checkCopy(after, p, retryMs-1, cost); got.Allowed {
				t.Fatalf("%s: allowed at now+retry_after-1 %d", where, retryMs-1)
			}
		}
	default:
		t.Fatalf("%s: denied without a reason: %+v", where, d)
	}
	if !d.Allowed {
		// A denial only brings the state to nowMs.
		if want := settledRateState(before, p, nowMs); !reflect.DeepEqual(after, want) {
			t.Fatalf("%s: denied check changed the state:\n got %+v\nwant %+v", where, after, want)
		}
	}
	// Remaining is exactly the largest cost that passes now.
	if d.Remaining > 0 && !checkCopy(after, p, nowMs, d.Remaining).Allowed {
		t.Fatalf("%s: remaining %d does not pass", where, d.Remaining)
	}
	if d.Remaining < RateLimitMax && checkCopy(after, p, nowMs, d.Remaining+1).Allowed {
		t.Fatalf("%s: more than remaining %d passes", where, d.Remaining)
	}
	if after.ExpiresAtMs < math.MaxInt64 {
		if d.ResetAfterMs != max(0, after.ExpiresAtMs-nowMs) {
			t.Fatalf("%s: reset_after %d, expires %d", where, d.ResetAfterMs, after.ExpiresAtMs)
		}
		assertDeletableAt(t, after, p, nowMs)
	}
}

// assertStepsEqualOneJump advances copies of s to nowMs in 1 ms steps and in
// one jump; the states must be identical.
func assertStepsEqualOneJump(t *testing.T, s rateState, p rateParams, nowMs int64) {
	t.Helper()
	algo := rateAlgorithmOf(p)
	fromMs := algo.lastMs(&s)
	if nowMs-fromMs > 5000 {
		fromMs = nowMs - 5000
	}
	stepped, jumped := cloneRateState(s), cloneRateState(s)
	for atMs := fromMs + 1; atMs <= nowMs; atMs++ {
		algo.advance(&stepped, p, atMs)
	}
	algo.advance(&jumped, p, nowMs)
	if fromMs+1 <= nowMs && !reflect.DeepEqual(stepped, jumped) {
		t.Fatalf("advancing %d..%d in 1 ms steps gives %+v, in one jump %+v", fromMs, nowMs, stepped, jumped)
	}
}

// assertSplitEqualsOneJump advances copies of s to nowMs through a random
// intermediate time and in one jump.
func assertSplitEqualsOneJump(t *testing.T, s rateState, p rateParams, nowMs int64, rng *rand.Rand) {
	t.Helper()
	algo := rateAlgorithmOf(p)
	fromMs := algo.lastMs(&s)
	if nowMs <= fromMs {
		return
	}
	split, jumped := cloneRateState(s), cloneRateState(s)
	algo.advance(&split, p, fromMs+rng.Int64N(nowMs-fromMs))
	algo.advance(&split, p, nowMs)
	algo.advance(&jumped, p, nowMs)
	if !reflect.DeepEqual(split, jumped) {
		t.Fatalf("advancing to %d through a split gives %+v, in one jump %+v", nowMs, split, jumped)
	}
}

// assertRateBound checks that no stretch of time let through more than the
// algorithm allows. Priorities only lower the effective capacity, so the
// bounds use the full capacity.
func assertRateBound(t *testing.T, where string, p rateParams, passed []rateAllowed) {
	t.Helper()
	w, limit := p.WindowMs, p.Limit
	perWindow := map[int64]int64{}
	for _, a := range passed {
		perWindow[alignDown(a.atMs, w)] += a.cost
	}
	for i := range passed {
		sum := int64(0)
		for j := i; j < len(passed); j++ {
			sum += passed[j].cost
			if j+1 < len(passed) && passed[j+1].atMs == passed[j].atMs {
				continue // count every check of the last ms
			}
			spanMs := passed[j].atMs - passed[i].atMs // the checks in [t_i, t_j]
			switch p.Algorithm {
			case AlgorithmTokenBucket, AlgorithmLeakyBucket, AlgorithmGCRA:
				// A full bucket plus the refill of the span.
				if bound := p.Burst + spanMs*limit/w; sum > bound {
					t.Fatalf("%s: %d passed in [%d, %d], bound %d", where, sum, passed[i].atMs, passed[j].atMs, bound)
				}
			case AlgorithmSlidingWindowLog:
				if spanMs < w && sum > limit {
					t.Fatalf("%s: %d passed in [%d, %d], limit %d", where, sum, passed[i].atMs, passed[j].atMs, limit)
				}
			case AlgorithmFixedWindow:
				if spanMs < w && sum > 2*limit {
					t.Fatalf("%s: %d passed in [%d, %d]", where, sum, passed[i].atMs, passed[j].atMs)
				}
			case AlgorithmSlidingWindowCounter:
				// Across a boundary, the current window may take only what
				// the previous one's weight leaves: at offset e of the later
				// window, sum <= limit + previous*e/W.
				startI, startJ := alignDown(passed[i].atMs, w), alignDown(passed[j].atMs, w)
				if spanMs < w && startI != startJ && (sum-limit)*w > perWindow[startI]*(passed[j].atMs-startJ) {
					t.Fatalf("%s: %d passed in [%d, %d], previous window %d", where, sum, passed[i].atMs, passed[j].atMs, perWindow[startI])
				}
			}
		}
	}
	if p.Algorithm == AlgorithmFixedWindow || p.Algorithm == AlgorithmSlidingWindowCounter {
		for startMs, sum := range perWindow {
			if sum > limit {
				t.Fatalf("%s: %d passed in the window at %d, limit %d", where, sum, startMs, limit)
			}
		}
	}
}
