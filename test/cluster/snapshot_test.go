package cluster_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/test/procs"
)

// A snapshot saved from one cluster and restored onto a fresh one gives the
// identical state (same state hash on every node of the new cluster), and
// the new cluster goes on deciding from it.
func TestSnapshotRestoreOntoFreshCluster(t *testing.T) {
	ctx := context.Background()
	a := procs.NewCluster(t, 3, procs.Options{})
	a.StartAll()
	leaderA := a.WaitLeader(30 * time.Second)
	ca := mustClient(t, a.APIAddrs())
	createBudget(t, ca, tenant, "b", "100")
	for i := 0; i < 25; i++ {
		if _, err := ca.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "2"})); err != nil {
			t.Fatal(err)
		}
	}
	hashA, _ := a.WaitConverged(30*time.Second, a.Nodes...)

	save, err := tollgatev1connect.NewClusterServiceClient(http.DefaultClient, "http://"+leaderA.APIAddr).
		SnapshotSave(ctx, connect.NewRequest(&tollgatev1.SnapshotSaveRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	for save.Receive() {
		snap.Write(save.Msg().Chunk)
	}
	if err := save.Err(); err != nil {
		t.Fatal(err)
	}

	b := procs.NewCluster(t, 3, procs.Options{})
	b.StartAll()
	leaderB := b.WaitLeader(30 * time.Second)
	up := tollgatev1connect.NewClusterServiceClient(http.DefaultClient, "http://"+leaderB.APIAddr).SnapshotRestore(ctx)
	for off := 0; off < snap.Len(); off += 1 << 20 {
		if err := up.Send(&tollgatev1.SnapshotRestoreRequest{Chunk: snap.Bytes()[off:min(off+1<<20, snap.Len())]}); err != nil {
			t.Fatal(err)
		}
	}
	restored, err := up.CloseAndReceive()
	if err != nil {
		t.Fatal(err)
	}
	if restored.Msg.StateHash != hashA {
		t.Fatalf("restored state hash %s, source cluster %s", restored.Msg.StateHash, hashA)
	}
	hashB, _ := b.WaitConverged(30*time.Second, b.Nodes...)
	if hashB != hashA {
		t.Fatalf("fresh cluster converged on %s, source %s", hashB, hashA)
	}
	cb := mustClient(t, b.APIAddrs())
	if got := getBudget(t, cb, tenant, "b"); got.Spent != "50.00" {
		t.Fatalf("spent %s on the restored cluster, want 50.00", got.Spent)
	}
	resp, err := cb.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "60"}))
	if err != nil || resp.Msg.Allowed {
		t.Fatalf("a consume past the restored budget: %v %v; want denied", resp, err)
	}
}
