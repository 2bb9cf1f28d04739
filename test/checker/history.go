// Package checker holds the operation history of a fault-injection run and
// the checks that judge it: linearizability per budget key (porcupine), no
// overspend, no lost acknowledged consumption, idempotent retries, and
// replica convergence. The black-box harness (test/jepsen) and the in-process
// simulation (node) record the same history and run the same checks.
package checker

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind string

const (
	// Consume: Key is the budget, Amount the micros, RequestID set. Output:
	// Allowed, Remaining (micros, the budget's amount - spent - held after).
	Consume Kind = "consume"
	// Read: Key is the budget, Level "linearizable" | "leader" | "stale".
	// Output: Spent (micros).
	Read Kind = "read"
	// Reserve / Commit / Release on Key (the budget); HoldID in the output of
	// Reserve and the input of Commit / Release.
	Reserve Kind = "reserve"
	Commit  Kind = "commit"
	Release Kind = "release"
	// RateCheck: Key is "policy/key", Amount the cost. Output: Allowed.
	RateCheck Kind = "rate"
)

// Status is how an operation ended.
type Status string

const (
	// OK: the call answered; the output fields are the answer.
	OK Status = "ok"
	// Fail: the call certainly did not take effect (a deterministic
	// rejection such as InvalidArgument, or a read that failed).
	Fail Status = "fail"
	// Unknown: no answer (timeout, lost leadership, node died): the
	// operation may or may not have happened. Never dropped.
	Unknown Status = "unknown"
)

// Op is one operation, from invocation to completion.
type Op struct {
	ID        int64  `json:"id"`
	Client    int    `json:"client"`
	Node      string `json:"node,omitempty"` // node the client sent it to first
	Kind      Kind   `json:"kind"`
	Key       string `json:"key"`
	RequestID string `json:"request_id,omitempty"`
	Amount    int64  `json:"amount,omitempty"`
	Level     string `json:"level,omitempty"`
	HoldID    string `json:"hold_id,omitempty"`
	// Retry marks a deliberate re-send of an earlier RequestID.
	Retry bool `json:"retry,omitempty"`

	// InvokeNs and CompleteNs are monotonic nanoseconds since the run began.
	// For Unknown operations CompleteNs is when the client gave up.
	InvokeNs   int64  `json:"invoke_ns"`
	CompleteNs int64  `json:"complete_ns"`
	Status     Status `json:"status"`
	Err        string `json:"err,omitempty"`

	Allowed   bool   `json:"allowed,omitempty"`
	Remaining int64  `json:"remaining,omitempty"`
	Spent     int64  `json:"spent,omitempty"`
	LogIndex  uint64 `json:"log_index,omitempty"`
	ServedBy  string `json:"served_by,omitempty"`
}

// History is every operation of a run, plus what the checks need to know
// about the objects (budget amounts).
type History struct {
	Seed int64 `json:"seed"`
	// Budgets maps a budget key to its amount in micros (HARD enforcement,
	// no period, no parent).
	Budgets map[string]int64 `json:"budgets"`
	Ops     []Op             `json:"ops"`
}

// Recorder collects operations from many goroutines.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	next  int64
	h     History
}

// NewRecorder starts a history; budgets maps keys to amounts in micros.
func NewRecorder(seed int64, budgets map[string]int64) *Recorder {
	return &Recorder{start: time.Now(), h: History{Seed: seed, Budgets: budgets}}
}

// Now is the run's monotonic clock in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Add records a finished operation (InvokeNs and CompleteNs set by the
// caller with Now) and returns it with its ID.
func (r *Recorder) Add(op Op) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	op.ID = r.next
	r.h.Ops = append(r.h.Ops, op)
	return op
}

// History returns a copy of what was recorded so far.
func (r *Recorder) History() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.Ops = append([]Op(nil), r.h.Ops...)
	return h
}

// Save writes the history as JSON.
func (h History) Save(path string) error {
	b, err := json.MarshalIndent(h, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Load reads a history written by Save.
func Load(path string) (History, error) {
	var h History
	b, err := os.ReadFile(path)
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("history %s: %w", path, err)
	}
	return h, nil
}

// Verdict is the outcome of one check.
type Verdict struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Artifact is a file the check wrote to explain a failure (for
	// linearizability: a porcupine visualization).
	Artifact string `json:"artifact,omitempty"`
}

func (v Verdict) String() string {
	mark := "PASS"
	if !v.OK {
		mark = "FAIL"
	}
	s := fmt.Sprintf("%s %-16s %s", mark, v.Check, v.Detail)
	if v.Artifact != "" {
		s += " (see " + v.Artifact + ")"
	}
	return s
}

// Final is what the harness observed after the faults healed.
type Final struct {
	// Spent per budget key (micros), read linearizably after healing.
	Spent map[string]int64
	// Replicas: applied index and state hash per node, read after healing.
	Replicas map[string]Replica
}

// Replica is one node's position and state hash.
type Replica struct {
	AppliedIndex uint64
	StateHash    string
}
