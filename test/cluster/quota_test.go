package cluster_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// TestQuotaConcurrentConsumers ([quotas] acceptance 3, on 3 processes): 32
// clients spread over every node consume one allocation at once; exactly
// as many consumes are allowed as fit it, the usage equals their sum and
// never passes the allocation, on every node.
func TestQuotaConcurrentConsumers(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{})
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	ctx := context.Background()
	admin := mustClient(t, c.APIAddrs())
	if _, err := admin.Quotas.CreatePool(ctx, connect.NewRequest(&tollgatev1.CreatePoolRequest{Tenant: tenant,
		Pool: &tollgatev1.QuotaPool{Id: "gpu", Resource: "gpu-hours", Capacity: "100", Strategy: tollgatev1.QuotaStrategy_QUOTA_STRATEGY_FAIR_SHARE}})); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"team-a", "team-b"} {
		if _, err := admin.Quotas.SetConsumer(ctx, connect.NewRequest(&tollgatev1.SetConsumerRequest{Tenant: tenant, PoolId: "gpu",
			Consumer: &tollgatev1.QuotaConsumer{Id: id, Weight: 1}})); err != nil {
			t.Fatal(err)
		}
	}
	// team-a needs 30: it gets 30, team-b the other 70.
	for id, demand := range map[string]string{"team-a": "30", "team-b": "500"} {
		if _, err := admin.Quotas.SetDemand(ctx, connect.NewRequest(&tollgatev1.SetDemandRequest{Tenant: tenant, PoolId: "gpu",
			ConsumerId: id, Demand: demand})); err != nil {
			t.Fatal(err)
		}
	}
	const clients, per = 32, 10 // 320 tries of 0.7 against 70: 100 fit
	var allowed, denied atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		cl := mustClient(t, c.APIAddrs(c.Nodes[w%3]))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				r, err := cl.Quotas.Consume(ctx, connect.NewRequest(&tollgatev1.QuotaServiceConsumeRequest{Tenant: tenant, PoolId: "gpu",
					ConsumerId: "team-b", Amount: "0.7"}))
				if err != nil {
					t.Errorf("consume: %v", err)
					return
				}
				if r.Msg.Allowed {
					allowed.Add(1)
				} else {
					denied.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 100 || denied.Load() != clients*per-100 {
		t.Fatalf("%d allowed and %d denied, want 100 and %d", allowed.Load(), denied.Load(), clients*per-100)
	}
	c.WaitConverged(30*time.Second, c.Nodes...)
	for _, n := range c.Nodes {
		resp, err := mustClient(t, c.APIAddrs(n)).Quotas.GetPool(ctx, connect.NewRequest(&tollgatev1.GetPoolRequest{Tenant: tenant, PoolId: "gpu",
			Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join([]string{resp.Msg.State.Consumers[0].Allocated, resp.Msg.State.Consumers[1].Allocated, resp.Msg.State.Consumers[1].Used}, " ")
		if got != "30 70 70" {
			t.Errorf("node %s: allocations and team-b's use %s, want 30 70 70", n.ID, got)
		}
	}
}
