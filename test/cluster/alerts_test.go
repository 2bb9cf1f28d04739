package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// TestWatchAlertsAcrossLeaderChangeAndReconnect ([quotas] acceptance 4): a
// client watches alerts on a follower while alerts are raised, leadership
// moves, and the node it watches is killed; it reconnects to another node
// from the last seq it saw and ends with every alert exactly once, in order.
func TestWatchAlertsAcrossLeaderChangeAndReconnect(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	ctx := context.Background()
	admin := mustClient(t, c.APIAddrs())
	// Three budgets with 5 thresholds each: 15 alerts, 5 per phase.
	for i := 0; i < 3; i++ {
		if _, err := admin.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{Tenant: tenant,
			Budget: &tollgatev1.Budget{Id: fmt.Sprintf("b%d", i), Amount: "10", Currency: "USD", ThresholdsPercent: []uint32{20, 40, 60, 80, 100}}})); err != nil {
			t.Fatal(err)
		}
	}
	raise := func(budget string) {
		t.Helper()
		for k := 0; k < 5; k++ {
			if _, err := admin.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: budget, Amount: "2"})); err != nil {
				t.Fatal(err)
			}
		}
	}

	got := make(chan uint64, 100)
	watch := func(n *procs.Node, after uint64) (context.CancelFunc, <-chan error) {
		cl, err := client.New([]string{n.APIAddr})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			defer cl.Close()
			stream, err := cl.Alerts.WatchAlerts(wctx, connect.NewRequest(&tollgatev1.WatchAlertsRequest{Tenant: tenant, AfterSeq: after}))
			if err != nil {
				done <- err
				return
			}
			for stream.Receive() {
				got <- stream.Msg().Alert.Seq
			}
			done <- stream.Err()
		}()
		return cancel, done
	}
	var seen []uint64
	collect := func(want int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for len(seen) < want {
			select {
			case s := <-got:
				seen = append(seen, s)
			case <-deadline:
				t.Fatalf("saw %v, want %d alerts", seen, want)
			}
		}
	}

	watched := others(c, leader)[0]
	cancel, done := watch(watched, 0)
	raise("b0")
	collect(5)
	// Leadership moves (to the watched node, if it can).
	if _, err := admin.Cluster.TransferLeadership(ctx, connect.NewRequest(&tollgatev1.TransferLeadershipRequest{Id: watched.ID})); err != nil {
		t.Fatal(err)
	}
	c.WaitLeader(30 * time.Second)
	raise("b1")
	collect(10)
	// The watched node dies: the stream ends; resume elsewhere from the last
	// seq seen.
	c.Kill(watched)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not end when its node died")
	}
	cancel()
	rest := others(c, watched)[0]
	admin = mustClient(t, c.APIAddrs(others(c, watched)...))
	c.WaitLeader(30 * time.Second)
	cancel, _ = watch(rest, seen[len(seen)-1])
	defer cancel()
	raise("b2")
	collect(15)
	// Nothing more arrives: no repeats.
	select {
	case s := <-got:
		t.Fatalf("an extra alert %d after %v", s, seen)
	case <-time.After(500 * time.Millisecond):
	}
	for i, s := range seen {
		if s != uint64(i+1) {
			t.Fatalf("alerts seen %v, want 1..15 in order", seen)
		}
	}
}
