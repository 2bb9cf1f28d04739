// Package cluster_test runs real tollgate processes as a 3- to 5-node
// cluster and checks the promises of DESIGN.md while nodes crash, join,
// leave, lag and are cut off.
package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

const tenant = "acme"

func others(c *procs.Cluster, n *procs.Node) []*procs.Node {
	var out []*procs.Node
	for _, o := range c.Nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// Acceptance 1: kill -9 the leader under consume load. A new leader within
// 5 s; afterwards every acknowledged consume is there, nothing is charged
// twice, and a small HARD budget is never overspent.
func TestKillLeaderUnderLoad(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	admin := mustClient(t, c.APIAddrs())
	createBudget(t, admin, tenant, "big", "1000000")
	createBudget(t, admin, tenant, "small", "150")

	// Clients on every node: followers forward to the leader.
	addrs := [][]string{c.APIAddrs(c.Nodes[0]), c.APIAddrs(c.Nodes[1]), c.APIAddrs(c.Nodes[2]), c.APIAddrs()}
	big := newConsumeLoad(t, addrs, tenant, "big", "1.25")
	small := newConsumeLoad(t, addrs, tenant, "small", "1")
	big.start(16)
	small.start(8)
	if !procs.Poll(20*time.Second, 10*time.Millisecond, func() bool { a, _, _ := big.counts(); return a >= 200 }) {
		t.Fatal("load did not get going")
	}

	killedAt := time.Now()
	c.Kill(leader)
	var newLeader *procs.Node
	procs.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		newLeader = c.Leader()
		return newLeader != nil
	})
	elected := time.Since(killedAt)
	if newLeader == nil || elected > 5*time.Second {
		t.Fatalf("new leader after %s (%v); want one within 5s", elected, newLeader)
	}
	t.Logf("killed leader %s; %s leads after %s", leader.ID, newLeader.ID, elected.Round(time.Millisecond))
	before, _, _ := big.counts()
	if !procs.Poll(20*time.Second, 10*time.Millisecond, func() bool { a, _, _ := big.counts(); return a >= before+200 }) {
		t.Fatal("no progress after the new election")
	}
	big.halt()
	small.halt()

	c.Start(leader) // the old leader comes back as a follower
	c.WaitLeader(30 * time.Second)
	settler := mustClient(t, c.APIAddrs())
	acked, allowed, ambiguous := big.counts()
	final := big.settle(t, settler)
	got := getBudget(t, settler, tenant, "big")
	if want := fmt.Sprintf("%.2f", float64(final)*1.25); got.Spent != want {
		t.Fatalf("big budget spent %s after settling %d allowed requests; want %s", got.Spent, final, want)
	}
	if final < allowed {
		t.Fatalf("%d requests allowed before settling, %d after: an acknowledged consume was lost", allowed, final)
	}
	t.Logf("big: %d acknowledged (%d allowed), %d ambiguous during the kill; %d allowed after settling", acked, allowed, ambiguous, final)

	smallFinal := small.settle(t, settler)
	gotSmall := getBudget(t, settler, tenant, "small")
	if smallFinal != 150 || gotSmall.Spent != "150.00" || gotSmall.Remaining != "0.00" {
		t.Fatalf("small HARD budget: %d allowed, spent %s remaining %s; want exactly 150, 150.00, 0.00", smallFinal, gotSmall.Spent, gotSmall.Remaining)
	}
	c.WaitConverged(30*time.Second, c.Nodes...)
}

// Acceptance 2: membership changes under load. Add a 4th node, remove a
// follower, remove the leader, transfer leadership; one leader per term, and
// every replica ends with the same state hash at the same applied index.
func TestMembershipChangesUnderLoad(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{})
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	terms := watchTerms(c)
	admin := mustClient(t, c.APIAddrs())
	createBudget(t, admin, tenant, "big", "1000000")
	load := newConsumeLoad(t, [][]string{c.APIAddrs()}, tenant, "big", "0.5")
	load.start(8)
	progress := func() {
		t.Helper()
		before, _, _ := load.counts()
		if !procs.Poll(20*time.Second, 10*time.Millisecond, func() bool { a, _, _ := load.counts(); return a >= before+50 }) {
			t.Fatal("no progress")
		}
	}
	progress()

	n4 := c.AddNode()
	c.Start(n4)
	c.WaitVoters(30*time.Second, "n1", "n2", "n3", "n4")
	progress()

	ctx := context.Background()
	leader := c.WaitLeader(10 * time.Second)
	var follower *procs.Node
	for _, n := range c.Nodes {
		if n != leader && n != n4 {
			follower = n
			break
		}
	}
	if _, err := admin.Cluster.RemoveServer(ctx, connect.NewRequest(&tollgatev1.RemoveServerRequest{Id: follower.ID})); err != nil {
		t.Fatalf("remove follower %s: %v", follower.ID, err)
	}
	remaining := []string{}
	for _, n := range c.Nodes {
		if n != follower {
			remaining = append(remaining, n.ID)
		}
	}
	c.WaitVoters(30*time.Second, remaining...)
	progress() // the removed follower's process keeps running, still in gossip

	if _, err := admin.Cluster.RemoveServer(ctx, connect.NewRequest(&tollgatev1.RemoveServerRequest{Id: leader.ID})); err != nil {
		t.Fatalf("remove leader %s: %v", leader.ID, err)
	}
	var left []string
	for _, id := range remaining {
		if id != leader.ID {
			left = append(left, id)
		}
	}
	c.WaitVoters(30*time.Second, left...)
	progress()

	now := c.WaitLeader(10 * time.Second)
	var target string
	for _, id := range left {
		if id != now.ID {
			target = id
		}
	}
	resp, err := admin.Cluster.TransferLeadership(ctx, connect.NewRequest(&tollgatev1.TransferLeadershipRequest{Id: target}))
	if err != nil || resp.Msg.NewLeaderId != target {
		t.Fatalf("transfer leadership to %s: %v %v", target, resp, err)
	}
	progress()
	// The removed servers are still alive in gossip; no leader (the one
	// that removed them, or the new one) may add them back.
	stable(t, c, 3*time.Second, left...)
	c.Kill(follower)
	c.Kill(leader)
	load.halt()
	terms.check(t)

	var alive []*procs.Node
	for _, n := range c.Nodes {
		if n.Running() {
			alive = append(alive, n)
		}
	}
	hash, index := c.WaitConverged(30*time.Second, alive...)
	final := load.settle(t, mustClient(t, c.APIAddrs(alive...)))
	if got := getBudget(t, mustClient(t, c.APIAddrs(alive...)), tenant, "big"); got.Spent != fmt.Sprintf("%.2f", float64(final)*0.5) {
		t.Fatalf("spent %s, want %d × 0.5", got.Spent, final)
	}
	t.Logf("replicas %v converged at index %d, hash %.16s", left, index, hash)
}

// stable checks, over a window, that the voters stay exactly ids.
func stable(t *testing.T, c *procs.Cluster, window time.Duration, ids ...string) {
	t.Helper()
	want := fmt.Sprint(slices.Sorted(slices.Values(ids)))
	changed := procs.Poll(window, 100*time.Millisecond, func() bool {
		leader := c.Leader()
		if leader == nil {
			return false
		}
		st, err := c.Status(leader, false, false)
		if err != nil {
			return false
		}
		var voters []string
		for _, m := range st.Members {
			if m.Suffrage == "Voter" {
				voters = append(voters, m.Id)
			}
		}
		slices.Sort(voters)
		if fmt.Sprint(voters) != want {
			t.Errorf("voters became %v, want %v to stay", voters, ids)
			return true
		}
		return false
	})
	if changed {
		t.FailNow()
	}
}

// A server missing from the gossip pool longer than --dead-server-grace is
// removed by the leader; when it comes back (same data dir) it is added
// again as a non-voter and promoted.
func TestDeadServerRemovedAfterGrace(t *testing.T) {
	c := procs.NewCluster(t, 3, procs.Options{Extra: []string{"--dead-server-grace", "2s"}})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	dead := others(c, leader)[0]
	c.Kill(dead)
	var alive []string
	for _, n := range c.Nodes {
		if n != dead {
			alive = append(alive, n.ID)
		}
	}
	c.WaitVoters(30*time.Second, alive...)
	admin := mustClient(t, c.APIAddrs(others(c, dead)...))
	createBudget(t, admin, tenant, "b", "10")
	c.Start(dead)
	c.WaitVoters(30*time.Second, "n1", "n2", "n3")
	c.WaitConverged(30*time.Second, c.Nodes...)
}

// TestClusterOfOne: a node started the cluster way with --bootstrap-expect 1
// and a --join list naming only itself bootstraps on its own (it used to
// wait forever for another gossip member).
func TestClusterOfOne(t *testing.T) {
	c := procs.NewCluster(t, 1, procs.Options{})
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	createBudget(t, mustClient(t, c.APIAddrs()), tenant, "solo", "10")
}
