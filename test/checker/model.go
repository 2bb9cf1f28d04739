package checker

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/tollgate/tollgate/fsm"
)

// The porcupine model of one HARD budget (no holds, no period, no parent)
// of a fixed amount.
//
// stepBudget is the specification. Fed to porcupine as it stands, an
// unanswered consume is an operation returning at MaxInt64 that charges
// wherever porcupine linearizes it, and porcupine linearizes it last when
// it never took effect. Porcupine tries each pending operation as soon as
// it can and backtracks over it, so each unanswered consume that never took
// effect roughly doubles the search: 8 of them on a 5,000-operation key
// took about a second where none took 10 ms.
//
// budgetModel therefore keeps unanswered consumes out of porcupine's
// search. They sit in a side table sorted by invocation; porcupine orders
// only the answered operations, and each answer, which pins the spent
// before it, takes from the table exactly what it shows was added. And as
// spent only grows, the spent an answer shows fixes which answers come
// before it (orderAnswers, inOrder), so porcupine need not discover the
// order by backtracking. DESIGN.md argues that budgetModel accepts the same
// histories as the specification; TestModelMatchesSpecification checks it
// on thousands of small ones, legal and corrupted.

// budgetInput is what a client sent: a consume of amount, or a read, and
// when the answer came (the model needs it to place unanswered consumes).
type budgetInput struct {
	read      bool
	amount    int64
	requestID string
	returnNs  int64
	// mustFollow is how many answered operations must be linearized
	// before this one (see orderAnswers).
	mustFollow int
}

// budgetOutput is what the client saw. unknown: no answer, the consume may
// or may not have taken effect (only the specification model sees those).
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

// shownSpent is the spent an answer pins before its operation: a read shows
// it, an allowed consume answers limit - (spent + amount), a denied one
// limit - spent.
func shownSpent(limit int64, in budgetInput, out budgetOutput) int64 {
	switch {
	case in.read:
		return out.spent
	case out.allowed:
		return limit - out.remaining - in.amount
	}
	return limit - out.remaining
}

// unanswered is a consume that never got an answer: it may take effect at
// any point after invokeNs, or never.
type unanswered struct {
	invokeNs  int64
	amount    int64
	requestID string
}

// budgetState is the spent amount and the ways the unanswered consumes can
// have contributed to it, encoded so that states compare and hash as
// strings (see encodeOptions).
type budgetState struct {
	spent   int64
	options string
	// linearized counts the answered operations linearized so far, and
	// belowSpent those of them that showed a spent below the current one.
	// Both follow from the set porcupine tracks, so they split no states.
	linearized, belowSpent int
}

// option is one way to explain the answers so far: which unanswered
// consumes took effect (indexes into the table, ascending), and the
// earliest time the linearization can now be at (the latest invocation
// among them): every later operation must answer after it.
type option struct {
	notBeforeNs int64
	applied     []uint32
}

// budgetModel is the model porcupine searches with: stepBudget for the
// answered operations, the unanswered ones (sorted by invokeNs) taken from
// the side table when an answer shows them.
func budgetModel(limit int64, unknowns []unanswered) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return budgetState{} },
		StepContext: func(ctx context.Context, state, input, output any) (bool, any) {
			s, ok := stepModel(ctx, limit, unknowns, state.(budgetState), input.(budgetInput), output.(budgetOutput))
			return ok, s
		},
		Equal: func(a, b any) bool { return a.(budgetState) == b.(budgetState) },
		Hash: func(state any) uint64 {
			s := state.(budgetState)
			h := uint64(s.spent) * 0x9e3779b97f4a7c15
			for i := 0; i < len(s.options); i++ { // FNV-1a
				h = (h ^ uint64(s.options[i])) * 0x100000001b3
			}
			return h
		},
		DescribeOperation: func(input, output any) string {
			return describeOperation(input.(budgetInput), output.(budgetOutput))
		},
		DescribeState: func(state any) string { return describeState(limit, unknowns, state.(budgetState)) },
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			return info.(string)
		},
	}
}

func stepModel(ctx context.Context, limit int64, unknowns []unanswered, s budgetState, in budgetInput, out budgetOutput) (budgetState, bool) {
	before := shownSpent(limit, in, out)
	ok, after := stepBudget(limit, before, in, out)
	// Unanswered consumes it shows took effect before it, each fitting:
	// spent <= before <= limit.
	added := before - s.spent
	if !ok || added < 0 || before > limit || !inOrder(s, before, after, in.mustFollow) {
		return s, false
	}
	next := budgetState{spent: after, linearized: s.linearized + 1, belowSpent: s.belowSpent}
	switch {
	case after > before:
		next.belowSpent = s.linearized + 1
	case added > 0:
		next.belowSpent = s.linearized
	}
	if s.options == "" && added == 0 {
		return next, true // the common case: nothing unanswered in sight
	}
	// Unanswered consumes invoked after this answer cannot be before it.
	invokedBefore := sort.Search(len(unknowns), func(i int) bool { return unknowns[i].invokeNs > in.returnNs })
	var options []option
	for _, o := range decodeOptions(s.options) {
		if o.notBeforeNs > in.returnNs {
			continue // an unanswered consume this one shows came later
		}
		forEachChoice(ctx, unknowns[:invokedBefore], o.applied, added, func(picked []uint32) {
			n := option{notBeforeNs: o.notBeforeNs, applied: slices.Clone(o.applied)}
			for _, i := range picked {
				n.notBeforeNs = max(n.notBeforeNs, unknowns[i].invokeNs)
				n.applied = append(n.applied, i)
			}
			slices.Sort(n.applied)
			options = append(options, n)
		})
		if ctx.Err() != nil {
			return s, false
		}
	}
	if len(options) == 0 {
		return s, false
	}
	next.options = encodeOptions(options)
	return next, true
}

// inOrder holds when every answered operation that must come before one
// showing spent before (and after after it) has been linearized. Spent
// only grows, so an operation that showed a lower spent came first, and
// one that changes the spent follows every other that showed a spent below
// its new one. Porcupine would find that out later, after wandering: an
// early answer whose gap unanswered consumes happen to fill looks fine
// until the operation that really filled it cannot be placed.
func inOrder(s budgetState, before, after int64, mustFollow int) bool {
	switch {
	case after > before, before > s.spent:
		// Everything linearized showed a spent of at most s.spent, below
		// this operation's new spent.
		return s.linearized == mustFollow
	default:
		return s.belowSpent == mustFollow
	}
}

// orderAnswers sets each operation's mustFollow: the number of others that
// showed a spent below its own, or, for one that changes the spent, below
// the spent after it.
func orderAnswers(limit int64, ops []porcupine.Operation) {
	befores := make([]int64, len(ops))
	for i, op := range ops {
		befores[i] = shownSpent(limit, op.Input.(budgetInput), op.Output.(budgetOutput))
	}
	sorted := slices.Clone(befores)
	slices.Sort(sorted)
	below := func(v int64) int { n, _ := slices.BinarySearch(sorted, v); return n }
	for i := range ops {
		in := ops[i].Input.(budgetInput)
		_, after := stepBudget(limit, befores[i], in, ops[i].Output.(budgetOutput))
		if after > befores[i] {
			in.mustFollow = below(after) - 1 // not itself
		} else {
			in.mustFollow = below(befores[i])
		}
		ops[i].Input = in
	}
}

// forEachChoice calls yield with each choice of not yet applied unanswered
// consumes (candidates, sorted by invocation) whose amounts sum to target.
// Of equal amounts it takes the earliest invoked: taking a later one
// instead constrains the rest of the linearization more, never less, so
// only the number taken of each amount is chosen. It gives up when ctx
// ends: a timed-out check must not wait for it.
func forEachChoice(ctx context.Context, candidates []unanswered, applied []uint32, target int64, yield func(picked []uint32)) {
	if target == 0 {
		yield(nil)
		return
	}
	type group struct {
		amount  int64
		indexes []uint32 // by invocation
	}
	var groups []group
	at := map[int64]int{}
	for i, u := range candidates {
		if u.amount <= 0 || u.amount > target {
			continue
		}
		if _, done := slices.BinarySearch(applied, uint32(i)); done {
			continue
		}
		g, ok := at[u.amount]
		if !ok {
			g = len(groups)
			at[u.amount] = g
			groups = append(groups, group{amount: u.amount})
		}
		groups[g].indexes = append(groups[g].indexes, uint32(i))
	}
	capacity := make([]int64, len(groups)+1) // capacity[g]: sum of groups[g:]
	for g := len(groups) - 1; g >= 0; g-- {
		capacity[g] = capacity[g+1] + groups[g].amount*int64(len(groups[g].indexes))
	}
	var picked []uint32
	visits, stopped := 0, false
	var walk func(g int, left int64)
	walk = func(g int, left int64) {
		visits++
		if stopped || visits%1024 == 0 && ctx.Err() != nil {
			stopped = true
			return
		}
		if left == 0 {
			yield(picked)
			return
		}
		if g == len(groups) || left > capacity[g] {
			return
		}
		mark := len(picked)
		for n := 0; n <= len(groups[g].indexes) && int64(n)*groups[g].amount <= left; n++ {
			if n > 0 {
				picked = append(picked, groups[g].indexes[n-1])
			}
			walk(g+1, left-int64(n)*groups[g].amount)
		}
		picked = picked[:mark]
	}
	walk(0, target)
}

// encodeOptions is the canonical form of a set of options: for each
// applied set only the option with the earliest notBeforeNs (it allows
// everything a later one does), each as notBeforeNs, a count and the
// indexes, sorted; "" for the one option "nothing applied".
func encodeOptions(options []option) string {
	earliest := map[string]int64{}
	var key []byte
	for _, o := range options {
		key = binary.AppendUvarint(key[:0], uint64(len(o.applied)))
		for _, i := range o.applied {
			key = binary.AppendUvarint(key, uint64(i))
		}
		if t, seen := earliest[string(key)]; !seen || o.notBeforeNs < t {
			earliest[string(key)] = o.notBeforeNs
		}
	}
	if t, ok := earliest["\x00"]; ok && len(earliest) == 1 && t == math.MinInt64 {
		return ""
	}
	encoded := make([]string, 0, len(earliest))
	for applied, t := range earliest {
		encoded = append(encoded, string(binary.BigEndian.AppendUint64(nil, uint64(t)))+applied)
	}
	slices.Sort(encoded)
	return strings.Join(encoded, "")
}

func decodeOptions(s string) []option {
	if s == "" {
		return []option{{notBeforeNs: math.MinInt64}}
	}
	var options []option
	b := []byte(s)
	for len(b) > 0 {
		o := option{notBeforeNs: int64(binary.BigEndian.Uint64(b))}
		b = b[8:]
		n, size := binary.Uvarint(b)
		b = b[size:]
		o.applied = make([]uint32, n)
		for i := range o.applied {
			v, size := binary.Uvarint(b)
			o.applied[i] = uint32(v)
			b = b[size:]
		}
		options = append(options, o)
	}
	return options
}

func describeState(limit int64, unknowns []unanswered, s budgetState) string {
	d := fmt.Sprintf("spent %s of %s (remaining %s)", units(s.spent), units(limit), units(limit-s.spent))
	if s.options == "" {
		return d
	}
	const optionsShownMax = 3
	options := decodeOptions(s.options)
	var shown []string
	for _, o := range options[:min(len(options), optionsShownMax)] {
		names := make([]string, len(o.applied))
		for i, u := range o.applied {
			names[i] = unknowns[u].requestID + " " + units(unknowns[u].amount)
		}
		shown = append(shown, "{"+strings.Join(names, ", ")+"}")
	}
	if len(options) > optionsShownMax {
		shown = append(shown, fmt.Sprintf("%d more", len(options)-optionsShownMax))
	}
	return d + "; unanswered consumes that took effect: " + strings.Join(shown, " or ")
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
