package fsm

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// mathxOperands are the int64 values where 64- and 128-bit arithmetic breaks:
// 0, 1, around 2^31/2^32, around 2^62/2^63, and the domain's own maxima.
var mathxOperands = []int64{
	0, 1, 2, 3, 7, 999, 1000,
	1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, 1<<32 + 1,
	RateLimitMax, RateWindowMaxMs, RateLimitMax * 100,
	1<<62 - 1, 1 << 62, 1<<62 + 1,
	math.MaxInt64 - 2, math.MaxInt64 - 1, math.MaxInt64,
}

var mathxBigMaxInt64 = big.NewInt(math.MaxInt64)

// saturate returns x as int64, or math.MaxInt64 when it does not fit.
func mathxSaturate(x *big.Int) int64 {
	if x.Cmp(mathxBigMaxInt64) > 0 {
		return math.MaxInt64
	}
	return x.Int64()
}

func mathxBig(x uint128) *big.Int {
	hi := new(big.Int).SetUint64(x.hi)
	return hi.Lsh(hi, 64).Or(hi, new(big.Int).SetUint64(x.lo))
}

func mathxMustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

func TestMathxMul128AndDivide(t *testing.T) {
	for _, a := range mathxOperands {
		for _, b := range mathxOperands {
			product := mul128(a, b)
			want := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
			if mathxBig(product).Cmp(want) != 0 {
				t.Fatalf("mul128(%d, %d) = %v, want %v", a, b, mathxBig(product), want)
			}
			for _, d := range mathxOperands {
				if d == 0 {
					continue
				}
				wantQ, wantR := new(big.Int).QuoRem(want, big.NewInt(d), new(big.Int))
				q, r, fits := product.divMod(d)
				if fits != wantQ.IsInt64() || q != mathxSaturate(wantQ) || (fits && r != wantR.Int64()) {
					t.Fatalf("(%d*%d).divMod(%d) = %d, %d, %v; want %v, %v", a, b, d, q, r, fits, wantQ, wantR)
				}
				wantCeil := new(big.Int).Set(wantQ)
				if wantR.Sign() > 0 {
					wantCeil.Add(wantCeil, big.NewInt(1))
				}
				if got := mulDivCeil(a, b, d); got != mathxSaturate(wantCeil) {
					t.Fatalf("mulDivCeil(%d, %d, %d) = %d, want %v", a, b, d, got, wantCeil)
				}
				if got := mulDivFloor(a, b, d); got != mathxSaturate(wantQ) {
					t.Fatalf("mulDivFloor(%d, %d, %d) = %d, want %v", a, b, d, got, wantQ)
				}
			}
		}
	}
}

// TestMathxDivideNearTwoTo64 pins the cases around bits.Div64's precondition
// hi < d and the int64 range of the quotient.
func TestMathxDivideNearTwoTo64(t *testing.T) {
	cases := []struct {
		name    string
		x       uint128
		d       int64
		q, r    int64
		fits    bool
		ceilDiv int64
	}{
		{"quotient 2^63-1 exactly", mul128(math.MaxInt64, 3), 3, math.MaxInt64, 0, true, math.MaxInt64},
		{"quotient 2^63-1 rest 2", mul128(math.MaxInt64, 3).plus(2), 3, math.MaxInt64, 2, true, math.MaxInt64},
		{"quotient 2^63", uint128{hi: 0, lo: 1 << 63}, 1, math.MaxInt64, 0, false, math.MaxInt64},
		{"quotient 2^64-1 (hi < d)", uint128{hi: 0, lo: math.MaxUint64}, 1, math.MaxInt64, 0, false, math.MaxInt64},
		{"hi == d", uint128{hi: 5, lo: 0}, 5, math.MaxInt64, 0, false, math.MaxInt64},
		{"hi just below d", uint128{hi: 4, lo: math.MaxUint64}, 5, math.MaxInt64, 0, false, math.MaxInt64},
		{"hi below d, quotient below 2^63", uint128{hi: 1, lo: 0}, 4, 1 << 62, 0, true, 1 << 62},
		{"zero", uint128{}, math.MaxInt64, 0, 0, true, 0},
		{"one over max", uint128{lo: 1}, math.MaxInt64, 0, 1, true, 1},
	}
	for _, c := range cases {
		q, r, fits := c.x.divMod(c.d)
		if q != c.q || r != c.r || fits != c.fits {
			t.Errorf("%s: divMod = %d, %d, %v; want %d, %d, %v", c.name, q, r, fits, c.q, c.r, c.fits)
		}
		if got := c.x.divCeil(c.d); got != c.ceilDiv {
			t.Errorf("%s: divCeil = %d, want %d", c.name, got, c.ceilDiv)
		}
	}
}

func TestMathxPlusMinusCmp(t *testing.T) {
	top := mul128(math.MaxInt64, math.MaxInt64) // 2^126 - 2^64 + 1
	sum := top.plus(math.MaxInt64).plus(math.MaxInt64)
	want := new(big.Int).Add(mathxBig(top), new(big.Int).Mul(big.NewInt(2), mathxBigMaxInt64))
	if mathxBig(sum).Cmp(want) != 0 {
		t.Fatalf("plus across the word: got %v, want %v", mathxBig(sum), want)
	}
	carry := uint128{hi: 0, lo: math.MaxUint64}.plus(1)
	if carry != (uint128{hi: 1, lo: 0}) {
		t.Fatalf("plus carry: got %+v", carry)
	}
	borrow := uint128{hi: 1, lo: 0}.minus(1)
	if borrow != (uint128{hi: 0, lo: math.MaxUint64}) {
		t.Fatalf("minus borrow: got %+v", borrow)
	}
	if got := sum.minus(math.MaxInt64).minus(math.MaxInt64); got != top {
		t.Fatalf("minus undoes plus: got %+v want %+v", got, top)
	}
	ordered := []uint128{{}, {lo: 1}, {lo: math.MaxUint64}, {hi: 1}, {hi: 1, lo: 1}, top, {hi: math.MaxUint64, lo: math.MaxUint64}}
	for i, x := range ordered {
		for j, y := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := x.cmp(y); got != want {
				t.Errorf("cmp(%+v, %+v) = %d, want %d", x, y, got, want)
			}
		}
	}
	mathxMustPanic(t, "plus overflowing 128 bits", func() { uint128{hi: math.MaxUint64, lo: math.MaxUint64}.plus(1) })
	mathxMustPanic(t, "minus below zero", func() { uint128{lo: 1}.minus(2) })
	mathxMustPanic(t, "mul128 of a negative", func() { mul128(-1, 1) })
	mathxMustPanic(t, "divMod by zero", func() { uint128{}.divMod(0) })
}

func TestMathxRandomAgainstBig(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < 20000; i++ {
		a, b := rng.Int64(), rng.Int64N(RateLimitMax+1)
		d := rng.Int64N(RateWindowMaxMs) + 1
		if i%3 == 0 {
			d = rng.Int64N(math.MaxInt64) + 1
		}
		exact := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
		q, r := new(big.Int).QuoRem(exact, big.NewInt(d), new(big.Int))
		ceil := new(big.Int).Set(q)
		if r.Sign() > 0 {
			ceil.Add(ceil, big.NewInt(1))
		}
		if got := mulDivFloor(a, b, d); got != mathxSaturate(q) {
			t.Fatalf("mulDivFloor(%d, %d, %d) = %d, want %v", a, b, d, got, q)
		}
		if got := mulDivCeil(a, b, d); got != mathxSaturate(ceil) {
			t.Fatalf("mulDivCeil(%d, %d, %d) = %d, want %v", a, b, d, got, ceil)
		}
	}
}

func TestMathxSaturatingAddSub(t *testing.T) {
	cases := []struct{ a, b, sum, diff int64 }{
		{0, 0, 0, 0},
		{math.MaxInt64, 1, math.MaxInt64, math.MaxInt64 - 1},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64, 0},
		{math.MaxInt64 - 1, 1, math.MaxInt64, math.MaxInt64 - 2},
		{math.MinInt64, -1, math.MinInt64, math.MinInt64 + 1},
		{math.MinInt64, 1, math.MinInt64 + 1, math.MinInt64},
		{-1, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64},
		{0, math.MinInt64, math.MinInt64, math.MaxInt64},
		{1 << 62, 1 << 62, math.MaxInt64, 0},
		{1 << 62, -(1 << 62), 0, math.MaxInt64},
		{-5, 3, -2, -8},
	}
	for _, c := range cases {
		if got := satAdd(c.a, c.b); got != c.sum {
			t.Errorf("satAdd(%d, %d) = %d, want %d", c.a, c.b, got, c.sum)
		}
		if got := satSub(c.a, c.b); got != c.diff {
			t.Errorf("satSub(%d, %d) = %d, want %d", c.a, c.b, got, c.diff)
		}
	}
}

func TestMathxAlignDown(t *testing.T) {
	cases := []struct{ t, w, want int64 }{
		{0, 1000, 0},
		{999, 1000, 0},
		{1000, 1000, 1000},
		{1001, 1000, 1000},
		{math.MaxInt64, 1, math.MaxInt64},
		{math.MaxInt64, RateWindowMaxMs, math.MaxInt64 - math.MaxInt64%RateWindowMaxMs},
		{1 << 62, 3, 1<<62 - 1}, // 2^62 = 1 (mod 3)
	}
	for _, c := range cases {
		if got := alignDown(c.t, c.w); got != c.want {
			t.Errorf("alignDown(%d, %d) = %d, want %d", c.t, c.w, got, c.want)
		}
	}
	mathxMustPanic(t, "alignDown of a negative time", func() { alignDown(-1, 10) })
}
