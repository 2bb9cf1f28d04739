// Package load is the benchmark's load generator: the same workloads,
// closed-loop and open-loop, against every system under test, with
// latencies in HdrHistograms and a correctness oracle per run.
package load

import (
	"context"
	"fmt"
	"time"
)

// Kind is what a workload asks the system to decide.
type Kind string

const (
	// TokenBucket: a rate limit per key; each decision takes 1 token.
	TokenBucket Kind = "token-bucket"
	// Budget: a decimal budget per key; each decision consumes Cost.
	Budget Kind = "budget"
)

// Workload is one kind of decision over a key space.
type Workload struct {
	// Name labels results ("token-bucket", "deny-heavy", "budget").
	Name string
	Kind Kind
	// Keys is the number of distinct keys (rate-limit keys or budgets).
	Keys int
	// Zipf draws keys with a Zipf(ZipfS) distribution instead of uniformly.
	Zipf  bool
	ZipfS float64
	// TokenBucket: Capacity tokens, refilled at RatePerSec per key; the
	// bucket starts full.
	Capacity   int64
	RatePerSec int64
	// Budget: every key is a budget of BudgetAmount (decimal string, USD);
	// each decision consumes Cost (decimal string).
	BudgetAmount string
	Cost         string
}

// KeyName is the name of key i as every system uses it.
func KeyName(i int) string { return fmt.Sprintf("k%05d", i) }

// Mode is how a system is asked.
type Mode string

const (
	// Linearizable: one decision per call, the system's strongest setting.
	Linearizable Mode = "linearizable"
	// Batch16: 16 decisions per call (systems that support batching).
	Batch16 Mode = "batch16"
	// Stale: a read of the decision state from any node (no decision is
	// made; tollgate STALE reads), for read throughput.
	Stale Mode = "stale"
)

// Target makes decisions for one worker goroutine. A system hands out one
// Target per worker (each may hold its own connection); a Target is not
// used concurrently.
type Target interface {
	// Decide makes len(keys) decisions (1, or 16 in Batch16 mode) and
	// returns whether each was allowed. An error means the outcome of the
	// whole call is unknown (counted as an error, not as a decision).
	Decide(ctx context.Context, keys []string) ([]bool, error)
	Close() error
}

// System is one system under test, started and ready.
type System interface {
	// Name labels results, e.g. "tollgate", "etcd", "redis-always".
	Name() string
	// Modes lists the modes the system supports for w (an empty list: the
	// workload does not apply, e.g. budgets on gubernator).
	Modes(w Workload) []Mode
	// Setup creates what w needs (policies, budgets, empty counters) so
	// that every key starts fresh: a full bucket, an untouched budget. It
	// is called before every run, so a system must reset or namespace its
	// state per call (e.g. a fresh key prefix per run id).
	Setup(ctx context.Context, w Workload, runID string) error
	// NewTarget returns a target for one worker of the current run.
	NewTarget(w Workload, mode Mode, runID string) (Target, error)
	// Pids are the server processes, for CPU accounting (/proc/PID/stat).
	Pids() []int
	// Durable and Linearizable describe the system's guarantees in the
	// configuration under test, for the report.
	Durable() bool
	Linearizable() bool
	Close() error
}

// Result is one run: a system, a workload, a mode and a concurrency.
type Result struct {
	System       string `json:"system"`
	Workload     string `json:"workload"`
	Distribution string `json:"distribution"` // uniform or zipf
	Mode         string `json:"mode"`
	Loop         string `json:"loop"` // closed or open
	Concurrency  int    `json:"concurrency"`
	// TargetRate is the open loop's intended decisions/s (0 for closed).
	TargetRate float64       `json:"target_rate,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
	Decisions  int64         `json:"decisions"`
	Allowed    int64         `json:"allowed"`
	Errors     int64         `json:"errors"`
	PerSecond  float64       `json:"decisions_per_second"`
	// Latency per call in microseconds (open loop: from the intended start).
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	P999us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
	// ServerCPUSeconds is the server processes' user+system CPU during the
	// run; CPUPer1000 that per 1,000 decisions.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	CPUPer1000       float64 `json:"server_cpu_seconds_per_1000"`
	// Overspend is the oracle: decisions allowed beyond what the limit
	// permits (token bucket: capacity + rate x elapsed per key; budget:
	// amount / cost per key). Must be 0 for a correct system.
	Overspend    int64 `json:"overspend"`
	Durable      bool  `json:"durable"`
	Linearizable bool  `json:"linearizable"`
}
