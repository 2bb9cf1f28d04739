// Package etcd is the benchmark's etcd system: a 3-member etcd cluster
// (go.etcd.io/etcd/server/v3/embed, one member per pinned child process)
// used the way people use etcd for counters: a linearizable read, a
// client-side decision and a compare-and-swap transaction, retried on
// conflict.
package etcd

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
)

const (
	members = 3
	// clients is the number of clientv3.Clients (each one gRPC connection
	// per member) shared by all targets of a system.
	clients = 4
	// maxAttempts bounds the read/CAS loop of one decision.
	maxAttempts = 100
	// startTimeout bounds Start's wait for the cluster to answer.
	startTimeout = 60 * time.Second
	// compactionRetention: periodic auto-compaction, as production etcd
	// deployments run (Kubernetes compacts every 5 minutes). Without it
	// every CAS write is kept as a revision forever and a long benchmark
	// fills the 2 GiB backend quota. It does not change durability.
	compactionRetention = "5m"
)

// Start starts a 3-member etcd cluster on 127.0.0.1, one member per child
// process (`tgbench child etcd ...`), with data dirs under o.Dir and etcd's
// default durability (fsync on every commit), and waits until the cluster
// answers a linearizable Get.
func Start(ctx context.Context, o proc.Options) (load.System, error) {
	ports, err := freePorts(2 * members)
	if err != nil {
		return nil, err
	}
	names := make([]string, members)
	clientURLs := make([]string, members)
	peerURLs := make([]string, members)
	initial := make([]string, members)
	for i := range members {
		names[i] = fmt.Sprintf("m%d", i)
		clientURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
		peerURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		initial[i] = names[i] + "=" + peerURLs[i]
	}
	token := fmt.Sprintf("tgbench-%d-%d", os.Getpid(), time.Now().UnixNano())

	s := &system{}
	for i := range members {
		dir := filepath.Join(o.Dir, names[i])
		if err := os.MkdirAll(dir, 0o700); err != nil {
			s.Close()
			return nil, err
		}
		cmd, err := proc.StartChild(o, "etcd",
			"-name", names[i],
			"-data-dir", dir,
			"-client-url", clientURLs[i],
			"-peer-url", peerURLs[i],
			"-initial-cluster", strings.Join(initial, ","),
			"-cluster-token", token,
		)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.cmds = append(s.cmds, cmd)
	}
	for range clients {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   clientURLs,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("etcd client: %w", err)
		}
		s.clis = append(s.clis, cli)
	}
	if err := s.waitReady(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// freePorts returns n distinct free ports.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// waitReady polls with a linearizable Get (through every shared client)
// until the cluster has a leader and answers.
func (s *system) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for i, cli := range s.clis {
		for {
			for j, c := range s.cmds {
				if c.Exited() {
					return fmt.Errorf("etcd member m%d exited during startup", j)
				}
			}
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cli.Get(actx, "/tgbench/ready") // linearizable by default
			acancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("etcd cluster not ready (client %d): %w", i, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// ChildMain runs one etcd member (the `tgbench child etcd ARGS...` side)
// until SIGTERM or SIGINT, then closes it cleanly.
func ChildMain(args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", "", "member name")
	dir := fs.String("data-dir", "", "data directory")
	clientURL := fs.String("client-url", "", "client URL to listen on and advertise")
	peerURL := fs.String("peer-url", "", "peer URL to listen on and advertise")
	initialCluster := fs.String("initial-cluster", "", "name=peerURL,... of every member")
	token := fs.String("cluster-token", "tgbench", "initial cluster token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *dir == "" || *clientURL == "" || *peerURL == "" || *initialCluster == "" {
		return errors.New("etcd child: -name, -data-dir, -client-url, -peer-url and -initial-cluster are required")
	}
	curl, err := url.Parse(*clientURL)
	if err != nil {
		return fmt.Errorf("-client-url: %w", err)
	}
	purl, err := url.Parse(*peerURL)
	if err != nil {
		return fmt.Errorf("-peer-url: %w", err)
	}

	// Catch signals before starting, so an early SIGTERM still closes cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cfg := embed.NewConfig() // etcd's defaults: fsync on, 100 ms tick, 1 s election
	cfg.Name = *name
	cfg.Dir = *dir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialCluster = *initialCluster
	cfg.InitialClusterToken = *token
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = compactionRetention
	// Errors only, to stderr; once shutting down, not even those (embed
	// logs every listener it closes as "serving failed" at error level).
	var closing atomic.Bool
	lcfg := zap.NewProductionConfig()
	lcfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	lcfg.OutputPaths, lcfg.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	lcfg.Sampling = nil
	lg, err := lcfg.Build(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return quietCore{Core: c, closing: &closing}
	}))
	if err != nil {
		return err
	}
	defer lg.Sync()
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.Named(*name))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", *name, err)
	}
	defer func() {
		closing.Store(true)
		// Stop raft and close the WAL and backend without the graceful
		// leadership transfer of e.Close: the whole cluster is stopped at
		// once, so a leader would wait 7 s (ReqTimeout) for a transferee
		// that is itself shutting down. Then close the listeners.
		e.Server.HardStop()
		e.Close()
	}()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd %s: %w", *name, err)
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd %s: %w", *name, err)
	case <-ctx.Done():
		return nil
	}
}

// quietCore drops all but panics and fatals once the member is closing.
type quietCore struct {
	zapcore.Core
	closing *atomic.Bool
}

func (c quietCore) With(f []zapcore.Field) zapcore.Core {
	return quietCore{Core: c.Core.With(f), closing: c.closing}
}

func (c quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.closing.Load() && e.Level < zapcore.DPanicLevel {
		return ce
	}
	return c.Core.Check(e, ce)
}

type system struct {
	cmds []*proc.Cmd
	clis []*clientv3.Client
	next atomic.Uint64
}

func (s *system) Name() string       { return "etcd" }
func (s *system) Durable() bool      { return true }
func (s *system) Linearizable() bool { return true }

func (s *system) Modes(w load.Workload) []load.Mode {
	switch w.Kind {
	case load.TokenBucket, load.Budget:
		return []load.Mode{load.Linearizable}
	}
	return nil
}

func (s *system) Pids() []int {
	pids := make([]int, 0, len(s.cmds))
	for _, c := range s.cmds {
		pids = append(pids, c.Process.Pid)
	}
	return pids
}

// Setup stores nothing: keys are namespaced by runID and a missing key is
// a full bucket or an untouched budget. It only validates w.
func (s *system) Setup(ctx context.Context, w load.Workload, runID string) error {
	_, err := newTarget(nil, w, load.Linearizable, runID)
	return err
}

func (s *system) NewTarget(w load.Workload, mode load.Mode, runID string) (load.Target, error) {
	if len(s.clis) == 0 {
		return nil, errors.New("etcd: system is closed")
	}
	cli := s.clis[s.next.Add(1)%uint64(len(s.clis))]
	return newTarget(cli, w, mode, runID)
}

// Close closes the clients and stops the members (in parallel, so no
// member waits on a cluster that has lost quorum).
func (s *system) Close() error {
	for _, cli := range s.clis {
		cli.Close()
	}
	s.clis = nil
	var wg sync.WaitGroup
	for _, c := range s.cmds {
		wg.Go(c.Stop)
	}
	wg.Wait()
	return nil
}

// nanoTokens is the fixed-point scale of a bucket's tokens (1 token = 1e9),
// so a refill of RatePerSec tokens/s over n nanoseconds is exactly
// RatePerSec*n nano-tokens: integer arithmetic, no rounding.
const nanoTokens = 1_000_000_000

type target struct {
	cli    *clientv3.Client
	kind   load.Kind
	prefix string
	// TokenBucket, in nano-tokens and nano-tokens per nanosecond.
	capNT, rate int64
	// Budget, in micro-units.
	amount, cost int64
}

func newTarget(cli *clientv3.Client, w load.Workload, mode load.Mode, runID string) (*target, error) {
	if mode != load.Linearizable {
		return nil, fmt.Errorf("etcd: mode %q not supported", mode)
	}
	t := &target{cli: cli, kind: w.Kind}
	switch w.Kind {
	case load.TokenBucket:
		if w.Capacity < 1 || w.Capacity > math.MaxInt64/nanoTokens {
			return nil, fmt.Errorf("etcd: token bucket capacity %d out of range", w.Capacity)
		}
		if w.RatePerSec < 0 {
			return nil, fmt.Errorf("etcd: negative refill rate %d", w.RatePerSec)
		}
		t.prefix = "/tb/" + runID + "/"
		t.capNT = w.Capacity * nanoTokens
		t.rate = w.RatePerSec // tokens/s == nano-tokens/ns
	case load.Budget:
		var err error
		if t.amount, err = load.ParseMicros(w.BudgetAmount); err != nil {
			return nil, fmt.Errorf("etcd: budget amount: %w", err)
		}
		if t.cost, err = load.ParseMicros(w.Cost); err != nil {
			return nil, fmt.Errorf("etcd: cost: %w", err)
		}
		t.prefix = "/budget/" + runID + "/"
	default:
		return nil, fmt.Errorf("etcd: workload kind %q not supported", w.Kind)
	}
	return t, nil
}

// Close does nothing: the client is the system's, shared by all targets.
func (t *target) Close() error { return nil }

func (t *target) Decide(ctx context.Context, keys []string) ([]bool, error) {
	out := make([]bool, len(keys))
	for i, k := range keys {
		ok, err := t.decide(ctx, t.prefix+k)
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, nil
}

// decide is one check-and-consume on key: a linearizable Get, the decision
// on the client, and on allow a transaction
//
//	If(ModRevision(key) == rev) Then(Put(key, new)) Else(Get(key))
//
// where rev is 0 for a missing key (etcd compares a missing key's revisions
// as 0, so this is CreateRevision == 0 too). A failed compare means another
// client wrote first; the Else branch returns the current value (read in the
// same linearizable transaction), so the retry decides again without another
// round trip. A denial writes nothing: the state it read stays valid.
func (t *target) decide(ctx context.Context, key string) (bool, error) {
	resp, err := t.cli.Get(ctx, key) // linearizable (ReadIndex via the leader)
	if err != nil {
		return false, err
	}
	var val []byte
	var rev int64
	if len(resp.Kvs) > 0 {
		val, rev = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
	}
	for range maxAttempts {
		allow, newVal, err := t.next(val)
		if err != nil {
			return false, fmt.Errorf("etcd: key %s: %w", key, err)
		}
		if !allow {
			return false, nil
		}
		tr, err := t.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(newVal))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return false, err
		}
		if tr.Succeeded {
			return true, nil
		}
		val, rev = nil, 0
		if len(tr.Responses) == 1 {
			if rr := tr.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
				val, rev = rr.Kvs[0].Value, rr.Kvs[0].ModRevision
			}
		}
	}
	return false, fmt.Errorf("etcd: key %s: compare-and-swap lost %d times in a row", key, maxAttempts)
}

// next decides on the current value (nil: the key is missing) and returns
// the value to write if allowed.
func (t *target) next(val []byte) (allow bool, newVal []byte, err error) {
	if t.kind == load.Budget {
		var spent int64
		if val != nil {
			if spent, err = strconv.ParseInt(string(val), 10, 64); err != nil {
				return false, nil, fmt.Errorf("bad budget value %q", val)
			}
		}
		// spent <= amount always holds, so this cannot overflow.
		if t.cost > t.amount-spent {
			return false, nil, nil
		}
		return true, strconv.AppendInt(nil, spent+t.cost, 10), nil
	}

	// etcd has no server-side clock usable in a transaction (no "now" in a
	// compare or a put), so the bucket is refilled from the client's wall
	// clock, as users of etcd counters do. The stored timestamp only moves
	// forward, so a clock that steps back refills nothing (never extra).
	now := time.Now().UnixNano()
	tokens, last := t.capNT, now // missing key: a full bucket
	if val != nil {
		if len(val) != 16 {
			return false, nil, fmt.Errorf("bad bucket value (%d bytes)", len(val))
		}
		tokens = int64(binary.BigEndian.Uint64(val[:8]))
		last = int64(binary.BigEndian.Uint64(val[8:]))
		if now > last {
			elapsed := now - last
			if need := t.capNT - tokens; t.rate > 0 && need > 0 {
				// Full once elapsed >= ceil(need/rate); otherwise
				// rate*elapsed < need+rate cannot overflow.
				if elapsed >= (need+t.rate-1)/t.rate {
					tokens = t.capNT
				} else {
					tokens += t.rate * elapsed
				}
			}
			last = now
		}
	}
	if tokens < nanoTokens {
		return false, nil, nil
	}
	tokens -= nanoTokens
	newVal = make([]byte, 16)
	binary.BigEndian.PutUint64(newVal[:8], uint64(tokens))
	binary.BigEndian.PutUint64(newVal[8:], uint64(last))
	return true, newVal, nil
}
