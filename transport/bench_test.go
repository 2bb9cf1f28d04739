package transport_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/tollgatetest"
)

// Benchmarks of one real node (Raft, bbolt fsync, h2c on loopback) through
// the Go SDK. Run: go test -run XXX -bench . -benchtime 5s ./transport/
// (-cpu sets GOMAXPROCS; b.SetParallelism(16) gives 16 callers per proc).

func BenchmarkConsume(b *testing.B) {
	s := tollgatetest.StartServer(b, tollgatetest.Options{})
	c := tollgatetest.NewClient(b, s)
	ctx := context.Background()
	if _, err := c.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Tenant: "bench", Budget: &tollgatev1.Budget{Id: "b", Amount: "1000000000", Currency: "USD"}})); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "bench", BudgetId: "b", Amount: "0.0125"}))
			if err != nil || !resp.Msg.Allowed {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func BenchmarkRateCheckBatch16(b *testing.B) {
	s := tollgatetest.StartServer(b, tollgatetest.Options{})
	c := tollgatetest.NewClient(b, s)
	ctx := context.Background()
	if _, err := c.RateLimits.CreatePolicy(ctx, connect.NewRequest(&tollgatev1.CreatePolicyRequest{
		Tenant: "bench", Policy: &tollgatev1.Policy{Id: "p", Algorithm: tollgatev1.Algorithm_ALGORITHM_TOKEN_BUCKET, Limit: 1000, Window: "1s"}})); err != nil {
		b.Fatal(err)
	}
	var key atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			items := make([]*tollgatev1.CheckBatchItem, 16)
			for i := range items {
				items[i] = &tollgatev1.CheckBatchItem{PolicyId: "p", Key: "k" + strconv.FormatInt(key.Add(1)%10000, 10)}
			}
			if _, err := c.RateLimits.CheckBatch(ctx, connect.NewRequest(&tollgatev1.CheckBatchRequest{Tenant: "bench", Items: items})); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "decisions/s")
}
