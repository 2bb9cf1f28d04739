package transport_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/tollgatetest"
)

// TestQuotaServiceAPI: pools through the API — a batch of consumers, an
// update that reallocates, listing in pages, delete, and bad input.
func TestQuotaServiceAPI(t *testing.T) {
	s := tollgatetest.StartServer(t, tollgatetest.Options{})
	c, err := client.New([]string{s.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for _, id := range []string{"b", "a"} {
		if _, err := c.Quotas.CreatePool(ctx, connect.NewRequest(&tollgatev1.CreatePoolRequest{Tenant: "acme",
			Pool: &tollgatev1.QuotaPool{Id: id, Resource: "requests", Capacity: "90", Strategy: tollgatev1.QuotaStrategy_QUOTA_STRATEGY_PROPORTIONAL}})); err != nil {
			t.Fatal(err)
		}
	}
	r, err := c.Quotas.AllocateBatch(ctx, connect.NewRequest(&tollgatev1.AllocateBatchRequest{Tenant: "acme", PoolId: "a",
		Consumers: []*tollgatev1.QuotaConsumer{{Id: "x"}, {Id: "y", Weight: 2}}}))
	if err != nil || r.Msg.State.Consumers[0].Allocated != "30" || r.Msg.State.Consumers[1].Allocated != "60" {
		t.Fatalf("batch: %v %v", r, err)
	}
	u, err := c.Quotas.UpdatePool(ctx, connect.NewRequest(&tollgatev1.UpdatePoolRequest{Tenant: "acme",
		Pool: &tollgatev1.QuotaPool{Id: "a", Capacity: "30"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"capacity"}}}))
	if err != nil || u.Msg.State.Consumers[0].Allocated != "10" || u.Msg.State.Consumers[1].Allocated != "20" {
		t.Fatalf("update: %v %v", u, err)
	}
	page, err := c.Quotas.ListPools(ctx, connect.NewRequest(&tollgatev1.ListPoolsRequest{Tenant: "acme", PageSize: 1}))
	if err != nil || len(page.Msg.Pools) != 1 || page.Msg.Pools[0].Pool.Id != "a" || page.Msg.NextPageToken == "" {
		t.Fatalf("first page: %v %v", page, err)
	}
	page, err = c.Quotas.ListPools(ctx, connect.NewRequest(&tollgatev1.ListPoolsRequest{Tenant: "acme", PageSize: 1, PageToken: page.Msg.NextPageToken}))
	if err != nil || len(page.Msg.Pools) != 1 || page.Msg.Pools[0].Pool.Id != "b" || page.Msg.NextPageToken != "" {
		t.Fatalf("second page: %v %v", page, err)
	}
	if _, err := c.Quotas.DeletePool(ctx, connect.NewRequest(&tollgatev1.DeletePoolRequest{Tenant: "acme", PoolId: "b"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Quotas.GetPool(ctx, connect.NewRequest(&tollgatev1.GetPoolRequest{Tenant: "acme", PoolId: "b"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("deleted pool: %v", err)
	}
	for _, bad := range []*tollgatev1.CreatePoolRequest{
		{Tenant: "acme", Pool: &tollgatev1.QuotaPool{Id: "c", Resource: "r", Capacity: "1"}},
		{Tenant: "acme", Pool: &tollgatev1.QuotaPool{Id: "c", Resource: "r", Capacity: "-1", Strategy: tollgatev1.QuotaStrategy_QUOTA_STRATEGY_FIXED}},
	} {
		if _, err := c.Quotas.CreatePool(ctx, connect.NewRequest(bad)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := c.Quotas.UpdatePool(ctx, connect.NewRequest(&tollgatev1.UpdatePoolRequest{Tenant: "acme", Pool: &tollgatev1.QuotaPool{Id: "a"}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("update without a mask: %v", err)
	}
}
