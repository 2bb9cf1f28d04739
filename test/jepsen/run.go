package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/checker"
	"github.com/tollgate/tollgate/test/procs"
)

// ExtraCheck is a check beyond the built-in ones. It runs last, with the
// healed cluster still up, and returns one verdict. (The receipts check is
// built in: it needs the receipt references of the answers, which the
// history does not record, and the key the harness generated.)
type ExtraCheck func(ctx context.Context, run RunInfo) checker.Verdict

// RunInfo is what an ExtraCheck gets.
type RunInfo struct {
	History checker.History
	Final   checker.Final
	// APIAddrs of the members after healing.
	APIAddrs []string
	Tenant   string
	Dir      string
}

// Timings of a run's phases.
type Timings struct {
	Start    time.Duration // cluster up, objects created
	Faults   time.Duration // workload under faults
	Heal     time.Duration // healed, leader back, recovery consume
	Settle   time.Duration // quiet workload, halt, resolve unknowns, convergence, final reads
	Checks   time.Duration
	Total    time.Duration
	Recovery time.Duration // from the leader being back to the first allowed consume
}

// Result is one run's outcome.
type Result struct {
	Config   Config
	Dir      string
	Schedule []Step
	Faults   []FaultRecord
	History  checker.History
	Final    checker.Final
	Verdicts []checker.Verdict
	Timings  Timings
	Summary  string
}

// Failed lists the checks that failed.
func (r *Result) Failed() []string {
	var out []string
	for _, v := range r.Verdicts {
		if !v.OK {
			out = append(out, v.Check)
		}
	}
	return out
}

// quietPeriod is how long the workload goes on against the healed cluster
// before it stops.
const quietPeriod = 2 * time.Second

// Run runs one configuration against a fresh cluster and returns the
// result; it fails t only when the harness itself cannot run (no root, the
// cluster does not start). Callers assert on the verdicts.
func Run(t testing.TB, cfg Config) *Result {
	t.Helper()
	cfg = cfg.WithDefaults()
	if os.Geteuid() != 0 {
		t.Fatal("jepsen: the harness puts every node in its own network namespace and needs root (CI runs it as root)")
	}
	wallStart := time.Now()
	res := &Result{Config: cfg, Schedule: NewSchedule(cfg)}
	res.Dir = newRunDir(t, cfg)
	t.Logf("jepsen %s: seed %d, %d nodes, %s of faults, planted bug %q; results in %s\nschedule:\n%s",
		cfg.Name, cfg.Seed, cfg.Nodes, cfg.Duration, cfg.PlantedBug, res.Dir, scheduleText(res.Schedule, 0))

	opts := procs.Options{Netns: true, ElectionTimeout: cfg.ElectionTimeout, Extra: []string{
		"--snapshot-threshold", strconv.Itoa(cfg.SnapshotThreshold),
		"--snapshot-interval", cfg.SnapshotInterval.String(),
		"--trailing-logs", strconv.Itoa(cfg.TrailingLogs)}}
	if cfg.PlantedBug != "" {
		opts.Tags = []string{"tollgate_planted"}
		opts.Env = []string{"TOLLGATE_PLANTED_BUG=" + cfg.PlantedBug}
	}
	// Every node gets the signing key, so the receipts check knows the
	// public key out of band.
	key := newClusterKey(t, procs.BinaryWithTags(t, opts.Tags...))
	opts.Extra = append(opts.Extra, "--signing-key", key.path)
	c := procs.NewCluster(t, cfg.Nodes, opts)
	c.StartAll()
	v := newView(c)
	if _, err := v.waitLeader(60*time.Second, false); err != nil {
		t.Fatalf("jepsen: the cluster did not start: %v", err)
	}
	obj := newObjects(cfg)
	if err := createObjects(v, obj, cfg); err != nil {
		t.Fatalf("jepsen: %v", err)
	}
	rec := checker.NewRecorder(cfg.Seed, obj.budgets)
	clock := func() time.Duration { return time.Duration(rec.Now()) }
	members := v.memberList()
	wl := newWorkload(cfg, rec, obj, members)
	t.Cleanup(wl.halt)
	if err := wl.start(members); err != nil {
		t.Fatalf("jepsen: %v", err)
	}
	res.Timings.Start = time.Since(wallStart)

	// Faults.
	phase := time.Now()
	nem := newNemesis(t, cfg, c, v, clock)
	nem.run(res.Schedule, phase.Add(cfg.Duration))
	res.Faults = nem.faults
	res.Timings.Faults = time.Since(phase)

	// Heal, and a consume must get through soon after.
	phase = time.Now()
	nem.healAll()
	t.Logf("healed at %+.1fs", clock().Seconds())
	liveness := nem.liveness
	recovery := recoveryVerdict(v, wl, cfg, &res.Timings)
	if err := v.waitHealthy(cfg.HealthTimeout); err != nil {
		liveness = append(liveness, "after healing: "+err.Error())
	}
	res.Timings.Heal = time.Since(phase)

	// Settle: the workload runs on briefly, stops, unknown outcomes are
	// resolved by re-sending their request ids, replicas converge, and
	// the final spend is read.
	phase = time.Now()
	wait(quietPeriod)
	wl.halt()
	resolved, left := wl.resolve(v.memberList())
	t.Logf("workload stopped at %+.1fs; %d unknown outcomes resolved by re-sending, %d still unknown", clock().Seconds(), resolved, left)
	final, finalProblems := collectFinal(v, obj)
	liveness = append(liveness, finalProblems...)
	res.Final = final.Final
	res.History = rec.History()
	res.Timings.Settle = time.Since(phase)

	// Checks.
	phase = time.Now()
	res.Verdicts = runChecks(res, cfg, final, wl, liveness, recovery, v, key)
	res.Timings.Checks = time.Since(phase)
	res.Timings.Total = time.Since(wallStart)
	res.Summary = summarize(res)
	t.Log("\n" + res.Summary)
	writeArtifacts(t, res, c)
	return res
}

func createObjects(v *view, obj objects, cfg Config) error {
	admin, err := v.admin(cfg.TryTimeout)
	if err != nil {
		return err
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return obj.create(ctx, admin)
}

// recoveryVerdict: once a leader is back after healing, a consume (one
// request id, retried) must be allowed within cfg.RecoveryMax.
func recoveryVerdict(v *view, wl *workload, cfg Config, timings *Timings) checker.Verdict {
	const name = "recovery"
	if _, err := v.waitLeader(cfg.HealthTimeout, true); err != nil {
		return checker.Verdict{Check: name, Detail: "after healing: " + err.Error()}
	}
	start := time.Now()
	cl, err := v.admin(cfg.TryTimeout)
	if err != nil {
		return checker.Verdict{Check: name, Detail: err.Error()}
	}
	defer cl.Close()
	r := request{kind: checker.Consume, key: recoveryKey, amount: "1", requestID: "recovery"}
	var last checker.Op
	for attempt := 1; time.Since(start) < cfg.RecoveryMax; attempt++ {
		last = wl.send(cl, clientRecovery, "", r, attempt > 1)
		if last.Status == checker.OK && last.Allowed {
			timings.Recovery = time.Since(start)
			detail := fmt.Sprintf("a consume was allowed %s after the leader was back (try %d)", timings.Recovery.Round(time.Millisecond), attempt)
			return checker.Verdict{Check: name, OK: timings.Recovery <= cfg.RecoveryMax, Detail: detail + fmt.Sprintf("; limit %s", cfg.RecoveryMax)}
		}
	}
	return checker.Verdict{Check: name, Detail: fmt.Sprintf("no consume allowed within %s of the leader being back; last: %s %s",
		cfg.RecoveryMax, last.Status, last.Err)}
}

// finalState is checker.Final plus what the harness checks need.
type finalState struct {
	checker.Final
	held map[string]int64 // hold keys: held micros
}

// collectFinal waits for the replicas to agree (or to stop moving while
// they disagree), records every member's applied index and state hash,
// and reads every budget linearizably.
func collectFinal(v *view, obj objects) (finalState, []string) {
	var problems []string
	f := finalState{Final: checker.Final{Spent: map[string]int64{}, Replicas: map[string]checker.Replica{}}, held: map[string]int64{}}
	members := v.memberList()
	var last map[*procs.Node]*tollgatev1.StatusResponse
	stableDiffering := 0
	converged := procs.Poll(30*time.Second, 200*time.Millisecond, func() bool {
		sts := v.statuses(context.Background(), members, true)
		sameIndex := len(sts) == len(members)
		hashes := map[string]bool{}
		for _, n := range members {
			if st := sts[n]; st != nil {
				sameIndex = sameIndex && st.AppliedIndex == sts[members[0]].AppliedIndex
				hashes[st.StateHash] = true
			}
		}
		moved := last == nil || replicaList(sts, members) != replicaList(last, members)
		last = sts
		if !sameIndex || moved {
			stableDiffering = 0
			return false
		}
		if len(hashes) == 1 {
			return true
		}
		// Same index, different hashes, nothing moving: they will not
		// converge; waiting longer only hides how soon we knew.
		stableDiffering++
		return stableDiffering >= 5
	})
	for _, n := range members {
		if st := last[n]; st != nil {
			f.Replicas[n.ID] = checker.Replica{AppliedIndex: st.AppliedIndex, StateHash: st.StateHash}
		} else {
			f.Replicas[n.ID] = checker.Replica{StateHash: "(no answer)"}
		}
	}
	if !converged {
		problems = append(problems, "replicas still moving 30s after the workload stopped: "+replicaList(last, members))
	}

	cl, err := v.admin(2 * time.Second)
	if err != nil {
		return f, append(problems, err.Error())
	}
	defer cl.Close()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range obj.budgets {
			if !yield(k) {
				return
			}
		}
	})
	for _, key := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		resp, err := cl.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{
			Tenant: tenant, BudgetId: key, Consistency: tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE}))
		cancel()
		if err != nil {
			problems = append(problems, fmt.Sprintf("final read of %s: %v", key, err))
			continue
		}
		spent, err1 := parseMicros(resp.Msg.Spent)
		held, err2 := parseMicros(resp.Msg.Held)
		if err1 != nil || err2 != nil {
			problems = append(problems, fmt.Sprintf("final read of %s: %v %v", key, err1, err2))
			continue
		}
		f.Spent[key], f.held[key] = spent, held
	}
	return f, problems
}

// newRunDir makes <ResultsDir>/<time>-<name>-seed<N>/ and prunes the
// oldest run directories beyond resultsKeepMax.
func newRunDir(t testing.TB, cfg Config) string {
	t.Helper()
	dir := filepath.Join(cfg.ResultsDir, fmt.Sprintf("%s-%s-seed%d", time.Now().Format("20060102-150405"), cfg.Name, cfg.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("jepsen: results directory: %v", err)
	}
	pruneRuns(cfg.ResultsDir)
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	return abs
}

// resultsKeepMax bounds how many run directories results/ keeps.
const resultsKeepMax = 50

func pruneRuns(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	slices.Sort(dirs) // names start with the time
	for len(dirs) > resultsKeepMax {
		os.RemoveAll(filepath.Join(parent, dirs[0]))
		dirs = dirs[1:]
	}
}

// writeArtifacts writes the summary; on failure also the seed, the
// history and the nodes' last log lines (the linearizability check wrote
// its visualization into the run directory itself).
func writeArtifacts(t testing.TB, res *Result, c *procs.Cluster) {
	t.Helper()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(res.Dir, name), data, 0o644); err != nil {
			t.Errorf("jepsen: write %s: %v", name, err)
		}
	}
	write("summary.txt", []byte(res.Summary))
	if len(res.Failed()) == 0 && os.Getenv(EnvKeepHistory) == "" {
		return
	}
	write("seed", []byte(strconv.FormatInt(res.Config.Seed, 10)+"\n"))
	if err := res.History.Save(filepath.Join(res.Dir, "history.json")); err != nil {
		t.Errorf("jepsen: save history: %v", err)
	}
	for _, n := range c.NodeList() {
		write(n.ID+".log", []byte(n.Log()))
	}
}
