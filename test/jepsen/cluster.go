package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/test/procs"
)

// view is the harness's picture of the cluster: the processes (procs) and
// which of them are meant to be voters now (members). procs' own waits fail
// the test at once; these return errors, so a run that goes wrong still
// heals, checks and saves its history.
type view struct {
	c       *procs.Cluster
	mu      sync.Mutex
	members []*procs.Node
	http    *http.Client
}

func newView(c *procs.Cluster) *view {
	return &view{c: c, members: c.NodeList(), http: &http.Client{Timeout: 5 * time.Second}}
}

func (v *view) memberList() []*procs.Node {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.members)
}

func (v *view) setMembers(nodes []*procs.Node) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.members = slices.Clone(nodes)
}

func ids(nodes []*procs.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID
	}
	return out
}

func without(nodes []*procs.Node, drop ...*procs.Node) []*procs.Node {
	var out []*procs.Node
	for _, n := range nodes {
		if !slices.Contains(drop, n) {
			out = append(out, n)
		}
	}
	return out
}

func addrs(nodes []*procs.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.APIAddr
	}
	return out
}

func (v *view) status(ctx context.Context, n *procs.Node, hash bool) (*tollgatev1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl := tollgatev1connect.NewClusterServiceClient(v.http, "http://"+n.APIAddr)
	resp, err := cl.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{IncludeStateHash: hash}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// statuses asks every given running node at once (a paused node must not
// hold up the others).
func (v *view) statuses(ctx context.Context, nodes []*procs.Node, hash bool) map[*procs.Node]*tollgatev1.StatusResponse {
	var mu sync.Mutex
	out := map[*procs.Node]*tollgatev1.StatusResponse{}
	var wg sync.WaitGroup
	for _, n := range nodes {
		if !n.Running() {
			continue
		}
		wg.Go(func() {
			st, err := v.status(ctx, n, hash)
			if err == nil {
				mu.Lock()
				out[n] = st
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// leader is the node that says it leads in the highest term any of nodes
// reports, or nil.
func (v *view) leader(ctx context.Context, nodes []*procs.Node) (*procs.Node, *tollgatev1.StatusResponse) {
	var leader *procs.Node
	var leaderSt *tollgatev1.StatusResponse
	var maxTerm uint64
	for n, st := range v.statuses(ctx, nodes, false) {
		maxTerm = max(maxTerm, st.Term)
		if st.State == "Leader" && (leaderSt == nil || st.Term > leaderSt.Term) {
			leader, leaderSt = n, st
		}
	}
	if leader == nil || leaderSt.Term < maxTerm {
		return nil, nil
	}
	return leader, leaderSt
}

// readyRead: n answers a linearizable read.
func (v *view) readyRead(ctx context.Context, n *procs.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl := tollgatev1connect.NewBudgetServiceClient(v.http, "http://"+n.APIAddr)
	_, err := cl.ListBudgets(ctx, connect.NewRequest(&tollgatev1.ListBudgetsRequest{Tenant: "probe"}))
	return err
}

func voterIDs(st *tollgatev1.StatusResponse) []string {
	var voters []string
	for _, m := range st.Members {
		if m.Suffrage == "Voter" {
			voters = append(voters, m.Id)
		}
	}
	slices.Sort(voters)
	return voters
}

// healthy: every member runs and answers, one leader in the highest term
// answers a linearizable read, and its voters are exactly the members.
func (v *view) healthy(ctx context.Context) error {
	members := v.memberList()
	for _, n := range members {
		if !n.Running() {
			return fmt.Errorf("%s is not running", n.ID)
		}
	}
	sts := v.statuses(ctx, members, false)
	for _, n := range members {
		if sts[n] == nil {
			return fmt.Errorf("%s does not answer Status", n.ID)
		}
	}
	leader, st := v.leader(ctx, members)
	if leader == nil {
		return errors.New("no agreed leader")
	}
	want := slices.Sorted(slices.Values(ids(members)))
	if got := voterIDs(st); !slices.Equal(got, want) {
		return fmt.Errorf("leader %s has voters %v, want %v", leader.ID, got, want)
	}
	if err := v.readyRead(ctx, leader); err != nil {
		return fmt.Errorf("leader %s does not answer a linearizable read: %v", leader.ID, err)
	}
	return nil
}

// waitHealthy polls healthy until it holds or timeout passes.
func (v *view) waitHealthy(timeout time.Duration) error {
	var last error
	if procs.Poll(timeout, 100*time.Millisecond, func() bool {
		last = v.healthy(context.Background())
		return last == nil
	}) {
		return nil
	}
	return fmt.Errorf("cluster not healthy within %s: %v", timeout, last)
}

// waitLeader polls for an agreed leader among the members, with read also
// one that answers a linearizable read. (Before the first write, a build
// with the planted no-barrier bug never answers one: its commit index
// covers Raft's own no-op entry, which the state machine never applies.)
func (v *view) waitLeader(timeout time.Duration, read bool) (*procs.Node, error) {
	var leader *procs.Node
	if procs.Poll(timeout, 50*time.Millisecond, func() bool {
		leader, _ = v.leader(context.Background(), v.memberList())
		return leader != nil && (!read || v.readyRead(context.Background(), leader) == nil)
	}) {
		return leader, nil
	}
	return nil, fmt.Errorf("no leader within %s", timeout)
}

// waitVoters polls until the leader's configuration has exactly these
// voters.
func (v *view) waitVoters(timeout time.Duration, nodes []*procs.Node) error {
	want := slices.Sorted(slices.Values(ids(nodes)))
	var got []string
	if procs.Poll(timeout, 100*time.Millisecond, func() bool {
		_, st := v.leader(context.Background(), v.c.NodeList())
		if st == nil {
			return false
		}
		got = voterIDs(st)
		return slices.Equal(got, want)
	}) {
		return nil
	}
	return fmt.Errorf("voters %v, want %v within %s", got, want, timeout)
}

// admin is an SDK client on the members (it follows leader hints).
func (v *view) admin(tryTimeout time.Duration) (*client.Client, error) {
	return client.New(addrs(v.memberList()), client.WithRequestTimeout(tryTimeout))
}

// replicaList renders statuses for a detail message.
func replicaList(sts map[*procs.Node]*tollgatev1.StatusResponse, nodes []*procs.Node) string {
	var parts []string
	for _, n := range nodes {
		st := sts[n]
		if st == nil {
			parts = append(parts, n.ID+"=?")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s@%d=%.12s", n.ID, st.AppliedIndex, st.StateHash))
	}
	return strings.Join(parts, " ")
}
