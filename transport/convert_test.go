package transport

import (
	"testing"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

// The fsm enums carry the proto's numbers so conversions are plain casts;
// this pins every value on both sides.
func TestEnumValuesMatchTheProto(t *testing.T) {
	pairs := []struct {
		name  string
		fsm   int
		proto int32
	}{
		{"PERIOD_NONE", int(fsm.PeriodNone), int32(tollgatev1.Period_PERIOD_NONE)},
		{"PERIOD_DAY", int(fsm.PeriodDay), int32(tollgatev1.Period_PERIOD_DAY)},
		{"PERIOD_WEEK", int(fsm.PeriodWeek), int32(tollgatev1.Period_PERIOD_WEEK)},
		{"PERIOD_MONTH", int(fsm.PeriodMonth), int32(tollgatev1.Period_PERIOD_MONTH)},
		{"PERIOD_QUARTER", int(fsm.PeriodQuarter), int32(tollgatev1.Period_PERIOD_QUARTER)},
		{"PERIOD_YEAR", int(fsm.PeriodYear), int32(tollgatev1.Period_PERIOD_YEAR)},
		{"PERIOD_CUSTOM", int(fsm.PeriodCustom), int32(tollgatev1.Period_PERIOD_CUSTOM)},
		{"ENFORCEMENT_HARD", int(fsm.EnforcementHard), int32(tollgatev1.Enforcement_ENFORCEMENT_HARD)},
		{"ENFORCEMENT_SOFT", int(fsm.EnforcementSoft), int32(tollgatev1.Enforcement_ENFORCEMENT_SOFT)},
		{"ENFORCEMENT_SHADOW", int(fsm.EnforcementShadow), int32(tollgatev1.Enforcement_ENFORCEMENT_SHADOW)},
		{"ALGORITHM_TOKEN_BUCKET", int(fsm.AlgorithmTokenBucket), int32(tollgatev1.Algorithm_ALGORITHM_TOKEN_BUCKET)},
		{"ALGORITHM_LEAKY_BUCKET", int(fsm.AlgorithmLeakyBucket), int32(tollgatev1.Algorithm_ALGORITHM_LEAKY_BUCKET)},
		{"ALGORITHM_FIXED_WINDOW", int(fsm.AlgorithmFixedWindow), int32(tollgatev1.Algorithm_ALGORITHM_FIXED_WINDOW)},
		{"ALGORITHM_SLIDING_WINDOW_LOG", int(fsm.AlgorithmSlidingWindowLog), int32(tollgatev1.Algorithm_ALGORITHM_SLIDING_WINDOW_LOG)},
		{"ALGORITHM_SLIDING_WINDOW_COUNTER", int(fsm.AlgorithmSlidingWindowCounter), int32(tollgatev1.Algorithm_ALGORITHM_SLIDING_WINDOW_COUNTER)},
		{"ALGORITHM_GCRA", int(fsm.AlgorithmGCRA), int32(tollgatev1.Algorithm_ALGORITHM_GCRA)},
		{"DENY_REASON_UNSPECIFIED", int(fsm.ReasonNone), int32(tollgatev1.DenyReason_DENY_REASON_UNSPECIFIED)},
		{"DENY_REASON_BUDGET_EXCEEDED", int(fsm.ReasonBudgetExceeded), int32(tollgatev1.DenyReason_DENY_REASON_BUDGET_EXCEEDED)},
		{"DENY_REASON_HOLD_NOT_ACTIVE", int(fsm.ReasonHoldNotActive), int32(tollgatev1.DenyReason_DENY_REASON_HOLD_NOT_ACTIVE)},
		{"DENY_REASON_RATE_LIMITED", int(fsm.ReasonRateLimited), int32(tollgatev1.DenyReason_DENY_REASON_RATE_LIMITED)},
		{"DENY_REASON_COST_EXCEEDS_LIMIT", int(fsm.ReasonCostExceedsLimit), int32(tollgatev1.DenyReason_DENY_REASON_COST_EXCEEDS_LIMIT)},
		{"DENY_REASON_BATCH_ABORTED", int(fsm.ReasonBatchAborted), int32(tollgatev1.DenyReason_DENY_REASON_BATCH_ABORTED)},
		{"DENY_REASON_QUOTA_EXHAUSTED", int(fsm.ReasonQuotaExhausted), int32(tollgatev1.DenyReason_DENY_REASON_QUOTA_EXHAUSTED)},
	}
	for _, p := range pairs {
		if int32(p.fsm) != p.proto {
			t.Errorf("%s: fsm %d, proto %d", p.name, p.fsm, p.proto)
		}
	}
	if n := len(tollgatev1.Period_name) + len(tollgatev1.Enforcement_name) + len(tollgatev1.Algorithm_name) + len(tollgatev1.DenyReason_name); n != len(pairs)+3 {
		t.Errorf("the proto has %d enum values (3 UNSPECIFIED without an fsm twin), the test pins %d: add the new ones", n, len(pairs))
	}
}
