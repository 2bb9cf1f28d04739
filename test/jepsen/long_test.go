//go:build jepsen_long

package jepsen_test

import (
	"testing"

	"github.com/tollgate/tollgate/test/jepsen"
)

// TestJepsenLong is `make jepsen`: one long run with every fault kind for
// the cluster size, configured by TOLLGATE_JEPSEN_DURATION (seconds),
// TOLLGATE_JEPSEN_NODES (3 or 5) and TOLLGATE_JEPSEN_SEED. It is behind the
// jepsen_long build tag so that `go test ./...` never runs it; everything
// it does lives in the package (LongConfigFromEnv, Run), which every build
// compiles and vets.
func TestJepsenLong(t *testing.T) {
	cfg, err := jepsen.LongConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	res := jepsen.Run(t, cfg)
	if failed := res.Failed(); len(failed) > 0 {
		t.Fatalf("checks failed: %v (seed %d; results in %s)", failed, cfg.Seed, res.Dir)
	}
}
