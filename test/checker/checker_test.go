package checker

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const unit = 1_000_000 // micros per unit

// linTimeout is generous: the histories below check in milliseconds.
const linTimeout = 10 * time.Second

// builder writes histories by hand. Times are in abstract nanoseconds.
type builder struct{ h History }

func newHistory(budgets map[string]int64) *builder {
	return &builder{h: History{Seed: 1, Budgets: budgets}}
}

func (b *builder) add(op Op) *builder {
	op.ID = int64(len(b.h.Ops) + 1)
	b.h.Ops = append(b.h.Ops, op)
	return b
}

// consume records an answered consume; its log index is its op ID unless
// the test sets one.
func (b *builder) consume(client int, key, requestID string, amount, invokeNs, completeNs int64, allowed bool, remaining int64) *builder {
	return b.add(Op{Client: client, Kind: Consume, Key: key, RequestID: requestID, Amount: amount,
		InvokeNs: invokeNs, CompleteNs: completeNs, Status: OK, Allowed: allowed, Remaining: remaining,
		LogIndex: uint64(len(b.h.Ops) + 1)})
}

func (b *builder) unknown(client int, key, requestID string, amount, invokeNs, gaveUpNs int64) *builder {
	return b.add(Op{Client: client, Kind: Consume, Key: key, RequestID: requestID, Amount: amount,
		InvokeNs: invokeNs, CompleteNs: gaveUpNs, Status: Unknown, Err: "deadline exceeded"})
}

func (b *builder) read(client int, key string, invokeNs, completeNs, spent int64) *builder {
	return b.add(Op{Client: client, Kind: Read, Key: key, Level: "linearizable",
		InvokeNs: invokeNs, CompleteNs: completeNs, Status: OK, Spent: spent})
}

// retryOf repeats an earlier op (same request id and answer) in a new
// interval, as a client re-sending after a timeout would record it.
func (b *builder) retryOf(id int64, invokeNs, completeNs int64) *builder {
	op := b.h.Ops[id-1]
	op.Retry, op.InvokeNs, op.CompleteNs = true, invokeNs, completeNs
	return b.add(op)
}

// finalState is what a healthy cluster reports after the run.
func finalState(spent map[string]int64) Final {
	return Final{Spent: spent, Replicas: agreeingReplicas(42)}
}

// expectVerdicts runs every check and compares each verdict's OK with want
// (checks not named in want must pass). It returns the verdicts by name.
func expectVerdicts(t *testing.T, h History, final Final, failing ...string) map[string]Verdict {
	t.Helper()
	return expectVerdictsWithin(t, h, final, linTimeout, failing...)
}

func expectVerdictsWithin(t *testing.T, h History, final Final, timeout time.Duration, failing ...string) map[string]Verdict {
	t.Helper()
	verdicts := Check(h, final, timeout, t.TempDir())
	if len(verdicts) != 5 {
		t.Fatalf("Check returned %d verdicts, want 5", len(verdicts))
	}
	byName := map[string]Verdict{}
	for _, v := range verdicts {
		byName[v.Check] = v
	}
	wantFail := map[string]bool{}
	for _, name := range failing {
		if _, ok := byName[name]; !ok {
			t.Fatalf("no check named %q", name)
		}
		wantFail[name] = true
	}
	for _, v := range verdicts {
		t.Log(v)
		if v.OK == wantFail[v.Check] {
			t.Errorf("%s: OK = %t, want %t: %s", v.Check, v.OK, !wantFail[v.Check], v.Detail)
		}
	}
	return byName
}

func expectDetail(t *testing.T, v Verdict, fragments ...string) {
	t.Helper()
	for _, f := range fragments {
		if !strings.Contains(v.Detail, f) {
			t.Errorf("%s detail %q does not mention %q", v.Check, v.Detail, f)
		}
	}
}

// --- histories that must pass ---

func TestSequentialHistoryPasses(t *testing.T) {
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 4*unit, 0, 10, true, 6*unit).
		read(0, "t/a", 11, 20, 4*unit).
		consume(0, "t/a", "r2", 5*unit, 21, 30, true, 1*unit).
		consume(0, "t/a", "r3", 2*unit, 31, 40, false, 1*unit). // does not fit: denied
		consume(0, "t/a", "r4", 1*unit, 41, 50, true, 0).       // exactly fits
		read(0, "t/a", 51, 60, 10*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 10 * unit}))
}

func TestConcurrentOverlappingConsumesPass(t *testing.T) {
	// Three clients overlap; only the order r2, r3, r1 explains the answers
	// (r1 invoked first but took effect last), and the read overlapping
	// all of them saw r2 alone.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 100, false, 1*unit).
		consume(1, "t/a", "r2", 4*unit, 10, 60, true, 6*unit).
		consume(2, "t/a", "r3", 5*unit, 20, 90, true, 1*unit).
		read(3, "t/a", 5, 95, 4*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 9 * unit}))
}

func TestUnknownConsumeThatTookEffectPasses(t *testing.T) {
	// r1 timed out, yet its charge shows in the read and in the next answer,
	// both after the client gave up.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		unknown(0, "t/a", "r1", 3*unit, 0, 50).
		read(1, "t/a", 60, 70, 0).
		read(1, "t/a", 80, 90, 3*unit).
		consume(1, "t/a", "r2", 2*unit, 100, 110, true, 5*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 5 * unit}))
}

func TestUnknownConsumeThatNeverTookEffectPasses(t *testing.T) {
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		unknown(0, "t/a", "r1", 3*unit, 0, 50).
		unknown(0, "t/a", "r2", 1*unit, 60, 70).
		consume(1, "t/a", "r3", 2*unit, 80, 90, true, 8*unit).
		read(1, "t/a", 100, 110, 2*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 2 * unit}))
}

func TestUnknownConsumeThatNoLongerFitPasses(t *testing.T) {
	// r1 reached the log after r2 filled the budget: it was denied, so it
	// shows nowhere, although the model applies every unknown that fits.
	h := newHistory(map[string]int64{"t/a": 5 * unit}).
		unknown(0, "t/a", "r1", 3*unit, 0, 50).
		consume(1, "t/a", "r2", 5*unit, 10, 20, true, 0).
		read(1, "t/a", 100, 110, 5*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 5 * unit}))
}

func TestRetriedRequestIsOneOperation(t *testing.T) {
	// r1 timed out and was re-sent twice; both answers repeat the first
	// decision. Counted once: the read and the final spend show 4, not 8
	// or 12, and r2 fits only because r1 charged once.
	b := newHistory(map[string]int64{"t/a": 10 * unit}).
		unknown(0, "t/a", "r1", 4*unit, 0, 50).
		consume(0, "t/a", "r1", 4*unit, 60, 70, true, 6*unit)
	b.h.Ops[1].Retry = true
	b.retryOf(2, 80, 90).
		read(1, "t/a", 100, 110, 4*unit).
		consume(1, "t/a", "r2", 6*unit, 120, 130, true, 0)
	expectVerdicts(t, b.h, finalState(map[string]int64{"t/a": 10 * unit}))
}

func TestRetryTakesEffectBetweenAttempts(t *testing.T) {
	// A read between the timed-out send and the answered retry saw nothing
	// yet: the one logical operation spans both attempts, so this is fine.
	b := newHistory(map[string]int64{"t/a": 10 * unit}).
		unknown(0, "t/a", "r1", 4*unit, 0, 50).
		read(1, "t/a", 55, 58, 0).
		consume(0, "t/a", "r1", 4*unit, 60, 70, true, 6*unit)
	expectVerdicts(t, b.h, finalState(map[string]int64{"t/a": 4 * unit}))
}

func TestOtherOperationsAreIgnoredByTheModel(t *testing.T) {
	// Failed consumes did not happen; stale and leader reads may lag; rate
	// checks live elsewhere. None of them constrains the budget model.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 4*unit, 0, 10, true, 6*unit).
		add(Op{Client: 1, Kind: Consume, Key: "t/a", RequestID: "bad", Amount: -1, InvokeNs: 11, CompleteNs: 12, Status: Fail, Err: "invalid"}).
		add(Op{Client: 1, Kind: Read, Key: "t/a", Level: "stale", InvokeNs: 20, CompleteNs: 30, Status: OK, Spent: 0}).
		add(Op{Client: 1, Kind: RateCheck, Key: "p/k", Amount: 1, InvokeNs: 20, CompleteNs: 30, Status: OK, Allowed: true}).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 4 * unit}))
}

func TestHoldKeysAreLeftToTheAccountingChecks(t *testing.T) {
	// A hold makes remaining time dependent, so this history (remaining
	// 4 after consuming 2 of 10 while 4 are held) is not for the model; the
	// commit of 3 is a charge for the accounting checks.
	h := newHistory(map[string]int64{"t/h": 10 * unit}).
		add(Op{Client: 0, Kind: Reserve, Key: "t/h", RequestID: "res", Amount: 4 * unit, InvokeNs: 0, CompleteNs: 10, Status: OK, Allowed: true, Remaining: 6 * unit, HoldID: "h1"}).
		consume(1, "t/h", "c1", 2*unit, 20, 30, true, 4*unit).
		add(Op{Client: 0, Kind: Commit, Key: "t/h", RequestID: "com", HoldID: "h1", Amount: 3 * unit, InvokeNs: 40, CompleteNs: 50, Status: OK, Allowed: true, Remaining: 5 * unit}).
		add(Op{Client: 0, Kind: Commit, Key: "t/h", RequestID: "com2", HoldID: "h2", Amount: 1 * unit, InvokeNs: 60, CompleteNs: 70, Status: Unknown}).h
	v := expectVerdicts(t, h, finalState(map[string]int64{"t/h": 5 * unit}))
	expectDetail(t, v["linearizable"], "0 keys", "1 keys with holds")

	// The unanswered commit may have charged too: 6 is within bounds, 7 is not.
	expectVerdicts(t, h, finalState(map[string]int64{"t/h": 6 * unit}))
	v = expectVerdicts(t, h, finalState(map[string]int64{"t/h": 7 * unit}), "no-overspend")
	expectDetail(t, v["no-overspend"], `"t/h"`, "final spend 7 above the 5 acknowledged plus 1")
}

func TestGeneratedHistoriesPass(t *testing.T) {
	configs := map[string]genConfig{
		"few unanswered": {keys: 4, opsPerKey: 1500, clientsPerKey: 6, readFraction: 0.2,
			unknownHappened: 0.02, unknownNever: 0.01, retried: 0.03, neverPerKeyMax: 4},
		// A run that never re-sent its unanswered requests: dozens per key
		// that never took effect, mixed with some that did.
		"many unanswered": {keys: 2, opsPerKey: 2000, clientsPerKey: 8, readFraction: 0.2,
			unknownHappened: 0.01, unknownNever: 0.04, retried: 0.02, neverPerKeyMax: 50},
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			for seed := uint64(1); seed <= 3; seed++ {
				h, final := generate(seed, cfg)
				v := expectVerdicts(t, h, final)
				if t.Failed() {
					t.Fatalf("seed %d: %s", seed, v["linearizable"])
				}
			}
		})
	}
}

// --- histories that must fail ---

func TestStaleReadFails(t *testing.T) {
	// The read began after r1's allowed answer arrived, yet saw nothing.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 4*unit, 0, 10, true, 6*unit).
		read(1, "t/a", 20, 30, 0).h
	v := expectVerdicts(t, h, finalState(map[string]int64{"t/a": 4 * unit}), "linearizable")
	lin := v["linearizable"]
	expectDetail(t, lin, `key "t/a"`, "not linearizable")
	if lin.Artifact == "" || filepath.Base(lin.Artifact) != "linearizability-t_a.html" {
		t.Fatalf("artifact %q, want .../linearizability-t_a.html", lin.Artifact)
	}
	html, err := os.ReadFile(lin.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(html), "consume 4 [r1]") {
		t.Errorf("visualization does not describe the consume readably")
	}
}

func TestOverspendFails(t *testing.T) {
	// r2 was allowed although only 2 of 10 were left.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 8*unit, 0, 10, true, 2*unit).
		consume(0, "t/a", "r2", 5*unit, 20, 30, true, 0).h
	v := expectVerdicts(t, h, finalState(map[string]int64{"t/a": 13 * unit}), "linearizable", "no-overspend")
	expectDetail(t, v["no-overspend"], "2 requests answered allowed for 13 in total, above the amount 10", "final spend 13 above the amount 10")
}

func TestRemainingContradictingHistoryFails(t *testing.T) {
	// Both consumes were allowed and fit, but r2 reports the remaining as
	// if r1 had never happened.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 10, true, 7*unit).
		consume(0, "t/a", "r2", 2*unit, 20, 30, true, 8*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 5 * unit}), "linearizable")
}

func TestDeniedWithRoomFails(t *testing.T) {
	// A HARD budget denies only what does not fit.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 10, false, 10*unit).h
	expectVerdicts(t, h, finalState(map[string]int64{"t/a": 0}), "linearizable")
}

func TestChargeSeenBeforeItWasSentFails(t *testing.T) {
	// u1 was sent at 400 and never answered. A read that answered at 300
	// cannot have seen it; nor can a consume that answered at 350, even
	// though a read answering at 500 could.
	seenEarly := newHistory(map[string]int64{"t/a": 10 * unit}).
		read(0, "t/a", 0, 300, 1*unit).
		unknown(1, "t/a", "u1", 1*unit, 400, 600).h
	expectVerdicts(t, seenEarly, finalState(map[string]int64{"t/a": 1 * unit}), "linearizable")

	seenLater := newHistory(map[string]int64{"t/a": 10 * unit}).
		read(0, "t/a", 0, 500, 1*unit).
		consume(2, "t/a", "r2", 1*unit, 0, 350, true, 8*unit).
		unknown(1, "t/a", "u1", 1*unit, 400, 600).h
	expectVerdicts(t, seenLater, finalState(map[string]int64{"t/a": 2 * unit}), "linearizable")

	// Answered at 450 instead, the consume can follow u1: fine.
	seenLater.Ops[1].CompleteNs = 450
	expectVerdicts(t, seenLater, finalState(map[string]int64{"t/a": 2 * unit}))
}

func TestLostAckFails(t *testing.T) {
	// Two charges acknowledged (7), only one in the final spend.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 10, true, 7*unit).
		consume(0, "t/a", "r2", 4*unit, 20, 30, true, 3*unit).h
	// NoOverspend's lower bound is the same fact seen from the other side.
	v := expectVerdicts(t, h, finalState(map[string]int64{"t/a": 3 * unit}), "no-lost-ack", "no-overspend")
	expectDetail(t, v["no-lost-ack"], `key "t/a"`, "final spend 3 below the 7 acknowledged by 2 allowed requests: 4 lost")
}

func TestDoubleChargedRetryFails(t *testing.T) {
	// r1 answered identically twice, but the final spend shows it twice.
	b := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 10, true, 7*unit)
	b.retryOf(1, 20, 30)
	v := expectVerdicts(t, b.h, finalState(map[string]int64{"t/a": 6 * unit}), "no-overspend")
	expectDetail(t, v["no-overspend"], "final spend 6 above the 3 acknowledged plus 0 of 0 unanswered requests")
}

func TestRetryAnsweredDifferentlyFails(t *testing.T) {
	b := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 10, true, 7*unit)
	b.retryOf(1, 20, 30)
	b.h.Ops[1].Remaining, b.h.Ops[1].LogIndex = 4*unit, 9 // charged again
	v := expectVerdicts(t, b.h, finalState(map[string]int64{"t/a": 3 * unit}), "idempotent")
	expectDetail(t, v["idempotent"], `request "r1"`, "remaining 7, log index 1}", "remaining 4, log index 9}")
}

func TestDivergedReplicasFail(t *testing.T) {
	h := newHistory(map[string]int64{"t/a": 10 * unit}).h
	spent := map[string]int64{"t/a": 0}
	cases := map[string]map[string]Replica{
		"hash":  {"n1": {7, "aa"}, "n2": {7, "aa"}, "n3": {7, "bb"}},
		"index": {"n1": {7, "aa"}, "n2": {6, "aa"}, "n3": {7, "aa"}},
		"none":  {},
	}
	for name, replicas := range cases {
		t.Run(name, func(t *testing.T) {
			v := expectVerdicts(t, h, Final{Spent: spent, Replicas: replicas}, "converged")
			if name == "none" {
				expectDetail(t, v["converged"], "nothing observed")
			} else {
				expectDetail(t, v["converged"], "n1: index 7 hash aa", "n2: index", "n3: index")
			}
		})
	}
}

func TestMissingObservationsFail(t *testing.T) {
	// A budget the history charged but whose final spend nobody read, and
	// a consume on a key the history has no amount for.
	h := newHistory(map[string]int64{"t/a": 10 * unit}).
		consume(0, "t/a", "r1", 3*unit, 0, 10, true, 7*unit).
		consume(0, "t/zz", "r2", 1*unit, 20, 30, true, 0).h
	v := expectVerdicts(t, h, finalState(map[string]int64{"t/zz": unit}), "linearizable", "no-overspend", "no-lost-ack")
	expectDetail(t, v["linearizable"], `key "t/zz" has consumes or reads but no amount`)
	expectDetail(t, v["no-overspend"], `key "t/a": final spend not observed`, `key "t/zz": 1 acknowledged but it has no amount`)
	expectDetail(t, v["no-lost-ack"], `key "t/a": final spend not observed (3 acknowledged)`)
}

// pathological is a linearizable history porcupine cannot decide in time:
// n unanswered consumes of distinct amounts 1..n are pending together and a
// read after them shows that some of them took effect, adding up to n*n/4:
// so many subsets of them do that the search drowns in possibilities.
func pathological(n int) History {
	b := newHistory(map[string]int64{"t/a": 1000 * unit})
	for i := range n {
		b.unknown(i, "t/a", fmt.Sprintf("u%d", i), int64(i+1)*unit, int64(i), 1000)
	}
	b.read(n, "t/a", 2000, 2010, int64(n*n/4)*unit)
	return b.h
}

func TestPorcupineTimeoutFails(t *testing.T) {
	v := expectVerdictsWithin(t, pathological(40), finalState(map[string]int64{"t/a": 0}), 50*time.Millisecond, "linearizable")
	expectDetail(t, v["linearizable"], `key "t/a": porcupine gave no answer within the 50ms time budget`, "an unknown result fails the check")
	if v["linearizable"].Artifact == "" {
		t.Errorf("no visualization for the timed-out key")
	}
}

func TestKeysAfterTheDeadlineFail(t *testing.T) {
	// When the time budget is gone before a key's turn, that key is
	// reported unchecked, never passed. A stand-in for porcupine spends
	// the budget on the first keys, one per worker.
	b := newHistory(map[string]int64{})
	for i := range runtime.GOMAXPROCS(0) + 1 {
		key := fmt.Sprintf("t/%d", i)
		b.h.Budgets[key] = 10 * unit
		b.read(i, key, 0, 10, 0)
	}
	checkOperations = func(_ porcupine.Model, _ []porcupine.Operation, timeout time.Duration) porcupine.CheckResult {
		time.Sleep(timeout)
		return porcupine.Unknown
	}
	t.Cleanup(func() { checkOperations = porcupine.CheckOperationsTimeout })
	v := Linearizable(b.h, 20*time.Millisecond, "")
	t.Log(v)
	if v.OK || !strings.Contains(v.Detail, "not checked, the 20ms time budget was spent on other keys") {
		t.Fatalf("want a key failed as unchecked: %s", v)
	}
}

// --- pieces ---

func TestSpecificationStep(t *testing.T) {
	const limit = 10 * unit
	consume := func(amount int64) budgetInput { return budgetInput{amount: amount} }
	answer := func(allowed bool, remaining int64) budgetOutput {
		return budgetOutput{allowed: allowed, remaining: remaining}
	}
	unknown := budgetOutput{unknown: true}
	cases := []struct {
		name  string
		spent int64
		in    budgetInput
		out   budgetOutput
		ok    bool
		after int64
	}{
		{"fits", 2 * unit, consume(3 * unit), answer(true, 5*unit), true, 5 * unit},
		{"fits exactly", 7 * unit, consume(3 * unit), answer(true, 0), true, limit},
		{"denied when it does not fit", 8 * unit, consume(3 * unit), answer(false, 2*unit), true, 8 * unit},
		{"allowed although it does not fit", 8 * unit, consume(3 * unit), answer(true, 0), false, 0},
		{"denied although it fits", 2 * unit, consume(3 * unit), answer(false, 8*unit), false, 0},
		{"wrong remaining", 2 * unit, consume(3 * unit), answer(true, 8*unit), false, 0},
		{"denied with wrong remaining", 8 * unit, consume(3 * unit), answer(false, 0), false, 0},
		{"huge amount does not overflow", 2 * unit, consume(math.MaxInt64), answer(false, 8*unit), true, 2 * unit},
		{"read", 4 * unit, budgetInput{read: true}, budgetOutput{spent: 4 * unit}, true, 4 * unit},
		{"stale read", 4 * unit, budgetInput{read: true}, budgetOutput{spent: 3 * unit}, false, 0},
		{"unknown that fits charges", 2 * unit, consume(3 * unit), unknown, true, 5 * unit},
		{"unknown that does not fit is denied", 8 * unit, consume(3 * unit), unknown, true, 8 * unit},
	}
	for _, c := range cases {
		ok, after := stepBudget(limit, c.spent, c.in, c.out)
		if ok != c.ok || (ok && after != c.after) {
			t.Errorf("%s: step = %t, %d; want %t, %d", c.name, ok, after, c.ok, c.after)
		}
	}
}

func TestModelStep(t *testing.T) {
	const limit = 10 * unit
	ctx := context.Background()
	// Unanswered consumes, by invocation.
	unknowns := []unanswered{
		{invokeNs: 10, amount: 1 * unit, requestID: "u1"},
		{invokeNs: 20, amount: 2 * unit, requestID: "u2"},
		{invokeNs: 30, amount: 1 * unit, requestID: "u3"},
		{invokeNs: 500, amount: 1 * unit, requestID: "late"},
	}
	// The order of answers is TestModelOrdersAnswers's business: here every
	// answer is in order (mustFollow is what the state has linearized).
	inOrderFrom := func(s budgetState, in budgetInput, out budgetOutput) budgetInput {
		before := shownSpent(limit, in, out)
		_, after := stepBudget(limit, before, in, out)
		in.mustFollow = s.belowSpent
		if after > before || before > s.spent {
			in.mustFollow = s.linearized
		}
		return in
	}
	step := func(s budgetState, in budgetInput, out budgetOutput) budgetState {
		t.Helper()
		in = inOrderFrom(s, in, out)
		next, ok := stepModel(ctx, limit, unknowns, s, in, out)
		if !ok {
			t.Fatalf("step from %s refused %s", describeState(limit, unknowns, s), describeOperation(in, out))
		}
		return next
	}
	refused := func(s budgetState, in budgetInput, out budgetOutput) {
		t.Helper()
		in = inOrderFrom(s, in, out)
		if _, ok := stepModel(ctx, limit, unknowns, s, in, out); ok {
			t.Errorf("from %s accepted %s", describeState(limit, unknowns, s), describeOperation(in, out))
		}
	}
	expectState := func(s budgetState, want string) {
		t.Helper()
		if got := describeState(limit, unknowns, s); got != want {
			t.Fatalf("state %q, want %q", got, want)
		}
	}
	read := func(returnNs int64) budgetInput { return budgetInput{read: true, returnNs: returnNs} }
	spent := func(v int64) budgetOutput { return budgetOutput{spent: v} }

	// Nothing shown: nothing taken, however much is unanswered.
	s := step(budgetState{}, read(100), spent(0))
	expectState(s, "spent 0 of 10 (remaining 10)")
	// A read of 2 answered at 100 is u2, or u1 and u3 (of equal amounts the
	// earliest invoked is taken); "late" was invoked after it answered.
	refused(s, read(15), spent(2*unit)) // only u1 was invoked by then
	s = step(s, read(100), spent(2*unit))
	expectState(s, "spent 2 of 10 (remaining 8); unanswered consumes that took effect: {u2 2} or {u1 1, u3 1}")
	// u1 and u3 put the linearization at 30 or later: an operation that
	// answered at 25 cannot follow, so only u2 (invoked at 20) remains.
	s = step(s, read(25), spent(2*unit))
	expectState(s, "spent 2 of 10 (remaining 8); unanswered consumes that took effect: {u2 2}")
	// An allowed consume of 5 shows 1 more before it: u1.
	s = step(s, budgetInput{amount: 5 * unit, returnNs: 600}, budgetOutput{allowed: true, remaining: 2 * unit})
	expectState(s, "spent 8 of 10 (remaining 2); unanswered consumes that took effect: {u1 1, u2 2}")
	refused(s, read(600), spent(7*unit))  // spent never shrinks
	refused(s, read(600), spent(11*unit)) // beyond the amount
	refused(s, read(400), spent(10*unit)) // u3 alone cannot add 2 and "late" came after
	s = step(s, read(600), spent(10*unit))
	expectState(s, "spent 10 of 10 (remaining 0); unanswered consumes that took effect: {u1 1, u2 2, u3 1, late 1}")
	// "late" took effect after 500: nothing that answered before can follow.
	refused(s, read(450), spent(10*unit))
	s = step(s, budgetInput{amount: unit, returnNs: 700}, budgetOutput{allowed: false, remaining: 0})
	refused(s, budgetInput{amount: unit, returnNs: 700}, budgetOutput{allowed: true, remaining: 0})
	refused(s, budgetInput{amount: unit, returnNs: 700}, budgetOutput{allowed: false, remaining: unit})
}

func TestModelOrdersAnswers(t *testing.T) {
	// Two concurrent allowed consumes and a read that saw the first: the
	// shown spents fix the order, and the model refuses the others at once
	// even where an unanswered consume could fill the gap.
	const limit = 10 * unit
	ops := []porcupine.Operation{
		{Input: budgetInput{amount: 2 * unit, returnNs: 100}, Output: budgetOutput{allowed: true, remaining: 6 * unit}},  // 2 -> 4
		{Input: budgetInput{amount: 2 * unit, returnNs: 100}, Output: budgetOutput{allowed: true, remaining: 8 * unit}},  // 0 -> 2
		{Input: budgetInput{read: true, returnNs: 100}, Output: budgetOutput{spent: 2 * unit}},                           // at 2
		{Input: budgetInput{amount: 9 * unit, returnNs: 100}, Output: budgetOutput{allowed: false, remaining: 8 * unit}}, // at 2
	}
	orderAnswers(limit, ops)
	var got []int
	for _, op := range ops {
		got = append(got, op.Input.(budgetInput).mustFollow)
	}
	if want := []int{3, 0, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("mustFollow %v, want %v", got, want)
	}
	unknowns := []unanswered{{invokeNs: 0, amount: 2 * unit, requestID: "u"}}
	step := func(s budgetState, i int) (budgetState, bool) {
		return stepModel(context.Background(), limit, unknowns, s, ops[i].Input.(budgetInput), ops[i].Output.(budgetOutput))
	}
	// "u" could explain the first consume's spent of 2, but the second
	// consume showed less and must come first.
	if _, ok := step(budgetState{}, 0); ok {
		t.Fatalf("the consume that showed 2 went first")
	}
	s, ok := step(budgetState{}, 1)
	if !ok {
		t.Fatalf("the consume that showed 0 was refused")
	}
	// The read and the denial at 2 must precede the consume from 2 to 4.
	if _, ok := step(s, 0); ok {
		t.Fatalf("the consume from 2 went before the read and the denial at 2")
	}
	for _, i := range []int{3, 2, 0} {
		if s, ok = step(s, i); !ok {
			t.Fatalf("op %d refused from %+v", i, s)
		}
	}
}

// specificationModel is stepBudget as a porcupine model, and
// specificationOps the history in the form it needs: every unanswered
// consume an operation returning at MaxInt64. budgetModel must agree.
func specificationModel(limit int64) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return int64(0) },
		Step: func(state, input, output any) (bool, any) {
			return stepBudget(limit, state.(int64), input.(budgetInput), output.(budgetOutput))
		},
	}
}

func specificationOps(kh *keyHistory) []porcupine.Operation {
	ops := slices.Clone(kh.ops)
	for _, u := range kh.unknowns {
		ops = append(ops, porcupine.Operation{Input: budgetInput{amount: u.amount}, Call: u.invokeNs,
			Output: budgetOutput{unknown: true}, Return: math.MaxInt64})
	}
	return ops
}

func TestModelMatchesSpecification(t *testing.T) {
	// On many small random histories, legal and corrupted, porcupine
	// decides the same with budgetModel and with the specification.
	rng := rand.New(rand.NewPCG(3, 4))
	var legal, illegal int
	for seed := uint64(1); seed <= 5000; seed++ {
		h, _ := generate(seed, genConfig{keys: 1, opsPerKey: 4 + int(seed%12), clientsPerKey: 2 + int(seed%3), readFraction: 0.3,
			unknownHappened: 0.25, unknownNever: 0.25, retried: 0.1, neverPerKeyMax: 6, limitFactor: 0.3 + rng.Float64()})
		for range seed % 3 { // a third legal, the rest corrupted once or twice
			corrupt(rng, &h)
		}
		histories, _ := keyHistories(h)
		for _, kh := range histories {
			want := porcupine.CheckOperations(specificationModel(kh.limit), specificationOps(kh))
			got := porcupine.CheckOperations(budgetModel(kh.limit, kh.unknowns), kh.ops)
			if got != want {
				t.Fatalf("seed %d: budgetModel says linearizable %t, the specification %t: %+v", seed, got, want, h)
			}
			if want {
				legal++
			} else {
				illegal++
			}
		}
	}
	t.Logf("%d legal and %d illegal histories agree", legal, illegal)
	if legal < 1500 || illegal < 1500 {
		t.Fatalf("too few of a kind: %d legal, %d illegal", legal, illegal)
	}
}

// corrupt changes one answer or makes one answered consume unanswered.
func corrupt(rng *rand.Rand, h *History) {
	op := &h.Ops[rng.IntN(len(h.Ops))]
	switch {
	case op.Kind == Read:
		op.Spent += int64(rng.IntN(5)-2) * unit / 2
	case op.Status == Unknown:
		op.Status, op.Allowed, op.Remaining = OK, rng.IntN(2) == 0, h.Budgets[op.Key]-int64(rng.IntN(8))*unit/2
	default:
		op.Remaining += int64(rng.IntN(5)-2) * unit / 2
	}
}

func TestDescriptionsUseDecimalUnits(t *testing.T) {
	m := budgetModel(10*unit, nil)
	got := []string{
		m.DescribeOperation(budgetInput{amount: 2_500_000, requestID: "r1"}, budgetOutput{allowed: true, remaining: 7_500_000}),
		m.DescribeOperation(budgetInput{amount: 12_500}, budgetOutput{unknown: true}),
		m.DescribeOperation(budgetInput{read: true}, budgetOutput{spent: 2_500_000}),
		m.DescribeState(budgetState{spent: 2_500_000}),
	}
	want := []string{
		"consume 2.5 [r1] → allowed, remaining 7.5",
		"consume 0.0125 → unknown",
		"read → spent 2.5",
		"spent 2.5 of 10 (remaining 7.5)",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %q, want %q", got[i], want[i])
		}
	}
}

func TestHistorySurvivesSaveAndLoad(t *testing.T) {
	h, final := generate(7, genConfig{keys: 2, opsPerKey: 200, clientsPerKey: 3, readFraction: 0.2, unknownHappened: 0.05, retried: 0.05})
	path := filepath.Join(t.TempDir(), "history.json")
	if err := h.Save(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Ops) != len(h.Ops) || loaded.Budgets["tenant/budget-01"] != h.Budgets["tenant/budget-01"] {
		t.Fatalf("loaded %d ops, saved %d", len(loaded.Ops), len(h.Ops))
	}
	expectVerdicts(t, loaded, final)
}

// --- scale ---

// largeConfig is a fault-heavy run's shape: 50k operations on 10 keys, 8
// clients per key, a few hundred unanswered consumes.
var largeConfig = genConfig{keys: 10, opsPerKey: 5000, clientsPerKey: 8, readFraction: 0.2,
	unknownHappened: 0.01, unknownNever: 0.002, retried: 0.02, neverPerKeyMax: 4}

func TestLargeHistoryPasses(t *testing.T) {
	if testing.Short() {
		t.Skip("50k operations")
	}
	h, final := generate(42, largeConfig)
	start := time.Now()
	verdicts := Check(h, final, time.Minute, t.TempDir())
	t.Logf("checked %d operations on %d keys in %v", len(h.Ops), len(h.Budgets), time.Since(start))
	for _, v := range verdicts {
		t.Log(v)
		if !v.OK {
			t.Errorf("%s", v)
		}
	}
}

func BenchmarkCheck50kOps10Keys(b *testing.B) {
	benchmarkCheck(b, largeConfig)
}

// BenchmarkCheckManyUnanswered is 50k operations on 10 keys from a run
// that left 4% of its consumes unanswered, most of which never took
// effect, with amounts drawn to the micro.
func BenchmarkCheckManyUnanswered(b *testing.B) {
	cfg := largeConfig
	cfg.unknownNever, cfg.neverPerKeyMax, cfg.preciseAmounts = 0.03, 100, true
	benchmarkCheck(b, cfg)
}

// BenchmarkCheckManyUnansweredRoundAmounts is the same on 2 keys with
// amounts from four round values: many combinations of unanswered consumes
// explain each answer, and the model tracks them all.
func BenchmarkCheckManyUnansweredRoundAmounts(b *testing.B) {
	cfg := largeConfig
	cfg.keys, cfg.unknownNever, cfg.neverPerKeyMax = 2, 0.03, 100
	benchmarkCheck(b, cfg)
}

func benchmarkCheck(b *testing.B, cfg genConfig) {
	h, final := generate(42, cfg)
	b.ReportMetric(float64(len(h.Ops)), "ops")
	for b.Loop() {
		for _, v := range Check(h, final, time.Minute, b.TempDir()) {
			if !v.OK {
				b.Fatal(v)
			}
		}
	}
}
