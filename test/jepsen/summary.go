package jepsen

import (
	"fmt"
	"strings"
	"time"

	"github.com/tollgate/tollgate/test/checker"
)

// scheduleText lists the steps; ran > 0 cuts the list after the steps
// that ran.
func scheduleText(steps []Step, ran int) string {
	var b strings.Builder
	for i, s := range steps {
		if ran > 0 && i >= ran {
			fmt.Fprintf(&b, "  (%d more steps drawn, not run)\n", len(steps)-ran)
			break
		}
		fmt.Fprintf(&b, "  %2d. %s\n", i+1, s)
	}
	return b.String()
}

// summarize renders a run for people: what ran, what the faults did, the
// operations by kind and outcome, and every verdict.
func summarize(res *Result) string {
	cfg := res.Config
	var b strings.Builder
	bug := "none"
	if cfg.PlantedBug != "" {
		bug = cfg.PlantedBug
	}
	fmt.Fprintf(&b, "=== jepsen %s: seed %d, %d nodes, %d workers at %.0f ops/s each, faults for %s, planted bug: %s\n",
		cfg.Name, cfg.Seed, cfg.Nodes, cfg.Workers, cfg.OpsPerSecond, cfg.Duration, bug)
	fmt.Fprintf(&b, "results: %s\n", res.Dir)
	t := res.Timings
	fmt.Fprintf(&b, "timings: start %s, faults %s, heal %s (recovery %s), settle %s, checks %s, total %s\n",
		r(t.Start), r(t.Faults), r(t.Heal), r(t.Recovery), r(t.Settle), r(t.Checks), r(t.Total))
	fmt.Fprintf(&b, "schedule (from seed %d):\n%s", cfg.Seed, scheduleText(res.Schedule, len(res.Faults)))
	fmt.Fprintf(&b, "faults injected (%d):\n", len(res.Faults))
	for _, f := range res.Faults {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	b.WriteString(opsTable(res.History))
	b.WriteString("verdicts:\n")
	for _, v := range res.Verdicts {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	if failed := res.Failed(); len(failed) > 0 {
		fmt.Fprintf(&b, "RESULT: FAIL (%s) after %s; reproduce the schedule with TOLLGATE_JEPSEN_SEED=%d\n",
			strings.Join(failed, ", "), r(t.Total), cfg.Seed)
	} else {
		fmt.Fprintf(&b, "RESULT: PASS, all %d checks, in %s\n", len(res.Verdicts), r(t.Total))
	}
	return b.String()
}

func r(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// opsTable counts operations by kind (reads by level) and status.
func opsTable(h checker.History) string {
	type row struct{ ok, fail, unknown, retries int }
	rows := map[string]*row{}
	order := []string{"consume", "read linearizable", "read leader", "read stale", "reserve", "commit", "release", "rate"}
	for _, op := range h.Ops {
		name := string(op.Kind)
		if op.Kind == checker.Read {
			name += " " + op.Level
		}
		x := rows[name]
		if x == nil {
			x = &row{}
			rows[name] = x
		}
		switch op.Status {
		case checker.OK:
			x.ok++
		case checker.Fail:
			x.fail++
		case checker.Unknown:
			x.unknown++
		}
		if op.Retry {
			x.retries++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "operations (%d): %-18s %7s %7s %7s %8s\n", len(h.Ops), "kind", "ok", "fail", "unknown", "re-sent")
	for _, name := range order {
		if x := rows[name]; x != nil {
			fmt.Fprintf(&b, "  %-32s %7d %7d %7d %8d\n", name, x.ok, x.fail, x.unknown, x.retries)
		}
	}
	return b.String()
}
