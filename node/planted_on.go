//go:build tollgate_planted

package node

import "os"

// Builds with -tags tollgate_planted only (never `make build`): the jepsen
// self-test enables one deliberately planted bug with TOLLGATE_PLANTED_BUG to
// prove the checkers catch it. Known bugs:
//
//	no-verify-leader   reads skip VerifyLeader and the term check
//	no-barrier         a new leader serves reads before its barrier commits
//	no-idempotency     the leader drops request ids, so retries charge again
//	wall-clock-apply   entries are applied with the local clock, not the stamp
var PlantedBug = os.Getenv("TOLLGATE_PLANTED_BUG")

func planted(name string) bool { return PlantedBug == name }
