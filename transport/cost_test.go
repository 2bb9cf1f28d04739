package transport_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/tollgatetest"
)

// TestCostAnomalyThroughTheAPI: a detector set through CostService sees a
// day of steady hourly spend and one spike (recorded with a node clock that
// moves hour by hour), and AlertService lists exactly one COST_ANOMALY alert
// with the observed value, baseline and score; paging and bad input work.
func TestCostAnomalyThroughTheAPI(t *testing.T) {
	start := time.Date(2030, 3, 1, 0, 0, 0, 0, time.UTC)
	var nowNs atomic.Int64
	nowNs.Store(start.UnixNano())
	s := tollgatetest.StartServer(t, tollgatetest.Options{Clock: func() time.Time { return time.Unix(0, nowNs.Load()) }})
	c, err := client.New([]string{s.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	det := &tollgatev1.AnomalyDetector{Id: "llm-spikes", GroupBy: []string{"team"}, Bucket: tollgatev1.Bucket_BUCKET_HOUR,
		Window: 12, Threshold: "4.5", MinAmount: "1", Currency: "USD"}
	set, err := c.Costs.SetAnomalyDetector(ctx, connect.NewRequest(&tollgatev1.SetAnomalyDetectorRequest{Tenant: "acme", Detector: det}))
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Msg.Detector; got.Threshold != "4.5" || got.MinAmount != "1.00" || got.Window != 12 {
		t.Fatalf("detector back: %v", got)
	}
	for _, bad := range []struct {
		mutate func(d *tollgatev1.AnomalyDetector)
		want   string
	}{
		{func(d *tollgatev1.AnomalyDetector) { d.Threshold = "4.5001" }, "detector.threshold \"4.5001\" has more than 3 fractional digits"},
		{func(d *tollgatev1.AnomalyDetector) { d.Bucket = tollgatev1.Bucket_BUCKET_WEEK }, "detector.bucket must be BUCKET_HOUR or BUCKET_DAY"},
		{func(d *tollgatev1.AnomalyDetector) { d.Window = 1000 }, "detector.window must be between 3 and 336"},
	} {
		d := proto.Clone(det).(*tollgatev1.AnomalyDetector)
		bad.mutate(d)
		_, err := c.Costs.SetAnomalyDetector(ctx, connect.NewRequest(&tollgatev1.SetAnomalyDetectorRequest{Tenant: "acme", Detector: d}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want InvalidArgument %q", d, err, bad.want)
		}
	}

	// 20 hours of 10 USD, hour 16 at 80 USD, each hour recorded during the
	// hour; the clock then moves past the hour's end plus the 5 min skew.
	for i := 0; i < 20; i++ {
		hour := start.Add(time.Duration(i) * time.Hour)
		nowNs.Store(hour.Add(30 * time.Minute).UnixNano())
		amount := "10"
		if i == 16 {
			amount = "80"
		}
		if _, err := c.Costs.RecordCost(ctx, connect.NewRequest(&tollgatev1.RecordCostRequest{Tenant: "acme",
			Record: &tollgatev1.CostRecord{Amount: amount, Currency: "USD", Resource: "llm", Labels: map[string]string{"team": "ml"},
				OccurredAt: timestamppb.New(hour.Add(time.Minute))}})); err != nil {
			t.Fatal(err)
		}
	}
	nowNs.Store(start.Add(20*time.Hour + 6*time.Minute).UnixNano())
	// Detectors evaluate when an entry's log time passes a bucket's end:
	// write one now.
	if _, err := c.Costs.SetExchangeRates(ctx, connect.NewRequest(&tollgatev1.SetExchangeRatesRequest{
		Rates: []*tollgatev1.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.1"}}})); err != nil {
		t.Fatal(err)
	}
	list, err := c.Alerts.ListAlerts(ctx, connect.NewRequest(&tollgatev1.ListAlertsRequest{Tenant: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.Alerts) != 1 {
		t.Fatalf("%d alerts, want 1: %v", len(list.Msg.Alerts), list.Msg.Alerts)
	}
	a := list.Msg.Alerts[0]
	// Median 10, MAD 0: scale is a tenth of the median (1.00): score 70.
	if a.Kind != tollgatev1.AlertKind_ALERT_KIND_COST_ANOMALY || a.ObjectId != "llm-spikes" || a.Group[0] != "ml" ||
		!a.BucketStart.AsTime().Equal(start.Add(16*time.Hour)) || a.Observed != "80.00" || a.Baseline != "10.00" ||
		a.Mad != "0.00" || a.Score != "70" || a.Id != "a1" {
		t.Errorf("alert %v", a)
	}
	// Another tenant sees none; an unknown page token is refused.
	other, err := c.Alerts.ListAlerts(ctx, connect.NewRequest(&tollgatev1.ListAlertsRequest{Tenant: "globex"}))
	if err != nil || len(other.Msg.Alerts) != 0 {
		t.Errorf("other tenant: %v %v", other, err)
	}
	if _, err := c.Alerts.ListAlerts(ctx, connect.NewRequest(&tollgatev1.ListAlertsRequest{Tenant: "acme", PageToken: "zz"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("bad page token: %v", err)
	}
	dets, err := c.Costs.ListAnomalyDetectors(ctx, connect.NewRequest(&tollgatev1.ListAnomalyDetectorsRequest{Tenant: "acme"}))
	if err != nil || len(dets.Msg.Detectors) != 1 || dets.Msg.Detectors[0].Id != "llm-spikes" {
		t.Errorf("list detectors: %v %v", dets, err)
	}
	if _, err := c.Costs.DeleteAnomalyDetector(ctx, connect.NewRequest(&tollgatev1.DeleteAnomalyDetectorRequest{Tenant: "acme", DetectorId: "llm-spikes"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Costs.DeleteAnomalyDetector(ctx, connect.NewRequest(&tollgatev1.DeleteAnomalyDetectorRequest{Tenant: "acme", DetectorId: "llm-spikes"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("second delete: %v, want NotFound", err)
	}
}
