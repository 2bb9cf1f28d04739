package checker

import (
	"fmt"
	"sort"
	"strings"
)

// ledger is what the history says about one budget's charges: consumes,
// and on keys with holds, commits. A reserve only holds and charges nothing.
// Each request is counted once however often it was sent.
type ledger struct {
	key string
	// acked: requests answered allowed, with the amount they charged.
	acked map[string]int64
	// answered: requests with any OK answer (allowed or denied).
	answered map[string]bool
	// unanswered: requests with an Unknown attempt, with the largest
	// amount sent, so the upper bound errs towards passing.
	unanswered map[string]int64
}

// ackedMicros is the spend the service acknowledged: it must all be in the
// final spend.
func (l *ledger) ackedMicros() int64 {
	var sum int64
	for _, amount := range l.acked {
		sum += amount
	}
	return sum
}

// unknownMicros is the spend of requests that never got an answer: each
// may or may not be in the final spend.
func (l *ledger) unknownMicros() (sum int64, requests int) {
	for id, amount := range l.unanswered {
		if !l.answered[id] {
			sum += amount
			requests++
		}
	}
	return sum, requests
}

// chargeID names the request a charge belongs to. A commit without a
// request id is identified by its hold (a hold commits at most once); an op
// with neither is its own request.
func chargeID(op *Op) string {
	switch {
	case op.RequestID != "":
		return op.RequestID
	case op.Kind == Commit && op.HoldID != "":
		return "hold:" + op.HoldID
	}
	return fmt.Sprintf("op#%d", op.ID)
}

// ledgers builds one ledger per key that is a budget or was charged,
// sorted by key.
func ledgers(h History) []*ledger {
	byKey := map[string]*ledger{}
	get := func(key string) *ledger {
		l := byKey[key]
		if l == nil {
			l = &ledger{key: key, acked: map[string]int64{}, answered: map[string]bool{}, unanswered: map[string]int64{}}
			byKey[key] = l
		}
		return l
	}
	for key := range h.Budgets {
		get(key)
	}
	for i := range h.Ops {
		op := &h.Ops[i]
		if op.Kind != Consume && op.Kind != Commit {
			continue
		}
		id := chargeID(op)
		switch op.Status {
		case OK:
			l := get(op.Key)
			l.answered[id] = true
			if _, seen := l.acked[id]; op.Allowed && !seen {
				l.acked[id] = op.Amount
			}
		case Unknown:
			l := get(op.Key)
			l.unanswered[id] = max(l.unanswered[id], op.Amount)
		}
	}
	out := make([]*ledger, 0, len(byKey))
	for _, l := range byKey {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// problemsMax bounds how many problems a Detail spells out.
const problemsMax = 10

// joinProblems lists up to problemsMax problems and counts the rest.
func joinProblems(problems []string) string {
	if len(problems) <= problemsMax {
		return strings.Join(problems, "; ")
	}
	return strings.Join(problems[:problemsMax], "; ") + fmt.Sprintf("; and %d more", len(problems)-problemsMax)
}
