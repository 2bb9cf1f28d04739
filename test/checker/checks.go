package checker

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The checks. Each returns one Verdict; Check runs them all.

// Check runs every check on a history and the final observations. outDir
// receives artifacts (porcupine visualizations) of failed checks.
func Check(h History, final Final, linTimeout time.Duration, outDir string) []Verdict {
	return []Verdict{
		Linearizable(h, linTimeout, outDir),
		NoOverspend(h, final),
		NoLostAck(h, final),
		Idempotent(h),
		Converged(final),
	}
}

// Linearizable checks, per budget key with porcupine, that the consumes (ok
// and unknown) and the linearizable reads of that key have a linearization
// consistent with a HARD budget of its amount: a consume is allowed exactly
// when it fits, and answers remaining = amount - spent after it; a read
// answers the spent so far. Unknown consumes may take effect at any point
// after their invocation, or never. An Unknown porcupine result (timeout)
// fails the check.
//
// The attempts of one request id are one operation (first invocation,
// first answer), so a retry is never counted twice. Keys with
// reserve/commit/release operations are left to NoOverspend and NoLostAck:
// holds expire with time, which the model does not know. timeout bounds the
// whole check (keys run in parallel under one deadline); 0 means no bound.
// A failed key's visualization is written to
// outDir/linearizability-<key>.html (none when outDir is "").
func Linearizable(h History, timeout time.Duration, outDir string) Verdict {
	const name = "linearizable"
	histories, unbudgeted := keyHistories(h)
	var problems []string
	for _, key := range unbudgeted {
		problems = append(problems, fmt.Sprintf("key %q has consumes or reads but no amount in History.Budgets", key))
	}
	for _, kh := range histories {
		for _, m := range kh.malformed {
			problems = append(problems, fmt.Sprintf("key %q: malformed: %s", kh.key, m))
		}
	}
	results := checkKeys(histories, timeout, outDir)
	var artifact string
	var ops, unknown, retried int
	for i, kh := range histories {
		ops += len(kh.ops)
		unknown += len(kh.unknowns)
		retried += kh.retried
		r := results[i]
		if r.result == porcupine.Ok {
			continue
		}
		if artifact == "" {
			// The verdict names the first visualization; the detail names
			// the others.
			artifact, r.artifact = r.artifact, ""
		}
		problems = append(problems, describeKeyFailure(kh, r, timeout))
	}
	skipped := len(holdKeys(h))
	summary := fmt.Sprintf("%d keys, %d answered operations and %d consumes never answered (%d requests sent more than once); %d keys with holds left to the accounting checks",
		len(histories), ops, unknown, retried, skipped)
	if len(problems) > 0 {
		return Verdict{Check: name, Detail: joinProblems(problems) + " [" + summary + "]", Artifact: artifact}
	}
	return Verdict{Check: name, OK: true, Detail: summary}
}

func describeKeyFailure(kh *keyHistory, r keyResult, timeout time.Duration) string {
	var s string
	switch {
	case r.notRun:
		s = fmt.Sprintf("key %q: not checked, the %v time budget was spent on other keys; an unchecked key fails the check", kh.key, timeout)
	case r.result == porcupine.Unknown:
		s = fmt.Sprintf("key %q: porcupine gave no answer within the %v time budget (%d answered operations, %d consumes never answered); an unknown result fails the check: raise the timeout, or re-send unanswered request ids after healing so fewer consumes stay unknown",
			kh.key, timeout, len(kh.ops), len(kh.unknowns))
	default:
		s = fmt.Sprintf("key %q: not linearizable: no order of its %d answered operations within their time bounds (with any of its %d unanswered consumes taking effect or not) fits a HARD budget of %s",
			kh.key, len(kh.ops), len(kh.unknowns), units(kh.limit))
	}
	switch {
	case r.artifact != "":
		s += " (visualization " + r.artifact + ")"
	case r.err != nil:
		s += fmt.Sprintf(" (writing the visualization failed: %v)", r.err)
	}
	return s
}

// NoOverspend: per budget, the consumes answered allowed sum to at most the
// amount, and the final spend lies within [acknowledged allowed, that plus
// the unknown consumes].
//
// Each request id counts once. On keys with holds, allowed commits are
// charges too (their Amount is what they charged); reserves charge nothing.
func NoOverspend(h History, final Final) Verdict {
	const name = "no-overspend"
	var problems []string
	for _, l := range ledgers(h) {
		limit, budgeted := h.Budgets[l.key]
		acked := l.ackedMicros()
		if !budgeted {
			if acked > 0 {
				problems = append(problems, fmt.Sprintf("key %q: %s acknowledged but it has no amount in History.Budgets", l.key, units(acked)))
			}
			continue
		}
		if acked > limit {
			problems = append(problems, fmt.Sprintf("key %q: %d requests answered allowed for %s in total, above the amount %s",
				l.key, len(l.acked), units(acked), units(limit)))
		}
		spent, observed := final.Spent[l.key]
		if !observed {
			problems = append(problems, fmt.Sprintf("key %q: final spend not observed", l.key))
			continue
		}
		unknown, unknownRequests := l.unknownMicros()
		switch {
		case spent > limit:
			problems = append(problems, fmt.Sprintf("key %q: final spend %s above the amount %s", l.key, units(spent), units(limit)))
		case spent < acked:
			problems = append(problems, fmt.Sprintf("key %q: final spend %s below the %s acknowledged (a lost acknowledged charge; see no-lost-ack)",
				l.key, units(spent), units(acked)))
		case spent > acked+unknown:
			problems = append(problems, fmt.Sprintf("key %q: final spend %s above the %s acknowledged plus %s of %d unanswered requests (charged without a request, or a request charged twice)",
				l.key, units(spent), units(acked), units(unknown), unknownRequests))
		}
	}
	if len(problems) > 0 {
		return Verdict{Check: name, Detail: joinProblems(problems)}
	}
	return Verdict{Check: name, OK: true, Detail: fmt.Sprintf("%d budgets within their amounts and their histories' bounds", len(h.Budgets))}
}

// NoLostAck: per budget, the final spend is at least the sum of the consumes
// answered allowed (an acknowledged charge is never lost).
//
// On keys with holds, allowed commits count as well; each request id once.
func NoLostAck(h History, final Final) Verdict {
	const name = "no-lost-ack"
	var problems []string
	var requests int
	for _, l := range ledgers(h) {
		requests += len(l.acked)
		acked := l.ackedMicros()
		if _, budgeted := h.Budgets[l.key]; !budgeted && acked == 0 {
			continue // only unanswered requests on a key that is no budget
		}
		spent, observed := final.Spent[l.key]
		switch {
		case !observed:
			problems = append(problems, fmt.Sprintf("key %q: final spend not observed (%s acknowledged)", l.key, units(acked)))
		case spent < acked:
			problems = append(problems, fmt.Sprintf("key %q: final spend %s below the %s acknowledged by %d allowed requests: %s lost",
				l.key, units(spent), units(acked), len(l.acked), units(acked-spent)))
		}
	}
	if len(problems) > 0 {
		return Verdict{Check: name, Detail: joinProblems(problems)}
	}
	return Verdict{Check: name, OK: true, Detail: fmt.Sprintf("%d acknowledged charges all in the final spend", requests)}
}

// Idempotent: operations sharing a RequestID (the first send and retries)
// that answered OK answered identically (allowed, remaining, log index, hold
// id), and no request id was charged twice: a consume's spend appears once in
// the final accounting (checked through NoOverspend's upper bound by
// counting each RequestID once).
func Idempotent(h History) Verdict {
	const name = "idempotent"
	first := map[string]*Op{}
	var problems []string
	var repeated int
	for _, op := range okByCompletion(h) {
		prior, seen := first[op.RequestID]
		if !seen {
			first[op.RequestID] = op
			continue
		}
		repeated++
		if !sameAnswer(prior, op) {
			problems = append(problems, fmt.Sprintf("request %q answered %s (op %d) and then %s (op %d)",
				op.RequestID, describeAnswer(prior), prior.ID, describeAnswer(op), op.ID))
		}
	}
	if len(problems) > 0 {
		return Verdict{Check: name, Detail: joinProblems(problems)}
	}
	return Verdict{Check: name, OK: true, Detail: fmt.Sprintf("%d request ids, %d repeated answers all identical", len(first), repeated)}
}

// okByCompletion is the answered operations with a request id in the order
// the answers arrived.
func okByCompletion(h History) []*Op {
	var ops []*Op
	for i := range h.Ops {
		if op := &h.Ops[i]; op.Status == OK && op.RequestID != "" {
			ops = append(ops, op)
		}
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].CompleteNs < ops[j].CompleteNs })
	return ops
}

func sameAnswer(a, b *Op) bool {
	return a.Allowed == b.Allowed && a.Remaining == b.Remaining && a.LogIndex == b.LogIndex && a.HoldID == b.HoldID
}

func describeAnswer(op *Op) string {
	s := fmt.Sprintf("{allowed %t, remaining %s, log index %d", op.Allowed, units(op.Remaining), op.LogIndex)
	if op.HoldID != "" {
		s += ", hold " + op.HoldID
	}
	return s + "}"
}

// Converged: every replica reports the same applied index and state hash.
func Converged(final Final) Verdict {
	const name = "converged"
	if len(final.Replicas) == 0 {
		return Verdict{Check: name, Detail: "nothing observed: no replica reported its applied index and state hash"}
	}
	nodes := make([]string, 0, len(final.Replicas))
	for node := range final.Replicas {
		nodes = append(nodes, node)
	}
	sort.Strings(nodes)
	ref := final.Replicas[nodes[0]]
	agree := true
	list := make([]string, len(nodes))
	for i, node := range nodes {
		r := final.Replicas[node]
		agree = agree && r == ref
		list[i] = fmt.Sprintf("%s: index %d hash %s", node, r.AppliedIndex, r.StateHash)
	}
	if !agree {
		return Verdict{Check: name, Detail: "replicas differ: " + strings.Join(list, "; ")}
	}
	return Verdict{Check: name, OK: true, Detail: fmt.Sprintf("%d replicas at index %d hash %s", len(nodes), ref.AppliedIndex, ref.StateHash)}
}
