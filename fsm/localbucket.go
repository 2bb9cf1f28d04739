package fsm

import "fmt"

// LocalBucket is tollgate's TOKEN_BUCKET algorithm for a counter kept
// outside the log: the API's own per-credential limit, which each node
// applies to the calls it serves. It is the same integer arithmetic as a
// replicated policy (rateCheck), driven by the caller's clock in ms. Not
// safe for concurrent use.
type LocalBucket struct {
	s rateState
	p rateParams
}

// NewLocalBucket returns a full bucket of burst tokens refilling at limit
// tokens per windowMs.
func NewLocalBucket(limit, burst, windowMs, nowMs int64) (*LocalBucket, error) {
	if limit < 1 || limit > RateLimitMax || burst < 1 || burst > RateLimitMax || windowMs < 1 || windowMs > RateWindowMaxMs || nowMs < 0 {
		return nil, fmt.Errorf("fsm: local bucket limit %d, burst %d, window %dms out of range", limit, burst, windowMs)
	}
	p := rateParams{Algorithm: AlgorithmTokenBucket, Limit: limit, Burst: burst, WindowMs: windowMs, Percent: ratePercentMax}
	return &LocalBucket{s: newRateState(p, nowMs), p: p}, nil
}

// Take takes one token at nowMs; when none is left it says how long until
// one is.
func (b *LocalBucket) Take(nowMs int64) (allowed bool, retryAfterMs int64) {
	d := rateCheck(&b.s, b.p, max(nowMs, 0), 1)
	return d.Allowed, d.RetryAfterMs
}

// FullAtMs is the time from which the bucket is full again (it may then be
// forgotten without changing any later decision).
func (b *LocalBucket) FullAtMs() int64 { return b.s.ExpiresAtMs }
