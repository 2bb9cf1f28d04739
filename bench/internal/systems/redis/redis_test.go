package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
)

// syncBuf is a log sink safe for the server's stdout and stderr copiers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var ensureOnce sync.Once

// needRedis installs redis-server with scripts/ensure-redis.sh if it is
// missing, and skips only if that fails.
func needRedis(t *testing.T) {
	t.Helper()
	ensureOnce.Do(func() {
		if _, err := exec.LookPath("redis-server"); err == nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "ensure-redis.sh")
		out, err := exec.Command("bash", script).CombinedOutput()
		t.Logf("ensure-redis.sh: %v\n%s", err, out)
	})
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed and scripts/ensure-redis.sh could not install it (make test-bench installs it first)")
	}
}

func start(t *testing.T, fsync, cpus string) *System {
	t.Helper()
	needRedis(t)
	log := &syncBuf{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sys, err := Start(ctx, proc.Options{Dir: t.TempDir(), Log: log, ServerCPUs: cpus}, fsync)
	if err != nil {
		t.Fatalf("Start(%s): %v\nlog:\n%s", fsync, err, log.String())
	}
	s := sys.(*System)
	t.Cleanup(func() {
		pid := s.Pids()[0]
		s.Close()
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("redis-server %d still there after Close (kill 0: %v)", pid, err)
		}
		if t.Failed() {
			t.Logf("redis-server log:\n%s", log.String())
		}
	})
	return s
}

func TestRedis(t *testing.T) {
	for _, fsync := range []string{"always", "everysec"} {
		t.Run(fsync, func(t *testing.T) {
			// Pin the always variant (through taskset) to check that the
			// pid is still redis-server's.
			cpus := ""
			if fsync == "always" {
				cpus = "0"
			}
			s := start(t, fsync, cpus)
			if s.Name() != "redis-"+fsync || s.Durable() != (fsync == "always") || !s.Linearizable() {
				t.Fatalf("name %q durable %v linearizable %v", s.Name(), s.Durable(), s.Linearizable())
			}
			if len(s.Pids()) != 1 || s.Pids()[0] <= 0 {
				t.Fatalf("pids %v", s.Pids())
			}
			t.Run("config", func(t *testing.T) { testConfig(t, s, fsync) })
			t.Run("token-bucket", func(t *testing.T) { testTokenBucket(t, s) })
			t.Run("refill", func(t *testing.T) { testRefill(t, s) })
			t.Run("budget", func(t *testing.T) { testBudget(t, s) })
			t.Run("batch16", func(t *testing.T) { testBatch16(t, s) })
			t.Run("modes", func(t *testing.T) { testModes(t, s) })
		})
	}
}

// decideN runs workers goroutines, each with its own target, each making n
// single decisions on key; it returns how many were allowed and how long
// the whole thing took.
func decideN(t *testing.T, s *System, w load.Workload, mode load.Mode, runID string, workers, n int, key string) (int64, time.Duration) {
	t.Helper()
	ctx := context.Background()
	if err := s.Setup(ctx, w, runID); err != nil {
		t.Fatal(err)
	}
	targets := make([]load.Target, workers)
	for i := range targets {
		tg, err := s.NewTarget(w, mode, runID)
		if err != nil {
			t.Fatal(err)
		}
		targets[i] = tg
	}
	var allowed, errs atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for _, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				res, err := tg.Decide(ctx, []string{key})
				if err != nil {
					errs.Add(1)
					t.Errorf("Decide: %v", err)
					return
				}
				if res[0] {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	for _, tg := range targets {
		tg.Close()
	}
	return allowed.Load(), elapsed
}

func testTokenBucket(t *testing.T, s *System) {
	w := load.Workload{Name: "token-bucket", Kind: load.TokenBucket, Keys: 1, Capacity: 10, RatePerSec: 1}
	allowed, elapsed := decideN(t, s, w, load.Linearizable, "tb-"+s.fsync, 8, 20, load.KeyName(0))
	hi := 10 + int64(elapsed.Seconds()*1) + 1
	t.Logf("%d of 160 allowed in %v (want 10..%d)", allowed, elapsed, hi)
	if allowed < 10 || allowed > hi {
		t.Fatalf("allowed %d, want within [10, %d]", allowed, hi)
	}
}

func testBudget(t *testing.T, s *System) {
	w := load.Workload{Name: "budget", Kind: load.Budget, Keys: 1, BudgetAmount: "1.00", Cost: "0.25"}
	allowed, _ := decideN(t, s, w, load.Linearizable, "budget-"+s.fsync, 16, 1, load.KeyName(0))
	if allowed != 4 {
		t.Fatalf("budget 1.00 at 0.25: %d allowed, want exactly 4", allowed)
	}
	// The same with Batch16: 16 pipelined decisions on one fresh key.
	tg, err := s.NewTarget(w, load.Batch16, "budget-batch-"+s.fsync)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = load.KeyName(0)
	}
	res, err := tg.Decide(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, ok := range res {
		if ok {
			n++
		}
		if ok != (i < 4) {
			t.Errorf("batch decision %d: %v (want the first 4 allowed, in pipeline order)", i, ok)
		}
	}
	if n != 4 {
		t.Fatalf("batch: %d allowed, want 4", n)
	}
}

func testBatch16(t *testing.T, s *System) {
	w := load.Workload{Name: "token-bucket", Kind: load.TokenBucket, Keys: 16, Capacity: 1, RatePerSec: 1}
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		runID := fmt.Sprintf("batch-%s-%d", s.fsync, attempt)
		if err := s.Setup(ctx, w, runID); err != nil {
			t.Fatal(err)
		}
		tg, err := s.NewTarget(w, load.Batch16, runID)
		if err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 16)
		for i := range keys {
			keys[i] = load.KeyName(i)
		}
		begin := time.Now()
		first, err := tg.Decide(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		second, err := tg.Decide(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(begin)
		tg.Close()
		if len(first) != 16 || len(second) != 16 {
			t.Fatalf("got %d and %d results, want 16", len(first), len(second))
		}
		if elapsed >= 900*time.Millisecond {
			// A refill of a whole token may have happened; try again.
			if attempt < 3 {
				continue
			}
			t.Fatalf("two batches took %v, too slow to check", elapsed)
		}
		for i := range keys {
			if !first[i] {
				t.Errorf("first batch: %s denied, want allowed (full bucket)", keys[i])
			}
			if second[i] {
				t.Errorf("second batch: %s allowed, want denied (empty bucket)", keys[i])
			}
		}
		return
	}
}

func testModes(t *testing.T, s *System) {
	for _, k := range []load.Kind{load.TokenBucket, load.Budget} {
		m := s.Modes(load.Workload{Kind: k})
		if len(m) != 2 || m[0] != load.Linearizable || m[1] != load.Batch16 {
			t.Errorf("Modes(%s) = %v", k, m)
		}
	}
	w := load.Workload{Kind: load.TokenBucket, Capacity: 1, RatePerSec: 1}
	if _, err := s.NewTarget(w, load.Stale, "x"); err == nil {
		t.Error("NewTarget(stale) succeeded, want an error")
	}
	bad := load.Workload{Kind: load.Budget, BudgetAmount: "1", Cost: "0.0000001"}
	if err := s.Setup(context.Background(), bad, "x"); err == nil {
		t.Error("Setup with 7 fractional digits succeeded, want an error")
	}
}

func testConfig(t *testing.T, s *System, fsync string) {
	ctx := context.Background()
	for param, want := range map[string]string{
		"appendonly": "yes", "appendfsync": fsync, "save": "", "bind": "127.0.0.1",
		"protected-mode": "no",
	} {
		got, err := s.client.ConfigGet(ctx, param).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got[param] != want {
			t.Errorf("CONFIG GET %s = %q, want %q", param, got[param], want)
		}
	}
	pid := s.Pids()[0]
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "redis-server" {
		t.Errorf("pid %d is %q (%v), want redis-server", pid, comm, err)
	}
	if _, err := proc.CPUSeconds(pid); err != nil {
		t.Errorf("CPUSeconds(%d): %v", pid, err)
	}
}

// testRefill drains a bucket of 2 refilled at 10/s, waits 250 ms (2.5
// tokens, capped at 2) and expects exactly 2 more; the stored state is
// plain integers (micro-tokens, microseconds).
func testRefill(t *testing.T, s *System) {
	w := load.Workload{Kind: load.TokenBucket, Keys: 1, Capacity: 2, RatePerSec: 10}
	runID := "refill-" + s.fsync
	tg, err := s.NewTarget(w, load.Linearizable, runID)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx := context.Background()
	decide := func() bool {
		r, err := tg.Decide(ctx, []string{"k"})
		if err != nil {
			t.Fatal(err)
		}
		return r[0]
	}
	if !decide() || !decide() {
		t.Fatal("full bucket of 2: denied")
	}
	begin := time.Now()
	if decide() {
		t.Fatal("empty bucket: allowed")
	}
	time.Sleep(250 * time.Millisecond)
	a, b, c := decide(), decide(), decide()
	if el := time.Since(begin); el < 290*time.Millisecond && (!a || !b || c) {
		t.Fatalf("after 250 ms at 10/s, capacity 2: %v %v %v, want true true false", a, b, c)
	}
	h, err := s.client.HGetAll(ctx, "tb:"+runID+":k").Result()
	if err != nil {
		t.Fatal(err)
	}
	digits := regexp.MustCompile(`^[0-9]+$`)
	if !digits.MatchString(h["t"]) || !digits.MatchString(h["ts"]) || len(h["ts"]) < 16 {
		t.Errorf("stored state %v, want integer micro-tokens and microseconds", h)
	}
}
