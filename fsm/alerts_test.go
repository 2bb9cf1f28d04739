package fsm_test

import (
	"fmt"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func alertSummary(as []fsm.Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, fmt.Sprintf("%s:%d:%s:%d:%v", a.ID, a.Kind, a.Object, a.Percent, a.Group))
	}
	return out
}

// TestAlertsRaisedOnce ([quotas] alerts): budget thresholds, a SOFT budget's
// first would-deny, and a quota consumer's exhaustion raise one alert each
// per object, threshold and period; a new period raises them again.
func TestAlertsRaisedOnce(t *testing.T) {
	h := newHarness(t)
	day := spec("daily", usd(t, "10"))
	day.Period, day.Enforcement, day.Thresholds = fsm.PeriodDay, fsm.EnforcementSoft, []uint32{50, 100}
	h.create(t0, day)
	for i := 0; i < 4; i++ {
		h.consume(t0, "daily", usd(t, "4")) // 4, 8 (50 %), 12 (100 %, would deny), 16 (would deny again)
	}
	h.quota(t0, pool("gpu", usd(t, "10"), fsm.PeriodDay, "UTC", fsm.StrategyProportional))
	h.quota(t0, &fsm.SetQuotaConsumer{Tenant: tenant, PoolID: "gpu", Consumer: fsm.QuotaConsumerSpec{ID: "a", Weight: 1}})
	for i := 0; i < 3; i++ {
		h.quota(t0, &fsm.QuotaConsume{Tenant: tenant, PoolID: "gpu", ConsumerID: "a", AmountMicros: usd(t, "5")}) // 5, 10 (exhausted), denied
	}
	want := "[a1:1:daily:50:[] a2:1:daily:100:[] a3:2:daily:0:[] a4:3:gpu:0:[a]]"
	if got := fmt.Sprint(alertSummary(h.alerts(t0))); got != want {
		t.Fatalf("alerts %s, want %s", got, want)
	}
	// The next day starts over.
	next := t0 + dayMs
	h.consume(next, "daily", usd(t, "11"))
	h.quota(next, &fsm.QuotaConsume{Tenant: tenant, PoolID: "gpu", ConsumerID: "a", AmountMicros: usd(t, "10")})
	want = "[a1:1:daily:50:[] a2:1:daily:100:[] a3:2:daily:0:[] a4:3:gpu:0:[a] a5:1:daily:50:[] a6:1:daily:100:[] a7:2:daily:0:[] a8:3:gpu:0:[a]]"
	if got := fmt.Sprint(alertSummary(h.alerts(next))); got != want {
		t.Fatalf("next day: alerts %s, want %s", got, want)
	}
}

// TestAlertAckResolve: OPEN -> ACKNOWLEDGED -> RESOLVED with who and when;
// wrong moves are FailedPrecondition, unknown alerts NotFound, and another
// tenant cannot touch them.
func TestAlertAckResolve(t *testing.T) {
	h := newHarness(t)
	b := spec("b", usd(t, "10"))
	b.Thresholds = []uint32{50}
	h.create(t0, b)
	h.consume(t0, "b", usd(t, "6"))
	r := h.ok(t0+1000, &fsm.AckAlert{Tenant: tenant, AlertID: "a1", By: "alice"})
	if r.Alert.State != fsm.AlertAcknowledged || r.Alert.AckedBy != "alice" || r.Alert.AckedAtMs != t0+1000 {
		t.Fatalf("ack: %+v", r.Alert)
	}
	h.fail(t0, &fsm.AckAlert{Tenant: tenant, AlertID: "a1", By: "bob"}, fsm.CodeFailedPrecondition)
	r = h.ok(t0+2000, &fsm.AckAlert{Tenant: tenant, AlertID: "a1", By: "bob", Resolve: true})
	if r.Alert.State != fsm.AlertResolved || r.Alert.ResolvedBy != "bob" || r.Alert.AckedBy != "alice" {
		t.Fatalf("resolve: %+v", r.Alert)
	}
	h.fail(t0, &fsm.AckAlert{Tenant: tenant, AlertID: "a1", By: "carol", Resolve: true}, fsm.CodeFailedPrecondition)
	h.fail(t0, &fsm.AckAlert{Tenant: tenant, AlertID: "a9", By: "carol"}, fsm.CodeNotFound)
	h.fail(t0, &fsm.AckAlert{Tenant: "other", AlertID: "a1", By: "mallory"}, fsm.CodeNotFound)
	if err := fsm.Validate(&fsm.AckAlert{Tenant: tenant, AlertID: "x1", By: "a"}); err == nil {
		t.Error("a malformed alert id was accepted")
	}
	if c := h.restoredCopy(); c.hash() != h.hash() {
		t.Error("restored copy differs")
	}
}
