package fsm

import "fmt"

// Rate-limit algorithms. Pure functions of (state, params, log time, cost):
// no clock, no randomness, integer arithmetic only, so every replica takes the
// same decision. Time is in milliseconds of log time (Entry.NowMs).
//
// Every rounding goes against the caller: fewer tokens, a higher level, a
// later refill, a longer retry_after, a later expiry. Products that may
// overflow int64 (limit*window reaches 3.2e22) are done in 128 bits (mathx.go);
// a time that does not fit int64 saturates at math.MaxInt64, which is later,
// never earlier.

// rateParams are a policy's numbers as the algorithms see them, already
// validated: 1 <= Limit <= RateLimitMax, 1 <= Burst <= RateLimitMax,
// 1 <= WindowMs <= RateWindowMaxMs, 1 <= Percent <= 100.
type rateParams struct {
	Algorithm Algorithm
	// Limit is the number of cost units allowed per window.
	Limit int64
	// Burst is the capacity of TOKEN_BUCKET, LEAKY_BUCKET and GCRA.
	Burst    int64
	WindowMs int64
	// Percent is the share of the capacity a check at this priority may use;
	// the rest is kept for other priorities.
	Percent int64
}

const (
	// RateLimitMax bounds limit, burst and cost.
	RateLimitMax int64 = 1_000_000_000_000
	// RateWindowMaxMs bounds a policy's window (366 days).
	RateWindowMaxMs int64 = 366 * 24 * 3600 * 1000
	// SlidingLogLimitMax bounds limit for SLIDING_WINDOW_LOG, which keeps one
	// log record per allowed check (records at the same ms are merged).
	SlidingLogLimitMax int64 = 10_000
	// ratePercentMax is a priority's share when it uses all of the capacity.
	ratePercentMax int64 = 100
)

// rateLogEntry is one record of SLIDING_WINDOW_LOG.
type rateLogEntry struct {
	AtMs int64 `msgpack:"t"`
	Cost int64 `msgpack:"c"`
}

// rateState is one key's counter. The meaning of A, B and C depends on the
// algorithm; "units" are cost units and W is WindowMs:
//
//   - TOKEN_BUCKET: A tokens (0..Burst); B the part of the next token already
//     refilled, in 1/W tokens (0 <= B < W, 0 when A == Burst); C the log ms of
//     the last refill.
//   - LEAKY_BUCKET: the level is A - B/W units: A the level rounded up, B the
//     part of the top unit already drained, in 1/W units (0 <= B < W, 0 when
//     A == 0); C the log ms of the last drain.
//   - FIXED_WINDOW: A the start of the current window (a multiple of W); B the
//     units used in it.
//   - SLIDING_WINDOW_LOG: Log, the allowed checks in the window, oldest first,
//     at most one record per ms.
//   - SLIDING_WINDOW_COUNTER: A the start of the current window (a multiple of
//     W); B the units used in it; C the units used in the window before it.
//   - GCRA: the theoretical arrival time is TAT = C + (A*W + B)/Limit ms, that
//     is A whole emission intervals (T = W/Limit ms) plus B/Limit ms
//     (0 <= B < W, less than one interval) after C, the log ms of the last
//     check. TAT itself is not stored in ms: TAT - now reaches
//     Burst*W/Limit = 3.2e22 ms, beyond int64, whereas A <= Burst.
//
// rateCheck may append to Log's backing array and change its last element in
// place, so a copy of a state that is itself checked must get its own Log.
type rateState struct {
	A   int64          `msgpack:"a"`
	B   int64          `msgpack:"b"`
	C   int64          `msgpack:"c"`
	Log []rateLogEntry `msgpack:"l,omitempty"`
	// ExpiresAtMs is the log time from which this state is equivalent to a
	// fresh one (the counter is back to full), so it may be deleted without
	// changing any later decision.
	ExpiresAtMs int64 `msgpack:"x"`
	// WindowMs is the window A, B and C are measured in: the policy's window
	// when the state was made or last adapted. rateAdapt knows only the new
	// policy, and needs the old window to rescale a fraction in 1/W or to
	// tell whether the old window has ended.
	WindowMs int64 `msgpack:"w"`
}

// rateDecision is the outcome of one check.
type rateDecision struct {
	Allowed bool
	// Reason is ReasonRateLimited or ReasonCostExceedsLimit when denied.
	Reason DenyReason
	// Remaining is the units still available to this priority after the
	// decision (never negative).
	Remaining int64
	// Limit is the effective capacity for this priority.
	Limit int64
	// ResetAfterMs is the time until the counter is back to full (0 when it
	// is full).
	ResetAfterMs int64
	// RetryAfterMs is, when denied for RATE_LIMITED, the shortest wait after
	// which the same check (same cost, priority, no other traffic) would be
	// allowed; 0 when allowed or when it never can be.
	RetryAfterMs int64
}

// newRateState returns the state of a key never seen before (full capacity).
func newRateState(p rateParams, nowMs int64) rateState {
	algo := rateAlgorithmOf(p)
	rateAssert(nowMs >= 0, "negative log time")
	s := algo.fresh(p, nowMs)
	s.WindowMs = p.WindowMs
	s.ExpiresAtMs = nowMs
	return s
}

// rateCheck decides a check of cost (1 <= cost <= RateLimitMax) at nowMs and
// updates s. nowMs never goes backwards for a key.
//
// A denied check changes only bookkeeping that no later decision depends on
// (refill, drain, window roll, pruning), which brings the state to nowMs
// exactly as the next check would.
func rateCheck(s *rateState, p rateParams, nowMs, cost int64) rateDecision {
	algo := rateAlgorithmOf(p)
	rateAssert(nowMs >= 0, "negative log time")
	rateAssert(cost >= 1 && cost <= RateLimitMax, "cost out of range")
	rateAssert(s.WindowMs == p.WindowMs, "state not adapted to the policy's window")
	// Every state is checked before use, which also covers what the
	// previous check or adapt left.
	algo.checkInvariants(s, p)
	// Should log time ever step back, the state stays at the time it has
	// reached: no refill is undone and none is granted twice.
	atMs := max(nowMs, algo.lastMs(s))
	algo.advance(s, p, atMs)

	effective := rateEffectiveCapacity(p)
	d := rateDecision{Limit: effective}
	switch {
	case cost > effective:
		d.Reason = ReasonCostExceedsLimit
	case cost > rateAvailable(algo, s, p, atMs, effective):
		d.Reason = ReasonRateLimited
		d.RetryAfterMs = satSub(algo.retryAtMs(s, p, atMs, cost, effective), nowMs)
		rateAssert(d.RetryAfterMs >= 1, "a denied check could pass now")
	default:
		algo.take(s, p, atMs, cost)
		d.Allowed = true
	}
	d.Remaining = rateAvailable(algo, s, p, atMs, effective)
	s.ExpiresAtMs = algo.freshAtMs(s, p, atMs)
	d.ResetAfterMs = max(0, satSub(s.ExpiresAtMs, nowMs))
	return d
}

// rateAdapt converts s after the key's policy changed to p (limit, burst,
// window or algorithm). It must never let the key admit more than a fresh
// counter under p would, and must keep what was already spent in the current
// window when the algorithm is unchanged.
//
// A state already back to full (nowMs >= ExpiresAtMs) becomes a fresh state
// under p: the key could have been deleted at ExpiresAtMs and created anew
// under p, and whether that happened must not change a decision. Otherwise
// each algorithm's adapt keeps what is spent; the refill or drain owed for
// the time since the last check runs at p's rate on the next check (the
// moment of the policy change is unknown here), which is never more than a
// fresh counter holds. With limit, burst and window unchanged (a change of
// priority scales only) the state is left as it is.
func rateAdapt(s *rateState, p rateParams, algorithmChanged bool, nowMs int64) {
	algo := rateAlgorithmOf(p)
	rateAssert(nowMs >= 0, "negative log time")
	if algorithmChanged || nowMs >= s.ExpiresAtMs {
		*s = newRateState(p, nowMs)
		return
	}
	rateAssert(s.WindowMs >= 1, "state has no window")
	atMs := max(nowMs, algo.lastMs(s))
	algo.adapt(s, p, atMs)
	s.WindowMs = p.WindowMs
	s.ExpiresAtMs = algo.freshAtMs(s, p, atMs)
	algo.checkInvariants(s, p)
}

// rateEffectiveCapacity is the share of the capacity a check at p.Percent may
// use: floor(capacity*Percent/100). Rounding down keeps the part reserved for
// other priorities, capacity - effective, at least capacity*(100-Percent)/100.
// capacity <= 1e12 and Percent <= 100, so the product fits int64.
func rateEffectiveCapacity(p rateParams) int64 {
	capacity := p.Limit
	switch p.Algorithm {
	case AlgorithmTokenBucket, AlgorithmLeakyBucket, AlgorithmGCRA:
		capacity = p.Burst
	}
	return capacity * p.Percent / ratePercentMax
}

// rateAvailable is what a check at this priority may still take: the
// effective capacity less the used amount (rounded up), never negative. A
// check fits exactly when its cost is at most this.
func rateAvailable(algo rateAlgorithm, s *rateState, p rateParams, nowMs, effective int64) int64 {
	return max(0, effective-algo.used(s, p, nowMs))
}

// rateAlgorithm is one algorithm's rules over rateState. The methods that
// take nowMs expect the state advanced to nowMs.
type rateAlgorithm interface {
	// fresh returns the algorithm's fields of a full counter at nowMs.
	fresh(p rateParams, nowMs int64) rateState
	// lastMs is a log time the state is known to have reached.
	lastMs(s *rateState) int64
	// advance brings the state to nowMs with no traffic: refill, drain, roll
	// the window, prune the log. Exact, so advancing in steps equals
	// advancing at once.
	advance(s *rateState, p rateParams, nowMs int64)
	// used is the amount counted against the capacity, rounded up.
	used(s *rateState, p rateParams, nowMs int64) int64
	// take counts an allowed check of cost.
	take(s *rateState, p rateParams, nowMs, cost int64)
	// retryAtMs is the earliest log time at which a check of cost fits in
	// effective with no other traffic; called only when it does not fit at
	// nowMs and cost <= effective, so such a time exists.
	retryAtMs(s *rateState, p rateParams, nowMs, cost, effective int64) int64
	// freshAtMs is the earliest log time from which the state equals a fresh
	// one (exact, or later when saturated).
	freshAtMs(s *rateState, p rateParams, nowMs int64) int64
	// adapt converts a state measured in s.WindowMs to p, the algorithm
	// unchanged and the state not yet full.
	adapt(s *rateState, p rateParams, nowMs int64)
	// checkInvariants panics if s cannot be this algorithm's state under p.
	checkInvariants(s *rateState, p rateParams)
}

// rateAlgorithms is indexed by Algorithm; an array, not a map, so that no
// iteration order can reach a decision.
var rateAlgorithms = [...]rateAlgorithm{
	AlgorithmTokenBucket:          bucket{kind: AlgorithmTokenBucket},
	AlgorithmLeakyBucket:          bucket{kind: AlgorithmLeakyBucket},
	AlgorithmFixedWindow:          fixedWindow{},
	AlgorithmSlidingWindowLog:     slidingLog{},
	AlgorithmSlidingWindowCounter: slidingCounter{},
	AlgorithmGCRA:                 bucket{kind: AlgorithmGCRA},
}

// rateAlgorithmOf returns p's algorithm after re-checking p: the params were
// validated with the policy, so a bad one here is a bug.
func rateAlgorithmOf(p rateParams) rateAlgorithm {
	rateAssert(int(p.Algorithm) < len(rateAlgorithms) && rateAlgorithms[p.Algorithm] != nil, "unknown algorithm")
	rateAssert(p.Limit >= 1 && p.Limit <= RateLimitMax, "limit out of range")
	rateAssert(p.Burst >= 1 && p.Burst <= RateLimitMax, "burst out of range")
	rateAssert(p.WindowMs >= 1 && p.WindowMs <= RateWindowMaxMs, "window out of range")
	rateAssert(p.Percent >= 1 && p.Percent <= ratePercentMax, "percent out of range")
	rateAssert(p.Algorithm != AlgorithmSlidingWindowLog || p.Limit <= SlidingLogLimitMax, "limit above SlidingLogLimitMax")
	return rateAlgorithms[p.Algorithm]
}

// rateAssert crashes on a broken invariant: a replica that cannot trust its
// state must stop rather than diverge.
func rateAssert(ok bool, what string) {
	if !ok {
		panic(fmt.Sprintf("fsm: rate limit invariant broken: %s", what))
	}
}

// ---- TOKEN_BUCKET, LEAKY_BUCKET, GCRA ----

// The three bucket algorithms are views of one meter: a level that rises by
// each allowed cost, drains at Limit per WindowMs and may not pass the
// effective capacity. A token bucket's tokens are Burst less the level; a
// GCRA's TAT - now is the level times the emission interval. They differ in
// what they store and in how rateAdapt treats them.

// meter is an exact level: level - drained/W units, with level the level
// rounded up (against the caller) and 0 <= drained < W (0 when level is 0).
type meter struct {
	level   int64
	drained int64
	atMs    int64
}

// advance drains the meter from atMs to nowMs. It adds elapsed*Limit to the
// drained numerator in 128 bits (elapsed < 2^63 and Limit < 2^40), so idle
// time of any length needs no cap: a numerator at or above level*W empties
// the meter, and below it the division is exact. Draining in 1 ms steps gives
// the same meter as one step, because an empty meter stays empty.
func (m *meter) advance(p rateParams, nowMs int64) {
	if nowMs <= m.atMs {
		return
	}
	elapsedMs := nowMs - m.atMs
	m.atMs = nowMs
	if m.level == 0 {
		return
	}
	drained := mul128(elapsedMs, p.Limit).plus(m.drained)
	if drained.cmp(mul128(m.level, p.WindowMs)) >= 0 {
		m.level, m.drained = 0, 0
		return
	}
	whole, rest, _ := drained.divMod(p.WindowMs) // below level, so it fits
	m.level -= whole
	m.drained = rest
}

// reachesAtMs is the first log time at which the exact level is at most
// target with no traffic (so the rounded-up level is too): the time to drain
// (level-target)*W - drained, rounded up to the next whole ms.
func (m meter) reachesAtMs(p rateParams, target int64) int64 {
	if m.level <= target {
		return m.atMs
	}
	excess := mul128(m.level-target, p.WindowMs).minus(m.drained)
	return satAdd(m.atMs, excess.divCeil(p.Limit))
}

func (m meter) checkInvariants(p rateParams) {
	rateAssert(m.level >= 0 && m.level <= p.Burst, "bucket level out of range")
	rateAssert(m.drained >= 0 && m.drained < p.WindowMs, "bucket fraction out of range")
	rateAssert(m.level > 0 || m.drained == 0, "empty bucket with a fraction")
	rateAssert(m.atMs >= 0, "bucket time negative")
}

// bucket is TOKEN_BUCKET, LEAKY_BUCKET or GCRA, by kind.
type bucket struct{ kind Algorithm }

// load reads the state as a meter measured in p.WindowMs.
func (b bucket) load(s *rateState, p rateParams) meter {
	switch b.kind {
	case AlgorithmTokenBucket:
		return meter{level: p.Burst - s.A, drained: s.B, atMs: s.C}
	case AlgorithmGCRA:
		if s.B == 0 {
			return meter{level: s.A, atMs: s.C}
		}
		return meter{level: s.A + 1, drained: p.WindowMs - s.B, atMs: s.C}
	}
	return meter{level: s.A, drained: s.B, atMs: s.C}
}

// store writes m, measured in p.WindowMs, back in the kind's own terms.
func (b bucket) store(s *rateState, p rateParams, m meter) {
	s.C = m.atMs
	switch b.kind {
	case AlgorithmTokenBucket:
		s.A, s.B = p.Burst-m.level, m.drained
	case AlgorithmGCRA:
		if m.drained == 0 {
			s.A, s.B = m.level, 0
		} else {
			s.A, s.B = m.level-1, p.WindowMs-m.drained
		}
	default:
		s.A, s.B = m.level, m.drained
	}
}

func (b bucket) fresh(p rateParams, nowMs int64) rateState {
	var s rateState
	b.store(&s, p, meter{atMs: nowMs})
	return s
}

func (b bucket) lastMs(s *rateState) int64 { return s.C }

func (b bucket) advance(s *rateState, p rateParams, nowMs int64) {
	m := b.load(s, p)
	m.advance(p, nowMs)
	b.store(s, p, m)
}

func (b bucket) used(s *rateState, p rateParams, _ int64) int64 {
	return b.load(s, p).level
}

func (b bucket) take(s *rateState, p rateParams, _, cost int64) {
	m := b.load(s, p)
	m.level += cost // at most the effective capacity: the check fit
	b.store(s, p, m)
}

func (b bucket) retryAtMs(s *rateState, p rateParams, _, cost, effective int64) int64 {
	return b.load(s, p).reachesAtMs(p, effective-cost)
}

// freshAtMs is when the meter is empty: a full token bucket, an empty leaky
// bucket, a GCRA whose TAT is not after now.
func (b bucket) freshAtMs(s *rateState, p rateParams, _ int64) int64 {
	return b.load(s, p).reachesAtMs(p, 0)
}

// adapt keeps the last refill time C, so the time since the last check
// refills (drains) at p's rate on the next check, capped at p's burst.
//
// TOKEN_BUCKET: tokens are clamped to the new burst (a full bucket stays full
// without its fraction); the fraction of the next token is rescaled from
// 1/old W to 1/new W rounding down, so it is never more token than before.
//
// LEAKY_BUCKET and GCRA keep the level (what was spent and has not drained),
// clamped to the new burst, with its drained fraction rescaled rounding down
// (the level rounds up). For GCRA that keeps TAT - C in emission intervals
// (spent units), not in ms: a slower rate makes the same debt last longer.
func (b bucket) adapt(s *rateState, p rateParams, _ int64) {
	oldWindowMs := s.WindowMs
	if b.kind == AlgorithmTokenBucket {
		if s.A >= p.Burst {
			s.A, s.B = p.Burst, 0
			return
		}
		s.B = mulDivFloor(s.B, p.WindowMs, oldWindowMs)
		return
	}
	old := p
	old.WindowMs = oldWindowMs
	m := b.load(s, old)
	if m.level > p.Burst {
		m.level, m.drained = p.Burst, 0
	} else {
		m.drained = mulDivFloor(m.drained, p.WindowMs, oldWindowMs)
	}
	b.store(s, p, m)
}

func (b bucket) checkInvariants(s *rateState, p rateParams) {
	rateAssert(s.Log == nil, "bucket state with a log")
	if b.kind == AlgorithmGCRA {
		rateAssert(s.B >= 0 && s.B < p.WindowMs, "GCRA remainder out of range")
	}
	b.load(s, p).checkInvariants(p)
}

// ---- FIXED_WINDOW ----

// fixedWindow counts units per window [k*W, (k+1)*W) of log time.
type fixedWindow struct{}

func (fixedWindow) fresh(p rateParams, nowMs int64) rateState {
	return rateState{A: alignDown(nowMs, p.WindowMs)}
}

func (fixedWindow) lastMs(s *rateState) int64 { return s.A }

func (fixedWindow) advance(s *rateState, p rateParams, nowMs int64) {
	if start := alignDown(nowMs, p.WindowMs); start > s.A {
		s.A, s.B = start, 0
	}
}

func (fixedWindow) used(s *rateState, _ rateParams, _ int64) int64 { return s.B }

func (fixedWindow) take(s *rateState, _ rateParams, _, cost int64) { s.B += cost }

// retryAtMs is the next window's start: the count there is 0 and the cost
// fits the effective capacity.
func (fixedWindow) retryAtMs(s *rateState, p rateParams, _, _, _ int64) int64 {
	return satAdd(s.A, p.WindowMs)
}

func (fixedWindow) freshAtMs(s *rateState, p rateParams, nowMs int64) int64 {
	if s.B == 0 {
		return nowMs
	}
	return satAdd(s.A, p.WindowMs)
}

// adapt keeps the count while the old window [A, A+old W) is still running
// and moves it to the new window holding nowMs; windows of both lengths are
// aligned to the epoch, so the new window may start earlier or later than the
// old one. A count whose window has ended is dropped, as a roll would.
func (fixedWindow) adapt(s *rateState, p rateParams, nowMs int64) {
	if satAdd(s.A, s.WindowMs) <= nowMs {
		s.B = 0
	}
	s.A = alignDown(nowMs, p.WindowMs)
}

func (fixedWindow) checkInvariants(s *rateState, p rateParams) {
	rateAssert(s.A >= 0 && s.A%p.WindowMs == 0, "fixed window start not aligned")
	rateAssert(s.B >= 0 && s.C == 0 && s.Log == nil, "fixed window fields out of range")
}

// ---- SLIDING_WINDOW_LOG ----

// slidingLog keeps every allowed check of the last W ms; a record at t counts
// while t > now - W, i.e. until t + W.
type slidingLog struct{}

func (slidingLog) fresh(rateParams, int64) rateState { return rateState{} }

func (slidingLog) lastMs(s *rateState) int64 {
	if len(s.Log) == 0 {
		return 0
	}
	return s.Log[len(s.Log)-1].AtMs
}

// advance drops the records that have left the window. It reslices rather
// than copies; an emptied log becomes nil so that it equals a fresh one.
func (slidingLog) advance(s *rateState, p rateParams, nowMs int64) {
	cutoffMs := satSub(nowMs, p.WindowMs)
	kept := 0
	for kept < len(s.Log) && s.Log[kept].AtMs <= cutoffMs {
		kept++
	}
	if kept == len(s.Log) {
		s.Log = nil
		return
	}
	s.Log = s.Log[kept:]
}

func (slidingLog) used(s *rateState, _ rateParams, _ int64) int64 {
	sum := int64(0)
	for _, r := range s.Log {
		sum += r.Cost // at most SlidingLogLimitMax in all
	}
	return sum
}

// take merges a check into the record of the same ms, so the log holds at
// most one record per ms and at most Limit records in all.
func (slidingLog) take(s *rateState, _ rateParams, nowMs, cost int64) {
	if n := len(s.Log); n > 0 && s.Log[n-1].AtMs == nowMs {
		s.Log[n-1].Cost += cost
		return
	}
	s.Log = append(s.Log, rateLogEntry{AtMs: nowMs, Cost: cost})
}

// retryAtMs is when enough of the oldest records have left the window: the
// records leave in order, each at its AtMs + W.
func (l slidingLog) retryAtMs(s *rateState, p rateParams, nowMs, cost, effective int64) int64 {
	counted := l.used(s, p, nowMs)
	for _, r := range s.Log {
		counted -= r.Cost
		if counted+cost <= effective {
			return satAdd(r.AtMs, p.WindowMs)
		}
	}
	rateAssert(false, "sliding log retry not found")
	return 0
}

func (slidingLog) freshAtMs(s *rateState, p rateParams, nowMs int64) int64 {
	if len(s.Log) == 0 {
		return nowMs
	}
	return satAdd(s.Log[len(s.Log)-1].AtMs, p.WindowMs)
}

// adapt keeps the log as it is: records carry absolute times and costs, so
// the next check prunes them by the new window and sums them against the new
// limit. Records the old window already pruned stay gone.
func (slidingLog) adapt(*rateState, rateParams, int64) {}

func (slidingLog) checkInvariants(s *rateState, _ rateParams) {
	rateAssert(s.A == 0 && s.B == 0 && s.C == 0, "sliding log with counters")
	rateAssert(int64(len(s.Log)) <= SlidingLogLimitMax, "sliding log too long")
	for i, r := range s.Log {
		rateAssert(r.Cost >= 1 && r.Cost <= SlidingLogLimitMax && r.AtMs >= 0, "sliding log record out of range")
		rateAssert(i == 0 || r.AtMs > s.Log[i-1].AtMs, "sliding log not in time order")
	}
}

// ---- SLIDING_WINDOW_COUNTER ----

// slidingCounter estimates the units of the last W ms as
// previous*(W-elapsed)/W + current, elapsed being the time since the current
// window's start, and compares it exactly: the estimate is rounded up.
type slidingCounter struct{}

func (slidingCounter) fresh(p rateParams, nowMs int64) rateState {
	return rateState{A: alignDown(nowMs, p.WindowMs)}
}

func (slidingCounter) lastMs(s *rateState) int64 { return s.A }

func (slidingCounter) advance(s *rateState, p rateParams, nowMs int64) {
	start := alignDown(nowMs, p.WindowMs)
	if start <= s.A {
		return
	}
	if start == satAdd(s.A, p.WindowMs) {
		s.C = s.B
	} else {
		s.C = 0
	}
	s.A, s.B = start, 0
}

// used is current + ceil(previous*(W-elapsed)/W); the product is 128-bit.
func (slidingCounter) used(s *rateState, p rateParams, nowMs int64) int64 {
	elapsedMs := nowMs - s.A // 0 <= elapsedMs < W once advanced
	return s.B + mulDivCeil(s.C, p.WindowMs-elapsedMs, p.WindowMs)
}

func (slidingCounter) take(s *rateState, _ rateParams, _, cost int64) { s.B += cost }

// retryAtMs walks forward: the estimate only falls with time. In the current
// window a check fits once previous*(W-elapsed) <= room*W, with room =
// effective - cost - current, i.e. W-elapsed <= floor(room*W/previous). Past
// it, the current count becomes the previous one and the same rule applies
// with room = effective - cost; at the start of the window after that the
// estimate is 0.
func (slidingCounter) retryAtMs(s *rateState, p rateParams, _, cost, effective int64) int64 {
	if room := effective - cost - s.B; room >= 0 && s.C > 0 {
		// It does not fit now, so the slack is below W - elapsed.
		if slack := mulDivFloor(room, p.WindowMs, s.C); slack >= 1 {
			return s.A + p.WindowMs - slack
		}
	}
	nextMs := satAdd(s.A, p.WindowMs)
	if s.B == 0 {
		return nextMs
	}
	slack := min(mulDivFloor(effective-cost, p.WindowMs, s.B), p.WindowMs)
	return satAdd(nextMs, p.WindowMs-slack)
}

// freshAtMs: a current count weighs until the end of the next window, a
// previous count until the end of the current one.
func (slidingCounter) freshAtMs(s *rateState, p rateParams, nowMs int64) int64 {
	switch {
	case s.B > 0:
		return satAdd(s.A, 2*p.WindowMs)
	case s.C > 0:
		return satAdd(s.A, p.WindowMs)
	}
	return nowMs
}

// adapt re-buckets the two old counts into the new windows holding nowMs (the
// new current window) and before it (the new previous one). A count goes to
// the new current window if its old window ends after the new one starts,
// where it weighs fully; else to the new previous window if it ends after
// that one starts; else it is dropped, having left every window that counts.
// With the window unchanged this is exactly a roll.
func (slidingCounter) adapt(s *rateState, p rateParams, nowMs int64) {
	startMs := alignDown(nowMs, p.WindowMs)
	var current, previous int64
	place := func(count, endMs int64) {
		switch {
		case endMs > startMs:
			current += count
		case endMs > startMs-p.WindowMs:
			previous += count
		}
	}
	place(s.B, satAdd(s.A, s.WindowMs))
	place(s.C, s.A)
	s.A, s.B, s.C = startMs, current, previous
}

func (slidingCounter) checkInvariants(s *rateState, p rateParams) {
	rateAssert(s.A >= 0 && s.A%p.WindowMs == 0, "sliding counter window start not aligned")
	rateAssert(s.B >= 0 && s.C >= 0 && s.Log == nil, "sliding counter fields out of range")
}
