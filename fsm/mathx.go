package fsm

import (
	"math"
	"math/bits"
)

// Exact integer helpers for the rate-limit algorithms. Their operands are
// non-negative int64 values (limits and costs up to 1e12, windows up to 3.2e10
// ms, times up to 2^63), so a product of two of them needs up to 126 bits.
// Every helper returns the exact result or, where a result may not fit int64,
// saturates at math.MaxInt64 and says so; none wraps, and none panics on
// operands in its documented range.

// uint128 is an unsigned 128-bit integer: enough for the product of two
// non-negative int64 values plus a few more int64 values.
type uint128 struct{ hi, lo uint64 }

// mul128 returns a*b exactly; a and b must be non-negative.
func mul128(a, b int64) uint128 {
	rateAssert(a >= 0 && b >= 0, "mul128 of a negative operand")
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	return uint128{hi: hi, lo: lo}
}

// plus returns x+y for y >= 0. The sum of a product of two int64 values
// (below 2^126) and a few int64 values stays far below 2^128; a carry out of
// the top word would be a bug, not an input, so it is asserted.
func (x uint128) plus(y int64) uint128 {
	rateAssert(y >= 0, "uint128.plus of a negative")
	lo, carry := bits.Add64(x.lo, uint64(y), 0)
	hi, overflow := bits.Add64(x.hi, 0, carry)
	rateAssert(overflow == 0, "uint128.plus overflows 128 bits")
	return uint128{hi: hi, lo: lo}
}

// minus returns x-y for 0 <= y <= x.
func (x uint128) minus(y int64) uint128 {
	rateAssert(y >= 0, "uint128.minus of a negative")
	lo, borrow := bits.Sub64(x.lo, uint64(y), 0)
	hi, underflow := bits.Sub64(x.hi, 0, borrow)
	rateAssert(underflow == 0, "uint128.minus below zero")
	return uint128{hi: hi, lo: lo}
}

// cmp returns -1, 0 or +1 as x is less than, equal to or greater than y.
func (x uint128) cmp(y uint128) int {
	switch {
	case x.hi < y.hi:
		return -1
	case x.hi > y.hi:
		return 1
	case x.lo < y.lo:
		return -1
	case x.lo > y.lo:
		return 1
	}
	return 0
}

// divMod returns floor(x/d) and x mod d for d > 0. When the quotient exceeds
// math.MaxInt64, fits is false, q is math.MaxInt64 and r is 0. bits.Div64
// panics unless hi < d (the quotient must fit 64 bits), so that case is
// decided before calling it.
func (x uint128) divMod(d int64) (q, r int64, fits bool) {
	rateAssert(d > 0, "uint128.divMod by a non-positive divisor")
	if x.hi >= uint64(d) {
		return math.MaxInt64, 0, false // quotient >= 2^64
	}
	qu, ru := bits.Div64(x.hi, x.lo, uint64(d))
	if qu > math.MaxInt64 {
		return math.MaxInt64, 0, false
	}
	return int64(qu), int64(ru), true
}

// divCeil returns ceil(x/d) for d > 0, saturating at math.MaxInt64.
func (x uint128) divCeil(d int64) int64 {
	q, r, fits := x.divMod(d)
	if !fits || (r > 0 && q == math.MaxInt64) {
		return math.MaxInt64
	}
	if r > 0 {
		q++
	}
	return q
}

// mulDivFloor returns floor(a*b/d) for a, b >= 0 and d > 0, saturating at
// math.MaxInt64.
func mulDivFloor(a, b, d int64) int64 {
	q, _, _ := mul128(a, b).divMod(d)
	return q
}

// mulDivCeil returns ceil(a*b/d) for a, b >= 0 and d > 0, saturating at
// math.MaxInt64.
func mulDivCeil(a, b, d int64) int64 {
	return mul128(a, b).divCeil(d)
}

// satAdd returns a+b, clamped to [math.MinInt64, math.MaxInt64].
func satAdd(a, b int64) int64 {
	sum := a + b
	switch {
	case b > 0 && sum < a:
		return math.MaxInt64
	case b < 0 && sum > a:
		return math.MinInt64
	}
	return sum
}

// satSub returns a-b, clamped to [math.MinInt64, math.MaxInt64].
func satSub(a, b int64) int64 {
	diff := a - b
	switch {
	case b < 0 && diff < a:
		return math.MaxInt64
	case b > 0 && diff > a:
		return math.MinInt64
	}
	return diff
}

// alignDown returns the largest multiple of w (w > 0) that is at most t
// (t >= 0): the start of t's window when windows are aligned to the epoch.
func alignDown(t, w int64) int64 {
	rateAssert(t >= 0 && w > 0, "alignDown of a negative time or non-positive width")
	return t - t%w
}
