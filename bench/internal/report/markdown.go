package report

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/bench/internal/load"
)

const dash = "—"

// Markdown renders r as a human report: the run header, the floors, the
// goals, the ratios against each peer and floor, one closed-loop table per
// workload and distribution (with links to the plots Charts(r) describes),
// the open-loop table and any runs with errors.
func Markdown(r *Run) string {
	var b strings.Builder
	writeHeader(&b, r)
	writeFloors(&b, r)
	writeGoals(&b, r)
	writeRatios(&b, r)
	writeClosed(&b, r)
	writeOpen(&b, r)
	writeErrors(&b, r)
	return b.String()
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "unknown"
	}
	return s
}

func writeHeader(b *strings.Builder, r *Run) {
	b.WriteString("# tollgate benchmark\n\n")
	date := "unknown"
	if !r.Started.IsZero() {
		date = r.Started.UTC().Format("2006-01-02 15:04:05 MST")
	}
	if r.Duration > 0 {
		date += fmt.Sprintf(" (took %s)", r.Duration.Round(1e9))
	}
	kind := "full"
	if r.Quick {
		kind = "quick"
	}
	m := r.Machine
	cpus := "unknown"
	if m.CPUs > 0 {
		cpus = strconv.Itoa(m.CPUs)
	}
	mem := "unknown"
	if m.MemoryGiB > 0 {
		mem = fmt.Sprintf("%.1f GiB", m.MemoryGiB)
	}
	fmt.Fprintf(b, "- **Date:** %s\n", date)
	fmt.Fprintf(b, "- **Run:** %s\n", kind)
	fmt.Fprintf(b, "- **Machine:** %s, %s CPUs, %s memory, kernel %s, %s\n",
		orDash(m.CPUModel), cpus, mem, orDash(m.Kernel), orDash(m.GoVersion))
	fmt.Fprintf(b, "- **Data disk:** %s\n", orDash(m.DataDisk))
	fmt.Fprintf(b, "- **Pinning:** servers pinned to CPUs %s, load generator to CPUs %s\n\n",
		orDash(m.ServerCPUs), orDash(m.ClientCPUs))
}

func writeFloors(b *strings.Builder, r *Run) {
	f := r.Floors
	b.WriteString("## Floors\n\n")
	b.WriteString("| Floor | p50 (ms) | p99 (ms) | Rate |\n|---|--:|--:|--:|\n")
	fmt.Fprintf(b, "| fsync (4 KiB write + fdatasync) | %s | %s | %s |\n", usMs(f.FsyncP50us), usMs(f.FsyncP99us), dash)
	fmt.Fprintf(b, "| loopback TCP RTT (1 byte) | %s | %s | %s |\n", usMs(f.RTTP50us), usMs(f.RTTP99us), dash)
	rate := "n/a"
	if f.NoopRPCPerSecond > 0 {
		rate = fmtRate(f.NoopRPCPerSecond) + " RPC/s (64 clients)"
	}
	fmt.Fprintf(b, "| no-op RPC (p50 at 1 client) | %s | %s | %s |\n\n", usMs(f.NoopRPCP50us), dash, rate)
}

// usMs formats a floor in µs as ms, "n/a" if not measured.
func usMs(us float64) string {
	if !(us > 0) {
		return "n/a"
	}
	return fmtMs(us / 1000)
}

func writeGoals(b *strings.Builder, r *Run) {
	goals := Goals(r)
	counts := map[Status]int{}
	for _, g := range goals {
		counts[g.Status]++
	}
	b.WriteString("## Goals\n\n")
	fmt.Fprintf(b, "%d PASS, %d MISS, %d n/a of %d goals.\n\n", counts[Pass], counts[Miss], counts[NA], len(goals))
	b.WriteString("| Goal | Check | Measured | Target | Result | From |\n|---|---|--:|--:|:-:|---|\n")
	for _, g := range goals {
		for i, c := range g.Checks {
			goal := ""
			if i == 0 {
				goal = fmt.Sprintf("**%s.** %s", g.ID, cell(g.Title))
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s %s | %s | %s |\n", goal, cell(c.What),
				fmtValue(c.Measured, c.Unit), cmpSymbol(c.Cmp), fmtValue(c.Target, c.Unit),
				statusCell(c.Status), cell(c.From))
		}
	}
	b.WriteString("\n")
}

func statusCell(s Status) string {
	if s == NA {
		return string(s)
	}
	return "**" + string(s) + "**"
}

func cmpSymbol(c Cmp) string {
	switch c {
	case AtLeast:
		return "≥"
	case AtMost:
		return "≤"
	}
	return "="
}

func fmtValue(x float64, u Unit) string {
	if !valid(x) {
		return "n/a"
	}
	switch u {
	case UnitRatio:
		return fmtRatio(x)
	case UnitRate:
		return fmtRate(x) + "/s"
	case UnitMs:
		return fmtMs(x) + " ms"
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

func fmtRatio(x float64) string {
	if !valid(x) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", x)
}

func writeRatios(b *strings.Builder, r *Run) {
	b.WriteString("## Ratios against each peer and floor\n\n")
	b.WriteString("| Ratio | tollgate | Peer / floor | × |\n|---|--:|--:|--:|\n")
	for _, x := range Ratios(r) {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", cell(x.Name), x.Num, x.Den, fmtRatio(x.Value))
	}
	b.WriteString("\n")
}

// table is one closed-loop table: a workload and a distribution.
type table struct {
	workload, dist string
	concs          []int
	rows           []row
}

type row struct {
	system, mode string
	byConc       map[int]load.Result
	overspend    int64 // sum over every closed-loop result of the row
	durable, lin bool
}

func closedTables(r *Run) []table {
	type wd struct{ w, d string }
	type sm struct{ s, m string }
	workloads, dists := map[string]bool{}, map[string]bool{}
	concs := map[wd]map[int]bool{}
	rows := map[wd]map[sm]*row{}
	for _, res := range r.Results {
		if isOpen(&res) {
			continue
		}
		k := wd{res.Workload, res.Distribution}
		workloads[res.Workload], dists[res.Distribution] = true, true
		if concs[k] == nil {
			concs[k], rows[k] = map[int]bool{}, map[sm]*row{}
		}
		concs[k][res.Concurrency] = true
		rk := sm{res.System, res.Mode}
		rw := rows[k][rk]
		if rw == nil {
			rw = &row{system: res.System, mode: res.Mode, byConc: map[int]load.Result{},
				durable: res.Durable, lin: res.Linearizable}
			rows[k][rk] = rw
		}
		rw.byConc[res.Concurrency] = res // the last of repeats
		rw.overspend += res.Overspend
	}
	var out []table
	for _, w := range sortedBy(workloadRank, workloads) {
		for _, d := range sortedBy(distRank, dists) {
			k := wd{w, d}
			if concs[k] == nil {
				continue
			}
			t := table{workload: w, dist: d}
			for c := range concs[k] {
				t.concs = append(t.concs, c)
			}
			sort.Ints(t.concs)
			for _, rw := range rows[k] {
				t.rows = append(t.rows, *rw)
			}
			sort.Slice(t.rows, func(i, j int) bool {
				a, b := t.rows[i], t.rows[j]
				if a.system != b.system {
					return less(systemRank, a.system, b.system)
				}
				return less(modeRank, a.mode, b.mode)
			})
			out = append(out, t)
		}
	}
	return out
}

// cpuResult is the result the CPU column uses: at 64 clients, else the
// highest concurrency present.
func (rw *row) cpuResult() (load.Result, bool) {
	if res, ok := rw.byConc[refConcurrency]; ok {
		return res, true
	}
	best, found := load.Result{}, false
	for c, res := range rw.byConc {
		if !found || c > best.Concurrency {
			best, found = res, true
		}
	}
	return best, found
}

func writeClosed(b *strings.Builder, r *Run) {
	tables := closedTables(r)
	b.WriteString("## Closed loop\n\n")
	if len(tables) == 0 {
		b.WriteString("No closed-loop results.\n\n")
		return
	}
	charts := map[string][]Chart{}
	for _, c := range Charts(r) {
		k := c.Workload + "\x00" + c.Distribution
		charts[k] = append(charts[k], c)
	}
	b.WriteString("Decisions/s and p99 latency per call (ms) at each concurrency (clients). " +
		"CPU is server CPU seconds per 1,000 decisions at 64 clients (else the highest concurrency, marked). " +
		"Overspend is summed over the row's runs and must be 0.\n\n")
	for _, t := range tables {
		fmt.Fprintf(b, "### %s, %s\n\n", t.workload, t.dist)
		b.WriteString("| System | Mode |")
		align := "|---|---|"
		for _, c := range t.concs {
			fmt.Fprintf(b, " c=%d dec/s | c=%d p99 ms |", c, c)
			align += "--:|--:|"
		}
		fmt.Fprintf(b, " CPU s/1k dec (c=%d) | Overspend | Durable | Linearizable |\n", refConcurrency)
		b.WriteString(align + "--:|--:|:-:|:-:|\n")
		for _, rw := range t.rows {
			fmt.Fprintf(b, "| %s | %s |", cell(rw.system), cell(rw.mode))
			for _, c := range t.concs {
				if res, ok := rw.byConc[c]; ok {
					fmt.Fprintf(b, " %s | %s |", fmtRate(res.PerSecond), fmtMs(res.P99us/1000))
				} else {
					fmt.Fprintf(b, " %s | %s |", dash, dash)
				}
			}
			cpu := dash
			if res, ok := rw.cpuResult(); ok {
				cpu = fmtCPU(res.CPUPer1000)
				if res.Concurrency != refConcurrency {
					cpu += fmt.Sprintf(" (c=%d)", res.Concurrency)
				}
			}
			over := "0"
			if rw.overspend != 0 {
				over = fmt.Sprintf("**%d ⚠**", rw.overspend)
			}
			fmt.Fprintf(b, " %s | %s | %s | %s |\n", cpu, over, yesNo(rw.durable), yesNo(rw.lin))
		}
		b.WriteString("\n")
		for _, c := range charts[t.workload+"\x00"+t.dist] {
			suffix := ""
			if c.Group != GroupDecisions {
				suffix = " (" + c.Group + ")"
			}
			fmt.Fprintf(b, "![throughput %s/%s%s](%s) ![p99 %s/%s%s](%s)\n\n",
				t.workload, t.dist, suffix, c.ThroughputFile(), t.workload, t.dist, suffix, c.P99File())
		}
	}
}

func writeOpen(b *strings.Builder, r *Run) {
	var opens []load.Result
	for _, res := range r.Results {
		if isOpen(&res) {
			opens = append(opens, res)
		}
	}
	if len(opens) == 0 {
		return
	}
	sort.SliceStable(opens, func(i, j int) bool {
		a, b := opens[i], opens[j]
		switch {
		case a.System != b.System:
			return less(systemRank, a.System, b.System)
		case a.Workload != b.Workload:
			return less(workloadRank, a.Workload, b.Workload)
		case a.Distribution != b.Distribution:
			return less(distRank, a.Distribution, b.Distribution)
		case a.Mode != b.Mode:
			return less(modeRank, a.Mode, b.Mode)
		}
		return a.TargetRate < b.TargetRate
	})
	b.WriteString("## Open loop\n\n")
	b.WriteString("Latency is measured from each call's intended start.\n\n")
	b.WriteString("| System | Mode | Workload | Target/s | Achieved/s | p50 ms | p99 ms | p99.9 ms | Overspend |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, o := range opens {
		over := "0"
		if o.Overspend != 0 {
			over = fmt.Sprintf("**%d ⚠**", o.Overspend)
		}
		fmt.Fprintf(b, "| %s | %s | %s/%s | %s | %s | %s | %s | %s | %s |\n",
			cell(o.System), cell(o.Mode), cell(o.Workload), cell(o.Distribution),
			fmtRate(o.TargetRate), fmtRate(o.PerSecond),
			fmtMs(o.P50us/1000), fmtMs(o.P99us/1000), fmtMs(o.P999us/1000), over)
	}
	b.WriteString("\n")
}

func writeErrors(b *strings.Builder, r *Run) {
	var lines []string
	for _, res := range r.Results {
		if res.Errors > 0 {
			loop := loopClosed
			if isOpen(&res) {
				loop = loopOpen
			}
			lines = append(lines, fmt.Sprintf("- %s %s %s/%s %s c=%d: %d errors (%d decisions)",
				res.System, res.Mode, res.Workload, res.Distribution, loop, res.Concurrency,
				res.Errors, res.Decisions))
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("## Runs with errors\n\n")
	b.WriteString(strings.Join(lines, "\n"))
	b.WriteString("\n\n")
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

// cell escapes a value for a markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}

// fmtRate formats a rate with thousands separators ("123,456"), one decimal
// below 100.
func fmtRate(x float64) string {
	if !valid(x) {
		return "n/a"
	}
	if math.Abs(x) < 100 {
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// fmtMs formats milliseconds with about three significant digits.
func fmtMs(ms float64) string {
	switch a := math.Abs(ms); {
	case !valid(ms):
		return "n/a"
	case a == 0:
		return "0"
	case a < 0.01:
		return strconv.FormatFloat(ms, 'f', 4, 64)
	case a < 1:
		return strconv.FormatFloat(ms, 'f', 3, 64)
	case a < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	case a < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	}
	return fmtRate(ms)
}

// fmtCPU formats CPU seconds per 1,000 decisions with three significant
// digits.
func fmtCPU(x float64) string {
	if !valid(x) {
		return "n/a"
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}
