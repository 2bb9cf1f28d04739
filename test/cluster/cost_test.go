package cluster_test

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// TestCostRecordsAcrossNodes ([cost] acceptance 2, on 3 processes): cost
// batches sent through every node, each batch sent twice with its request
// id, are recorded once; the budget its selector matches is charged exactly;
// and every node reports the same totals, equal to the exact sum.
func TestCostRecordsAcrossNodes(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{})
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	ctx := context.Background()
	admin := mustClient(t, c.APIAddrs())
	if _, err := admin.Costs.SetExchangeRates(ctx, connect.NewRequest(&tollgatev1.SetExchangeRatesRequest{
		Rates: []*tollgatev1.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.0837"}, {From: "JPY", To: "USD", Rate: "0.0067"}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{Tenant: tenant,
		Budget: &tollgatev1.Budget{Id: "ml", Amount: "1000000", Currency: "USD",
			Selector: &tollgatev1.LabelSelector{Match: []*tollgatev1.LabelRequirement{{Key: "team", Values: []string{"ml"}}}}}})); err != nil {
		t.Fatal(err)
	}

	rates := map[string]string{"USD": "1", "EUR": "1.0837", "JPY": "0.0067"}
	sums := map[string]map[string]*big.Int{} // team -> currency -> micros
	charged := new(big.Int)
	mlRecords := 0
	rng := rand.New(rand.NewPCG(7, 7))
	now := time.Now()
	for b := 0; b < 30; b++ {
		req := &tollgatev1.RecordCostBatchRequest{Tenant: tenant, RequestId: fmt.Sprintf("batch-%d", b)}
		for i := 0; i < 50; i++ {
			cur := []string{"USD", "EUR", "JPY"}[rng.IntN(3)]
			team := []string{"ml", "web"}[rng.IntN(2)]
			micros := rng.Int64N(100_000_000) + 1
			req.Records = append(req.Records, &tollgatev1.CostRecord{Amount: fsm.FormatAmount(micros, 0), Currency: cur,
				Resource: "llm", Labels: map[string]string{"team": team}, OccurredAt: timestamppb.New(now.Add(-time.Duration(rng.IntN(3600)) * time.Second))})
			if sums[team] == nil {
				sums[team] = map[string]*big.Int{}
			}
			if sums[team][cur] == nil {
				sums[team][cur] = new(big.Int)
			}
			sums[team][cur].Add(sums[team][cur], big.NewInt(micros))
			if team == "ml" {
				mlRecords++
				charged.Add(charged, halfEvenMicros(big.NewInt(micros), rates[cur]))
			}
		}
		// Through one node, then again (a retry after a lost reply) through
		// another: the second is a replay.
		first := mustClient(t, c.APIAddrs(c.Nodes[b%3]))
		second := mustClient(t, c.APIAddrs(c.Nodes[(b+1)%3]))
		r1, err := first.Costs.RecordCostBatch(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := second.Costs.RecordCostBatch(ctx, connect.NewRequest(proto.Clone(req).(*tollgatev1.RecordCostBatchRequest)))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("c%d-", r1.Msg.LogIndex); !strings.HasPrefix(r1.Msg.Results[49].RecordId, want) ||
			r2.Msg.Results[49].RecordId != r1.Msg.Results[49].RecordId || r2.Msg.LogIndex != r1.Msg.LogIndex {
			t.Fatalf("batch %d retried: %s at %d, first %s at %d", b, r2.Msg.Results[0].RecordId, r2.Msg.LogIndex,
				r1.Msg.Results[0].RecordId, r1.Msg.LogIndex)
		}
	}
	c.WaitConverged(30*time.Second, c.Nodes...)

	want := map[string]string{}
	for team, byCur := range sums {
		total := new(big.Int)
		for cur, s := range byCur {
			total.Add(total, halfEvenMicros(s, rates[cur]))
		}
		want[team] = fsm.FormatAmount(total.Int64(), 2)
	}
	var reports []string
	for _, n := range c.Nodes {
		cl := mustClient(t, c.APIAddrs(n))
		resp, err := cl.Costs.Report(ctx, connect.NewRequest(&tollgatev1.ReportRequest{Tenant: tenant,
			From: timestamppb.New(now.Add(-2 * time.Hour)), To: timestamppb.New(now.Add(time.Hour)), GroupBy: []string{"team"},
			Bucket: tollgatev1.Bucket_BUCKET_ALL, Currency: "USD", Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		var count uint64
		for _, r := range resp.Msg.Rows {
			got[r.Group[0]] = r.Amount
			count += r.Count
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || count != 30*50 {
			t.Errorf("node %s reports %v over %d records, want %v over 1500", n.ID, got, count, want)
		}
		reports = append(reports, fmt.Sprint(resp.Msg.Rows))
		// The raw records, on this node's disk: every ml record once, in
		// occurred_at order, each with its charge.
		var listed int
		var last time.Time
		token := ""
		for {
			page, err := cl.Costs.ListCosts(ctx, connect.NewRequest(&tollgatev1.ListCostsRequest{Tenant: tenant,
				From: timestamppb.New(now.Add(-2 * time.Hour)), To: timestamppb.New(now.Add(time.Hour)), PageSize: 1000, PageToken: token,
				Filter:      &tollgatev1.LabelSelector{Match: []*tollgatev1.LabelRequirement{{Key: "team", Values: []string{"ml"}}}},
				Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
			if err != nil {
				t.Fatal(err)
			}
			for _, sc := range page.Msg.Costs {
				if at := sc.Record.OccurredAt.AsTime(); at.Before(last) || len(sc.Charges) != 1 || sc.Charges[0].BudgetId != "ml" {
					t.Fatalf("node %s lists %v out of order or without its charge", n.ID, sc)
				}
				last = sc.Record.OccurredAt.AsTime()
			}
			listed += len(page.Msg.Costs)
			if token = page.Msg.NextPageToken; token == "" {
				break
			}
		}
		if listed != mlRecords {
			t.Errorf("node %s lists %d ml records, want %d", n.ID, listed, mlRecords)
		}
		b, err := cl.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: tenant, BudgetId: "ml",
			Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
		if err != nil {
			t.Fatal(err)
		}
		if wantSpent := fsm.FormatAmount(charged.Int64(), 2); b.Msg.Spent != wantSpent {
			t.Errorf("node %s: ml spent %s, want exactly %s", n.ID, b.Msg.Spent, wantSpent)
		}
	}
	for i := 1; i < len(reports); i++ {
		if reports[i] != reports[0] {
			t.Errorf("node %s's report differs from node %s's", c.Nodes[i].ID, c.Nodes[0].ID)
		}
	}
}

// halfEvenMicros is micros × rate rounded half to even, computed apart from
// fsm with big.Rat.
func halfEvenMicros(micros *big.Int, rate string) *big.Int {
	r, _ := new(big.Rat).SetString(rate)
	x := new(big.Rat).Mul(new(big.Rat).SetInt(micros), r)
	fl := new(big.Int).Quo(x.Num(), x.Denom())
	switch new(big.Rat).Sub(x, new(big.Rat).SetInt(fl)).Cmp(big.NewRat(1, 2)) {
	case 1:
		fl.Add(fl, big.NewInt(1))
	case 0:
		if fl.Bit(0) == 1 {
			fl.Add(fl, big.NewInt(1))
		}
	}
	return fl
}
