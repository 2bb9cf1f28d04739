package jepsen

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tollgate/tollgate/test/checker"
)

// The harness's own checks, next to test/checker's.
const (
	checkRecovery = "recovery"
	checkLiveness = "liveness"
	checkFaults   = "faults"
	checkLogOrder = "log-order"
	checkReadInfo = "read-info"
	checkHolds    = "holds"
	checkRate     = "rate-bound"
	checkFresh    = "fresh-reads"
	checkReceipts = "receipts"
)

// problemsMax bounds how many problems a detail spells out.
const problemsMax = 8

func verdict(name string, problems []string, okDetail string) checker.Verdict {
	if len(problems) == 0 {
		return checker.Verdict{Check: name, OK: true, Detail: okDetail}
	}
	detail := strings.Join(problems[:min(len(problems), problemsMax)], "; ")
	if len(problems) > problemsMax {
		detail += fmt.Sprintf("; and %d more", len(problems)-problemsMax)
	}
	return checker.Verdict{Check: name, Detail: detail}
}

func runChecks(res *Result, cfg Config, final finalState, wl *workload, liveness []string, recovery checker.Verdict, v *view, key clusterKey) []checker.Verdict {
	verdicts := checkerVerdicts(res.History, final.Final, cfg.LinTimeout, res.Dir)
	verdicts = append(verdicts,
		recovery,
		verdict(checkLiveness, liveness, "healthy between faults, after healing, and converged after the workload"),
		faultsVerdict(res.Schedule, res.Faults),
		logOrderVerdict(res.History, wl.obj.consumeKeys),
		freshReadsVerdict(res.History, wl.obj.consumeKeys),
		readInfoVerdict(res.History, wl.violations[checkReadInfo]),
		holdsVerdict(res.History, final, wl.obj),
		rateVerdict(res.History, cfg),
		receiptsCheck(res, cfg, wl, v, key),
	)
	info := RunInfo{History: res.History, Final: final.Final, APIAddrs: addrs(v.memberList()), Tenant: tenant, Dir: res.Dir}
	for _, extra := range cfg.ExtraChecks {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		verdicts = append(verdicts, extra(ctx, info))
		cancel()
	}
	return verdicts
}

// receiptsCheck runs receiptsVerdict on the members after convergence.
func receiptsCheck(res *Result, cfg Config, wl *workload, v *view, key clusterKey) checker.Verdict {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return receiptsVerdict(ctx, receiptsInput{
		history: res.History, refs: wl.receiptRefs(), key: key, nodes: v.memberList(), seed: cfg.Seed,
		created: len(wl.obj.budgets) + 1, // the budgets and the policy
	})
}

// checkerVerdicts runs test/checker's checks; a check that panics is a
// failed verdict, not a crashed run (the history is still saved).
func checkerVerdicts(h checker.History, final checker.Final, linTimeout time.Duration, dir string) (verdicts []checker.Verdict) {
	defer func() {
		if r := recover(); r != nil {
			verdicts = []checker.Verdict{{Check: "checker", Detail: fmt.Sprintf("checker.Check panicked: %v", r)}}
		}
	}()
	return checker.Check(h, final, linTimeout, dir)
}

// faultsVerdict: every fault was injected and observed to take effect, and
// every mandatory step ran.
func faultsVerdict(schedule []Step, faults []FaultRecord) checker.Verdict {
	var problems []string
	for _, f := range faults {
		switch {
		case f.Err != "":
			problems = append(problems, fmt.Sprintf("#%d %s: %s", f.Step, f.Kind, f.Err))
		case !f.Verified:
			problems = append(problems, fmt.Sprintf("#%d %s not verified: %s", f.Step, f.Kind, f.Detail))
		}
	}
	ran := map[int]bool{}
	kinds := map[FaultKind]int{}
	for _, f := range faults {
		ran[f.Step] = true
		kinds[f.Kind]++
	}
	for i, s := range schedule {
		if s.Mandatory && !ran[i+1] {
			problems = append(problems, fmt.Sprintf("#%d %s never injected (the run stopped early)", i+1, s.Kind))
		}
	}
	var counts []string
	for _, k := range slices.Sorted(func(yield func(FaultKind) bool) {
		for k := range kinds {
			if !yield(k) {
				return
			}
		}
	}) {
		counts = append(counts, fmt.Sprintf("%s×%d", k, kinds[k]))
	}
	return verdict(checkFaults, problems, fmt.Sprintf("%d faults injected and verified: %s", len(faults), strings.Join(counts, " ")))
}

// logOrderVerdict holds every answer that names a log index to the log's
// order, per consume-only budget: the state at an applied index is the
// same on every replica, so reads of any level (stale ones included)
// reporting the same index agree, spend never decreases with the index, a
// read at or past a consume's entry includes it and a read before it does
// not. Linearizability judges when an answer came; this judges what it
// says about the state it came from.
func logOrderVerdict(h checker.History, keys []string) checker.Verdict {
	type read struct {
		index uint64
		spent int64
		op    *checker.Op
	}
	type charge struct {
		index         uint64
		before, after int64 // spend before and after this command
		op            *checker.Op
	}
	var problems []string
	var nReads, nCharges int
	for _, key := range keys {
		limit := h.Budgets[key]
		var reads []read
		var charges []charge
		for i := range h.Ops {
			op := &h.Ops[i]
			if op.Key != key || op.Status != checker.OK || op.LogIndex == 0 {
				continue
			}
			switch op.Kind {
			case checker.Read:
				reads = append(reads, read{op.LogIndex, op.Spent, op})
			case checker.Consume:
				after := limit - op.Remaining // no holds on consume keys
				before := after
				if op.Allowed {
					before -= op.Amount
				}
				charges = append(charges, charge{op.LogIndex, before, after, op})
			}
		}
		nReads += len(reads)
		nCharges += len(charges)
		sort.Slice(reads, func(i, j int) bool { return reads[i].index < reads[j].index })
		for i := 1; i < len(reads); i++ {
			a, b := reads[i-1], reads[i]
			switch {
			case a.index == b.index && a.spent != b.spent:
				problems = append(problems, fmt.Sprintf("%s: two reads at index %d disagree: spent %s (op %d, %s read on %s) and %s (op %d, %s read on %s)",
					key, a.index, formatMicros(a.spent), a.op.ID, a.op.Level, a.op.ServedBy, formatMicros(b.spent), b.op.ID, b.op.Level, b.op.ServedBy))
			case a.spent > b.spent:
				problems = append(problems, fmt.Sprintf("%s: spend went down with the log: %s at index %d (op %d on %s), %s at index %d (op %d on %s)",
					key, formatMicros(a.spent), a.index, a.op.ID, a.op.ServedBy, formatMicros(b.spent), b.index, b.op.ID, b.op.ServedBy))
			}
		}
		for _, c := range charges {
			i := sort.Search(len(reads), func(i int) bool { return reads[i].index >= c.index })
			if i < len(reads) && reads[i].spent < c.after {
				r := reads[i]
				problems = append(problems, fmt.Sprintf("%s: read op %d at index %d (%s on %s) says spent %s, but the consume op %d in entry %d left it at %s",
					key, r.op.ID, r.index, r.op.Level, r.op.ServedBy, formatMicros(r.spent), c.op.ID, c.index, formatMicros(c.after)))
			}
			if i > 0 && reads[i-1].spent > c.before {
				r := reads[i-1]
				problems = append(problems, fmt.Sprintf("%s: read op %d at index %d (%s on %s) says spent %s, more than the %s the consume op %d in later entry %d found",
					key, r.op.ID, r.index, r.op.Level, r.op.ServedBy, formatMicros(r.spent), formatMicros(c.before), c.op.ID, c.index))
			}
		}
	}
	return verdict(checkLogOrder, problems, fmt.Sprintf("%d reads (every level) and %d consume answers agree with the log order", nReads, nCharges))
}

// readInfoVerdict: every read was served at the level asked for, and no
// stale read bounded by max_staleness answered from an older state.
func readInfoVerdict(h checker.History, problems []string) checker.Verdict {
	reads := 0
	for _, op := range h.Ops {
		if op.Kind == checker.Read && op.Status == checker.OK {
			reads++
		}
	}
	return verdict(checkReadInfo, problems, fmt.Sprintf("%d reads served at the level asked for, within max_staleness where set", reads))
}

// holdsVerdict: on the hold budgets, spend plus what is still held never
// passes the amount (the charged part is judged by no-overspend and
// no-lost-ack, which count commits).
func holdsVerdict(h checker.History, final finalState, obj objects) checker.Verdict {
	var problems []string
	counts := map[checker.Kind]map[checker.Status]int{}
	for _, op := range h.Ops {
		switch op.Kind {
		case checker.Reserve, checker.Commit, checker.Release:
			if counts[op.Kind] == nil {
				counts[op.Kind] = map[checker.Status]int{}
			}
			counts[op.Kind][op.Status]++
		}
	}
	for _, key := range obj.holdKeys {
		spent, ok := final.Spent[key]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: final state not observed", key))
			continue
		}
		held := final.held[key]
		limit := obj.budgets[key]
		if held < 0 || spent+held > limit {
			problems = append(problems, fmt.Sprintf("%s: spent %s + held %s exceeds the amount %s", key, formatMicros(spent), formatMicros(held), formatMicros(limit)))
		}
	}
	return verdict(checkHolds, problems, fmt.Sprintf("spent + held within the amount on %d hold budgets (reserves ok %d, commits ok %d, releases ok %d)",
		len(obj.holdKeys), counts[checker.Reserve][checker.OK], counts[checker.Commit][checker.OK], counts[checker.Release][checker.OK]))
}

// rateVerdict: a token bucket never allows more than burst plus what
// refills over the run's log time. Log time may run ahead of the wall
// clock by a clock-offset leader's offset, never more.
func rateVerdict(h checker.History, cfg Config) checker.Verdict {
	var first, last int64 = -1, 0
	allowed := map[string]int64{}
	seen := map[string]bool{}
	for _, op := range h.Ops {
		if op.Kind != checker.RateCheck {
			continue
		}
		if first < 0 || op.InvokeNs < first {
			first = op.InvokeNs
		}
		last = max(last, op.CompleteNs)
		if op.Status != checker.OK || !op.Allowed || seen[op.RequestID] {
			continue
		}
		seen[op.RequestID] = true
		allowed[op.Key] += op.Amount
	}
	if first < 0 {
		return checker.Verdict{Check: checkRate, OK: true, Detail: "no rate checks"}
	}
	logTime := time.Duration(last-first) + time.Second
	if slices.Contains(cfg.Faults, FaultClockOffset) {
		logTime += cfg.ClockOffsetMax
	}
	bound := rateBurst + int64(float64(rateLimit)*logTime.Seconds()/rateWindow.Seconds())
	var problems, parts []string
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range allowed {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s %d", key, allowed[key]))
		if allowed[key] > bound {
			problems = append(problems, fmt.Sprintf("%s: %d tokens allowed, more than burst %d + %d per %s over %s = %d",
				key, allowed[key], rateBurst, rateLimit, rateWindow, logTime.Round(time.Second), bound))
		}
	}
	return verdict(checkRate, problems, fmt.Sprintf("tokens allowed per key (%s) within %d", strings.Join(parts, ", "), bound))
}

// freshReadsVerdict: a linearizable read includes every charge that was
// acknowledged before the read was invoked, and nothing that was not yet
// sent when it completed. It is implied by linearizability; it is here
// because its counterexamples read plainly (this read, these charges).
func freshReadsVerdict(h checker.History, keys []string) checker.Verdict {
	type charge struct {
		at     int64 // acknowledged (lower bound) or invoked (upper bound)
		amount int64
	}
	var problems []string
	reads, staleLeaderReads := 0, 0
	for _, key := range keys {
		acked := map[string]charge{}   // request id -> earliest allowed answer
		invoked := map[string]charge{} // request id -> first send of anything that may charge
		var linReads []*checker.Op
		for i := range h.Ops {
			op := &h.Ops[i]
			if op.Key != key {
				continue
			}
			switch {
			case op.Kind == checker.Read && op.Level != "stale" && op.Status == checker.OK:
				linReads = append(linReads, op) // LEADER reads are only counted, below
			case op.Kind == checker.Consume && op.Status != checker.Fail:
				if c, seen := invoked[op.RequestID]; !seen || op.InvokeNs < c.at {
					invoked[op.RequestID] = charge{op.InvokeNs, op.Amount}
				}
				if op.Status == checker.OK && op.Allowed {
					if c, seen := acked[op.RequestID]; !seen || op.CompleteNs < c.at {
						acked[op.RequestID] = charge{op.CompleteNs, op.Amount}
					}
				}
			}
		}
		sortedCharges := func(m map[string]charge) []charge {
			out := make([]charge, 0, len(m))
			for _, c := range m {
				out = append(out, c)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].at < out[j].at })
			return out
		}
		// sumBefore is the total amount of charges with at < t.
		sumBefore := func(cs []charge, prefix []int64, t int64) (int64, int) {
			i := sort.Search(len(cs), func(i int) bool { return cs[i].at >= t })
			return prefix[i], i
		}
		prefix := func(cs []charge) []int64 {
			p := make([]int64, len(cs)+1)
			for i, c := range cs {
				p[i+1] = p[i] + c.amount
			}
			return p
		}
		lo, hi := sortedCharges(acked), sortedCharges(invoked)
		loSum, hiSum := prefix(lo), prefix(hi)
		for _, r := range linReads {
			if r.Level == "leader" {
				// Lease-based: allowed to be stale while a deposed
				// leader's lease runs (by design); counted, not judged.
				if must, _ := sumBefore(lo, loSum, r.InvokeNs); r.Spent < must {
					staleLeaderReads++
				}
				continue
			}
			reads++
			if must, n := sumBefore(lo, loSum, r.InvokeNs); r.Spent < must {
				problems = append(problems, fmt.Sprintf("%s: linearizable read op %d on %s (invoked %+.3fs, served by %s) says spent %s, but %d charges totalling %s were acknowledged before it was sent",
					key, r.ID, r.Node, float64(r.InvokeNs)/1e9, r.ServedBy, formatMicros(r.Spent), n, formatMicros(must)))
			}
			if could, _ := sumBefore(hi, hiSum, r.CompleteNs); r.Spent > could {
				problems = append(problems, fmt.Sprintf("%s: linearizable read op %d on %s says spent %s, more than the %s of every consume sent before it answered",
					key, r.ID, r.Node, formatMicros(r.Spent), formatMicros(could)))
			}
		}
	}
	return verdict(checkFresh, problems, fmt.Sprintf("%d linearizable reads include every charge acknowledged before them (LEADER reads, lease-based, that missed one: %d)",
		reads, staleLeaderReads))
}
