package transport

import (
	"encoding/base64"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/node"
)

// Conversions between the wire (proto) and the state machine. Inputs are
// checked here with messages that name the field; fsm.Validate checks the
// built command again exactly as Apply will.

func invalid(format string, args ...any) error {
	return &fsm.Error{Code: fsm.CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

func parseAmount(field, s string) (int64, error) {
	micros, err := fsm.ParseAmount(s)
	if err != nil {
		return 0, invalid("%s %s", field, err.Message)
	}
	return micros, nil
}

func formatAmount(micros int64, currency string) string {
	return fsm.FormatAmount(micros, fsm.CurrencyFractionDigits(currency))
}

// parseDurationMs parses a Go duration ("30s", "36h", "1.5m") that must be a
// whole number of milliseconds within [minMs, maxMs].
func parseDurationMs(field, s string, minMs, maxMs int64) (int64, error) {
	if s == "" {
		return 0, invalid("%s is empty; want a duration such as \"30s\"", field)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalid("%s %q is not a duration (examples: \"250ms\", \"30s\", \"36h\")", field, s)
	}
	if d%time.Millisecond != 0 {
		return 0, invalid("%s %q is not a whole number of milliseconds", field, s)
	}
	ms := d.Milliseconds()
	if ms < minMs || ms > maxMs {
		return 0, invalid("%s %q is out of range [%s, %s]", field, s,
			time.Duration(minMs)*time.Millisecond, time.Duration(maxMs)*time.Millisecond)
	}
	return ms, nil
}

func formatDurationMs(ms int64) string {
	return (time.Duration(ms) * time.Millisecond).String()
}

// durationMs converts computed milliseconds for a reply. A wait longer than
// time.Duration holds (292 years: a huge window with a huge burst) is
// reported as that maximum rather than wrapping negative.
func durationMs(ms int64) *durationpb.Duration {
	return durationpb.New(time.Duration(min(ms, math.MaxInt64/int64(time.Millisecond))) * time.Millisecond)
}

func timestampMs(ms int64) *timestamppb.Timestamp {
	if ms == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMilli(ms))
}

// readLevel converts a read request's consistency fields.
func readLevel(c tollgatev1.Consistency, maxStaleness string) (node.Consistency, time.Duration, error) {
	var level node.Consistency
	switch c {
	case tollgatev1.Consistency_CONSISTENCY_UNSPECIFIED, tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE:
		level = node.Linearizable
	case tollgatev1.Consistency_CONSISTENCY_LEADER:
		level = node.Leader
	case tollgatev1.Consistency_CONSISTENCY_STALE:
		level = node.Stale
	default:
		return 0, 0, invalid("consistency %d is unknown", c)
	}
	if maxStaleness == "" {
		return level, 0, nil
	}
	if level != node.Stale {
		return 0, 0, invalid("max_staleness is only allowed with CONSISTENCY_STALE")
	}
	ms, err := parseDurationMs("max_staleness", maxStaleness, 1, 24*3600*1000)
	if err != nil {
		return 0, 0, err
	}
	return level, time.Duration(ms) * time.Millisecond, nil
}

func readInfo(info node.ReadInfo) *tollgatev1.ReadInfo {
	levels := map[node.Consistency]tollgatev1.Consistency{
		node.Linearizable: tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE,
		node.Leader:       tollgatev1.Consistency_CONSISTENCY_LEADER,
		node.Stale:        tollgatev1.Consistency_CONSISTENCY_STALE,
	}
	return &tollgatev1.ReadInfo{
		Consistency:  levels[info.Consistency],
		AppliedIndex: info.AppliedIndex,
		Staleness:    durationpb.New(info.Staleness),
		NodeId:       info.NodeID,
	}
}

// Page tokens are opaque to clients: the last id of the page, encoded.
const pageTokenPrefix = "after:"

func decodePageToken(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !strings.HasPrefix(string(raw), pageTokenPrefix) {
		return "", invalid("page_token is not a token this server issued")
	}
	return strings.TrimPrefix(string(raw), pageTokenPrefix), nil
}

func encodePageToken(afterID string) string {
	if afterID == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + afterID))
}

// listParams are the common fields of a list request, checked.
type listParams struct {
	after    string
	size     int
	level    node.Consistency
	maxStale time.Duration
}

func parseList(tenant string, pageSizeN uint32, pageToken string, c tollgatev1.Consistency, maxStaleness string) (listParams, error) {
	var lp listParams
	if err := fsm.ValidateID("tenant", tenant); err != nil {
		return lp, err
	}
	var err error
	if lp.size, err = pageSize(pageSizeN); err != nil {
		return lp, err
	}
	if lp.after, err = decodePageToken(pageToken); err != nil {
		return lp, err
	}
	lp.level, lp.maxStale, err = readLevel(c, maxStaleness)
	return lp, err
}

func pageSize(n uint32) (int, error) {
	switch {
	case n == 0:
		return 100, nil
	case n > fsm.ListPageMax:
		return 0, invalid("page_size %d is above the maximum %d", n, fsm.ListPageMax)
	}
	return int(n), nil
}

// --- budgets ---

var periods = map[tollgatev1.Period]fsm.Period{
	tollgatev1.Period_PERIOD_UNSPECIFIED: fsm.PeriodNone,
	tollgatev1.Period_PERIOD_NONE:        fsm.PeriodNone,
	tollgatev1.Period_PERIOD_DAY:         fsm.PeriodDay,
	tollgatev1.Period_PERIOD_WEEK:        fsm.PeriodWeek,
	tollgatev1.Period_PERIOD_MONTH:       fsm.PeriodMonth,
	tollgatev1.Period_PERIOD_QUARTER:     fsm.PeriodQuarter,
	tollgatev1.Period_PERIOD_YEAR:        fsm.PeriodYear,
	tollgatev1.Period_PERIOD_CUSTOM:      fsm.PeriodCustom,
}

var enforcements = map[tollgatev1.Enforcement]fsm.Enforcement{
	tollgatev1.Enforcement_ENFORCEMENT_UNSPECIFIED: fsm.EnforcementHard,
	tollgatev1.Enforcement_ENFORCEMENT_HARD:        fsm.EnforcementHard,
	tollgatev1.Enforcement_ENFORCEMENT_SOFT:        fsm.EnforcementSoft,
	tollgatev1.Enforcement_ENFORCEMENT_SHADOW:      fsm.EnforcementShadow,
}

func enforcementFromWire(e tollgatev1.Enforcement) (fsm.Enforcement, error) {
	v, ok := enforcements[e]
	if !ok {
		return 0, invalid("budget.enforcement %d is unknown", e)
	}
	return v, nil
}

// periodFromWire converts a budget's or pool's period and custom length;
// object names the message in errors.
func periodFromWire(object string, p tollgatev1.Period, custom string) (fsm.Period, int64, error) {
	period, ok := periods[p]
	if !ok {
		return 0, 0, invalid("%s.period %d is unknown", object, p)
	}
	switch {
	case period == fsm.PeriodCustom:
		customMs, err := parseDurationMs(object+".custom_period", custom, fsm.CustomPeriodMinMs, fsm.CustomPeriodMaxMs)
		return period, customMs, err
	case custom != "":
		return 0, 0, invalid("%s.custom_period is only allowed with PERIOD_CUSTOM", object)
	}
	return period, 0, nil
}

// budgetSpec converts a budget for creation; defaults: period NONE,
// enforcement HARD, timezone UTC.
func budgetSpec(b *tollgatev1.Budget) (fsm.BudgetSpec, error) {
	if b == nil {
		return fsm.BudgetSpec{}, invalid("budget is missing")
	}
	amount, err := parseAmount("budget.amount", b.Amount)
	if err != nil {
		return fsm.BudgetSpec{}, err
	}
	period, customMs, err := periodFromWire("budget", b.Period, b.CustomPeriod)
	if err != nil {
		return fsm.BudgetSpec{}, err
	}
	enforcement, err := enforcementFromWire(b.Enforcement)
	if err != nil {
		return fsm.BudgetSpec{}, err
	}
	tz := b.Timezone
	if tz == "" {
		tz = "UTC"
	}
	selector, err := selectorFromWire("budget.selector", b.Selector)
	if err != nil {
		return fsm.BudgetSpec{}, err
	}
	return fsm.BudgetSpec{
		Selector:       selector,
		ID:             b.Id,
		ParentID:       b.ParentId,
		AmountMicros:   amount,
		Currency:       b.Currency,
		Period:         period,
		CustomPeriodMs: customMs,
		Timezone:       tz,
		Enforcement:    enforcement,
		Thresholds:     b.ThresholdsPercent,
	}, nil
}

func budgetToWire(b *fsm.Budget) *tollgatev1.Budget {
	// fsm's enum values equal the proto's (asserted in a test).
	period := tollgatev1.Period(b.Spec.Period)
	custom := ""
	if b.Spec.Period == fsm.PeriodCustom {
		custom = formatDurationMs(b.Spec.CustomPeriodMs)
	}
	return &tollgatev1.Budget{
		Id:                b.Spec.ID,
		Amount:            formatAmount(b.Spec.AmountMicros, b.Spec.Currency),
		Currency:          b.Spec.Currency,
		Period:            period,
		CustomPeriod:      custom,
		Timezone:          b.Spec.Timezone,
		ParentId:          b.Spec.ParentID,
		Enforcement:       tollgatev1.Enforcement(b.Spec.Enforcement),
		ThresholdsPercent: append([]uint32(nil), b.Spec.Thresholds...),
		CreatedAt:         timestampMs(b.CreatedAtMs),
		UpdatedAt:         timestampMs(b.UpdatedAtMs),
		Version:           b.Version,
		Selector:          selectorToWire(b.Spec.Selector),
	}
}

func budgetStateToWire(b *fsm.Budget) *tollgatev1.BudgetState {
	cur := b.Spec.Currency
	st := &tollgatev1.BudgetState{
		Budget:         budgetToWire(b),
		Spent:          formatAmount(b.SpentMicros, cur),
		Held:           formatAmount(b.HeldMicros, cur),
		Remaining:      formatAmount(b.RemainingMicros(), cur),
		PeriodStart:    timestampMs(b.PeriodStartMs),
		PeriodEnd:      timestampMs(b.PeriodEndMs),
		AllowedCount:   b.AllowedCount,
		DeniedCount:    b.DeniedCount,
		WouldDenyCount: b.WouldDenyCount,
		ActiveHolds:    b.ActiveHolds,
	}
	for _, c := range b.Crossed {
		st.ThresholdsCrossed = append(st.ThresholdsCrossed, &tollgatev1.ThresholdCrossing{
			Percent: c.Percent, CrossedAt: timestampMs(c.AtMs), LogIndex: c.LogIndex,
		})
	}
	for _, h := range b.History {
		st.History = append(st.History, &tollgatev1.PeriodUsage{
			Start:             timestampMs(h.StartMs),
			End:               timestampMs(h.EndMs),
			Amount:            formatAmount(h.AmountMicros, cur),
			Spent:             formatAmount(h.SpentMicros, cur),
			AllowedCount:      h.AllowedCount,
			DeniedCount:       h.DeniedCount,
			WouldDenyCount:    h.WouldDenyCount,
			ThresholdsCrossed: append([]uint32(nil), h.Thresholds...),
		})
	}
	return st
}

func consumeToWire(s *fsm.SpendResult, index uint64) *tollgatev1.ConsumeResponse {
	out := &tollgatev1.ConsumeResponse{
		Allowed:           s.Allowed,
		Reason:            tollgatev1.DenyReason(s.Reason),
		DeniedByBudgetId:  s.DeniedBy,
		WouldDeny:         s.WouldDeny,
		ThresholdsCrossed: append([]uint32(nil), s.Thresholds...),
		LogIndex:          index,
		BudgetId:          s.BudgetID,
	}
	if s.Currency != "" {
		out.Remaining = formatAmount(s.RemainingMicros, s.Currency)
		out.Spent = formatAmount(s.SpentMicros, s.Currency)
	}
	return out
}

// --- rate limits ---

func policySpec(p *tollgatev1.Policy, fields uint8) (fsm.PolicySpec, error) {
	if p == nil {
		return fsm.PolicySpec{}, invalid("policy is missing")
	}
	spec := fsm.PolicySpec{ID: p.Id, Algorithm: fsm.Algorithm(p.Algorithm), Limit: p.Limit, Burst: p.Burst}
	if fields&fsm.UpdateAlgorithm != 0 && (p.Algorithm <= tollgatev1.Algorithm_ALGORITHM_UNSPECIFIED || p.Algorithm > tollgatev1.Algorithm_ALGORITHM_GCRA) {
		return spec, invalid("policy.algorithm must be one of ALGORITHM_TOKEN_BUCKET, ALGORITHM_LEAKY_BUCKET, ALGORITHM_FIXED_WINDOW, ALGORITHM_SLIDING_WINDOW_LOG, ALGORITHM_SLIDING_WINDOW_COUNTER, ALGORITHM_GCRA")
	}
	if fields&fsm.UpdateWindow != 0 {
		ms, err := parseDurationMs("policy.window", p.Window, 1, fsm.RateWindowMaxMs)
		if err != nil {
			return spec, err
		}
		spec.WindowMs = ms
	}
	if spec.Burst == 0 {
		spec.Burst = p.Limit // burst defaults to limit
	}
	for _, s := range p.PriorityScales {
		spec.Scales = append(spec.Scales, fsm.PriorityScale{Priority: s.Priority, Percent: s.Percent})
	}
	return spec, nil
}

func policyToWire(p *fsm.Policy) *tollgatev1.Policy {
	out := &tollgatev1.Policy{
		Id:        p.Spec.ID,
		Algorithm: tollgatev1.Algorithm(p.Spec.Algorithm),
		Limit:     p.Spec.Limit,
		Window:    formatDurationMs(p.Spec.WindowMs),
		Burst:     p.Spec.Burst,
		CreatedAt: timestampMs(p.CreatedAtMs),
		UpdatedAt: timestampMs(p.UpdatedAtMs),
		Version:   p.Version,
	}
	for _, s := range p.Spec.Scales {
		out.PriorityScales = append(out.PriorityScales, &tollgatev1.PriorityScale{Priority: s.Priority, Percent: s.Percent})
	}
	return out
}

func rateToWire(r *fsm.RateResult, index uint64) *tollgatev1.RateLimitServiceCheckResponse {
	return &tollgatev1.RateLimitServiceCheckResponse{
		Allowed:    r.Allowed,
		Remaining:  r.Remaining,
		Limit:      r.Limit,
		ResetAfter: durationMs(r.ResetAfterMs),
		RetryAfter: durationMs(r.RetryAfterMs),
		Reason:     tollgatev1.DenyReason(r.Reason),
		LogIndex:   index,
	}
}
