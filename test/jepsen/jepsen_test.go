package jepsen_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/test/jepsen"
)

// TestJepsenShort: 3 nodes, every fault kind that applies to 3 nodes at
// least once (order and timing from the seed, printed; set
// TOLLGATE_JEPSEN_SEED to replay a schedule), and every check must pass.
func TestJepsenShort(t *testing.T) {
	seed, err := jepsen.SeedFromEnv(time.Now().UnixNano() % 1_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	res := jepsen.Run(t, jepsen.Config{
		Name: "short", Nodes: 3, Seed: seed,
		Duration: 85 * time.Second, Faults: jepsen.AllFaults(3),
		FaultMin: 1200 * time.Millisecond, FaultMax: 2200 * time.Millisecond,
		GapMin: 300 * time.Millisecond, GapMax: 900 * time.Millisecond,
		Workers: 9, OpsPerSecond: 10,
		Probe:      jepsen.Probe{Interval: 200 * time.Millisecond},
		LinTimeout: 60 * time.Second,
	})
	if failed := res.Failed(); len(failed) > 0 {
		t.Fatalf("checks failed: %v (seed %d; results in %s)", failed, seed, res.Dir)
	}
	injected := map[jepsen.FaultKind]bool{}
	for _, f := range res.Faults {
		injected[f.Kind] = true
	}
	for _, k := range jepsen.AllFaults(3) {
		if !injected[k] {
			t.Errorf("fault kind %s was never injected", k)
		}
	}
}

// TestJepsenPlantedBugs shows that the checks catch each bug planted in a
// binary built with -tags tollgate_planted: a short run with a schedule
// chosen to expose it must fail the named check. A checker that never
// fails is worthless.
func TestJepsenPlantedBugs(t *testing.T) {
	cases := []struct {
		bug   string
		check string   // the check that must fail
		also  []string // checks that must fail as well
		cfg   jepsen.Config
	}{{
		// The leader drops request ids: every re-send charges again and
		// answers differently, with a new receipt each time, and no receipt
		// names the request id.
		bug: "no-idempotency", check: "idempotent", also: []string{"receipts"},
		cfg: jepsen.Config{Duration: 8 * time.Second, Faults: []jepsen.FaultKind{jepsen.FaultKillLeader},
			Mix: jepsen.Mix{Consume: 30, Retry: 30, LinRead: 20, Rate: 10, Hold: 10}},
	}, {
		// Replicas apply entries with their own clocks: hold expiries and
		// rate-limit counters differ, so do the state hashes, and so do
		// the checkpoints each replica signs for one entry. A follower
		// restarted with a clock offset leads for a while.
		bug: "wall-clock-apply", check: "converged", also: []string{"receipts"},
		cfg: jepsen.Config{Duration: 8 * time.Second, Faults: []jepsen.FaultKind{jepsen.FaultClockOffset},
			Mix: jepsen.Mix{Consume: 20, LinRead: 10, Hold: 35, Rate: 35}},
	}, {
		// Reads skip VerifyLeader, so a deposed leader that does not know
		// it yet answers linearizable reads from its old state. Two ways
		// to depose it unaware: SIGSTOP it past the election timeout while
		// the others elect and commit (it answers the reads queued while
		// it slept in the moment it wakes, a race it wins only sometimes),
		// and cut off a leader whose lease outlasts the others' election
		// (it answers for a whole second). Probes keep invoking
		// linearizable reads on every node throughout.
		bug: "no-verify-leader", check: "linearizable",
		cfg: jepsen.Config{Duration: 10 * time.Second,
			Faults:   []jepsen.FaultKind{jepsen.FaultPauseLeader, jepsen.FaultIsolateSlowLeader},
			FaultMin: 2500 * time.Millisecond, FaultMax: 3 * time.Second,
			GapMin: 300 * time.Millisecond, GapMax: 600 * time.Millisecond,
			Mix: jepsen.Mix{Consume: 70, LinRead: 30},
			// Short tries, so writes find the new leader while the old
			// one's lease still runs.
			TryTimeout: 700 * time.Millisecond,
			Probe:      jepsen.Probe{Interval: 20 * time.Millisecond, InFlightMax: 16, Timeout: time.Second}},
	}, {
		// A new leader serves reads before its barrier commits, from a
		// commit index that may miss what the previous leader
		// acknowledged: leadership moves often under writes and reads.
		// A 10 s run missed it about one time in five (the window is a few
		// milliseconds after each election), so this one runs 20 s.
		bug: "no-barrier", check: "linearizable",
		cfg: jepsen.Config{Duration: 20 * time.Second,
			Faults:   []jepsen.FaultKind{jepsen.FaultTransfer, jepsen.FaultKillLeader},
			FaultMin: 300 * time.Millisecond, FaultMax: 600 * time.Millisecond,
			GapMin: 100 * time.Millisecond, GapMax: 300 * time.Millisecond,
			Mix:   jepsen.Mix{Consume: 70, LinRead: 30},
			Probe: jepsen.Probe{Interval: 5 * time.Millisecond, InFlightMax: 8, Timeout: 2 * time.Second}},
	}}
	seed, err := jepsen.SeedFromEnv(time.Now().UnixNano() % 1_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.bug, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Name, cfg.Nodes, cfg.Seed, cfg.PlantedBug = "planted-"+tc.bug, 3, seed, tc.bug
			cfg.LinTimeout = 30 * time.Second
			res := jepsen.Run(t, cfg)
			failed := res.Failed()
			for _, check := range append([]string{tc.check}, tc.also...) {
				if !slices.Contains(failed, check) {
					t.Fatalf("planted bug %s: the %s check passed (failed: %v); the harness does not catch it (seed %d, results in %s)",
						tc.bug, check, failed, seed, res.Dir)
				}
			}
			t.Logf("planted bug %s caught by %s (all failed checks: %v) in a run of %s (faults %s, checks %s)",
				tc.bug, tc.check, failed, res.Timings.Total.Round(100*time.Millisecond),
				res.Timings.Faults.Round(100*time.Millisecond), res.Timings.Checks.Round(time.Millisecond))
		})
	}
}
