// Package gubernator runs gubernator (github.com/gubernator-io/gubernator/v2)
// as a system under test: a 3-node cluster in one child process, asked over
// gubernator's gRPC V1 API. It is the benchmark's ceiling for a rate limiter
// that is neither durable (state lives in each owner's in-memory LRU cache)
// nor linearizable (no replication; a key's owner decides alone, and a
// membership change or cache eviction forgets the bucket).
//
// A decision is one RateLimitReq{Algorithm: TOKEN_BUCKET, Behavior:
// BATCHING, Hits: 1}; BATCHING (gubernator's default, the zero value) means
// a node that does not own the key forwards it to the owner in a batch with
// other requests for that owner (gathered for up to BatchWait, 500µs by
// default). Clients spread their targets round-robin over the 3 nodes, like a
// real deployment behind a load balancer, so about 2 decisions in 3 take that
// extra hop.
package gubernator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"
	"github.com/gubernator-io/gubernator/v2/cluster"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
)

const (
	// nodes is the cluster size.
	nodes = 3
	// connsPerNode gRPC connections per node are shared by all targets
	// (HTTP/2 multiplexes the workers' calls over them).
	connsPerNode = 2
	// cacheSize is each node's LRU capacity (gubernator's default is
	// 50,000). It is raised so that no bucket of a run is evicted (which
	// would refill it and show up as overspend that is an artefact of
	// sizing, not of the algorithm); every run namespaces its keys, so
	// older runs' buckets are what gets evicted.
	cacheSize = 1_000_000
	// startTimeout bounds waiting for the cluster to become healthy.
	startTimeout = 30 * time.Second
)

type system struct {
	cmd     *proc.Cmd
	addrs   []string
	conns   []*grpc.ClientConn // conns[i] is to node i % nodes
	clients []guber.V1Client
	next    atomic.Uint64
	once    sync.Once
}

// Start runs a 3-node gubernator cluster in one child process
// (`tgbench child gubernator -peers A,B,C`, pinned to o.ServerCPUs) on free
// 127.0.0.1 ports, and returns when every node serves gRPC and knows all 3
// peers.
func Start(ctx context.Context, o proc.Options) (load.System, error) {
	var err error
	// A port picked here may be taken by someone else before the child
	// binds it: then the child exits and we try again with other ports.
	for attempt := 0; attempt < 3; attempt++ {
		var s *system
		s, err = start(ctx, o)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func start(ctx context.Context, o proc.Options) (*system, error) {
	addrs, err := freeAddrs(nodes)
	if err != nil {
		return nil, err
	}
	cmd, err := proc.StartChild(o, "gubernator", "-peers", strings.Join(addrs, ","))
	if err != nil {
		return nil, err
	}
	s := &system{cmd: cmd, addrs: addrs}
	for i := 0; i < nodes*connsPerNode; i++ {
		c, err := grpc.NewClient(addrs[i%nodes], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("gubernator: dial %s: %w", addrs[i%nodes], err)
		}
		s.conns = append(s.conns, c)
		s.clients = append(s.clients, guber.NewV1Client(c))
	}
	if err := s.waitReady(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// freeAddrs returns n distinct free 127.0.0.1 addresses.
func freeAddrs(n int) ([]string, error) {
	seen := map[int]bool{}
	var addrs []string
	for tries := 0; len(addrs) < n; tries++ {
		if tries > 100 {
			return nil, errors.New("gubernator: no free ports")
		}
		p, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
		}
	}
	return addrs, nil
}

// waitReady waits for every node to accept connections and then to report
// itself healthy with all peers, failing early if the child exits.
func (s *system) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	go func() {
		for !s.cmd.Exited() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
	}()
	exited := func(err error) error {
		if s.cmd.Exited() {
			return fmt.Errorf("gubernator: child exited before the cluster was ready (%v)", s.cmd.ProcessState)
		}
		return fmt.Errorf("gubernator: %w", err)
	}
	for _, a := range s.addrs {
		if err := proc.WaitTCP(ctx, a); err != nil {
			return exited(err)
		}
	}
	// The listeners open one by one; peers are set once all three run.
	for i := 0; i < nodes; i++ {
		for {
			hctx, hcancel := context.WithTimeout(ctx, time.Second)
			h, err := s.clients[i].HealthCheck(hctx, &guber.HealthCheckReq{})
			hcancel()
			if err == nil && h.Status == guber.Healthy && h.PeerCount == nodes {
				break
			}
			if ctx.Err() != nil {
				if err == nil {
					err = fmt.Errorf("%s: status %q, %d peers: %s", s.addrs[i], h.Status, h.PeerCount, h.Message)
				}
				return exited(fmt.Errorf("not ready: %v: %w", err, ctx.Err()))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (s *system) Name() string       { return "gubernator" }
func (s *system) Durable() bool      { return false }
func (s *system) Linearizable() bool { return false }
func (s *system) Pids() []int        { return []int{s.cmd.Process.Pid} }

// Modes: token buckets one decision per call or 16 per call; gubernator has
// no decimal budgets.
func (s *system) Modes(w load.Workload) []load.Mode {
	if w.Kind == load.TokenBucket {
		return []load.Mode{load.Linearizable, load.Batch16}
	}
	return nil
}

// Setup does nothing: every run names its limits "bench-"+runID, so its
// buckets start full.
func (s *system) Setup(ctx context.Context, w load.Workload, runID string) error {
	if w.Kind != load.TokenBucket {
		return fmt.Errorf("gubernator: workload kind %q is not supported", w.Kind)
	}
	return nil
}

// DurationMs is the gubernator Duration for a bucket of capacity tokens
// refilled at ratePerSec: capacity tokens per capacity/ratePerSec seconds,
// rounded up to a whole millisecond so gubernator never allows more than the
// rate.
func DurationMs(capacity, ratePerSec int64) int64 {
	return (capacity*1000 + ratePerSec - 1) / ratePerSec
}

func (s *system) NewTarget(w load.Workload, mode load.Mode, runID string) (load.Target, error) {
	if w.Kind != load.TokenBucket {
		return nil, fmt.Errorf("gubernator: workload kind %q is not supported", w.Kind)
	}
	if mode != load.Linearizable && mode != load.Batch16 {
		return nil, fmt.Errorf("gubernator: mode %q is not supported", mode)
	}
	if w.Capacity <= 0 || w.RatePerSec <= 0 {
		return nil, fmt.Errorf("gubernator: capacity %d and rate %d/s must be positive", w.Capacity, w.RatePerSec)
	}
	// Round-robin over the nodes first, then over each node's connections.
	i := s.next.Add(1) - 1
	node := i % nodes
	conn := (i / nodes) % connsPerNode
	t := &target{client: s.clients[conn*nodes+node]}
	dur := DurationMs(w.Capacity, w.RatePerSec)
	for j := range t.reqs {
		t.reqs[j] = &guber.RateLimitReq{
			Name:      "bench-" + runID,
			Hits:      1,
			Limit:     w.Capacity,
			Duration:  dur,
			Algorithm: guber.Algorithm_TOKEN_BUCKET,
			Behavior:  guber.Behavior_BATCHING,
		}
	}
	return t, nil
}

func (s *system) Close() error {
	s.once.Do(func() {
		for _, c := range s.conns {
			c.Close()
		}
		s.cmd.Stop()
	})
	return nil
}

// target is one worker's view: a shared client (its connection belongs to
// the system) and reusable requests.
type target struct {
	client guber.V1Client
	reqs   [16]*guber.RateLimitReq
	req    guber.GetRateLimitsReq
}

func (t *target) Decide(ctx context.Context, keys []string) ([]bool, error) {
	if len(keys) == 0 || len(keys) > len(t.reqs) {
		return nil, fmt.Errorf("gubernator: %d keys per call (1 to %d)", len(keys), len(t.reqs))
	}
	for i, k := range keys {
		t.reqs[i].UniqueKey = k
	}
	t.req.Requests = t.reqs[:len(keys)]
	resp, err := t.client.GetRateLimits(ctx, &t.req)
	if err != nil {
		return nil, err
	}
	if len(resp.Responses) != len(keys) {
		return nil, fmt.Errorf("gubernator: %d responses to %d requests", len(resp.Responses), len(keys))
	}
	allowed := make([]bool, len(keys))
	for i, r := range resp.Responses {
		if r == nil {
			return nil, fmt.Errorf("gubernator: no response for %q", keys[i])
		}
		if r.Error != "" {
			return nil, fmt.Errorf("gubernator: %s: %s", keys[i], r.Error)
		}
		allowed[i] = r.Status == guber.Status_UNDER_LIMIT
	}
	return allowed, nil
}

// Close does nothing: the connection is shared and closed with the system.
func (t *target) Close() error { return nil }

// daemonOption adjusts each node's configuration in cluster.StartWith.
type daemonOption func(*guber.DaemonConfig)

func (f daemonOption) Apply(c *guber.DaemonConfig) { f(c) }

// ChildMain is `tgbench child gubernator -peers A,B,C`: it runs one
// gubernator node per gRPC address in this process, all peers of each other,
// until SIGTERM or SIGINT.
func ChildMain(args []string) error {
	fs := flag.NewFlagSet("gubernator", flag.ContinueOnError)
	peersFlag := fs.String("peers", "", "comma-separated gRPC addresses, one node each")
	cache := fs.Int("cache-size", cacheSize, "LRU cache size per node")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *peersFlag == "" {
		return errors.New("gubernator child: -peers is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Quiet: the nodes log through logrus' standard logger.
	logrus.SetOutput(os.Stderr)
	logrus.SetLevel(logrus.ErrorLevel)

	var peers []guber.PeerInfo
	for _, a := range strings.Split(*peersFlag, ",") {
		// The HTTP gateway is not used: any free port.
		peers = append(peers, guber.PeerInfo{GRPCAddress: a, HTTPAddress: "127.0.0.1:0"})
	}
	err := cluster.StartWith(peers, daemonOption(func(c *guber.DaemonConfig) {
		c.CacheSize = *cache
		// Production defaults (BatchWait 500µs, BatchLimit 1000,
		// BatchTimeout 500ms, ...) instead of cluster's test settings.
		c.Behaviors = guber.BehaviorConfig{}
	}))
	if err != nil {
		cluster.Stop()
		return fmt.Errorf("gubernator child: %w", err)
	}
	<-ctx.Done()
	cluster.Stop()
	return nil
}
