// Package jepsen is tollgate's black-box fault-injection harness: it runs 3
// or 5 real tollgate processes, each in its own network namespace
// (test/procs), drives them with concurrent clients through the Go SDK while
// a nemesis injects faults on a schedule drawn from a seed, records every
// operation with its invocation and completion time (test/checker's
// Recorder), heals, and judges the history: linearizability per budget key,
// no overspend, no lost acknowledged charge, idempotent retries, identical
// replicas, and the harness's own checks (recovery, log order, holds, rate
// limits, stale-read bounds, that every fault really happened).
//
// Run is the one entry point; the tests in this package choose the
// configurations (a short run with every fault kind, one targeted run per
// planted bug, a long run for `make jepsen`). See DESIGN.md.
package jepsen

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// FaultKind names one kind of fault the nemesis injects.
type FaultKind string

// The fault kinds. Partitions are verified with TCP probes after every cut.
const (
	// FaultIsolate cuts one random node off from the others.
	FaultIsolate FaultKind = "isolate"
	// FaultIsolateLeader cuts the leader off from the others.
	FaultIsolateLeader FaultKind = "isolate-leader"
	// FaultHalves splits the nodes into a minority and a majority (1|2 of
	// 3, 2|3 of 5).
	FaultHalves FaultKind = "halves"
	// FaultRing (5 nodes): each node sees only its two ring neighbours, so
	// every node has a majority, but no two majorities agree on it.
	FaultRing FaultKind = "ring"
	// FaultBridge (5 nodes): two halves that share one node.
	FaultBridge FaultKind = "bridge"
	// FaultIsolateSlowLeader: restart a follower with an election timeout
	// 16 times the others' (so its leader lease outlasts their election),
	// make it leader and cut it off: for a while two nodes believe they
	// lead, the old one only by its lease. Linearizable reads must still
	// never be stale (VerifyLeader); LEADER reads may be, by design.
	FaultIsolateSlowLeader FaultKind = "isolate-slow-leader"
	// FaultOneWay: a node (the leader half of the time) can send but not
	// receive (iptables INPUT drop inside its namespace).
	FaultOneWay FaultKind = "one-way"
	// FaultKillOne: kill -9 one random node, restart it later.
	FaultKillOne FaultKind = "kill-one"
	// FaultKillLeader: kill -9 the leader, restart it later.
	FaultKillLeader FaultKind = "kill-leader"
	// FaultKillMajority: kill -9 a majority, restart them later.
	FaultKillMajority FaultKind = "kill-majority"
	// FaultKillAll: kill -9 every node, restart them later.
	FaultKillAll FaultKind = "kill-all"
	// FaultPause: SIGSTOP one random node longer than the election
	// timeout, then SIGCONT.
	FaultPause FaultKind = "pause"
	// FaultPauseLeader: the same for the leader.
	FaultPauseLeader FaultKind = "pause-leader"
	// FaultAddNode: start a fresh node that joins as a voter; when the
	// fault ends it is removed (ClusterService/RemoveServer) and killed.
	FaultAddNode FaultKind = "add-node"
	// FaultRemoveFollower: remove a follower from the configuration and
	// kill it; when the fault ends it rejoins with a fresh data dir.
	FaultRemoveFollower FaultKind = "remove-follower"
	// FaultRemoveLeader: the same for the leader.
	FaultRemoveLeader FaultKind = "remove-leader"
	// FaultTransfer: ClusterService/TransferLeadership to a random
	// follower.
	FaultTransfer FaultKind = "transfer-leadership"
	// FaultSnapshotLag: kill a follower, keep writing until the leader has
	// compacted its log past it, restart it: it must install a snapshot.
	FaultSnapshotLag FaultKind = "snapshot-lag"
	// FaultSnapshotKill: kill -9 a node the moment it starts writing a
	// snapshot, restart it later.
	FaultSnapshotKill FaultKind = "snapshot-kill"
	// FaultClockOffset: restart a follower with --clock-offset ±N minutes
	// and make it leader, so it stamps the log; restart it without the
	// offset when the fault ends.
	FaultClockOffset FaultKind = "clock-offset"
)

// AllFaults lists every fault kind that applies to a cluster of n nodes
// (ring and bridge need 5).
func AllFaults(n int) []FaultKind {
	kinds := []FaultKind{FaultIsolate, FaultIsolateLeader, FaultIsolateSlowLeader, FaultHalves}
	if n >= 5 {
		kinds = append(kinds, FaultRing, FaultBridge)
	}
	return append(kinds, FaultOneWay, FaultKillOne, FaultKillLeader, FaultKillMajority, FaultKillAll,
		FaultPause, FaultPauseLeader, FaultAddNode, FaultRemoveFollower, FaultRemoveLeader, FaultTransfer,
		FaultSnapshotLag, FaultSnapshotKill, FaultClockOffset)
}

// Mix weighs the operations a worker chooses from (relative weights).
type Mix struct {
	Consume    int // consume from a budget key
	Retry      int // re-send a finished request id (consume, reserve or rate check)
	LinRead    int // linearizable read of a budget key
	LeaderRead int // leader-level read
	StaleRead  int // stale read, sometimes bounded by max_staleness
	Hold       int // reserve, commit or release on the hold budgets
	Rate       int // rate-limit check
}

// Probe configures the linearizable read probes: per node, reads are sent
// on a fixed period whether or not earlier ones have answered, so reads are
// invoked all through a pause or a leadership change, not just when a
// worker gets around to it.
type Probe struct {
	Interval    time.Duration // 0: no probes
	InFlightMax int           // per node; a tick with all slots taken is skipped
	Timeout     time.Duration // per read (single try, no SDK retries)
}

// Config is one run.
type Config struct {
	// Name goes into the results directory's name.
	Name  string
	Nodes int
	Seed  int64
	// Duration of the fault phase: the workload runs at least this long,
	// longer when the mandatory faults need it.
	Duration time.Duration
	// Faults: each kind is injected at least once, in an order drawn from
	// the seed; then random kinds from the list while Duration lasts.
	Faults []FaultKind
	// FaultMin..FaultMax: how long a fault stays before it is undone.
	FaultMin, FaultMax time.Duration
	// GapMin..GapMax: the quiet time before each fault.
	GapMin, GapMax time.Duration
	// ClockOffsetMax bounds --clock-offset (1 minute to this, either sign).
	ClockOffsetMax time.Duration

	Workers int
	// OpsPerSecond per worker (a ticker paces each worker).
	OpsPerSecond float64
	Mix          Mix
	Probe        Probe
	// OpTimeout bounds one operation, SDK retries included; then it is
	// recorded Unknown (mutations) or Fail (reads).
	OpTimeout time.Duration
	// TryTimeout bounds one try of the SDK.
	TryTimeout time.Duration

	ElectionTimeout time.Duration
	// Snapshot stress: every node runs with these (low) settings.
	SnapshotThreshold int
	SnapshotInterval  time.Duration
	TrailingLogs      int

	// PlantedBug runs a binary built with -tags tollgate_planted and
	// TOLLGATE_PLANTED_BUG set to it ("" for the real thing).
	PlantedBug string

	// ResultsDir is where run directories go (<time>-<name>-seed<N>).
	ResultsDir string
	// LinTimeout bounds the porcupine check.
	LinTimeout time.Duration
	// HealthTimeout bounds the wait for a healthy cluster between faults
	// and after healing; exceeding it fails the liveness check.
	HealthTimeout time.Duration
	// RecoveryMax: after healing, a consume must succeed within this.
	RecoveryMax time.Duration

	// ExtraChecks run after the built-in ones (see ExtraCheck).
	ExtraChecks []ExtraCheck
}

// WithDefaults fills every zero field.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Name == "" {
		c.Name = "run"
	}
	defInt(&c.Nodes, 3)
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano() % 1_000_000_000
	}
	def(&c.Duration, 60*time.Second)
	if len(c.Faults) == 0 {
		c.Faults = AllFaults(c.Nodes)
	}
	def(&c.FaultMin, 1500*time.Millisecond)
	def(&c.FaultMax, 3*time.Second)
	def(&c.GapMin, 500*time.Millisecond)
	def(&c.GapMax, 1500*time.Millisecond)
	def(&c.ClockOffsetMax, 3*time.Minute)
	defInt(&c.Workers, 10)
	if c.OpsPerSecond == 0 {
		c.OpsPerSecond = 12
	}
	if c.Mix == (Mix{}) {
		c.Mix = Mix{Consume: 40, Retry: 6, LinRead: 20, LeaderRead: 7, StaleRead: 9, Hold: 10, Rate: 8}
	}
	if c.Probe.Interval != 0 {
		defInt(&c.Probe.InFlightMax, 16)
		def(&c.Probe.Timeout, 3*time.Second)
	}
	def(&c.OpTimeout, 8*time.Second)
	def(&c.TryTimeout, 2*time.Second)
	def(&c.ElectionTimeout, 500*time.Millisecond)
	defInt(&c.SnapshotThreshold, 48)
	def(&c.SnapshotInterval, 100*time.Millisecond)
	defInt(&c.TrailingLogs, 24)
	if c.ResultsDir == "" {
		c.ResultsDir = "results"
	}
	def(&c.LinTimeout, 60*time.Second)
	def(&c.HealthTimeout, 30*time.Second)
	def(&c.RecoveryMax, 10*time.Second)
	return c
}

// Environment variables of the long run (`make jepsen`).
const (
	EnvDuration = "TOLLGATE_JEPSEN_DURATION" // seconds
	EnvNodes    = "TOLLGATE_JEPSEN_NODES"
	EnvSeed     = "TOLLGATE_JEPSEN_SEED"
	// EnvKeepHistory: when set, every run saves its history and node logs,
	// not only failed ones.
	EnvKeepHistory = "TOLLGATE_JEPSEN_KEEP_HISTORY"
)

// SeedFromEnv returns $TOLLGATE_JEPSEN_SEED, or def when it is unset.
func SeedFromEnv(def int64) (int64, error) {
	s := os.Getenv(EnvSeed)
	if s == "" {
		return def, nil
	}
	seed, err := strconv.ParseInt(s, 10, 64)
	if err != nil || seed == 0 {
		return 0, fmt.Errorf("%s=%q: want a non-zero integer", EnvSeed, s)
	}
	return seed, nil
}

// LongConfigFromEnv is the configuration of `make jepsen`: every fault kind
// for the cluster size, for $TOLLGATE_JEPSEN_DURATION seconds (default 600)
// on $TOLLGATE_JEPSEN_NODES nodes (3 or 5, default 5), seed
// $TOLLGATE_JEPSEN_SEED (default: from the clock).
func LongConfigFromEnv() (Config, error) {
	cfg := Config{Name: "long", Nodes: 5, Duration: 600 * time.Second}
	if s := os.Getenv(EnvDuration); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil || secs < 10 || secs > 24*3600 {
			return cfg, fmt.Errorf("%s=%q: want seconds, 10 to 86400", EnvDuration, s)
		}
		cfg.Duration = time.Duration(secs) * time.Second
	}
	if s := os.Getenv(EnvNodes); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || (n != 3 && n != 5) {
			return cfg, fmt.Errorf("%s=%q: want 3 or 5", EnvNodes, s)
		}
		cfg.Nodes = n
	}
	seed, err := SeedFromEnv(0)
	if err != nil {
		return cfg, err
	}
	cfg.Seed = seed
	// Faults last longer than in the short run: time for elections,
	// retries and catch-up to interleave with the workload.
	cfg.FaultMin, cfg.FaultMax = 2*time.Second, 8*time.Second
	cfg.GapMin, cfg.GapMax = time.Second, 4*time.Second
	cfg.Probe = Probe{Interval: 100 * time.Millisecond}
	// Snapshots less often than in the short run: the state (with its
	// idempotency table) grows with the run.
	cfg.SnapshotThreshold, cfg.TrailingLogs = 128, 64
	cfg.LinTimeout = 5 * time.Minute
	return cfg.WithDefaults(), nil
}
