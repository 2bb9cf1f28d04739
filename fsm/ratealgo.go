package fsm

// Rate-limit algorithms. Pure functions of (state, params, log time, cost):
// no clock, no randomness, integer arithmetic only, so every replica takes the
// same decision. Time is in milliseconds of log time (Entry.NowMs).

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
)

// rateLogEntry is one record of SLIDING_WINDOW_LOG.
type rateLogEntry struct {
	AtMs int64 `msgpack:"t"`
	Cost int64 `msgpack:"c"`
}

// rateState is one key's counter. The meaning of A, B and C depends on the
// algorithm (see each algorithm's comment).
type rateState struct {
	A   int64          `msgpack:"a"`
	B   int64          `msgpack:"b"`
	C   int64          `msgpack:"c"`
	Log []rateLogEntry `msgpack:"l,omitempty"`
	// ExpiresAtMs is the log time from which this state is equivalent to a
	// fresh one (the counter is back to full), so it may be deleted without
	// changing any later decision.
	ExpiresAtMs int64 `msgpack:"x"`
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
	// ResetAfterMs is the time until the counter is back to full.
	ResetAfterMs int64
	// RetryAfterMs is, when denied for RATE_LIMITED, the shortest wait after
	// which the same check (same cost, priority, no other traffic) would be
	// allowed; 0 when allowed or when it never can be.
	RetryAfterMs int64
}

// newRateState returns the state of a key never seen before (full capacity).
func newRateState(p rateParams, nowMs int64) rateState {
	panic("not implemented")
}

// rateCheck decides a check of cost (1 <= cost <= RateLimitMax) at nowMs and
// updates s. nowMs never goes backwards for a key.
func rateCheck(s *rateState, p rateParams, nowMs, cost int64) rateDecision {
	panic("not implemented")
}

// rateAdapt converts s after the key's policy changed to p (limit, burst,
// window or algorithm). It must never let the key admit more than a fresh
// counter under p would, and must keep what was already spent in the current
// window when the algorithm is unchanged.
func rateAdapt(s *rateState, p rateParams, algorithmChanged bool, nowMs int64) {
	panic("not implemented")
}
