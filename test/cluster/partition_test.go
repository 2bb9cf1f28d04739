package cluster_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// These tests put every node in its own network namespace and cut links with
// blackhole routes (checked with a real TCP probe), so a partition is a
// partition, not a switch inside tollgate.

func read(ctx context.Context, c *client.Client, level tollgatev1.Consistency, maxStale string) (*tollgatev1.GetBudgetResponse, error) {
	resp, err := c.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{
		Tenant: tenant, BudgetId: "b", Consistency: level, MaxStaleness: maxStale}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func singleTry(t *testing.T, n *procs.Node) *client.Client {
	t.Helper()
	c, err := client.New([]string{n.APIAddr}, client.WithoutRetries(), client.WithRequestTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func mustCut(t *testing.T, c *procs.Cluster, from *procs.Node, to ...*procs.Node) {
	t.Helper()
	for _, o := range to {
		if c.Reachable(from, o.RaftAddr) {
			t.Fatalf("the cut from %s to %s lets TCP through", from.ID, o.ID)
		}
	}
}

// Acceptance 4a: a STALE read on a partitioned follower reports how stale
// it is, and refuses once that exceeds max_staleness.
func TestStaleReadOnPartitionedFollower(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{Netns: true})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	admin := mustClient(t, c.APIAddrs())
	createBudget(t, admin, tenant, "b", "100")
	follower := others(c, leader)[0]
	fc := singleTry(t, follower)
	ctx := context.Background()

	if !procs.Poll(5*time.Second, 20*time.Millisecond, func() bool {
		r, err := read(ctx, fc, tollgatev1.Consistency_CONSISTENCY_STALE, "1s")
		return err == nil && r.ReadInfo.Staleness.AsDuration() < time.Second && r.ReadInfo.NodeId == follower.ID
	}) {
		t.Fatal("a connected follower's stale read is not fresh")
	}

	if !c.Reachable(follower, leader.RaftAddr) {
		t.Fatal("probe: the follower cannot reach the leader before the cut")
	}
	c.Isolate(follower)
	mustCut(t, c, follower, others(c, follower)...)
	if _, err := admin.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "7"})); err != nil {
		t.Fatal(err)
	}

	// Unbounded: answers from the old state and says how old it is.
	var last *tollgatev1.GetBudgetResponse
	if !procs.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		r, err := read(ctx, fc, tollgatev1.Consistency_CONSISTENCY_STALE, "")
		last = r
		return err == nil && r.ReadInfo.Staleness.AsDuration() > 1500*time.Millisecond
	}) {
		t.Fatalf("the cut-off follower's staleness does not grow: %v", last)
	}
	if last.Spent != "0.00" {
		t.Fatalf("the cut-off follower saw the write made after the cut: spent %s", last.Spent)
	}
	// Bounded: refused.
	_, err := read(ctx, fc, tollgatev1.Consistency_CONSISTENCY_STALE, "1s")
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "max_staleness") {
		t.Fatalf("stale read beyond max_staleness: %v; want Unavailable naming max_staleness", err)
	}
	// Linearizable on the cut-off follower: it cannot reach the leader.
	if _, err := read(ctx, fc, tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, ""); err == nil {
		t.Fatal("a linearizable read succeeded on a follower cut off from the leader")
	}

	c.Heal()
	if !procs.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		r, err := read(ctx, fc, tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, "")
		return err == nil && r.Spent == "7.00"
	}) {
		t.Fatal("after healing, the follower does not serve the write linearizably")
	}
	c.WaitConverged(30*time.Second, c.Nodes...)
}

// Acceptance 4b: a leader cut off from the others is deposed; a linearizable
// read sent to it never returns a value older than a write the new leader
// acknowledged.
func TestLinearizableReadOnDeposedLeader(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{Netns: true})
	c.StartAll()
	old := c.WaitLeader(30 * time.Second)
	admin := mustClient(t, c.APIAddrs())
	createBudget(t, admin, tenant, "b", "100")
	oc := singleTry(t, old)
	ctx := context.Background()
	if r, err := read(ctx, oc, tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, ""); err != nil || r.Spent != "0.00" {
		t.Fatalf("linearizable read on the leader before the cut: %v %v", r, err)
	}

	c.Isolate(old)
	mustCut(t, c, old, others(c, old)...)
	majority := mustClient(t, c.APIAddrs(others(c, old)...))
	// The majority elects a new leader and acknowledges a write.
	var acked bool
	procs.Poll(15*time.Second, 50*time.Millisecond, func() bool {
		resp, err := majority.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "5", RequestId: "after-cut"}))
		acked = err == nil && resp.Msg.Allowed
		return acked
	})
	if !acked {
		t.Fatal("the majority side did not acknowledge a write")
	}
	// Reads on the deposed leader must not return the pre-write state.
	for _, level := range []tollgatev1.Consistency{tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, tollgatev1.Consistency_CONSISTENCY_LEADER} {
		r, err := read(ctx, oc, level, "")
		if err == nil {
			t.Fatalf("%s read on the deposed, isolated leader answered spent %s after the majority acknowledged 5.00", level, r.Spent)
		}
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != connect.CodeUnavailable {
			t.Fatalf("%s read on the deposed leader: %v; want Unavailable", level, err)
		}
	}
	c.Heal()
	if !procs.Poll(15*time.Second, 50*time.Millisecond, func() bool {
		r, err := read(ctx, oc, tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, "")
		return err == nil && r.Spent == "5.00"
	}) {
		t.Fatal("after healing, the old leader does not serve the new write")
	}
	c.WaitConverged(30*time.Second, c.Nodes...)
}
