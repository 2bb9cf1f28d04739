package report

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bench/internal/load"
)

// res builds a closed-loop result.
func res(system, workload, dist, mode string, conc int, perSec, p50ms, p99ms float64) load.Result {
	return load.Result{
		System: system, Workload: workload, Distribution: dist, Mode: mode,
		Loop: "closed", Concurrency: conc, Duration: 10 * time.Second,
		Decisions: int64(perSec * 10), Allowed: int64(perSec * 5), PerSecond: perSec,
		P50us: p50ms * 1000, P99us: p99ms * 1000, P999us: p99ms * 1500, MaxUs: p99ms * 3000,
		ServerCPUSeconds: perSec * 10 / 1000 * 0.02, CPUPer1000: 0.02,
		Durable: system != "redis-everysec", Linearizable: system == "tollgate" || system == "etcd",
	}
}

func openRes(system, mode string, target, achieved, p50ms, p99ms, p999ms float64) load.Result {
	return load.Result{
		System: system, Workload: "token-bucket", Distribution: "uniform", Mode: mode,
		Loop: "open", Concurrency: 256, TargetRate: target, Duration: 10 * time.Second,
		Decisions: int64(achieved * 10), PerSecond: achieved,
		P50us: p50ms * 1000, P99us: p99ms * 1000, P999us: p999ms * 1000,
		Durable: true, Linearizable: true,
	}
}

// synthetic is a run with tollgate, etcd and both redis configurations but
// no gubernator.
//
//	a: tollgate 60,000 ÷ etcd 10,000 = 6 ≥ 5, overspend 0  → PASS
//	b: tollgate batch16 90,000 ≥ redis-always batch16 80,000, but < 100,000 → MISS
//	c: p50 1.2 ms ≤ 3 × (0.5 + 0.03 + 0.07 = 0.6 ms) = 1.8 ms → PASS
//	d: max 70,000 (c=256), open loop at 35,000 (50 %), p99 4 ms ≤ 10 → PASS
//	e, f: no gubernator → n/a
func synthetic() *Run {
	const tb, bu, uni, zipf = "token-bucket", "budget", "uniform", "zipf"
	lin, b16, st := string(load.Linearizable), string(load.Batch16), string(load.Stale)
	r := &Run{
		Started:  time.Date(2026, 11, 27, 16, 30, 0, 0, time.UTC),
		Duration: 20 * time.Minute,
		Quick:    false,
		Machine: Machine{
			CPUModel: "AMD EPYC 9454P", CPUs: 8, MemoryGiB: 31.3, Kernel: "6.8.0-49-generic",
			GoVersion: "go1.26.8", DataDisk: "ext4 /dev/nvme0n1p2", ServerCPUs: "0-3", ClientCPUs: "4-7",
		},
		Floors: Floors{
			FsyncP50us: 500, FsyncP99us: 1500, RTTP50us: 30, RTTP99us: 60,
			NoopRPCPerSecond: 150000, NoopRPCP50us: 70,
		},
	}
	add := func(rs ...load.Result) { r.Results = append(r.Results, rs...) }
	add(
		res("tollgate", tb, uni, lin, 1, 800, 1.2, 2.5),
		res("tollgate", tb, uni, lin, 16, 12000, 1.3, 3),
		res("tollgate", tb, uni, lin, 64, 60000, 1.0, 4),
		res("tollgate", tb, uni, lin, 256, 70000, 3.5, 9),
		res("tollgate", tb, uni, b16, 1, 9000, 1.7, 3),
		res("tollgate", tb, uni, b16, 64, 90000, 9, 20),
		res("etcd", tb, uni, lin, 1, 400, 2.4, 5),
		res("etcd", tb, uni, lin, 16, 4000, 3.9, 9),
		res("etcd", tb, uni, lin, 64, 10000, 6.4, 15),
		res("redis-always", tb, uni, lin, 1, 700, 1.4, 3),
		res("redis-always", tb, uni, lin, 64, 30000, 2, 6),
		res("redis-always", tb, uni, b16, 64, 80000, 10, 25),
		res("redis-everysec", tb, uni, lin, 1, 20000, 0.05, 0.1),
		res("redis-everysec", tb, uni, lin, 64, 150000, 0.4, 1.1),
		// zipf: one system only, so a table but no plot.
		res("tollgate", tb, zipf, lin, 64, 50000, 1.2, 5),
		// budget: tollgate and etcd decisions (a plot), tollgate stale reads
		// only (no reads plot).
		res("tollgate", bu, uni, lin, 64, 55000, 1.1, 4.5),
		res("tollgate", bu, uni, st, 64, 400000, 0.15, 0.6),
		res("etcd", bu, uni, lin, 64, 9000, 7, 16),
		openRes("tollgate", lin, 10000, 10000, 0.9, 2, 3),
		openRes("tollgate", lin, 35000, 34900, 1.1, 4, 7),
	)
	// Overspend in a peer's run is flagged in its table row.
	for i := range r.Results {
		if r.Results[i].System == "redis-everysec" && r.Results[i].Concurrency == 64 {
			r.Results[i].Overspend = 3
		}
	}
	return r
}

func goalByID(t *testing.T, gs []Goal, id string) Goal {
	t.Helper()
	for _, g := range gs {
		if g.ID == id {
			return g
		}
	}
	t.Fatalf("goal %s missing", id)
	return Goal{}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestGoals(t *testing.T) {
	gs := Goals(synthetic())
	if len(gs) != 6 {
		t.Fatalf("got %d goals, want 6", len(gs))
	}
	want := map[string]Status{"a": Pass, "b": Miss, "c": Pass, "d": Pass, "e": NA, "f": NA}
	for id, st := range want {
		if g := goalByID(t, gs, id); g.Status != st {
			t.Errorf("goal %s: status %s, want %s (%+v)", id, g.Status, st, g)
		}
	}

	a := goalByID(t, gs, "a")
	if !near(a.Checks[0].Measured, 6) || a.Checks[0].Target != GoalEtcdRatio {
		t.Errorf("a ratio: %+v", a.Checks[0])
	}
	if a.Checks[1].Measured != 0 || a.Checks[1].Status != Pass {
		t.Errorf("a overspend: %+v", a.Checks[1])
	}

	b := goalByID(t, gs, "b")
	if !near(b.Checks[0].Measured, 90000.0/80000) || b.Checks[0].Status != Pass {
		t.Errorf("b vs redis: %+v", b.Checks[0])
	}
	if !strings.Contains(b.Checks[0].What, "redis-always batch16") {
		t.Errorf("b should compare with redis-always batch16: %q", b.Checks[0].What)
	}
	if b.Checks[1].Measured != 90000 || b.Checks[1].Status != Miss {
		t.Errorf("b rate: %+v", b.Checks[1])
	}

	c := goalByID(t, gs, "c").Checks[0]
	if !near(c.Measured, 1.2) || !near(c.Target, 1.8) {
		t.Errorf("c: measured %v target %v, want 1.2 ≤ 1.8", c.Measured, c.Target)
	}

	d := goalByID(t, gs, "d").Checks[0]
	if !near(d.Measured, 4) || !strings.Contains(d.From, "35,000") {
		t.Errorf("d should use the 35,000/s open loop (p99 4 ms): %+v", d)
	}

	for _, id := range []string{"e", "f"} {
		ch := goalByID(t, gs, id).Checks[0]
		if !math.IsNaN(ch.Measured) || !strings.Contains(ch.From, "gubernator") {
			t.Errorf("goal %s should be n/a for want of gubernator: %+v", id, ch)
		}
	}
}

func TestGoalsFlip(t *testing.T) {
	r := synthetic()
	const tb, uni = "token-bucket", "uniform"
	lin := string(load.Linearizable)
	r.Results = append(r.Results,
		// gubernator: e 60,000 ÷ 25,000 = 2.4 ≥ 2 PASS; f 400,000 ÷ 25,000 = 16 ≥ 3 PASS.
		res("gubernator", tb, uni, lin, 64, 25000, 2, 5),
	)
	// tollgate overspends once: a MISS although the ratio passes.
	r.Results[0].Overspend = 1
	// A slow 1-client p50 misses c.
	r.Results[0].P50us = 2500
	// redis-always without batch16 falls back to linearizable.
	var kept = r.Results[:0]
	for _, x := range r.Results {
		if !(x.System == "redis-always" && x.Mode == string(load.Batch16)) {
			kept = append(kept, x)
		}
	}
	r.Results = kept

	gs := Goals(r)
	want := map[string]Status{"a": Miss, "b": Miss, "c": Miss, "d": Pass, "e": Pass, "f": Pass}
	for id, st := range want {
		if g := goalByID(t, gs, id); g.Status != st {
			t.Errorf("goal %s: status %s, want %s (%+v)", id, g.Status, st, g)
		}
	}
	if ch := goalByID(t, gs, "a").Checks[1]; ch.Measured != 1 || ch.Status != Miss {
		t.Errorf("a overspend: %+v", ch)
	}
	b := goalByID(t, gs, "b").Checks[0]
	if !strings.Contains(b.What, "redis-always linearizable") || !near(b.Measured, 3) {
		t.Errorf("b fallback to redis-always linearizable (90,000 ÷ 30,000): %+v", b)
	}
	if e := goalByID(t, gs, "e").Checks[0]; !near(e.Measured, 2.4) {
		t.Errorf("e: %+v", e)
	}
	if f := goalByID(t, gs, "f").Checks[0]; !near(f.Measured, 16) {
		t.Errorf("f: %+v", f)
	}

	// No floors: c is n/a. An open loop far from half the max: d is n/a.
	r.Floors = Floors{}
	for i := range r.Results {
		if r.Results[i].Loop == "open" {
			r.Results[i].TargetRate = 5000
		}
	}
	gs = Goals(r)
	if g := goalByID(t, gs, "c"); g.Status != NA {
		t.Errorf("c without floors: %+v", g)
	}
	if g := goalByID(t, gs, "d"); g.Status != NA || !strings.Contains(g.Checks[0].From, "not about half") {
		t.Errorf("d far from half: %+v", g)
	}

	// An empty run: every goal n/a, nothing panics.
	for _, g := range Goals(&Run{}) {
		if g.Status != NA {
			t.Errorf("empty run: goal %s is %s", g.ID, g.Status)
		}
	}
	if md := Markdown(&Run{}); !strings.Contains(md, "0 PASS, 0 MISS, 6 n/a") {
		t.Errorf("empty run markdown:\n%s", md)
	}
}

func TestRatios(t *testing.T) {
	rs := Ratios(synthetic())
	get := func(prefix string) Ratio {
		for _, x := range rs {
			if strings.HasPrefix(x.Name, prefix) {
				return x
			}
		}
		t.Fatalf("no ratio %q in %+v", prefix, rs)
		return Ratio{}
	}
	if x := get("tollgate ÷ etcd (linearizable"); !near(x.Value, 6) {
		t.Errorf("etcd: %+v", x)
	}
	if x := get("tollgate ÷ redis-always (batch16"); !near(x.Value, 90000.0/80000) {
		t.Errorf("redis-always batch16: %+v", x)
	}
	if x := get("tollgate ÷ redis-everysec (linearizable"); !near(x.Value, 0.4) {
		t.Errorf("redis-everysec: %+v", x)
	}
	if x := get("tollgate ÷ gubernator (linearizable"); !math.IsNaN(x.Value) || x.Den != "n/a" {
		t.Errorf("gubernator absent: %+v", x)
	}
	for _, x := range rs {
		if strings.HasPrefix(x.Name, "tollgate ÷ etcd (batch16") {
			t.Errorf("etcd has no batch16, row should be absent: %+v", x)
		}
	}
	if x := get("tollgate p50 at 1 client"); !near(x.Value, 2) {
		t.Errorf("floor ratio 1.2 ms ÷ 0.6 ms: %+v", x)
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := synthetic()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}

	back, err := ReadJSON(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(r.Results) || back.Floors != r.Floors || back.Machine != r.Machine ||
		!back.Started.Equal(r.Started) || back.Results[3] != r.Results[3] {
		t.Errorf("results.json does not round-trip")
	}
	raw, _ := os.ReadFile(filepath.Join(dir, JSONFile))
	if !bytes.Contains(raw, []byte("\n  \"results\": [")) {
		t.Errorf("results.json is not indented")
	}

	wantPNG := []string{
		"throughput-token-bucket-uniform.png", "p99-token-bucket-uniform.png",
		"throughput-budget-uniform.png", "p99-budget-uniform.png",
	}
	for _, name := range wantPNG {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("plot %s: %v", name, err)
			continue
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("plot %s is not a PNG: %v", name, err)
			continue
		}
		if b := img.Bounds(); b.Dx() != PlotWidthPx || b.Dy() != PlotHeightPx {
			t.Errorf("plot %s is %dx%d, want %dx%d", name, b.Dx(), b.Dy(), PlotWidthPx, PlotHeightPx)
		}
	}
	// One system only: no plot.
	for _, name := range []string{
		"throughput-token-bucket-zipf.png", "throughput-budget-uniform-reads.png",
	} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("unexpected plot %s", name)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2+len(wantPNG) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files: %v", names)
	}

	mdb, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	md := string(mdb)
	if md != Markdown(r) {
		t.Errorf("results.md differs from Markdown(r)")
	}
	for _, s := range []string{
		"- **Date:** 2026-11-27 16:30:00 UTC",
		"- **Run:** full",
		"AMD EPYC 9454P, 8 CPUs, 31.3 GiB memory, kernel 6.8.0-49-generic, go1.26.8",
		"ext4 /dev/nvme0n1p2",
		"servers pinned to CPUs 0-3, load generator to CPUs 4-7",
		// floors
		"## Floors",
		"| Floor | p50 (ms) | p99 (ms) | Rate |",
		"| fsync (4 KiB write + fdatasync) | 0.500 | 1.50 |",
		"150,000 RPC/s",
		// goals
		"## Goals",
		"3 PASS, 1 MISS, 2 n/a of 6 goals.",
		"| Goal | Check | Measured | Target | Result | From |",
		"| 6.00× | ≥ 5.00× | **PASS** |",
		"| 90,000/s | ≥ 100,000/s | **MISS** |",
		"| 1.20 ms | ≤ 1.80 ms | **PASS** |",
		"| 4.00 ms | ≤ 10.0 ms | **PASS** |",
		"| n/a | ≥ 2.00× | n/a | no closed-loop result for gubernator linearizable token-bucket/uniform c=64 |",
		// ratios
		"## Ratios against each peer and floor",
		"| Ratio | tollgate | Peer / floor | × |",
		"| tollgate ÷ etcd (linearizable, token-bucket/uniform, c=64) | 60,000/s | 10,000/s | 6.00× |",
		"| tollgate p50 at 1 client ÷ (fsync + loopback RTT + no-op RPC p50) | 1.20 ms | 0.600 ms | 2.00× |",
		// closed-loop tables
		"### token-bucket, uniform",
		"| System | Mode | c=1 dec/s | c=1 p99 ms | c=16 dec/s | c=16 p99 ms | c=64 dec/s | c=64 p99 ms | c=256 dec/s | c=256 p99 ms | CPU s/1k dec (c=64) | Overspend | Durable | Linearizable |",
		"| tollgate | linearizable | 800 | 2.50 | 12,000 | 3.00 | 60,000 | 4.00 | 70,000 | 9.00 | 0.02 | 0 | yes | yes |",
		"| redis-everysec | linearizable | 20,000 | 0.100 | — | — | 150,000 | 1.10 | — | — | 0.02 | **3 ⚠** | no | no |",
		"### token-bucket, zipf",
		"| System | Mode | c=64 dec/s | c=64 p99 ms | CPU s/1k dec (c=64) |",
		"### budget, uniform",
		"| tollgate | stale | 400,000 | 0.600 |",
		"![throughput token-bucket/uniform](throughput-token-bucket-uniform.png)",
		"![p99 budget/uniform](p99-budget-uniform.png)",
		// open loop
		"## Open loop",
		"| System | Mode | Workload | Target/s | Achieved/s | p50 ms | p99 ms | p99.9 ms | Overspend |",
		"| tollgate | linearizable | token-bucket/uniform | 35,000 | 34,900 | 1.10 | 4.00 | 7.00 | 0 |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q", s)
		}
	}
	// Open-loop results stay out of the closed-loop tables.
	closedPart := md[strings.Index(md, "## Closed loop"):strings.Index(md, "## Open loop")]
	if strings.Contains(closedPart, "34,900") || strings.Contains(closedPart, "35,000") {
		t.Errorf("open-loop result in a closed-loop table")
	}
	if strings.Contains(md, "## Runs with errors") {
		t.Errorf("no run had errors")
	}

	// REPORT_OUT=dir keeps a copy for a look at the plots.
	if out := os.Getenv("REPORT_OUT"); out != "" {
		if err := Write(out, r); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCPUColumnFallsBackToHighestConcurrency(t *testing.T) {
	r := &Run{Results: []load.Result{
		res("etcd", "token-bucket", "uniform", "linearizable", 16, 4000, 3, 9),
		res("etcd", "token-bucket", "uniform", "linearizable", 256, 9000, 20, 40),
	}}
	r.Results[1].CPUPer1000 = 0.125
	r.Results[0].Errors = 7
	md := Markdown(r)
	if !strings.Contains(md, "| 0.125 (c=256) |") {
		t.Errorf("CPU column should fall back to c=256:\n%s", md)
	}
	if !strings.Contains(md, "## Runs with errors") || !strings.Contains(md, "7 errors") {
		t.Errorf("errors not listed:\n%s", md)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{fmtRate(1234567.4), "1,234,567"},
		{fmtRate(100), "100"},
		{fmtRate(12.34), "12.3"},
		{fmtMs(0.0042), "0.0042"},
		{fmtMs(0.42), "0.420"},
		{fmtMs(4.2), "4.20"},
		{fmtMs(42), "42.0"},
		{fmtMs(4200), "4,200"},
		{fmtSI(150000), "150k"},
		{fmtSI(1.5e6), "1.5M"},
		{fmtValue(math.NaN(), UnitRatio), "n/a"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for _, c := range []struct {
		x    float64
		up   bool
		want float64
	}{
		{73000, true, 100000}, {73000, false, 50000}, {0.9, true, 1}, {0.9, false, 0.5},
		{200, true, 200}, {200, false, 200}, {1, false, 1}, {11, true, 20},
	} {
		if got := snap125(c.x, c.up); !near(got, c.want) {
			t.Errorf("snap125(%v, %v) = %v, want %v", c.x, c.up, got, c.want)
		}
	}
}
