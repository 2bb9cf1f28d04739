package gubernator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
)

// The test binary is its own child: `gubernator.test child gubernator ...`.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "child" && os.Args[2] == "gubernator" {
		if err := ChildMain(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestDurationMs(t *testing.T) {
	for _, c := range []struct{ capacity, rate, want int64 }{
		{10, 1, 10000}, {1, 1, 1000}, {100, 1000, 100}, {10, 3, 3334}, {1, 2000, 1},
	} {
		if got := DurationMs(c.capacity, c.rate); got != c.want {
			t.Errorf("DurationMs(%d, %d) = %d, want %d", c.capacity, c.rate, got, c.want)
		}
	}
}

func TestGubernator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	sys, err := Start(ctx, proc.Options{Self: os.Args[0], Dir: t.TempDir(), Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster ready in %v", time.Since(start).Round(time.Millisecond))
	closed := false
	defer func() {
		if !closed {
			sys.Close()
		}
	}()

	if sys.Name() != "gubernator" || sys.Durable() || sys.Linearizable() {
		t.Errorf("name %q durable %v linearizable %v", sys.Name(), sys.Durable(), sys.Linearizable())
	}
	tb := load.Workload{Name: "token-bucket", Kind: load.TokenBucket, Keys: 1, Capacity: 10, RatePerSec: 1}
	if m := sys.Modes(tb); !slices.Equal(m, []load.Mode{load.Linearizable, load.Batch16}) {
		t.Errorf("token bucket modes %v", m)
	}
	budget := load.Workload{Name: "budget", Kind: load.Budget, Keys: 1, BudgetAmount: "1", Cost: "0.1"}
	if m := sys.Modes(budget); len(m) != 0 {
		t.Errorf("budget modes %v, want none", m)
	}
	pids := sys.Pids()
	if len(pids) != 1 {
		t.Fatalf("pids %v", pids)
	}

	// 8 workers x 20 decisions on one key: capacity 10, refill 1/s.
	runID := fmt.Sprintf("t%d", time.Now().UnixNano())
	if err := sys.Setup(ctx, tb, runID); err != nil {
		t.Fatal(err)
	}
	var allowed, errs atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for w := 0; w < 8; w++ {
		tg, err := sys.NewTarget(tb, load.Linearizable, runID)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tg.Close()
			for i := 0; i < 20; i++ {
				ok, err := tg.Decide(ctx, []string{load.KeyName(0)})
				if err != nil {
					t.Error(err)
					errs.Add(1)
					continue
				}
				if len(ok) != 1 {
					t.Errorf("%d results", len(ok))
					continue
				}
				if ok[0] {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	t.Logf("token bucket cap 10 rate 1/s, 8x20 decisions on one key over 3 nodes: allowed %d in %v (errors %d)",
		allowed.Load(), elapsed.Round(time.Millisecond), errs.Load())
	// Fixed window of 10 s: exactly 10 unless the decisions spanned it.
	if n := allowed.Load(); n < 10 || n > 12 {
		t.Errorf("allowed %d, want 10..12", n)
	}

	// Batch16: 16 fresh keys of capacity 1 in one call, then again.
	b16 := load.Workload{Name: "token-bucket", Kind: load.TokenBucket, Keys: 16, Capacity: 1, RatePerSec: 1}
	runID2 := runID + "b"
	if err := sys.Setup(ctx, b16, runID2); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = load.KeyName(i)
	}
	for w := 0; w < 3; w++ { // one target per node
		tg, err := sys.NewTarget(b16, load.Batch16, runID2+fmt.Sprint(w))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		ok, err := tg.Decide(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range ok {
			if a {
				n++
			}
		}
		t.Logf("batch16 target %d, 16 fresh keys capacity 1: allowed %d", w, n)
		if len(ok) != 16 || n != 16 {
			t.Errorf("batch16: %d results, %d allowed, want 16 allowed", len(ok), n)
		}
		ok, err = tg.Decide(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		n = 0
		for _, a := range ok {
			if a {
				n++
			}
		}
		t.Logf("batch16 target %d, same keys again: allowed %d", w, n)
		if time.Since(t0) < 500*time.Millisecond && n != 0 {
			t.Errorf("batch16 again: %d allowed, want 0", n)
		}
		tg.Close()
	}

	// Unsupported workload and mode.
	if _, err := sys.NewTarget(budget, load.Linearizable, runID); err == nil {
		t.Error("budget target: no error")
	}
	if _, err := sys.NewTarget(tb, load.Stale, runID); err == nil {
		t.Error("stale target: no error")
	}

	// Close stops the child (gracefully, before Stop's 10 s kill) and
	// leaves no process in its group.
	t0 := time.Now()
	if err := sys.Close(); err != nil {
		t.Error(err)
	}
	closed = true
	t.Logf("close took %v", time.Since(t0).Round(time.Millisecond))
	if d := time.Since(t0); d > 9*time.Second {
		t.Errorf("close took %v: the child ignored SIGTERM", d)
	}
	if err := syscall.Kill(pids[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d still exists after Close (kill 0: %v)", pids[0], err)
	}
	if err := syscall.Kill(-pids[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after Close (kill 0: %v)", pids[0], err)
	}
	sys.Close() // idempotent
}
