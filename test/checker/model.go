package checker

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/tollgate/tollgate/fsm"
)

// The porcupine model of one HARD budget (no holds, no period, no parent)
// of a fixed amount, captured by budgetModel.
//
// stepBudget is the specification: its state is the spent amount, an
// unanswered consume takes effect when porcupine linearizes it (if it fits)
// and porcupine linearizes it at the end (its return time is MaxInt64) when
// it never took effect. Porcupine searches by trying each pending operation
// as soon as it can, so with k unanswered consumes that never took effect it
// walks all 2^k subsets of them before each later answer: 8 per key made a
// 5k-operation key time out. budgetModel therefore defers the choice: an
// unanswered consume joins a pool of amounts that may still take effect, and
// each answer takes from the pool exactly what it shows was added (every
// answer pins the spent before it). See DESIGN.md for why this accepts the
// same histories; TestPoolModelMatchesSpecification checks it.

// budgetInput is what a client sent: a consume of amount, or a read.
type budgetInput struct {
	read      bool
	amount    int64
	requestID string
}

// budgetOutput is what the client saw. unknown: no answer, the consume may
// or may not have taken effect.
type budgetOutput struct {
	unknown   bool
	allowed   bool
	remaining int64
	spent     int64
}

// stepBudget is the specification of a HARD budget of limit micros: pure,
// and the whole of the semantics the linearizability check holds tollgate
// to. spent is the state.
func stepBudget(limit, spent int64, in budgetInput, out budgetOutput) (bool, int64) {
	if in.read {
		return out.spent == spent, spent
	}
	// Written as a difference: spent <= limit always holds in the model, so
	// limit-spent cannot overflow where spent+amount could.
	fits := in.amount <= limit-spent
	after := spent
	if fits {
		after = spent + in.amount
	}
	if out.unknown {
		// Unanswered: it took effect here, decided as tollgate decides, or
		// never (then porcupine linearizes it after every observation).
		return true, after
	}
	return out.allowed == fits && out.remaining == limit-after, after
}

// shownSpent is the spent an answer pins before the operation took effect:
// a read shows it, an allowed consume answers limit - (spent + amount), a
// denied one limit - spent.
func shownSpent(limit int64, in budgetInput, out budgetOutput) int64 {
	switch {
	case in.read:
		return out.spent
	case out.allowed:
		return limit - out.remaining - in.amount
	}
	return limit - out.remaining
}

// budgetState is the spent amount and the pool: every multiset of
// unanswered consumes' amounts that may still take effect (several when
// different subsets of the pool explain the answers so far), canonically
// encoded so that states compare and hash as a string; "" is the empty pool.
type budgetState struct {
	spent int64
	pool  string
}

// budgetModel is stepBudget with the choice of unanswered consumes
// deferred to the answers that show them.
func budgetModel(limit int64) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return budgetState{} },
		StepContext: func(ctx context.Context, state, input, output any) (bool, any) {
			s, ok := stepPool(ctx, limit, state.(budgetState), input.(budgetInput), output.(budgetOutput))
			return ok, s
		},
		Equal: func(a, b any) bool { return a.(budgetState) == b.(budgetState) },
		Hash: func(state any) uint64 {
			s := state.(budgetState)
			h := uint64(s.spent) * 0x9e3779b97f4a7c15
			for i := 0; i < len(s.pool); i++ { // FNV-1a
				h = (h ^ uint64(s.pool[i])) * 0x100000001b3
			}
			return h
		},
		DescribeOperation: func(input, output any) string {
			return describeOperation(input.(budgetInput), output.(budgetOutput))
		},
		DescribeState: func(state any) string { return describeState(limit, state.(budgetState)) },
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			return info.(string)
		},
	}
}

func stepPool(ctx context.Context, limit int64, s budgetState, in budgetInput, out budgetOutput) (budgetState, bool) {
	if out.unknown {
		// Into the pool, unless it can only ever be denied (spent never
		// shrinks), which is the same as never taking effect.
		if in.amount <= 0 || in.amount > limit-s.spent {
			return s, true
		}
		pools := decodePools(s.pool)
		for i, pool := range pools {
			at, _ := slices.BinarySearch(pool, in.amount)
			pools[i] = slices.Insert(pool, at, in.amount)
		}
		return budgetState{spent: s.spent, pool: encodePools(pools)}, true
	}
	before := shownSpent(limit, in, out)
	ok, after := stepBudget(limit, before, in, out)
	// The pooled consumes it shows took effect before it, so each fit:
	// spent <= before <= limit.
	added := before - s.spent
	if !ok || added < 0 || before > limit {
		return s, false
	}
	if s.pool == "" {
		return budgetState{spent: after}, added == 0
	}
	var next [][]int64
	for _, pool := range decodePools(s.pool) {
		forEachRest(ctx, pool, added, func(rest []int64) {
			// What no longer fits never will: spent only grows.
			rest = slices.DeleteFunc(rest, func(amount int64) bool { return amount > limit-after })
			next = append(next, rest)
		})
		if ctx.Err() != nil {
			return s, false
		}
	}
	if len(next) == 0 {
		return s, false
	}
	return budgetState{spent: after, pool: encodePools(next)}, true
}

// forEachRest calls yield with pool minus each sub-multiset that sums to
// target (pool sorted ascending, amounts positive). It gives up when ctx
// ends: a timed-out check must not wait for it.
func forEachRest(ctx context.Context, pool []int64, target int64, yield func(rest []int64)) {
	suffix := make([]int64, len(pool)+1) // suffix[i]: sum of pool[i:]
	for i := len(pool) - 1; i >= 0; i-- {
		suffix[i] = suffix[i+1] + pool[i]
	}
	taken := make([]bool, len(pool))
	visits, stopped := 0, false
	var walk func(i int, left int64)
	walk = func(i int, left int64) {
		visits++
		if stopped || visits%1024 == 0 && ctx.Err() != nil {
			stopped = true
			return
		}
		if left == 0 {
			rest := make([]int64, 0, len(pool))
			for j, amount := range pool {
				if !taken[j] {
					rest = append(rest, amount)
				}
			}
			yield(rest)
			return
		}
		if i == len(pool) || left > suffix[i] || pool[i] > left {
			return
		}
		// Take pool[i], or skip it with every copy of it: equal amounts are
		// interchangeable, so each sub-multiset is visited once.
		taken[i] = true
		walk(i+1, left-pool[i])
		taken[i] = false
		next := i + 1
		for next < len(pool) && pool[next] == pool[i] {
			next++
		}
		walk(next, left)
	}
	walk(0, target)
}

// encodePools is the canonical form of a set of pools: each pool's sorted
// amounts as a count and 8-byte values, the pools sorted and deduplicated;
// "" when the only pool is empty.
func encodePools(pools [][]int64) string {
	encoded := make([]string, 0, len(pools))
	for _, pool := range pools {
		b := binary.AppendUvarint(nil, uint64(len(pool)))
		for _, amount := range pool {
			b = binary.BigEndian.AppendUint64(b, uint64(amount))
		}
		encoded = append(encoded, string(b))
	}
	slices.Sort(encoded)
	encoded = slices.Compact(encoded)
	if len(encoded) == 1 && encoded[0] == "\x00" {
		return ""
	}
	return strings.Join(encoded, "")
}

func decodePools(s string) [][]int64 {
	if s == "" {
		return [][]int64{nil}
	}
	var pools [][]int64
	b := []byte(s)
	for len(b) > 0 {
		n, size := binary.Uvarint(b)
		b = b[size:]
		pool := make([]int64, n)
		for i := range pool {
			pool[i] = int64(binary.BigEndian.Uint64(b))
			b = b[8:]
		}
		pools = append(pools, pool)
	}
	return pools
}

func describeState(limit int64, s budgetState) string {
	d := fmt.Sprintf("spent %s of %s (remaining %s)", units(s.spent), units(limit), units(limit-s.spent))
	if s.pool == "" {
		return d
	}
	const poolsShownMax = 3
	pools := decodePools(s.pool)
	var shown []string
	for _, pool := range pools[:min(len(pools), poolsShownMax)] {
		amounts := make([]string, len(pool))
		for i, amount := range pool {
			amounts[i] = units(amount)
		}
		shown = append(shown, "{"+strings.Join(amounts, ", ")+"}")
	}
	if len(pools) > poolsShownMax {
		shown = append(shown, fmt.Sprintf("%d more", len(pools)-poolsShownMax))
	}
	return d + "; unanswered that may still take effect: " + strings.Join(shown, " or ")
}

func describeOperation(in budgetInput, out budgetOutput) string {
	if in.read {
		return "read → spent " + units(out.spent)
	}
	call := "consume " + units(in.amount)
	if in.requestID != "" {
		call += " [" + in.requestID + "]"
	}
	switch {
	case out.unknown:
		return call + " → unknown"
	case out.allowed:
		return call + " → allowed, remaining " + units(out.remaining)
	default:
		return call + " → denied, remaining " + units(out.remaining)
	}
}

// units renders micros as decimal units ("2.5") for people reading details
// and visualizations.
func units(micros int64) string { return fsm.FormatAmount(micros, 0) }
