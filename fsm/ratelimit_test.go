package fsm_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

// Rate-limit checks through the log: the algorithms are tested exactly in
// ratealgo_test.go; these tests cover what the state machine adds around
// them — per-key counters, policy updates reaching live keys, idle expiry,
// deletion, and snapshots.

func rateCheck(policy, key string, cost int64) *fsm.RateCheck {
	return &fsm.RateCheck{Tenant: tenant, PolicyID: policy, Key: key, Cost: cost}
}

func (h *harness) rate(nowMs int64, c *fsm.RateCheck) *fsm.RateResult {
	h.t.Helper()
	r := h.ok(nowMs, c)
	if r.Rate == nil {
		h.t.Fatalf("check %s/%s: no rate result", c.PolicyID, c.Key)
	}
	return r.Rate
}

func (h *harness) rateKeys() int {
	var n int
	h.m.Read(0, func(v fsm.View) error { n = v.Counts().RateKeys; return nil })
	return n
}

func TestRateCheckPerKeyCounters(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmTokenBucket, Limit: 10, WindowMs: 1000, Burst: 10}})
	for i := int64(1); i <= 10; i++ {
		if d := h.rate(t0, rateCheck("p", "u-1", 1)); !d.Allowed || d.Remaining != 10-i || d.Limit != 10 {
			t.Fatalf("check %d: %+v", i, d)
		}
	}
	if d := h.rate(t0, rateCheck("p", "u-1", 1)); d.Allowed || d.Reason != fsm.ReasonRateLimited || d.RetryAfterMs != 100 {
		t.Fatalf("11th check: %+v, want rate limited with retry after 100ms", d)
	}
	if d := h.rate(t0, rateCheck("p", "u-2", 1)); !d.Allowed || d.Remaining != 9 {
		t.Fatalf("another key shares nothing: %+v", d)
	}
	if d := h.rate(t0+100, rateCheck("p", "u-1", 1)); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after 100ms one token is back: %+v", d)
	}
	if err := h.fail(t0, rateCheck("nope", "u-1", 1), fsm.CodeNotFound); err == nil {
		t.Fatal("unknown policy accepted")
	}
	// Priority scaling: priority 1 may use half of the bucket.
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "prio", Algorithm: fsm.AlgorithmFixedWindow, Limit: 10, WindowMs: 1000, Burst: 10,
		Scales: []fsm.PriorityScale{{Priority: 1, Percent: 50}}}})
	low := &fsm.RateCheck{Tenant: tenant, PolicyID: "prio", Key: "k", Cost: 5, Priority: 1}
	if d := h.rate(t0, low); !d.Allowed || d.Limit != 5 || d.Remaining != 0 {
		t.Fatalf("low priority first check: %+v", d)
	}
	if d := h.rate(t0, low); d.Allowed {
		t.Fatalf("low priority passed its half: %+v", d)
	}
	if d := h.rate(t0, rateCheck("prio", "k", 5)); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("default priority uses the rest: %+v", d)
	}
}

// An update reaches keys that already have counters: a lowered limit denies
// at once, a raised one allows more, in the same window.
func TestPolicyUpdatedMidWindow(t *testing.T) {
	h := newHarness(t)
	start := t0 - t0%60_000 // a window boundary
	h.ok(start, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmFixedWindow, Limit: 10, WindowMs: 60_000, Burst: 10}})
	for i := 0; i < 8; i++ {
		h.rate(start+1000, rateCheck("p", "k", 1))
	}
	h.ok(start+2000, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit, Policy: fsm.PolicySpec{ID: "p", Limit: 5}})
	if d := h.rate(start+3000, rateCheck("p", "k", 1)); d.Allowed || d.Limit != 5 || d.Remaining != 0 || d.RetryAfterMs != 57_000 {
		t.Fatalf("after lowering the limit to 5 with 8 used: %+v", d)
	}
	h.ok(start+4000, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit, Policy: fsm.PolicySpec{ID: "p", Limit: 20}})
	if d := h.rate(start+5000, rateCheck("p", "k", 1)); !d.Allowed || d.Limit != 20 || d.Remaining != 11 {
		t.Fatalf("after raising the limit to 20 with 8 used: %+v", d)
	}
	if d := h.rate(start+60_000, rateCheck("p", "k", 1)); !d.Allowed || d.Remaining != 19 {
		t.Fatalf("next window: %+v", d)
	}
	// An update that fails validation changes nothing.
	h.fail(start+60_000, &fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateLimit, Policy: fsm.PolicySpec{ID: "p", Limit: 0}}, fsm.CodeInvalidArgument)
}

// Idle counters are deleted exactly when they are back to a fresh state.
func TestIdleRateKeysExpire(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmTokenBucket, Limit: 10, WindowMs: 1000, Burst: 10}})
	h.rate(t0, rateCheck("p", "a", 3)) // full again after 300ms
	h.rate(t0, rateCheck("p", "b", 5)) // after 500ms
	if n := h.rateKeys(); n != 2 {
		t.Fatalf("%d keys, want 2", n)
	}
	h.applyEntry(t0 + 299)
	if n := h.rateKeys(); n != 2 {
		t.Fatalf("%d keys at 299ms, want 2", n)
	}
	h.applyEntry(t0 + 300)
	if n := h.rateKeys(); n != 1 {
		t.Fatalf("%d keys at 300ms, want 1", n)
	}
	h.rate(t0+400, rateCheck("p", "b", 1)) // touching b moves its expiry to 600ms
	h.applyEntry(t0 + 500)
	if n := h.rateKeys(); n != 1 {
		t.Fatalf("%d keys at 500ms after b was touched, want 1", n)
	}
	h.applyEntry(t0 + 600)
	if n := h.rateKeys(); n != 0 {
		t.Fatalf("%d keys at 600ms, want 0", n)
	}
	if d := h.rate(t0+600, rateCheck("p", "a", 10)); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("an expired key starts full: %+v", d)
	}
}

// Deleting a policy removes its counters; a new policy with the same id
// starts from scratch, and the old counters' expiry records are harmless.
func TestDeletePolicyRemovesCounters(t *testing.T) {
	h := newHarness(t)
	spec := fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmGCRA, Limit: 1, WindowMs: 10_000, Burst: 1}
	h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: spec})
	h.rate(t0, rateCheck("p", "a", 1))
	h.rate(t0, rateCheck("p", "b", 1))
	r := h.ok(t0+1, &fsm.DeletePolicy{Tenant: tenant, PolicyID: "p"})
	if r.Delete.RemovedKeys != 2 || h.rateKeys() != 0 {
		t.Fatalf("delete removed %d keys, %d left", r.Delete.RemovedKeys, h.rateKeys())
	}
	h.fail(t0+2, rateCheck("p", "a", 1), fsm.CodeNotFound)
	h.ok(t0+3, &fsm.CreatePolicy{Tenant: tenant, Policy: spec})
	if d := h.rate(t0+4, rateCheck("p", "a", 1)); !d.Allowed {
		t.Fatalf("recreated policy kept an old counter: %+v", d)
	}
	h.applyEntry(t0 + 10_000) // the old records fire; the new counter is still live
	if n := h.rateKeys(); n != 1 {
		t.Fatalf("%d keys, want the new counter only", n)
	}
	h.applyEntry(t0 + 10_004)
	if n := h.rateKeys(); n != 0 {
		t.Fatalf("%d keys after the new counter is full again", n)
	}
}

// Counters survive a snapshot exactly: the restored machine decides the same
// and snapshots to the same bytes.
func TestRateCountersThroughSnapshot(t *testing.T) {
	h := newHarness(t)
	algos := []fsm.Algorithm{fsm.AlgorithmTokenBucket, fsm.AlgorithmLeakyBucket, fsm.AlgorithmFixedWindow,
		fsm.AlgorithmSlidingWindowLog, fsm.AlgorithmSlidingWindowCounter, fsm.AlgorithmGCRA}
	for i, a := range algos {
		id := "p" + string(rune('a'+i))
		h.ok(t0, &fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: id, Algorithm: a, Limit: 7, WindowMs: 3000, Burst: 5}})
		for j := int64(0); j < 6; j++ {
			h.one(t0+j*130, rateCheck(id, "k", 1+j%2))
		}
	}
	restored := h.restoredCopy()
	if !bytes.Equal(h.snapshot(), restored.snapshot()) {
		t.Fatal("restored snapshot differs")
	}
	for step := int64(1); step <= 40; step++ {
		for i := range algos {
			id := "p" + string(rune('a'+i))
			now := t0 + 1000 + step*97
			a, b := h.one(now, rateCheck(id, "k", 1+step%3)), restored.one(now, rateCheck(id, "k", 1+step%3))
			if *a.Rate != *b.Rate {
				t.Fatalf("step %d policy %s: %+v vs restored %+v", step, id, a.Rate, b.Rate)
			}
		}
	}
	if !bytes.Equal(h.snapshot(), restored.snapshot()) {
		t.Fatal("snapshots differ after the same checks")
	}
	var err error
	h.m.Read(0, func(v fsm.View) error { _, err = v.Policy(tenant, "missing"); return nil })
	if !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("missing policy: %v", err)
	}
}
