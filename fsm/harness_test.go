package fsm_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// The tests of this package drive the state machine only through its public
// API, the way node does: encoded entries in, results and reads out.

const tenant = "acme"

// t0 is an ordinary log time (2025-01-15 12:00 UTC, a Wednesday) that tests
// start from unless the calendar matters.
var t0 = time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC).UnixMilli()

// harness applies entries to one Machine with increasing log indexes and
// records every entry it applied, so a test can replay the same log elsewhere.
type harness struct {
	t       testing.TB
	m       *fsm.Machine
	index   uint64
	entries []recordedEntry
}

type recordedEntry struct {
	index uint64
	data  []byte
}

// newHarness returns an empty machine at index 0 that holds a signing key
// (decisions need one), restored from a crafted snapshot so that test logs
// keep their indices.
func newHarness(t testing.TB) *harness {
	t.Helper()
	return &harness{t: t, m: keyedMachine(t)}
}

// keyedMachine is fsm.New() plus the test signing key, at index 0.
func keyedMachine(t testing.TB) *fsm.Machine {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(testSeed)
	pub := priv.Public().(ed25519.PublicKey)
	rec := func(typ byte, v any) []byte {
		body, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.AppendUvarint([]byte{typ}, uint64(len(body))), body...)
	}
	snap := []byte("TGSNAP")
	snap = append(snap, rec(1, map[string]any{"v": fsm.SnapshotFormatVersion, "i": 0, "t": 0})...)
	snap = append(snap, rec(8, map[string]any{"keys": []fsm.SigningKey{{ID: receipt.KeyID(pub), Public: pub, Seed: testSeed}}})...)
	snap = append(snap, rec(255, map[string]any{})...)
	m := fsm.New()
	if err := m.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("keyed machine: %v", err)
	}
	return m
}

// testSeed is the signing key seed of fsm tests.
var testSeed = []byte("tollgate-fsm-test-signing-seed!!")

// applyEntry applies one entry stamped nowMs holding cmds at the next index.
func (h *harness) applyEntry(nowMs int64, cmds ...fsm.Command) *fsm.EntryResult {
	h.t.Helper()
	entry := fsm.Entry{NowMs: nowMs, Commands: make([][]byte, len(cmds))}
	for i, c := range cmds {
		entry.Commands[i] = mustEncode(h.t, c)
	}
	h.index++
	data := fsm.EncodeEntry(entry)
	h.entries = append(h.entries, recordedEntry{index: h.index, data: data})
	out := h.m.ApplyEntry(h.index, 1, data)
	if out.Index != h.index || len(out.Results) != len(cmds) {
		h.t.Fatalf("entry %d: got index %d and %d results for %d commands", h.index, out.Index, len(out.Results), len(cmds))
	}
	return out
}

// apply applies cmds in one entry and returns one result per command.
func (h *harness) apply(nowMs int64, cmds ...fsm.Command) []fsm.Result {
	h.t.Helper()
	return h.applyEntry(nowMs, cmds...).Results
}

// one applies a single command in its own entry.
func (h *harness) one(nowMs int64, c fsm.Command) fsm.Result {
	h.t.Helper()
	return h.apply(nowMs, c)[0]
}

// ok applies a single command and fails the test if it was rejected.
func (h *harness) ok(nowMs int64, c fsm.Command) fsm.Result {
	h.t.Helper()
	r := h.one(nowMs, c)
	if r.Err != nil {
		h.t.Fatalf("%T at %d: unexpected error %v (code %d)", c, nowMs, r.Err, r.Err.Code)
	}
	return r
}

// spend applies a command that yields a spend decision and returns it.
func (h *harness) spend(nowMs int64, c fsm.Command) *fsm.SpendResult {
	h.t.Helper()
	r := h.ok(nowMs, c)
	if r.Spend == nil {
		h.t.Fatalf("%T at %d: no spend result in %+v", c, nowMs, r)
	}
	return r.Spend
}

// fail applies a single command and checks that it was rejected with code.
func (h *harness) fail(nowMs int64, c fsm.Command, code fsm.Code) *fsm.Error {
	h.t.Helper()
	r := h.one(nowMs, c)
	if r.Err == nil || r.Err.Code != code {
		h.t.Fatalf("%T at %d: got %+v (err %v), want error code %d", c, nowMs, r, r.Err, code)
	}
	return r.Err
}

// create creates a budget in tenant and returns its first view.
func (h *harness) create(nowMs int64, spec fsm.BudgetSpec) *fsm.Budget {
	h.t.Helper()
	r := h.ok(nowMs, &fsm.CreateBudget{Tenant: tenant, Budget: spec})
	if r.Budget == nil {
		h.t.Fatalf("create %s: no budget in the result", spec.ID)
	}
	return r.Budget
}

// consume charges amount to a budget of tenant.
func (h *harness) consume(nowMs int64, budgetID string, amount int64) *fsm.SpendResult {
	h.t.Helper()
	return h.spend(nowMs, &fsm.Consume{Tenant: tenant, BudgetID: budgetID, AmountMicros: amount})
}

// budget reads a budget of tenant as of nowMs.
func (h *harness) budget(nowMs int64, id string) *fsm.Budget {
	h.t.Helper()
	var b *fsm.Budget
	if _, err := h.m.Read(nowMs, func(v fsm.View) error {
		var err error
		b, err = v.Budget(tenant, id)
		return err
	}); err != nil {
		h.t.Fatalf("read budget %s: %v", id, err)
	}
	return b
}

// spent reads the current spend of a budget of tenant as of nowMs.
func (h *harness) spent(nowMs int64, id string) int64 {
	h.t.Helper()
	return h.budget(nowMs, id).SpentMicros
}

func (h *harness) snapshot() []byte {
	h.t.Helper()
	var buf bytes.Buffer
	if err := h.m.WriteSnapshot(&buf); err != nil {
		h.t.Fatalf("write snapshot: %v", err)
	}
	return buf.Bytes()
}

func (h *harness) hash() string {
	h.t.Helper()
	sum, index, err := h.m.StateHash()
	if err != nil {
		h.t.Fatalf("state hash: %v", err)
	}
	if index != h.index {
		h.t.Fatalf("state hash reflects index %d, want %d", index, h.index)
	}
	return sum
}

// restoredCopy returns a harness whose machine was restored from a snapshot
// of h, continuing at h's index.
func (h *harness) restoredCopy() *harness {
	h.t.Helper()
	c := &harness{t: h.t, m: fsm.New(), index: h.index}
	if err := c.m.Restore(bytes.NewReader(h.snapshot())); err != nil {
		h.t.Fatalf("restore: %v", err)
	}
	return c
}

func mustEncode(t testing.TB, c fsm.Command) []byte {
	t.Helper()
	b, err := fsm.EncodeCommand(c)
	if err != nil {
		t.Fatalf("encode %T: %v", c, err)
	}
	return b
}

// usd parses a decimal amount into micro-units.
func usd(t testing.TB, amount string) int64 {
	t.Helper()
	micros, err := fsm.ParseAmount(amount)
	if err != nil {
		t.Fatalf("parse amount %q: %v", amount, err)
	}
	return micros
}

// spec is a HARD USD budget without a period in UTC; tests change what matters.
func spec(id string, amountMicros int64) fsm.BudgetSpec {
	return fsm.BudgetSpec{
		ID:           id,
		AmountMicros: amountMicros,
		Currency:     "USD",
		Period:       fsm.PeriodNone,
		Timezone:     "UTC",
		Enforcement:  fsm.EnforcementHard,
	}
}

// localMs is the Unix ms of a wall-clock time in zone, e.g.
// localMs(t, "Europe/Berlin", "2025-03-30T03:00:00").
func localMs(t testing.TB, zone, wall string) int64 {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatalf("load zone %s: %v", zone, err)
	}
	tm, err := time.ParseInLocation("2006-01-02T15:04:05.000", wall, loc)
	if err != nil {
		tm, err = time.ParseInLocation("2006-01-02T15:04:05", wall, loc)
	}
	if err != nil {
		t.Fatalf("parse %q: %v", wall, err)
	}
	return tm.UnixMilli()
}

const (
	hourMs = int64(3600 * 1000)
	dayMs  = 24 * hourMs
)
