// Package tollgate runs a 3-node tollgate cluster (real processes) as a
// system under test: linearizable decisions, 16 per RPC, and STALE reads.
package tollgate

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

const (
	tenant = "bench"
	nodes  = 3
	// workersPerClient: workers share SDK clients (one h2c connection each).
	workersPerClient = 32
	// setupWorkers create budgets in parallel.
	setupWorkers = 64
)

type system struct {
	cmds  []*proc.Cmd
	addrs []string
	admin *client.Client

	mu      sync.Mutex
	clients []*client.Client
	next    int
}

// Start runs 3 tollgate servers on loopback, bootstrapping one cluster, and
// waits until a leader serves.
func Start(ctx context.Context, o proc.Options) (load.System, error) {
	type ports struct{ api, raft, gossip string }
	ps := make([]ports, nodes)
	seen := map[int]bool{}
	for i := range ps {
		for _, p := range []*string{&ps[i].api, &ps[i].raft, &ps[i].gossip} {
			port, err := proc.FreePort()
			for tries := 0; err == nil && seen[port] && tries < 100; tries++ {
				port, err = proc.FreePort()
			}
			if err != nil {
				return nil, err
			}
			seen[port] = true
			*p = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
	}
	var gossip []string
	for _, p := range ps {
		gossip = append(gossip, p.gossip)
	}
	s := &system{}
	for i, p := range ps {
		id := "n" + strconv.Itoa(i+1)
		args := []string{"serve", "--insecure", "--node-id", id, "--data-dir", filepath.Join(o.Dir, id),
			"--api-addr", p.api, "--raft-addr", p.raft, "--gossip-addr", p.gossip,
			"--bootstrap-expect", strconv.Itoa(nodes), "--join", strings.Join(gossip, ","), "--log-level", "warn"}
		// Experiments: extra serve flags, e.g. TGBENCH_TOLLGATE_FLAGS="--snapshot-threshold 100000".
		args = append(args, strings.Fields(os.Getenv("TGBENCH_TOLLGATE_FLAGS"))...)
		cmd, err := proc.Start(o, o.Tollgate, args...)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.cmds = append(s.cmds, cmd)
		s.addrs = append(s.addrs, p.api)
	}
	admin, err := client.New(s.addrs)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.admin = admin
	if err := s.waitLeader(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *system) waitLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		// A policy read at LINEARIZABLE answers only once a leader is ready.
		_, err := s.admin.RateLimits.ListPolicies(ctx, connect.NewRequest(&tollgatev1.ListPoliciesRequest{Tenant: tenant}))
		if err == nil {
			return nil
		}
		for _, c := range s.cmds {
			if c.Exited() {
				return fmt.Errorf("tollgate server exited during start-up: %v", c.ProcessState)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tollgate cluster did not elect a leader: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *system) Name() string       { return "tollgate" }
func (s *system) Durable() bool      { return true }
func (s *system) Linearizable() bool { return true }

func (s *system) Pids() []int {
	var out []int
	for _, c := range s.cmds {
		out = append(out, c.Process.Pid)
	}
	return out
}

func (s *system) Modes(w load.Workload) []load.Mode {
	if w.Kind == load.Budget {
		return []load.Mode{load.Linearizable, load.Batch16, load.Stale}
	}
	return []load.Mode{load.Linearizable, load.Batch16}
}

func policyID(runID string) string { return "tb-" + runID }

func budgetID(runID, key string) string { return "b-" + runID + "-" + key }

// Setup creates the run's policy, or its budgets (one per key, in parallel).
func (s *system) Setup(ctx context.Context, w load.Workload, runID string) error {
	switch w.Kind {
	case load.TokenBucket:
		window := time.Duration(float64(time.Second) * float64(w.Capacity) / float64(w.RatePerSec))
		_, err := s.admin.RateLimits.CreatePolicy(ctx, connect.NewRequest(&tollgatev1.CreatePolicyRequest{Tenant: tenant,
			Policy: &tollgatev1.Policy{Id: policyID(runID), Algorithm: tollgatev1.Algorithm_ALGORITHM_TOKEN_BUCKET,
				Limit: w.Capacity, Window: window.String(), Burst: w.Capacity}}))
		return err
	case load.Budget:
		var next int64 = -1
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		for range setupWorkers {
			wg.Go(func() {
				for {
					mu.Lock()
					next++
					i := next
					stop := firstErr != nil
					mu.Unlock()
					if stop || i >= int64(w.Keys) {
						return
					}
					_, err := s.admin.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{Tenant: tenant,
						Budget: &tollgatev1.Budget{Id: budgetID(runID, load.KeyName(int(i))), Amount: w.BudgetAmount, Currency: "USD"}}))
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return firstErr
	}
	return fmt.Errorf("workload kind %q", w.Kind)
}

// clientFor hands out shared SDK clients, workersPerClient workers each.
func (s *system) clientFor() (*client.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next%workersPerClient == 0 {
		c, err := client.New(s.addrs, client.WithRequestTimeout(10*time.Second))
		if err != nil {
			return nil, err
		}
		s.clients = append(s.clients, c)
	}
	s.next++
	return s.clients[len(s.clients)-1], nil
}

func (s *system) NewTarget(w load.Workload, mode load.Mode, runID string) (load.Target, error) {
	c, err := s.clientFor()
	if err != nil {
		return nil, err
	}
	return &target{c: c, w: w, mode: mode, runID: runID}, nil
}

func (s *system) Close() error {
	for _, c := range s.cmds {
		c.Stop()
	}
	s.mu.Lock()
	for _, c := range s.clients {
		c.Close()
	}
	s.mu.Unlock()
	if s.admin != nil {
		s.admin.Close()
	}
	return nil
}

type target struct {
	c     *client.Client
	w     load.Workload
	mode  load.Mode
	runID string
}

func (t *target) Close() error { return nil }

func (t *target) Decide(ctx context.Context, keys []string) ([]bool, error) {
	if t.w.Kind == load.TokenBucket {
		return t.rate(ctx, keys)
	}
	return t.budget(ctx, keys)
}

func (t *target) rate(ctx context.Context, keys []string) ([]bool, error) {
	one := int64(1)
	if t.mode == load.Batch16 {
		req := &tollgatev1.CheckBatchRequest{Tenant: tenant}
		for _, k := range keys {
			req.Items = append(req.Items, &tollgatev1.CheckBatchItem{PolicyId: policyID(t.runID), Key: k, Cost: &one})
		}
		resp, err := t.c.RateLimits.CheckBatch(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		out := make([]bool, len(resp.Msg.Results))
		for i, r := range resp.Msg.Results {
			out[i] = r.Allowed
		}
		return out, nil
	}
	resp, err := t.c.RateLimits.Check(ctx, connect.NewRequest(&tollgatev1.RateLimitServiceCheckRequest{
		Tenant: tenant, PolicyId: policyID(t.runID), Key: keys[0], Cost: &one}))
	if err != nil {
		return nil, err
	}
	return []bool{resp.Msg.Allowed}, nil
}

func (t *target) budget(ctx context.Context, keys []string) ([]bool, error) {
	switch t.mode {
	case load.Batch16:
		req := &tollgatev1.ConsumeBatchRequest{Tenant: tenant}
		for _, k := range keys {
			req.Items = append(req.Items, &tollgatev1.ConsumeBatchItem{BudgetId: budgetID(t.runID, k), Amount: t.w.Cost})
		}
		resp, err := t.c.Budgets.ConsumeBatch(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		out := make([]bool, len(resp.Msg.Results))
		for i, r := range resp.Msg.Results {
			out[i] = r.Allowed
		}
		return out, nil
	case load.Stale:
		resp, err := t.c.Budgets.Check(ctx, connect.NewRequest(&tollgatev1.BudgetServiceCheckRequest{
			Tenant: tenant, BudgetId: budgetID(t.runID, keys[0]), Amount: t.w.Cost,
			Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
		if err != nil {
			return nil, err
		}
		return []bool{resp.Msg.Allowed}, nil
	}
	resp, err := t.c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{
		Tenant: tenant, BudgetId: budgetID(t.runID, keys[0]), Amount: t.w.Cost}))
	if err != nil {
		return nil, err
	}
	return []bool{resp.Msg.Allowed}, nil
}
