package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// Acceptance 3: a follower that was down while the leader compacted its log
// catches up by snapshot install and ends with the same state hash.
func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	const trailing = 16
	c := procs.NewCluster(t, 3, procs.Options{Extra: []string{
		"--snapshot-threshold", "32", "--snapshot-interval", "20ms", "--trailing-logs", fmt.Sprint(trailing)}})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	admin := mustClient(t, c.APIAddrs())
	createBudget(t, admin, tenant, "b", "1000000")

	lagger := others(c, leader)[0]
	st, err := c.Status(lagger, false, false)
	if err != nil {
		t.Fatal(err)
	}
	laggerLast := st.LastLogIndex
	c.Kill(lagger)

	live := mustClient(t, c.APIAddrs(others(c, lagger)...))
	for i := 0; i < 300; i++ {
		if _, err := live.Budgets.Consume(context.Background(), connect.NewRequest(&tollgatev1.ConsumeRequest{
			Tenant: tenant, BudgetId: "b", Amount: "1"})); err != nil {
			t.Fatal(err)
		}
	}
	// The entries the lagger misses must be gone from the leader's log.
	if !procs.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		ls, err := c.Status(c.Leader(), false, false)
		return err == nil && ls.LastSnapshotIndex > laggerLast+trailing+1
	}) {
		t.Fatal("the leader did not compact its log past the lagging follower")
	}
	restoresBefore := 0.0
	c.Start(lagger)
	c.WaitConverged(30*time.Second, c.Nodes...)
	if got := metric(t, lagger, "tollgate_snapshot_restores_total"); got <= restoresBefore {
		t.Fatalf("the lagging follower restored %v snapshots; it must have installed the leader's", got)
	}
	ctx := context.Background()
	resp, err := mustClient(t, c.APIAddrs(lagger)).Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{
		Tenant: tenant, BudgetId: "b", Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
	if err != nil || resp.Msg.Spent != "300.00" {
		t.Fatalf("stale read on the caught-up follower: %v %v", resp, err)
	}
}

// Acceptance 5: all nodes SIGKILLed, then started: every acknowledged
// consume, hold and idempotency record is still there.
func TestFullClusterRestart(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{})
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	cl := mustClient(t, c.APIAddrs())
	ctx := context.Background()
	createBudget(t, cl, tenant, "b", "100")
	first := map[string]*tollgatev1.ConsumeResponse{}
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("c-%d", i)
		resp, err := cl.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "1.5", RequestId: id}))
		if err != nil {
			t.Fatal(err)
		}
		first[id] = resp.Msg
	}
	hold, err := cl.Budgets.Reserve(ctx, connect.NewRequest(&tollgatev1.ReserveRequest{Tenant: tenant, BudgetId: "b", Amount: "10", Ttl: "1h", RequestId: "hold-1"}))
	if err != nil || !hold.Msg.Allowed {
		t.Fatalf("reserve: %v %v", hold, err)
	}
	for _, n := range c.Nodes {
		c.Kill(n)
		// Restart without --join: a server remembers the pool it was in.
		n.Args = withoutFlag(n.Args, "--join")
	}
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	cl = mustClient(t, c.APIAddrs())

	got := getBudget(t, cl, tenant, "b")
	if got.Spent != "60.00" || got.Held != "10.00" || got.ActiveHolds != 1 || got.Remaining != "30.00" {
		t.Fatalf("after a full restart: spent %s held %s (%d holds) remaining %s; want 60.00, 10.00 (1), 30.00",
			got.Spent, got.Held, got.ActiveHolds, got.Remaining)
	}
	for id, want := range first {
		resp, err := cl.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "1.5", RequestId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header().Get("Tollgate-Idempotent-Replay") != "true" || resp.Msg.Remaining != want.Remaining || resp.Msg.LogIndex != want.LogIndex {
			t.Fatalf("retry of %s after restart: %v (replayed %q), first reply %v", id, resp.Msg, resp.Header().Get("Tollgate-Idempotent-Replay"), want)
		}
	}
	again, err := cl.Budgets.Reserve(ctx, connect.NewRequest(&tollgatev1.ReserveRequest{Tenant: tenant, BudgetId: "b", Amount: "10", Ttl: "1h", RequestId: "hold-1"}))
	if err != nil || again.Msg.HoldId != hold.Msg.HoldId {
		t.Fatalf("reserve retry after restart: %v %v, first hold %s", again, err, hold.Msg.HoldId)
	}
	commit, err := cl.Budgets.Commit(ctx, connect.NewRequest(&tollgatev1.CommitRequest{Tenant: tenant, HoldId: hold.Msg.HoldId, Amount: "4"}))
	if err != nil || !commit.Msg.Allowed || commit.Msg.Spent != "64.00" || commit.Msg.Remaining != "36.00" {
		t.Fatalf("commit of a hold made before the restart: %v %v", commit, err)
	}
	c.WaitConverged(30*time.Second, c.Nodes...)
}

// withoutFlag drops a flag and its value from args.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// Reproducer: servers that come back on each other's Raft addresses (as
// containers restarted in another order swap IPs). With the Raft
// configuration's stale addresses, a candidate dialled "the other server" at
// its own address and counted its own vote twice; now Raft dials what each
// server announces in gossip, and the leader rewrites the moved addresses.
func TestRestartWithSwappedRaftAddresses(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{Extra: []string{"--log-level", "debug"}})
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	cl := mustClient(t, c.APIAddrs())
	createBudget(t, cl, tenant, "b", "100")
	for _, n := range c.Nodes {
		c.Kill(n)
	}
	n2, n3 := c.Nodes[1], c.Nodes[2]
	swapFlag(n2.Args, n3.Args, "--raft-addr")
	n2.RaftAddr, n3.RaftAddr = n3.RaftAddr, n2.RaftAddr
	terms := watchTerms(c)
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	cl = mustClient(t, c.APIAddrs())
	if _, err := cl.Budgets.Consume(context.Background(), connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "b", Amount: "1"})); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, n := range c.Nodes {
		want[n.ID] = n.RaftAddr
	}
	if !procs.Poll(15*time.Second, 100*time.Millisecond, func() bool {
		st, err := c.Status(c.Leader(), false, false)
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if want[m.Id] != m.RaftAddr {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the leader (%s) did not rewrite the moved Raft addresses to %v", leader.ID, want)
	}
	terms.check(t)
	// A candidate that reaches itself through another server's address
	// gets its own request back: raft logs "duplicate requestVote from"
	// naming the candidate's own address. (A plain "duplicate requestVote
	// for same term" is a split vote: two candidates in one term.)
	for _, n := range c.Nodes {
		if strings.Contains(n.Log(), "duplicate requestVote from: candidate="+n.RaftAddr) {
			t.Fatalf("%s received its own vote request through another server's address:\n%s", n.ID, n.Log())
		}
	}
	c.WaitConverged(30*time.Second, c.Nodes...)
}

// swapFlag swaps the values of flag between two argument lists.
func swapFlag(a, b []string, flag string) {
	ia, ib := -1, -1
	for i := range a {
		if a[i] == flag {
			ia = i + 1
		}
	}
	for i := range b {
		if b[i] == flag {
			ib = i + 1
		}
	}
	a[ia], b[ib] = b[ib], a[ia]
}
