package load

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tollgate/tollgate/bench/internal/proc"
)

// Run is one measurement: a workload in one mode at one concurrency, for a
// duration, closed loop (each worker sends the next call when the previous
// one answered) or open loop (calls start on a fixed schedule at Rate per
// second, whether or not earlier ones answered; latency counts from the
// intended start, so queueing shows).
type Run struct {
	Workload    Workload
	Mode        Mode
	Concurrency int
	Duration    time.Duration
	// Rate > 0 makes the run open loop at Rate decisions per second.
	Rate float64
	// Seed makes the key sequence reproducible.
	Seed uint64
}

// histMaxUs bounds recorded latencies (a call slower than this is clamped).
const histMaxUs = int64(60 * time.Second / time.Microsecond)

// batchSize is the number of decisions per call in mode m.
func batchSize(m Mode) int {
	if m == Batch16 {
		return 16
	}
	return 1
}

// Measure runs r against sys and returns the result with the oracle's count.
func Measure(ctx context.Context, sys System, r Run, runID string) (Result, error) {
	if r.Concurrency < 1 {
		return Result{}, fmt.Errorf("concurrency %d", r.Concurrency)
	}
	if err := sys.Setup(ctx, r.Workload, runID); err != nil {
		return Result{}, fmt.Errorf("%s setup: %w", sys.Name(), err)
	}
	targets := make([]Target, r.Concurrency)
	for i := range targets {
		t, err := sys.NewTarget(r.Workload, r.Mode, runID)
		if err != nil {
			for _, t := range targets[:i] {
				t.Close()
			}
			return Result{}, fmt.Errorf("%s target: %w", sys.Name(), err)
		}
		targets[i] = t
	}
	defer func() {
		for _, t := range targets {
			t.Close()
		}
	}()

	per := batchSize(r.Mode)
	allowed := make([]atomic.Int64, r.Workload.Keys)
	var decisions, allowedTotal, errs atomic.Int64
	hist := hdrhistogram.New(1, histMaxUs, 3)
	var histMu sync.Mutex

	cpu0 := proc.TotalCPUSeconds(sys.Pids())
	start := time.Now()
	deadline := start.Add(r.Duration)
	runCtx, cancel := context.WithDeadline(ctx, deadline.Add(30*time.Second))
	defer cancel()

	// Open loop: slot i is due at start + i/Rate; workers claim slots.
	var slot atomic.Int64
	interval := time.Duration(0)
	if r.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(per) / r.Rate)
	}

	var wg sync.WaitGroup
	for w, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(r.Seed, uint64(w)))
			pick := keyPicker(r.Workload, rng)
			local := hdrhistogram.New(1, histMaxUs, 3)
			keys := make([]string, per)
			idx := make([]int, per)
			for {
				var t0 time.Time
				if interval > 0 {
					due := start.Add(time.Duration(slot.Add(1)-1) * interval)
					if !due.Before(deadline) {
						break
					}
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
					t0 = due
				} else {
					t0 = time.Now()
					if !t0.Before(deadline) {
						break
					}
				}
				for i := range keys {
					idx[i] = pick()
					keys[i] = KeyName(idx[i])
				}
				res, err := t.Decide(runCtx, keys)
				local.RecordValue(min(time.Since(t0).Microseconds(), histMaxUs))
				if err != nil || len(res) != per {
					errs.Add(1)
					continue
				}
				decisions.Add(int64(per))
				for i, ok := range res {
					if ok {
						allowed[idx[i]].Add(1)
						allowedTotal.Add(1)
					}
				}
			}
			histMu.Lock()
			hist.Merge(local)
			histMu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := proc.TotalCPUSeconds(sys.Pids()) - cpu0

	res := Result{
		System: sys.Name(), Workload: r.Workload.Name, Distribution: distribution(r.Workload), Mode: string(r.Mode),
		Loop: "closed", Concurrency: r.Concurrency, TargetRate: r.Rate, Duration: elapsed,
		Decisions: decisions.Load(), Allowed: allowedTotal.Load(), Errors: errs.Load(),
		PerSecond: float64(decisions.Load()) / elapsed.Seconds(),
		P50us:     float64(hist.ValueAtQuantile(50)), P99us: float64(hist.ValueAtQuantile(99)),
		P999us: float64(hist.ValueAtQuantile(99.9)), MaxUs: float64(hist.Max()),
		ServerCPUSeconds: cpu, Durable: sys.Durable(), Linearizable: sys.Linearizable(),
	}
	if r.Rate > 0 {
		res.Loop = "open"
	}
	if res.Decisions > 0 {
		res.CPUPer1000 = cpu / float64(res.Decisions) * 1000
	}
	if r.Mode != Stale { // a stale read decides nothing
		res.Overspend = overspend(r.Workload, allowed, elapsed)
	}
	return res, nil
}

func distribution(w Workload) string {
	if w.Zipf {
		return "zipf"
	}
	return "uniform"
}

// keyPicker returns a function drawing key indexes for w.
func keyPicker(w Workload, rng *rand.Rand) func() int {
	if !w.Zipf {
		return func() int { return rng.IntN(w.Keys) }
	}
	z := newZipf(rng, w.ZipfS, w.Keys)
	return z.next
}

// zipf draws 0..n-1 with P(k) ∝ 1/(k+1)^s by inverting the CDF (math/rand/v2
// has no Zipf; the table is n floats).
type zipf struct {
	rng *rand.Rand
	cdf []float64
}

func newZipf(rng *rand.Rand, s float64, n int) *zipf {
	cdf := make([]float64, n)
	var sum float64
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	return &zipf{rng: rng, cdf: cdf}
}

func (z *zipf) next() int {
	u := z.rng.Float64()
	lo, hi := 0, len(z.cdf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cdf[mid] < u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// overspend counts decisions allowed beyond what the limit permits per key:
// a token bucket at most capacity + rate × elapsed (+1 for the clock's
// granularity); a budget at most amount / cost.
func overspend(w Workload, allowed []atomic.Int64, elapsed time.Duration) int64 {
	var permitted int64
	switch w.Kind {
	case TokenBucket:
		permitted = w.Capacity + int64(math.Ceil(float64(w.RatePerSec)*elapsed.Seconds())) + 1
	case Budget:
		amount, err1 := ParseMicros(w.BudgetAmount)
		cost, err2 := ParseMicros(w.Cost)
		if err1 != nil || err2 != nil || cost <= 0 {
			return -1
		}
		permitted = amount / cost
	}
	var over int64
	for i := range allowed {
		if a := allowed[i].Load(); a > permitted {
			over += a - permitted
		}
	}
	return over
}

// ParseMicros parses a non-negative decimal string ("1", "+2.5", ".5", "3.",
// "12.345678000") into micro-units, exactly: at most 6 significant
// fractional digits (trailing zeros beyond them are fine), no sign but '+',
// no exponent. Every system of the benchmark parses amounts with it.
func ParseMicros(s string) (int64, error) {
	in := s
	ip, fp, _ := strings.Cut(strings.TrimPrefix(s, "+"), ".")
	if ip == "" && fp == "" {
		return 0, fmt.Errorf("invalid decimal %q", in)
	}
	if !allDigits(ip) || !allDigits(fp) {
		return 0, fmt.Errorf("invalid decimal %q", in)
	}
	if fp = strings.TrimRight(fp, "0"); len(fp) > 6 {
		return 0, fmt.Errorf("decimal %q has more than 6 fractional digits", in)
	}
	var whole int64
	if ip != "" {
		v, err := strconv.ParseInt(ip, 10, 64)
		if err != nil || v > (math.MaxInt64-999_999)/1_000_000 {
			return 0, fmt.Errorf("decimal %q out of range", in)
		}
		whole = v
	}
	var frac int64
	if fp != "" {
		frac, _ = strconv.ParseInt(fp+strings.Repeat("0", 6-len(fp)), 10, 64)
	}
	return whole*1_000_000 + frac, nil
}

func allDigits(d string) bool {
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}
