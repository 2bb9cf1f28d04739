package etcd

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
)

// TestMain lets the test binary stand in for tgbench: proc.StartChild runs
// `Self child etcd ARGS...`, with Self the test binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "child" && os.Args[2] == "etcd" {
		if err := ChildMain(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "etcd child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestEtcdSystem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	o := proc.Options{Self: self, Dir: t.TempDir()}
	if testing.Verbose() {
		o.Log = os.Stderr
	}
	start := time.Now()
	sys, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	s := sys.(*system)
	closed := false
	defer func() {
		if !closed {
			sys.Close()
		}
	}()
	t.Logf("cluster ready in %v, pids %v", time.Since(start).Round(time.Millisecond), sys.Pids())
	if len(sys.Pids()) != 3 || sys.Name() != "etcd" || !sys.Durable() || !sys.Linearizable() {
		t.Fatalf("system: name %q pids %v durable %v linearizable %v",
			sys.Name(), sys.Pids(), sys.Durable(), sys.Linearizable())
	}

	// Token bucket: capacity 10, 1 token/s; 8 workers x 20 decisions on one key.
	tb := load.Workload{Name: "token-bucket", Kind: load.TokenBucket, Keys: 3, Capacity: 10, RatePerSec: 1}
	if m := sys.Modes(tb); len(m) != 1 || m[0] != load.Linearizable {
		t.Fatalf("Modes(token bucket) = %v", m)
	}
	if err := sys.Setup(ctx, tb, "run1"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	allowed, denied := run(t, ctx, sys, tb, "run1", 8, 20, load.KeyName(0))
	elapsed := time.Since(t0).Seconds()
	t.Logf("token bucket: %d allowed, %d denied in %.3fs", allowed, denied, elapsed)
	if allowed < 10 || float64(allowed) > 10+1*elapsed+1 {
		t.Errorf("token bucket: %d allowed in %.3fs, want 10 (+ refill <= %.1f)", allowed, elapsed, elapsed)
	}
	if allowed+denied != 160 {
		t.Errorf("token bucket: %d decisions, want 160", allowed+denied)
	}
	// Another key of the same run starts full.
	if a, _ := run(t, ctx, sys, tb, "run1", 1, 12, load.KeyName(1)); a < 10 || a > 11 {
		t.Errorf("token bucket, fresh key: %d of 12 allowed, want 10 (or 11 with a refill)", a)
	}

	// Budget: 1.00 at 0.25 per decision, 16 concurrent decisions on one key.
	bw := load.Workload{Name: "budget", Kind: load.Budget, Keys: 3, BudgetAmount: "1.00", Cost: "0.25"}
	if err := sys.Setup(ctx, bw, "run2"); err != nil {
		t.Fatal(err)
	}
	allowed, denied = run(t, ctx, sys, bw, "run2", 16, 1, load.KeyName(0))
	t.Logf("budget: %d allowed, %d denied", allowed, denied)
	if allowed != 4 || denied != 12 {
		t.Errorf("budget: %d allowed, %d denied; want 4 and 12", allowed, denied)
	}
	// A new run id starts with an untouched budget.
	if err := sys.Setup(ctx, bw, "run3"); err != nil {
		t.Fatal(err)
	}
	if a, _ := run(t, ctx, sys, bw, "run3", 1, 6, load.KeyName(0)); a != 4 {
		t.Errorf("budget, new run: %d of 6 allowed, want 4", a)
	}

	if m := sys.Modes(load.Workload{Kind: "other"}); len(m) != 0 {
		t.Errorf("Modes(other) = %v, want none", m)
	}
	if _, err := sys.NewTarget(tb, load.Batch16, "run1"); err == nil {
		t.Error("NewTarget(Batch16) succeeded, want an error")
	}

	closed = true
	cstart := time.Now()
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("closed in %v", time.Since(cstart).Round(time.Millisecond))
	for i, c := range s.cmds {
		if !c.Exited() {
			t.Errorf("member %d (pid %d) still running after Close", i, c.Process.Pid)
		} else if code := c.ProcessState.ExitCode(); code != 0 {
			t.Errorf("member %d exited with code %d", i, code)
		}
	}
}

// run has workers goroutines, each with its own target, make n decisions
// each on key, and counts the outcomes.
func run(t *testing.T, ctx context.Context, sys load.System, w load.Workload, runID string, workers, n int, key string) (allowed, denied int64) {
	t.Helper()
	var a, d atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		tg, err := sys.NewTarget(w, load.Linearizable, runID)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer tg.Close()
			for range n {
				out, err := tg.Decide(ctx, []string{key})
				if err != nil {
					errs <- err
					return
				}
				if len(out) != 1 {
					errs <- fmt.Errorf("Decide returned %d results", len(out))
					return
				}
				if out[0] {
					a.Add(1)
				} else {
					d.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return a.Load(), d.Load()
}
