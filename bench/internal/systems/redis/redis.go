// Package redis runs Redis as a system under test: one redis-server with an
// append-only file (appendfsync always or everysec), and every decision one
// Lua script (EVALSHA), atomic per key.
//
// Redis here is a single node: it is linearizable only because there is one
// copy of the state, and it is a single point of failure. It is not
// replicated in this benchmark (Redis replication is asynchronous, so a
// replicated Redis would not be linearizable across a failover anyway).
package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
)

// tokenBucketLua takes one token from the bucket KEYS[1] (a hash: t =
// tokens in micro-tokens, ts = time of the last refill in microseconds of
// server time). ARGV[1] is the capacity in tokens, ARGV[2] the refill rate
// in tokens per second, which is also micro-tokens per microsecond, so the
// refill is exact integer arithmetic (Lua numbers are doubles; every value
// here stays far below 2^53). A missing key is a full bucket. Returns 1 if
// the token was taken, 0 if not.
//
// TIME in a script is fine from Redis 5 on: scripts are replicated (and
// written to the AOF) by their effects, the HSET below, not re-run.
const tokenBucketLua = `
local cap = tonumber(ARGV[1]) * 1000000
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = cap
  ts = now
end
if now > ts then
  tokens = math.min(cap, tokens + (now - ts) * rate)
  ts = now
end
local ok = 0
if tokens >= 1000000 then
  tokens = tokens - 1000000
  ok = 1
end
redis.call('HSET', KEYS[1], 't', string.format('%.0f', tokens), 'ts', string.format('%.0f', ts))
return ok
`

// budgetLua spends ARGV[2] micro-units from the budget KEYS[1] of ARGV[1]
// micro-units (the key holds the micro-units spent so far; missing: 0) if
// the whole cost fits. Returns 1 if spent, 0 if not.
const budgetLua = `
local amount = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + cost <= amount then
  redis.call('INCRBY', KEYS[1], ARGV[2])
  return 1
end
return 0
`

var (
	tokenBucketScript = goredis.NewScript(tokenBucketLua)
	budgetScript      = goredis.NewScript(budgetLua)
)

// maxExact is the largest integer a Lua (double) number holds exactly.
const maxExact = 1 << 53

// System is one running redis-server.
type System struct {
	name   string
	fsync  string
	cmd    *proc.Cmd
	client *goredis.Client
}

// Start runs one redis-server pinned to o.ServerCPUs on 127.0.0.1 and a
// free port, with an append-only file fsynced per fsync ("always": before
// every reply, group-committed per event-loop iteration; "everysec": once a
// second, so up to a second of acknowledged decisions can be lost on a
// crash), no RDB snapshots, data in o.Dir/redis-<fsync>.
func Start(ctx context.Context, o proc.Options, fsync string) (load.System, error) {
	if fsync != "always" && fsync != "everysec" {
		return nil, fmt.Errorf("redis: fsync must be always or everysec, not %q", fsync)
	}
	dir := filepath.Join(o.Dir, "redis-"+fsync)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	port, err := proc.FreePort()
	if err != nil {
		return nil, fmt.Errorf("redis: free port: %w", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd, err := proc.Start(o, "redis-server",
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", dir,
		"--appendonly", "yes",
		"--appendfsync", fsync,
		"--save", "",
		"--logfile", "",
	)
	if err != nil {
		return nil, fmt.Errorf("redis: %w (is redis-server installed? see bench/scripts/ensure-redis.sh)", err)
	}
	s := &System{
		name:  "redis-" + fsync,
		fsync: fsync,
		cmd:   cmd,
		client: goredis.NewClient(&goredis.Options{
			Addr: addr,
			// RESP2 and no CLIENT SETINFO / MAINT_NOTIFICATIONS handshakes:
			// nothing on a new connection but the connection.
			Protocol:        2,
			DisableIdentity: true,
			MaintNotificationsConfig: &maintnotifications.Config{
				Mode: maintnotifications.ModeDisabled,
			},
			// One connection per worker (up to 256), none shared.
			PoolSize:     300,
			PoolTimeout:  30 * time.Second,
			ReadTimeout:  30 * time.Second,
			WriteTimeout: 30 * time.Second,
			// A decision is not idempotent: never resend one whose outcome
			// is unknown; the caller counts it as an error.
			MaxRetries:            -1,
			ContextTimeoutEnabled: true,
		}),
	}
	if err := s.wait(ctx); err != nil {
		s.Close()
		return nil, err
	}
	for _, sc := range []*goredis.Script{tokenBucketScript, budgetScript} {
		if err := sc.Load(ctx, s.client).Err(); err != nil {
			s.Close()
			return nil, fmt.Errorf("redis: script load: %w", err)
		}
	}
	return s, nil
}

// wait polls PING until the server answers (up to 30 s or ctx).
func (s *System) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := s.client.Ping(pctx).Err()
		pcancel()
		if err == nil {
			return nil
		}
		if s.cmd.Exited() {
			return fmt.Errorf("redis: redis-server exited during startup (%v)", s.cmd.ProcessState)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis: no PONG from redis-server: %v (%w)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *System) Name() string { return s.name }

// Modes: both kinds, one decision or 16 pipelined per round trip.
func (s *System) Modes(w load.Workload) []load.Mode {
	switch w.Kind {
	case load.TokenBucket, load.Budget:
		return []load.Mode{load.Linearizable, load.Batch16}
	}
	return nil
}

// Setup checks w; there is nothing to create: keys are namespaced by runID,
// and a missing key is a full bucket or an untouched budget.
func (s *System) Setup(ctx context.Context, w load.Workload, runID string) error {
	_, err := args(w)
	return err
}

// NewTarget returns a target using the system's shared connection pool.
func (s *System) NewTarget(w load.Workload, mode load.Mode, runID string) (load.Target, error) {
	if mode != load.Linearizable && mode != load.Batch16 {
		return nil, fmt.Errorf("redis: mode %s not supported", mode)
	}
	a, err := args(w)
	if err != nil {
		return nil, err
	}
	t := &target{client: s.client, args: a}
	switch w.Kind {
	case load.TokenBucket:
		t.script, t.prefix = tokenBucketScript, "tb:"+runID+":"
	case load.Budget:
		t.script, t.prefix = budgetScript, "budget:"+runID+":"
	}
	t.pipe = s.client.Pipeline()
	return t, nil
}

// args are the script's ARGV for w.
func args(w load.Workload) ([]any, error) {
	switch w.Kind {
	case load.TokenBucket:
		if w.Capacity < 1 || w.Capacity > maxExact/1_000_000 {
			return nil, fmt.Errorf("redis: capacity %d out of range", w.Capacity)
		}
		if w.RatePerSec < 0 || w.RatePerSec > maxExact {
			return nil, fmt.Errorf("redis: rate %d/s out of range", w.RatePerSec)
		}
		return []any{strconv.FormatInt(w.Capacity, 10), strconv.FormatInt(w.RatePerSec, 10)}, nil
	case load.Budget:
		amount, err := load.ParseMicros(w.BudgetAmount)
		if err != nil {
			return nil, fmt.Errorf("redis: budget amount: %w", err)
		}
		cost, err := load.ParseMicros(w.Cost)
		if err != nil {
			return nil, fmt.Errorf("redis: cost: %w", err)
		}
		if cost <= 0 {
			return nil, fmt.Errorf("redis: cost %q must be positive", w.Cost)
		}
		// spent (<= amount) + cost must stay exact in a Lua number.
		if amount > maxExact/2 || cost > maxExact/2 {
			return nil, fmt.Errorf("redis: budget amount %q or cost %q too large", w.BudgetAmount, w.Cost)
		}
		return []any{strconv.FormatInt(amount, 10), strconv.FormatInt(cost, 10)}, nil
	}
	return nil, fmt.Errorf("redis: workload kind %q not supported", w.Kind)
}

func (s *System) Pids() []int { return []int{s.cmd.Process.Pid} }

// Durable: with appendfsync always an acknowledged decision is on disk;
// with everysec up to about a second of them can be lost.
func (s *System) Durable() bool { return s.fsync == "always" }

// Linearizable: a single node executes each script atomically. Not
// replicated here: a single point of failure.
func (s *System) Linearizable() bool { return true }

// Close closes the pool and stops the server (SIGTERM: Redis shuts down
// without an RDB save since none is configured), waiting for it to exit.
func (s *System) Close() error {
	err := s.client.Close()
	if !s.cmd.Exited() {
		s.cmd.Stop()
	}
	return err
}

// target makes one worker's decisions over the shared pool.
type target struct {
	client *goredis.Client
	pipe   goredis.Pipeliner
	script *goredis.Script
	prefix string
	args   []any
}

func (t *target) Decide(ctx context.Context, keys []string) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 1 {
		ok, err := t.one(ctx, keys[0])
		out[0] = ok
		return out, err
	}
	cmds := make([]*goredis.Cmd, len(keys))
	for i, k := range keys {
		cmds[i] = t.script.EvalSha(ctx, t.pipe, []string{t.prefix + k}, t.args...)
	}
	if _, err := t.pipe.Exec(ctx); err != nil && !isNoScript(err) {
		return nil, err
	}
	for i, c := range cmds {
		v, err := c.Int64()
		if isNoScript(err) {
			// The script cache was lost (not expected: the server is never
			// restarted). That EVALSHA did nothing; send the script.
			v, err = t.script.Eval(ctx, t.client, []string{t.prefix + keys[i]}, t.args...).Int64()
		}
		if err != nil {
			return nil, err
		}
		out[i] = v == 1
	}
	return out, nil
}

func (t *target) one(ctx context.Context, key string) (bool, error) {
	// Run is EVALSHA, falling back to EVAL on NOSCRIPT.
	v, err := t.script.Run(ctx, t.client, []string{t.prefix + key}, t.args...).Int64()
	if err != nil {
		return false, err
	}
	return v == 1, nil
}

func isNoScript(err error) bool {
	var rerr goredis.Error
	return err != nil && errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "NOSCRIPT")
}

// Close drops the target; the pool belongs to the System.
func (t *target) Close() error {
	t.pipe.Discard()
	return nil
}
