package fsm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

// sampleCommands has one command of every type with every field set.
func sampleCommands() []fsm.Command {
	full := fsm.BudgetSpec{ID: "b", ParentID: "p", AmountMicros: 12_500, Currency: "EUR", Period: fsm.PeriodCustom,
		CustomPeriodMs: 36 * hourMs, Timezone: "Europe/Berlin", Enforcement: fsm.EnforcementSoft, Thresholds: []uint32{50, 80, 100}}
	policy := fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmGCRA, Limit: 100, WindowMs: 60_000, Burst: 20,
		Scales: []fsm.PriorityScale{{Priority: 1, Percent: 50}, {Priority: 2, Percent: 10}}}
	return []fsm.Command{
		&fsm.Noop{},
		&fsm.CreateBudget{Tenant: tenant, RequestID: "r-1", Budget: full},
		&fsm.UpdateBudget{Tenant: tenant, RequestID: "r-2", Fields: fsm.UpdateAmount | fsm.UpdateThresholds, Budget: full},
		&fsm.DeleteBudget{Tenant: tenant, RequestID: "r-3", BudgetID: "b"},
		&fsm.Consume{Tenant: tenant, RequestID: "r-4", BudgetID: "b", AmountMicros: fsm.AmountMaxMicros},
		&fsm.ConsumeAtomic{Tenant: tenant, RequestID: "r-5", Items: []fsm.ConsumeItem{{BudgetID: "a", AmountMicros: 1}, {BudgetID: "b", AmountMicros: 2}}},
		&fsm.Reserve{Tenant: tenant, RequestID: "r-6", BudgetID: "b", AmountMicros: 7, TTLMs: 60_000},
		&fsm.Commit{Tenant: tenant, RequestID: "r-7", HoldID: "h1-0", AmountMicros: 3},
		&fsm.Release{Tenant: tenant, RequestID: "r-8", HoldID: "h1-0"},
		&fsm.CreatePolicy{Tenant: tenant, RequestID: "r-9", Policy: policy},
		&fsm.UpdatePolicy{Tenant: tenant, RequestID: "r-10", Fields: fsm.UpdateLimit | fsm.UpdateScales, Policy: policy},
		&fsm.DeletePolicy{Tenant: tenant, RequestID: "r-11", PolicyID: "p"},
		&fsm.RateCheck{Tenant: tenant, RequestID: "r-12", PolicyID: "p", Key: "user:42", Cost: 3, Priority: 2},
	}
}

// minimalCommands has one command of every type with only required fields,
// so that omitted (omitempty) fields round-trip as well.
func minimalCommands() []fsm.Command {
	return []fsm.Command{
		&fsm.CreateBudget{Tenant: tenant, Budget: spec("b", 1)},
		&fsm.UpdateBudget{Tenant: tenant, Fields: fsm.UpdateEnforcement, Budget: fsm.BudgetSpec{ID: "b", Enforcement: fsm.EnforcementHard}},
		&fsm.DeleteBudget{Tenant: tenant, BudgetID: "b"},
		&fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: 1},
		&fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{{BudgetID: "a", AmountMicros: 1}}},
		&fsm.Reserve{Tenant: tenant, BudgetID: "b", AmountMicros: 1, TTLMs: 1000},
		&fsm.Commit{Tenant: tenant, HoldID: "h"},
		&fsm.Release{Tenant: tenant, HoldID: "h"},
		&fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: 1, Limit: 1, WindowMs: 1, Burst: 1}},
		&fsm.UpdatePolicy{Tenant: tenant, Fields: fsm.UpdateBurst, Policy: fsm.PolicySpec{ID: "p", Burst: 2}},
		&fsm.DeletePolicy{Tenant: tenant, PolicyID: "p"},
		&fsm.RateCheck{Tenant: tenant, PolicyID: "p", Key: "k", Cost: 1},
		&fsm.MarkServerRemoved{ID: "n2", Incarnation: "3f2a"},
		&fsm.RotateSigningKey{Seed: testSeed},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	seen := map[fsm.CommandType]bool{}
	for _, c := range append(sampleCommands(), minimalCommands()...) {
		raw := mustEncode(t, c)
		if fsm.CommandType(raw[0]) != c.Type() {
			t.Errorf("%T encodes with type byte %d, want %d", c, raw[0], c.Type())
		}
		got, err := fsm.DecodeCommand(raw)
		if err != nil {
			t.Errorf("decode %T: %v", c, err)
			continue
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip of %T:\n%+v\nwant\n%+v", c, got, c)
		}
		// The encoding is a function of the command (fingerprints rely on it).
		if again := mustEncode(t, got); !bytes.Equal(again, raw) {
			t.Errorf("%T re-encodes differently", c)
		}
		seen[c.Type()] = true
	}
	for typ := fsm.TypeNoop; typ <= fsm.TypeRotateSigningKey; typ++ {
		if !seen[typ] {
			t.Errorf("command type %d has no round-trip sample", typ)
		}
	}
}

// The type numbers are part of the log format and must never change.
func TestCommandTypeNumbersAreStable(t *testing.T) {
	want := map[fsm.CommandType]fsm.Command{
		1: &fsm.Noop{}, 2: &fsm.CreateBudget{}, 3: &fsm.UpdateBudget{}, 4: &fsm.DeleteBudget{}, 5: &fsm.Consume{},
		6: &fsm.ConsumeAtomic{}, 7: &fsm.Reserve{}, 8: &fsm.Commit{}, 9: &fsm.Release{}, 10: &fsm.CreatePolicy{},
		11: &fsm.UpdatePolicy{}, 12: &fsm.DeletePolicy{}, 13: &fsm.RateCheck{}, 14: &fsm.MarkServerRemoved{},
		15: &fsm.RotateSigningKey{},
	}
	for typ, c := range want {
		if c.Type() != typ {
			t.Errorf("%T has type %d, want %d", c, c.Type(), typ)
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	consume := mustEncode(t, &fsm.Consume{Tenant: tenant, BudgetID: "b", AmountMicros: 1})
	retyped := func(typ byte) []byte {
		b := append([]byte(nil), consume...)
		b[0] = typ
		return b
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty command"},
		{"type 0", []byte{0, 0x80}, "unknown command type 0"},
		{"type 30", []byte{30, 0x80}, "unknown command type 30"},
		{"type 255", []byte{255, 0x80}, "unknown command type 255"},
		{"no body", []byte{byte(fsm.TypeConsume)}, "decode command type 5"},
		{"trailing bytes", append(append([]byte(nil), consume...), 0xc0), "trailing"},
		{"truncated", consume[:len(consume)-1], "decode command type 5"},
		{"unknown field", append([]byte{byte(fsm.TypeNoop)}, 0x81, 0xa1, 'x', 0x01), "decode command type 1"},
		{"another type's body", retyped(byte(fsm.TypeRelease)), "decode command type 9"},
		{"wrong field type", []byte{byte(fsm.TypeConsume), 0x81, 0xa1, 'a', 0xa1, 'x'}, "decode command type 5"},
		{"oversized", append([]byte{byte(fsm.TypeNoop)}, make([]byte, fsm.CommandBytesMax)...), "exceeds"},
		// Declared lengths beyond the input must fail before anything is
		// allocated for them (msgpack v5.4.1 would allocate the whole slice).
		{"array32 of 2^32-1 items", []byte{byte(fsm.TypeConsumeAtomic), 0x81, 0xa1, 'i', 0xdd, 0xff, 0xff, 0xff, 0xff}, "declares"},
		{"array16 longer than the input", []byte{byte(fsm.TypeConsumeAtomic), 0x81, 0xa1, 'i', 0xdc, 0x00, 0x03, 0xc0, 0xc0}, "declares"},
		{"thresholds of 2^32-1 items", []byte{byte(fsm.TypeCreateBudget), 0x81, 0xa1, 'b', 0x81, 0xa2, 't', 'h', 0xdd, 0xff, 0xff, 0xff, 0xff}, "declares"},
		{"map32 of 2^32-1 pairs", []byte{byte(fsm.TypeConsume), 0xdf, 0xff, 0xff, 0xff, 0xff}, "declares"},
		{"str32 longer than the input", []byte{byte(fsm.TypeConsume), 0x81, 0xa1, 't', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'}, "longer than the input"},
		{"bin32 longer than the input", []byte{byte(fsm.TypeConsume), 0x81, 0xa1, 't', 0xc6, 0x7f, 0xff, 0xff, 0xff}, "longer than the input"},
		{"ext32 longer than the input", []byte{byte(fsm.TypeConsume), 0x81, 0xa1, 't', 0xc9, 0x00, 0x00, 0x00, 0x02, 0x01, 'x'}, "longer than the input"},
		{"code 0xc1", []byte{byte(fsm.TypeConsume), 0x81, 0xa1, 't', 0xc1}, "invalid msgpack code"},
	}
	for _, c := range cases {
		got, err := fsm.DecodeCommand(c.data)
		if err == nil {
			t.Errorf("%s: decoded %+v", c.name, got)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

func TestEntryRoundTrip(t *testing.T) {
	var cmds [][]byte
	for _, c := range sampleCommands() {
		cmds = append(cmds, mustEncode(t, c))
	}
	big := bytes.Repeat([]byte{0xab}, 70_000) // a length that needs a 3-byte uvarint
	for _, e := range []fsm.Entry{
		{NowMs: 0, Commands: [][]byte{}},
		{NowMs: t0, Commands: cmds},
		{NowMs: 1 << 62, Commands: [][]byte{{1}, {}, big}},
	} {
		data := fsm.EncodeEntry(e)
		got, err := fsm.DecodeEntry(data)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.NowMs != e.NowMs || len(got.Commands) != len(e.Commands) {
			t.Fatalf("entry %d/%d, want %d/%d", got.NowMs, len(got.Commands), e.NowMs, len(e.Commands))
		}
		for i := range e.Commands {
			if !bytes.Equal(got.Commands[i], e.Commands[i]) {
				t.Fatalf("command %d differs", i)
			}
		}
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	valid := fsm.EncodeEntry(fsm.Entry{NowMs: t0, Commands: [][]byte{mustEncode(t, &fsm.Noop{}), mustEncode(t, &fsm.Noop{})}})
	header := func(now, count uint64) []byte {
		b := []byte{1}
		b = binary.AppendUvarint(b, now)
		return binary.AppendUvarint(b, count)
	}
	cases := map[string][]byte{
		"empty":                     nil,
		"format 0":                  append([]byte{0}, valid[1:]...),
		"format 2":                  append([]byte{2}, valid[1:]...),
		"no time":                   {1},
		"time overflowing varint":   append([]byte{1}, bytes.Repeat([]byte{0xff}, 11)...),
		"time above 2^62":           header(1<<62+1, 0),
		"negative time":             fsm.EncodeEntry(fsm.Entry{NowMs: -1}),
		"no count":                  binary.AppendUvarint([]byte{1}, 5),
		"too many commands":         header(5, fsm.EntryCommandsMax+1),
		"missing commands":          header(5, 3),
		"command longer than entry": append(header(5, 1), 10, 1, 2),
		"command over the maximum":  binary.AppendUvarint(header(5, 1), fsm.CommandBytesMax+1),
		"huge command length":       binary.AppendUvarint(header(5, 1), 1<<63),
		"trailing bytes":            append(append([]byte(nil), valid...), 0),
	}
	for n := 0; n < len(valid); n++ {
		cases[fmt.Sprintf("first %d bytes", n)] = valid[:n]
	}
	for name, data := range cases {
		if e, err := fsm.DecodeEntry(data); err == nil {
			t.Errorf("%s: decoded %+v", name, e)
		}
	}
}

func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: did not panic", name)
		}
	}()
	f()
}

// A replica that cannot apply an entry exactly stops instead of diverging.
func TestApplyEntryPanicsOnWhatItCannotApply(t *testing.T) {
	m := fsm.New()
	mustPanic(t, "undecodable entry", func() { m.ApplyEntry(1, 1, []byte{9, 9}) })
	mustPanic(t, "unknown command type", func() {
		m.ApplyEntry(1, 1, fsm.EncodeEntry(fsm.Entry{NowMs: t0, Commands: [][]byte{{200, 0x80}}}))
	})
	mustPanic(t, "undecodable command", func() {
		m.ApplyEntry(1, 1, fsm.EncodeEntry(fsm.Entry{NowMs: t0, Commands: [][]byte{{byte(fsm.TypeConsume), 0xc1}}}))
	})
	if m.AppliedIndex() != 0 {
		t.Fatalf("a refused entry advanced the index to %d", m.AppliedIndex())
	}
	m.ApplyEntry(5, 1, fsm.EncodeEntry(fsm.Entry{NowMs: t0}))
	mustPanic(t, "same index again", func() { m.ApplyEntry(5, 1, fsm.EncodeEntry(fsm.Entry{NowMs: t0})) })
	mustPanic(t, "lower index", func() { m.ApplyEntry(4, 1, fsm.EncodeEntry(fsm.Entry{NowMs: t0})) })
	m.SkipEntry(6)
	if m.AppliedIndex() != 6 {
		t.Fatalf("applied index %d after SkipEntry(6)", m.AppliedIndex())
	}
	mustPanic(t, "skip backwards", func() { m.SkipEntry(6) })
}

func seedCommands(f *testing.F) {
	for _, c := range append(sampleCommands(), minimalCommands()...) {
		f.Add(mustEncode(f, c))
	}
}

func FuzzDecodeEntry(f *testing.F) {
	var all [][]byte
	for _, c := range sampleCommands() {
		raw := mustEncode(f, c)
		all = append(all, raw)
		f.Add(fsm.EncodeEntry(fsm.Entry{NowMs: t0, Commands: [][]byte{raw}}))
	}
	f.Add(fsm.EncodeEntry(fsm.Entry{NowMs: t0, Commands: all}))
	f.Add(fsm.EncodeEntry(fsm.Entry{}))
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := fsm.DecodeEntry(data)
		if err != nil {
			return
		}
		// What decodes re-encodes to an entry that decodes the same.
		again, err := fsm.DecodeEntry(fsm.EncodeEntry(e))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if again.NowMs != e.NowMs || len(again.Commands) != len(e.Commands) {
			t.Fatalf("re-encoded entry differs")
		}
		for i := range e.Commands {
			if !bytes.Equal(again.Commands[i], e.Commands[i]) {
				t.Fatalf("command %d differs after re-encoding", i)
			}
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	seedCommands(f)
	f.Add([]byte{})
	f.Add([]byte{byte(fsm.TypeConsumeAtomic), 0x81, 0xa1, 'i', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := fsm.DecodeCommand(data)
		if err != nil {
			return
		}
		fsm.Validate(c) // must not panic on anything that decodes
		// Decoding then encoding reaches a fixed point after one step.
		raw := mustEncode(t, c)
		c2, err := fsm.DecodeCommand(raw)
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", c, err)
		}
		if raw2 := mustEncode(t, c2); !bytes.Equal(raw, raw2) {
			t.Fatalf("%T does not re-encode stably", c)
		}
	})
}

// FuzzApplyCommand applies any decodable command (except rate checks, whose
// algorithms live elsewhere) to a machine with budgets, holds and a policy:
// it must not panic, and the state must still snapshot and restore.
func FuzzApplyCommand(f *testing.F) {
	seedCommands(f)
	f.Add(mustEncode(f, &fsm.Commit{Tenant: tenant, HoldID: "h3-0", AmountMicros: fsm.AmountMaxMicros}))
	f.Add(mustEncode(f, &fsm.DeleteBudget{Tenant: tenant, BudgetID: "child"}))
	f.Add(mustEncode(f, &fsm.ConsumeAtomic{Tenant: tenant, Items: []fsm.ConsumeItem{
		{BudgetID: "soft", AmountMicros: fsm.AmountMaxMicros}, {BudgetID: "soft", AmountMicros: fsm.AmountMaxMicros}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := fsm.DecodeCommand(data)
		if err != nil || c.Type() == fsm.TypeRateCheck {
			return
		}
		h := newHarness(t)
		parent := spec("parent", usd(t, "100"))
		parent.Period, parent.Timezone, parent.Thresholds = fsm.PeriodDay, "Europe/Berlin", []uint32{50, 100}
		child := spec("child", usd(t, "50"))
		child.ParentID = "parent"
		soft := spec("soft", usd(t, "10"))
		soft.Enforcement = fsm.EnforcementSoft
		h.apply(t0,
			&fsm.CreateBudget{Tenant: tenant, Budget: parent},
			&fsm.CreateBudget{Tenant: tenant, Budget: child},
			&fsm.CreateBudget{Tenant: tenant, Budget: soft},
			&fsm.CreatePolicy{Tenant: tenant, Policy: fsm.PolicySpec{ID: "p", Algorithm: 1, Limit: 1, WindowMs: 1, Burst: 1}})
		h.apply(t0, &fsm.Consume{Tenant: tenant, BudgetID: "child", AmountMicros: usd(t, "20")})
		h.apply(t0, reserve("child", usd(t, "5"), 60_000), reserve("soft", usd(t, "50"), 60_000)) // h3-0, h3-1
		for _, at := range []int64{t0 + 1, t0 + dayMs} {
			h.applyEntry(at, c, c)
		}
		restored := h.restoredCopy()
		if restored.hash() != h.hash() {
			t.Fatal("restore changed the state hash")
		}
	})
}
