package fsm_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func (h *harness) alerts(nowMs int64) []fsm.Alert {
	h.t.Helper()
	var out []fsm.Alert
	if _, err := h.m.Read(nowMs, func(v fsm.View) error {
		out, _ = v.Alerts(tenant, 0, 0, 1000)
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// hourly records one record per hour per team from start for n hours, the
// amount given by spend(team, hour index), applying each hour's records in
// an entry stamped just after that hour (so detectors evaluate as they go).
func (h *harness) hourly(start int64, n int, teams []string, spend func(team string, i int) string) int64 {
	h.t.Helper()
	now := start
	for i := 0; i < n; i++ {
		at := start + int64(i)*hourMs
		var costs []fsm.CostSpec
		for _, team := range teams {
			costs = append(costs, cost(h.t, spend(team, i), "USD", "llm", at+60_000, "team", team))
		}
		now = at + hourMs/2
		h.record(now, costs...)
	}
	// Let the last hour close and be evaluated.
	now = start + int64(n)*hourMs + fsm.CostFutureSkewMs
	h.apply(now, &fsm.Noop{})
	return now
}

func detector(id string, groupBy ...string) *fsm.SetAnomalyDetector {
	return &fsm.SetAnomalyDetector{Tenant: tenant, Detector: fsm.AnomalyDetector{ID: id, GroupBy: groupBy, Bucket: fsm.BucketHour,
		Window: 24, ThresholdMilli: 5000, MinAmountMicros: 1_000_000, Currency: "USD"}}
}

// TestAnomalySpikeIsFlaggedOnce ([cost] acceptance 4): a day of steady
// hourly spend with noise, then one hour at 10x for one team: exactly one
// alert, for that team and hour, with the observed value, the baseline
// (median) and the score; the other team and the steady hours raise none,
// and later entries do not raise it again.
func TestAnomalySpikeIsFlaggedOnce(t *testing.T) {
	h := newHarness(t)
	start := t0 - t0%hourMs
	h.ok(start, detector("per-team", "team"))
	noise := []string{"10.00", "10.40", "9.70", "10.10", "9.90", "10.30", "9.80"}
	spike := 30
	now := h.hourly(start, 40, []string{"ml", "web"}, func(team string, i int) string {
		if team == "ml" && i == spike {
			return "100.00"
		}
		return noise[i%len(noise)]
	})
	got := h.alerts(now)
	if len(got) != 1 {
		t.Fatalf("%d alerts, want 1: %+v", len(got), got)
	}
	a := got[0]
	if a.Kind != fsm.AlertCostAnomaly || a.Object != "per-team" || fmt.Sprint(a.Group) != "[ml]" ||
		a.BucketStartMs != start+int64(spike)*hourMs || a.ObservedMicros != usd(t, "100") || a.BaselineMicros != usd(t, "10.00") {
		t.Fatalf("alert %+v", a)
	}
	// median 10.00; MAD 0.20 (x1.4826 = 0.29652) is below a tenth of the
	// median, so the scale is 1.00: score (100 - 10) / 1 = 90.
	if a.MADMicros != usd(t, "0.2") || a.ScoreMilli != 90_000 {
		t.Errorf("mad %d score %d, want 0.2 and 90.000", a.MADMicros, a.ScoreMilli)
	}
	// Nothing is evaluated twice.
	h.apply(now+10*hourMs, &fsm.Noop{})
	if n := len(h.alerts(now + 10*hourMs)); n != 1 {
		t.Errorf("%d alerts after more entries, want still 1", n)
	}
	// A restored copy has the alert and its evaluation marks: it raises
	// nothing new either, and hashes the same.
	c := h.restoredCopy()
	if c.hash() != h.hash() || len(c.alerts(now+10*hourMs)) != 1 {
		t.Error("restored copy differs")
	}
}

// TestAnomalySteadyAndGrowingSpendIsNot: steady spend, and spend growing
// 2 % an hour for two days, raise no alert.
func TestAnomalySteadyAndGrowingSpendIsNot(t *testing.T) {
	h := newHarness(t)
	start := t0 - t0%hourMs
	h.ok(start, detector("per-team", "team"))
	now := h.hourly(start, 48, []string{"steady", "growing"}, func(team string, i int) string {
		if team == "steady" {
			return "25.00"
		}
		micros := int64(10_000_000)
		for range i {
			micros = micros * 102 / 100
		}
		return fsm.FormatAmount(micros, 0)
	})
	if got := h.alerts(now); len(got) != 0 {
		t.Errorf("alerts for steady or slowly growing spend: %+v", got)
	}
}

// TestAnomalyNeedsHistoryAndMinAmount: a new group with no history and a
// spike below the minimum amount raise nothing; a detector's bad settings
// are InvalidArgument naming the field.
func TestAnomalyNeedsHistoryAndMinAmount(t *testing.T) {
	h := newHarness(t)
	start := t0 - t0%hourMs
	d := detector("per-team", "team")
	d.Detector.MinAmountMicros = usd(t, "500")
	h.ok(start, d)
	now := h.hourly(start, 30, []string{"ml"}, func(_ string, i int) string {
		if i == 20 {
			return "100.00" // 10x, but below 500
		}
		return "10.00"
	})
	// A team appearing for the first time with a large amount.
	h.record(now, cost(t, "10000", "USD", "llm", now, "team", "new"))
	h.apply(now+2*hourMs, &fsm.Noop{})
	if got := h.alerts(now + 2*hourMs); len(got) != 0 {
		t.Errorf("alerts: %+v", got)
	}
	for _, tc := range []struct {
		mutate func(*fsm.AnomalyDetector)
		want   string
	}{
		{func(d *fsm.AnomalyDetector) { d.Window = 2 }, "detector.window"},
		{func(d *fsm.AnomalyDetector) { d.Bucket = fsm.BucketWeek }, "detector.bucket"},
		{func(d *fsm.AnomalyDetector) { d.ThresholdMilli = 500 }, "detector.threshold"},
		{func(d *fsm.AnomalyDetector) { d.Currency = "usd" }, "detector.currency"},
		{func(d *fsm.AnomalyDetector) { d.GroupBy = []string{"team", "team"} }, "appears twice"},
	} {
		c := detector("bad")
		tc.mutate(&c.Detector)
		if err := fsm.Validate(c); err == nil || !strings.Contains(err.Message, tc.want) {
			t.Errorf("%+v: %v, want %q", c.Detector, err, tc.want)
		}
	}
}
