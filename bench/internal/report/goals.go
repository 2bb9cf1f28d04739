package report

import (
	"fmt"
	"math"
	"strings"

	"github.com/tollgate/tollgate/bench/internal/load"
)

// Targets the goals are stated with. They are the goals' definitions, not
// measurements: every measured value comes from the Run.
const (
	// GoalEtcdRatio: tollgate linearizable ÷ etcd at 64 clients.
	GoalEtcdRatio = 5.0
	// GoalBatchRate: tollgate batch16 decisions/s.
	GoalBatchRate = 100_000.0
	// GoalBatchRedisRatio: tollgate batch16 ÷ redis-always.
	GoalBatchRedisRatio = 1.0
	// GoalFloorMultiple: tollgate p50 at 1 client ÷ (fsync p50 + loopback
	// RTT p50 + no-op RPC p50).
	GoalFloorMultiple = 3.0
	// GoalOpenP99ms: tollgate open-loop p99 at about half its max rate.
	GoalOpenP99ms = 10.0
	// GoalGubernatorRatio: tollgate linearizable ÷ gubernator at 64.
	GoalGubernatorRatio = 2.0
	// GoalStaleRatio: tollgate STALE reads ÷ gubernator at 64.
	GoalStaleRatio = 3.0

	// openHalfLow/High bound "about half": the open-loop run used for goal
	// d must have a target rate within this fraction of the closed-loop
	// max, otherwise the goal is n/a.
	openHalfLow  = 0.25
	openHalfHigh = 0.75
)

// Status is the outcome of a goal or a check.
type Status string

const (
	Pass Status = "PASS"
	Miss Status = "MISS"
	NA   Status = "n/a" // a result the goal needs is absent
)

// Unit says how a Check's values read.
type Unit string

const (
	UnitRatio Unit = "ratio" // ×
	UnitRate  Unit = "rate"  // decisions/s
	UnitMs    Unit = "ms"    // milliseconds
	UnitCount Unit = "count" // a plain count
)

// Cmp is how a Check compares Measured with Target.
type Cmp string

const (
	AtLeast Cmp = ">="
	AtMost  Cmp = "<="
	Equal   Cmp = "=="
)

// Check is one measured value against its target.
type Check struct {
	// What is measured, e.g. "tollgate ÷ etcd decisions/s".
	What string
	// Measured is NaN when n/a.
	Measured float64
	Cmp      Cmp
	Target   float64
	Unit     Unit
	// From says which results and values the measurement came from, or
	// which result is missing.
	From   string
	Status Status
}

// Goal is one of the benchmark's goals with its checks. Its Status is MISS
// if any check misses, else n/a if any check is n/a, else PASS.
type Goal struct {
	ID     string // "a" … "f"
	Title  string
	Checks []Check
	Status Status
}

func newCheck(what string, measured float64, cmp Cmp, target float64, unit Unit, from string) Check {
	c := Check{What: what, Measured: measured, Cmp: cmp, Target: target, Unit: unit, From: from}
	switch {
	case !valid(measured):
		c.Measured = math.NaN()
		c.Status = NA
	case cmp == AtLeast && measured >= target,
		cmp == AtMost && measured <= target,
		cmp == Equal && measured == target:
		c.Status = Pass
	default:
		c.Status = Miss
	}
	return c
}

func naCheck(what string, cmp Cmp, target float64, unit Unit, from string) Check {
	return newCheck(what, math.NaN(), cmp, target, unit, from)
}

func newGoal(id, title string, checks ...Check) Goal {
	g := Goal{ID: id, Title: title, Checks: checks, Status: Pass}
	for _, c := range checks {
		switch {
		case c.Status == Miss:
			g.Status = Miss
		case c.Status == NA && g.Status != Miss:
			g.Status = NA
		}
	}
	return g
}

// describe names a closed-loop result for a From field.
func describe(res load.Result) string {
	return fmt.Sprintf("%s %s %s/%s c=%d: %s/s", res.System, res.Mode, res.Workload,
		res.Distribution, res.Concurrency, fmtRate(res.PerSecond))
}

func missing(system, mode, workload, dist string, conc int) string {
	if conc <= 0 {
		return fmt.Sprintf("no closed-loop result for %s %s %s/%s", system, mode, workload, dist)
	}
	return fmt.Sprintf("no closed-loop result for %s %s %s/%s c=%d", system, mode, workload, dist, conc)
}

// ratioCheck is a check of num ÷ den decisions/s.
func ratioCheck(what string, num, den load.Result, numOK, denOK bool, target float64,
	numMissing, denMissing string) Check {
	switch {
	case !numOK && !denOK:
		return naCheck(what, AtLeast, target, UnitRatio, numMissing+"; "+denMissing)
	case !numOK:
		return naCheck(what, AtLeast, target, UnitRatio, numMissing)
	case !denOK:
		return naCheck(what, AtLeast, target, UnitRatio, denMissing)
	case den.PerSecond <= 0:
		return naCheck(what, AtLeast, target, UnitRatio, describe(den)+" (no decisions)")
	}
	return newCheck(what, num.PerSecond/den.PerSecond, AtLeast, target, UnitRatio,
		describe(num)+" ÷ "+describe(den))
}

// Goals computes the benchmark's goals from r. Every value comes from r; a
// goal whose inputs are absent is n/a.
//
//	a. token-bucket/uniform, linearizable, 64 clients:
//	   tollgate decisions/s ÷ etcd ≥ 5, and tollgate overspend (all runs) = 0.
//	b. token-bucket/uniform, batch16, at 64 clients (else each system's best
//	   concurrency): tollgate ÷ redis-always batch16 (redis-always
//	   linearizable if it has no batch16) ≥ 1, and tollgate ≥ 100,000/s.
//	c. tollgate linearizable token-bucket/uniform p50 at 1 client ≤
//	   3 × (fsync p50 + loopback RTT p50 + no-op RPC p50).
//	d. tollgate linearizable token-bucket/uniform open-loop p99 ≤ 10 ms, at
//	   the open-loop target rate nearest half the closed-loop max (n/a if
//	   that is outside 25–75 % of the max).
//	e. token-bucket/uniform, 64 clients: tollgate linearizable ÷ gubernator
//	   linearizable (one decision per call) ≥ 2.
//	f. 64 clients: tollgate stale (budget/uniform) ÷ gubernator
//	   linearizable (token-bucket/uniform) ≥ 3.
func Goals(r *Run) []Goal {
	return []Goal{goalA(r), goalB(r), goalC(r), goalD(r), goalE(r), goalF(r)}
}

func lin() string   { return string(load.Linearizable) }
func batch() string { return string(load.Batch16) }
func stale() string { return string(load.Stale) }

func goalA(r *Run) Goal {
	c := refConcurrency
	tg, tgOK := r.closed(sysTollgate, wlTokenBucket, distUniform, lin(), c)
	et, etOK := r.closed(sysEtcd, wlTokenBucket, distUniform, lin(), c)
	ratio := ratioCheck("tollgate ÷ etcd, linearizable, token-bucket/uniform, 64 clients",
		tg, et, tgOK, etOK, GoalEtcdRatio,
		missing(sysTollgate, lin(), wlTokenBucket, distUniform, c),
		missing(sysEtcd, lin(), wlTokenBucket, distUniform, c))

	var over int64
	runs := 0
	for _, res := range r.Results {
		if res.System == sysTollgate {
			over += res.Overspend
			runs++
		}
	}
	var os Check
	if runs == 0 {
		os = naCheck("tollgate overspend, all runs", Equal, 0, UnitCount, "no tollgate results")
	} else {
		os = newCheck("tollgate overspend, all runs", float64(over), Equal, 0, UnitCount,
			fmt.Sprintf("sum over %d tollgate runs", runs))
	}
	return newGoal("a", "tollgate ≥ 5× etcd (linearizable, 64 clients) with no overspend", ratio, os)
}

func goalB(r *Run) Goal {
	tg, tgOK := r.atRefOrBest(sysTollgate, wlTokenBucket, distUniform, batch())
	peerMode := batch()
	rd, rdOK := r.atRefOrBest(sysRedisAlways, wlTokenBucket, distUniform, batch())
	if !rdOK {
		peerMode = lin()
		rd, rdOK = r.atRefOrBest(sysRedisAlways, wlTokenBucket, distUniform, lin())
	}
	tgMissing := missing(sysTollgate, batch(), wlTokenBucket, distUniform, 0)
	vsRedis := ratioCheck("tollgate batch16 ÷ redis-always "+peerMode+", token-bucket/uniform",
		tg, rd, tgOK, rdOK, GoalBatchRedisRatio, tgMissing,
		fmt.Sprintf("no closed-loop result for %s %s or %s %s/%s", sysRedisAlways, batch(), lin(), wlTokenBucket, distUniform))
	var rate Check
	if tgOK {
		rate = newCheck("tollgate batch16 decisions/s, token-bucket/uniform", tg.PerSecond, AtLeast,
			GoalBatchRate, UnitRate, describe(tg))
	} else {
		rate = naCheck("tollgate batch16 decisions/s, token-bucket/uniform", AtLeast, GoalBatchRate, UnitRate, tgMissing)
	}
	return newGoal("b", "tollgate batch16 ≥ redis-always and ≥ 100,000 decisions/s (64 clients, else best)", vsRedis, rate)
}

func goalC(r *Run) Goal {
	const what = "tollgate linearizable p50 at 1 client, token-bucket/uniform"
	f := r.Floors
	var absent []string
	if !(f.FsyncP50us > 0) {
		absent = append(absent, "fsync p50")
	}
	if !(f.RTTP50us > 0) {
		absent = append(absent, "loopback RTT p50")
	}
	if !(f.NoopRPCP50us > 0) {
		absent = append(absent, "no-op RPC p50")
	}
	floorUs := f.FsyncP50us + f.RTTP50us + f.NoopRPCP50us
	target := GoalFloorMultiple * floorUs / 1000
	tg, ok := r.closed(sysTollgate, wlTokenBucket, distUniform, lin(), 1)
	var c Check
	switch {
	case len(absent) > 0:
		c = naCheck(what, AtMost, math.NaN(), UnitMs, "floor not measured: "+strings.Join(absent, ", "))
	case !ok:
		c = naCheck(what, AtMost, target, UnitMs, missing(sysTollgate, lin(), wlTokenBucket, distUniform, 1))
	default:
		c = newCheck(what, tg.P50us/1000, AtMost, target, UnitMs,
			fmt.Sprintf("3 × (fsync %s + RTT %s + no-op RPC %s = %s ms); measured %.2f× the floor",
				fmtMs(f.FsyncP50us/1000), fmtMs(f.RTTP50us/1000), fmtMs(f.NoopRPCP50us/1000),
				fmtMs(floorUs/1000), tg.P50us/floorUs))
	}
	return newGoal("c", "tollgate p50 at 1 client ≤ 3 × (fsync + loopback RTT + no-op RPC) p50", c)
}

func goalD(r *Run) Goal {
	const what = "tollgate linearizable open-loop p99, token-bucket/uniform"
	title := "tollgate open-loop p99 ≤ 10 ms at about half its max rate"
	opens := r.open(sysTollgate, wlTokenBucket, distUniform, lin())
	if len(opens) == 0 {
		return newGoal("d", title, naCheck(what, AtMost, GoalOpenP99ms, UnitMs,
			fmt.Sprintf("no open-loop result for %s %s %s/%s", sysTollgate, lin(), wlTokenBucket, distUniform)))
	}
	max, maxOK := r.best(sysTollgate, wlTokenBucket, distUniform, lin())
	if !maxOK || max.PerSecond <= 0 {
		return newGoal("d", title, naCheck(what, AtMost, GoalOpenP99ms, UnitMs,
			"closed-loop max rate unknown: "+missing(sysTollgate, lin(), wlTokenBucket, distUniform, 0)))
	}
	half := max.PerSecond / 2
	pick := opens[0]
	for _, o := range opens[1:] {
		if math.Abs(o.TargetRate-half) < math.Abs(pick.TargetRate-half) {
			pick = o
		}
	}
	frac := pick.TargetRate / max.PerSecond
	from := fmt.Sprintf("open loop at %s/s target = %.0f%% of the closed-loop max %s/s (c=%d); achieved %s/s",
		fmtRate(pick.TargetRate), 100*frac, fmtRate(max.PerSecond), max.Concurrency, fmtRate(pick.PerSecond))
	if frac < openHalfLow || frac > openHalfHigh {
		return newGoal("d", title, naCheck(what, AtMost, GoalOpenP99ms, UnitMs,
			from+fmt.Sprintf("; not about half (needs %.0f–%.0f%%)", 100*openHalfLow, 100*openHalfHigh)))
	}
	return newGoal("d", title, newCheck(what, pick.P99us/1000, AtMost, GoalOpenP99ms, UnitMs, from))
}

func goalE(r *Run) Goal {
	c := refConcurrency
	tg, tgOK := r.closed(sysTollgate, wlTokenBucket, distUniform, lin(), c)
	gb, gbOK := r.closed(sysGubernator, wlTokenBucket, distUniform, lin(), c)
	return newGoal("e", "tollgate linearizable ≥ 2× gubernator (one decision per call, 64 clients)",
		ratioCheck("tollgate ÷ gubernator, linearizable, token-bucket/uniform, 64 clients",
			tg, gb, tgOK, gbOK, GoalGubernatorRatio,
			missing(sysTollgate, lin(), wlTokenBucket, distUniform, c),
			missing(sysGubernator, lin(), wlTokenBucket, distUniform, c)))
}

func goalF(r *Run) Goal {
	c := refConcurrency
	tg, tgOK := r.closed(sysTollgate, wlBudget, distUniform, stale(), c)
	gb, gbOK := r.closed(sysGubernator, wlTokenBucket, distUniform, lin(), c)
	ch := ratioCheck("tollgate stale (budget read) ÷ gubernator (token-bucket decision), 64 clients",
		tg, gb, tgOK, gbOK, GoalStaleRatio,
		missing(sysTollgate, stale(), wlBudget, distUniform, c),
		missing(sysGubernator, lin(), wlTokenBucket, distUniform, c))
	if ch.Status != NA {
		ch.From += " (workloads differ: stale is a read)"
	}
	return newGoal("f", "tollgate STALE reads ≥ 3× gubernator one-decision calls (64 clients)", ch)
}

// Ratio is one row of the "ratios against each peer and floor" table.
type Ratio struct {
	Name string
	// Num and Den are formatted inputs ("123,456/s (c=64)"), "n/a" when
	// absent.
	Num, Den string
	// Value is Num ÷ Den, NaN when either is absent.
	Value float64
}

// Ratios computes tollgate ÷ each peer at 64 clients on token-bucket/uniform
// (linearizable always, batch16 where both have it) and tollgate's
// linearizable p50 at 1 client ÷ (fsync + loopback RTT + no-op RPC p50).
func Ratios(r *Run) []Ratio {
	peers := []string{sysEtcd, sysRedisAlways, sysRedisEverysec, sysGubernator}
	known := map[string]bool{sysTollgate: true}
	for _, p := range peers {
		known[p] = true
	}
	others := map[string]bool{}
	for _, res := range r.Results {
		if !known[res.System] && res.Workload == wlTokenBucket && res.Distribution == distUniform {
			others[res.System] = true
		}
	}
	peers = append(peers, sortedBy(systemRank, others)...)

	var out []Ratio
	c := refConcurrency
	for _, mode := range []string{lin(), batch()} {
		tg, tgOK := r.closed(sysTollgate, wlTokenBucket, distUniform, mode, c)
		for _, p := range peers {
			pr, pOK := r.closed(p, wlTokenBucket, distUniform, mode, c)
			if mode != lin() && !(tgOK && pOK) {
				continue // batch16 only where both have it
			}
			row := Ratio{
				Name:  fmt.Sprintf("tollgate ÷ %s (%s, token-bucket/uniform, c=%d)", p, mode, c),
				Num:   "n/a",
				Den:   "n/a",
				Value: math.NaN(),
			}
			if tgOK {
				row.Num = fmtRate(tg.PerSecond) + "/s"
			}
			if pOK {
				row.Den = fmtRate(pr.PerSecond) + "/s"
			}
			if tgOK && pOK && pr.PerSecond > 0 {
				row.Value = tg.PerSecond / pr.PerSecond
			}
			out = append(out, row)
		}
	}

	f := r.Floors
	floor := Ratio{
		Name:  "tollgate p50 at 1 client ÷ (fsync + loopback RTT + no-op RPC p50)",
		Num:   "n/a",
		Den:   "n/a",
		Value: math.NaN(),
	}
	floorUs := f.FsyncP50us + f.RTTP50us + f.NoopRPCP50us
	floorOK := f.FsyncP50us > 0 && f.RTTP50us > 0 && f.NoopRPCP50us > 0
	if floorOK {
		floor.Den = fmtMs(floorUs/1000) + " ms"
	}
	tg, tgOK := r.closed(sysTollgate, wlTokenBucket, distUniform, lin(), 1)
	if tgOK {
		floor.Num = fmtMs(tg.P50us/1000) + " ms"
	}
	if tgOK && floorOK {
		floor.Value = tg.P50us / floorUs
	}
	return append(out, floor)
}
