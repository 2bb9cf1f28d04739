package client_test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/node"
	"github.com/tollgate/tollgate/tollgatetest"
	"github.com/tollgate/tollgate/transport"
)

// follower is a server whose node is never the leader and names the real
// leader in its errors, as a follower without forwarding does.
type follower struct {
	transport.Node // the methods these tests never reach
	leaderAddr     string
	calls          atomic.Int64
}

func (f *follower) notLeader() error {
	f.calls.Add(1)
	return &node.NotLeaderError{LeaderID: "test-node", LeaderAPIAddr: f.leaderAddr}
}

func (f *follower) Propose(context.Context, ...fsm.Command) ([]fsm.Result, uint64, error) {
	return nil, 0, f.notLeader()
}

func (f *follower) Read(context.Context, node.Consistency, time.Duration, func(fsm.View) error) (node.ReadInfo, error) {
	return node.ReadInfo{}, f.notLeader()
}

func (f *follower) Status(context.Context, node.StatusOptions) (node.Status, error) {
	return node.Status{}, f.notLeader()
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	s, err := transport.Listen("127.0.0.1:0", h)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s.Addr()
}

func createBudget(t *testing.T, c *client.Client) {
	t.Helper()
	_, err := c.Budgets.CreateBudget(context.Background(), connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Tenant: "acme", Budget: &tollgatev1.Budget{Id: "b", Amount: "10", Currency: "USD"}}))
	if err != nil {
		t.Fatal(err)
	}
}

// TestFollowsLeaderHint: a call sent to a node that is not the leader is
// retried at the leader the error names.
func TestFollowsLeaderHint(t *testing.T) {
	leader := tollgatetest.StartServer(t, tollgatetest.Options{})
	f := &follower{leaderAddr: leader.APIAddr()}
	followerAddr := serve(t, transport.NewHandler(f, transport.Options{}))

	c, err := client.New([]string{followerAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	createBudget(t, c)
	if f.calls.Load() != 1 {
		t.Errorf("the follower saw %d calls, want 1 (then the client goes to the leader)", f.calls.Load())
	}
	if c.Node() != leader.APIAddr() {
		t.Errorf("client prefers %s, want the leader %s", c.Node(), leader.APIAddr())
	}
}

// TestAnyNodeBootstrap: an unreachable first address is skipped.
func TestAnyNodeBootstrap(t *testing.T) {
	leader := tollgatetest.StartServer(t, tollgatetest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	c, err := client.New([]string{dead, leader.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	createBudget(t, c)
	if c.Node() != leader.APIAddr() {
		t.Errorf("client prefers %s, want %s", c.Node(), leader.APIAddr())
	}
}

// TestRetriesAreBoundedAndNotForOtherCodes: InvalidArgument is not retried,
// and WithoutRetries makes one try.
func TestNoRetryOnClientErrors(t *testing.T) {
	leader := tollgatetest.StartServer(t, tollgatetest.Options{})
	f := &follower{leaderAddr: ""} // no leader known: nothing to follow
	followerAddr := serve(t, transport.NewHandler(f, transport.Options{}))

	c, err := client.New([]string{followerAddr}, client.WithoutRetries())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Budgets.Consume(context.Background(), connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "acme", BudgetId: "b", Amount: "1"}))
	if connect.CodeOf(err) != connect.CodeUnavailable || f.calls.Load() != 1 {
		t.Errorf("without retries: %v after %d calls, want Unavailable after 1", err, f.calls.Load())
	}

	c2 := tollgatetest.NewClient(t, leader)
	_, err = c2.Budgets.Consume(context.Background(), connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "acme", BudgetId: "b", Amount: "x"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("bad amount: %v, want InvalidArgument", err)
	}
}

func TestNewRejectsBadAddresses(t *testing.T) {
	for _, addrs := range [][]string{nil, {"localhost"}, {"http://"}} {
		if _, err := client.New(addrs); err == nil {
			t.Errorf("client.New(%q) accepted", addrs)
		}
	}
}

// forwarder is a follower that forwards changes to the leader (here: a real
// leader node it wraps) and says who leads.
type forwarder struct {
	transport.Node
	leaderAddr string
	calls      atomic.Int64
}

func (f *forwarder) Propose(ctx context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error) {
	f.calls.Add(1)
	return f.Node.Propose(ctx, cmds...)
}

func (f *forwarder) LeaderAddr() (bool, string) { return false, f.leaderAddr }

// TestFollowsLeaderAfterForwarding: a change a follower forwarded comes back
// naming the leader, and the client sends the next changes there directly;
// a read does not move the client.
func TestFollowsLeaderAfterForwarding(t *testing.T) {
	leader := tollgatetest.StartServer(t, tollgatetest.Options{})
	f := &forwarder{Node: leader.Node, leaderAddr: leader.APIAddr()}
	followerAddr := serve(t, transport.NewHandler(f, transport.Options{}))

	c, err := client.New([]string{followerAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Budgets.GetBudget(context.Background(), connect.NewRequest(&tollgatev1.GetBudgetRequest{
		Tenant: "acme", BudgetId: "none", Consistency: tollgatev1.Consistency_CONSISTENCY_STALE})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("stale read: %v", err)
	}
	if c.Node() != followerAddr {
		t.Fatalf("a read moved the client to %s", c.Node())
	}
	createBudget(t, c)
	if c.Node() != leader.APIAddr() {
		t.Fatalf("after a forwarded change the client prefers %s, want the leader %s", c.Node(), leader.APIAddr())
	}
	if _, err := c.Budgets.Consume(context.Background(), connect.NewRequest(&tollgatev1.ConsumeRequest{
		Tenant: "acme", BudgetId: "b", Amount: "1"})); err != nil {
		t.Fatal(err)
	}
	if f.calls.Load() != 1 {
		t.Fatalf("the follower saw %d changes, want 1 (the second goes to the leader)", f.calls.Load())
	}
}
