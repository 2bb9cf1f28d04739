package fsm

import (
	"crypto/ed25519"
	"time"
)

// Validation shared by transport (to answer bad input before it reaches the
// log) and Apply (a decoded command re-validates, so every replica rejects the
// same commands). Messages name the field.

// ValidateID checks a tenant, budget or policy id.
func ValidateID(field, id string) *Error {
	if id == "" {
		return invalidf("%s is empty", field)
	}
	if len(id) > IDBytesMax {
		return invalidf("%s is %d bytes long; at most %d", field, len(id), IDBytesMax)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			return invalidf("%s %q has character %q; allowed are A-Z a-z 0-9 . _ : -", field, id, c)
		}
	}
	return nil
}

// ValidateRequestID checks an optional idempotency key.
func ValidateRequestID(field, id string) *Error {
	if len(id) > RequestIDBytesMax {
		return invalidf("%s is %d bytes long; at most %d", field, len(id), RequestIDBytesMax)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return invalidf("%s must be printable ASCII without spaces", field)
		}
	}
	return nil
}

// ValidateRateKey checks a rate-limit counter key.
func ValidateRateKey(field, key string) *Error {
	if key == "" {
		return invalidf("%s is empty", field)
	}
	if len(key) > RateKeyBytesMax {
		return invalidf("%s is %d bytes long; at most %d", field, len(key), RateKeyBytesMax)
	}
	return nil
}

// LoadTimezone resolves an IANA zone name. "UTC" needs no zone database.
func LoadTimezone(field, name string) (*time.Location, *Error) {
	if name == "" {
		return nil, invalidf("%s is empty", field)
	}
	if len(name) > TimezoneBytesMax {
		return nil, invalidf("%s is %d bytes long; at most %d", field, len(name), TimezoneBytesMax)
	}
	if name == "Local" {
		return nil, invalidf("%s %q is not an IANA zone name", field, name)
	}
	loc, err := loadZone(name)
	if err != nil {
		return nil, invalidf("%s %q is not a known IANA timezone", field, name)
	}
	return loc, nil
}

func validateAmount(field string, micros int64, allowZero bool) *Error {
	if micros < 0 || (micros == 0 && !allowZero) {
		return invalidf("%s must be greater than 0", field)
	}
	if micros > AmountMaxMicros {
		return invalidf("%s is above the maximum amount", field)
	}
	return nil
}

func validateBudgetSpec(b *BudgetSpec, fields uint8, creating bool) *Error {
	if err := ValidateID("budget.id", b.ID); err != nil {
		return err
	}
	if creating {
		if b.ParentID != "" {
			if err := ValidateID("budget.parent_id", b.ParentID); err != nil {
				return err
			}
			if b.ParentID == b.ID {
				return invalidf("budget.parent_id must differ from budget.id")
			}
		}
		if err := ValidateCurrency(b.Currency); err != nil {
			return invalidf("budget.currency: %s", err.Message)
		}
		if _, err := LoadTimezone("budget.timezone", b.Timezone); err != nil {
			return err
		}
		if err := validatePeriod(b.Period, b.CustomPeriodMs); err != nil {
			return err
		}
	}
	if fields&UpdateAmount != 0 {
		if err := validateAmount("budget.amount", b.AmountMicros, false); err != nil {
			return err
		}
	}
	if fields&UpdateEnforcement != 0 && (b.Enforcement < EnforcementHard || b.Enforcement > EnforcementShadow) {
		return invalidf("budget.enforcement %d is not HARD, SOFT or SHADOW", b.Enforcement)
	}
	if fields&UpdateThresholds != 0 {
		if err := validateThresholds(b.Thresholds); err != nil {
			return err
		}
	}
	if fields&UpdateSelector != 0 {
		return ValidateSelector("budget.selector", b.Selector)
	}
	return nil
}

func validatePeriod(p Period, customMs int64) *Error {
	if p < PeriodNone || p > PeriodCustom {
		return invalidf("budget.period %d is unknown", p)
	}
	if p == PeriodCustom {
		if customMs < CustomPeriodMinMs || customMs > CustomPeriodMaxMs {
			return invalidf("budget.custom_period must be between 1s and 3660 days")
		}
	} else if customMs != 0 {
		return invalidf("budget.custom_period is only allowed with PERIOD_CUSTOM")
	}
	return nil
}

func validateThresholds(ts []uint32) *Error {
	if len(ts) > ThresholdsMax {
		return invalidf("budget.thresholds_percent has %d values; at most %d", len(ts), ThresholdsMax)
	}
	for i, t := range ts {
		if t < 1 || t > ThresholdPercentMax {
			return invalidf("budget.thresholds_percent[%d] = %d; must be 1-%d", i, t, ThresholdPercentMax)
		}
		if i > 0 && t <= ts[i-1] {
			return invalidf("budget.thresholds_percent must be strictly ascending")
		}
	}
	return nil
}

func validatePolicySpec(p *PolicySpec) *Error {
	if err := ValidateID("policy.id", p.ID); err != nil {
		return err
	}
	if p.Algorithm < AlgorithmTokenBucket || p.Algorithm > AlgorithmGCRA {
		return invalidf("policy.algorithm %d is unknown", p.Algorithm)
	}
	if p.Limit < 1 || p.Limit > RateLimitMax {
		return invalidf("policy.limit must be between 1 and %d", RateLimitMax)
	}
	if p.WindowMs < 1 || p.WindowMs > RateWindowMaxMs {
		return invalidf("policy.window must be between 1ms and 366 days")
	}
	if p.Burst < 1 || p.Burst > RateLimitMax {
		return invalidf("policy.burst must be between 1 and %d", RateLimitMax)
	}
	if p.Algorithm == AlgorithmSlidingWindowLog && p.Limit > SlidingLogLimitMax {
		return invalidf("policy.limit must be at most %d for ALGORITHM_SLIDING_WINDOW_LOG", SlidingLogLimitMax)
	}
	if len(p.Scales) > PriorityScalesMax {
		return invalidf("policy.priority_scales has %d entries; at most %d", len(p.Scales), PriorityScalesMax)
	}
	for i, s := range p.Scales {
		if s.Percent < 1 || s.Percent > 100 {
			return invalidf("policy.priority_scales[%d].percent = %d; must be 1-100", i, s.Percent)
		}
		if i > 0 && s.Priority <= p.Scales[i-1].Priority {
			return invalidf("policy.priority_scales must be sorted by priority without duplicates")
		}
	}
	return nil
}

// ValidateBudgetSpec checks a budget for creation (all fields).
func ValidateBudgetSpec(b *BudgetSpec) *Error { return validateBudgetSpec(b, updateBudgetAll, true) }

// ValidatePolicySpec checks a complete policy.
func ValidatePolicySpec(p *PolicySpec) *Error { return validatePolicySpec(p) }

// Validate checks a decoded command the way Apply does, so transport can
// answer InvalidArgument before a command reaches the log.
func Validate(c Command) *Error {
	if a, ok := c.(attributed); ok {
		if err := validatePrintable("by", a.actor(), apiKeyByBytesMax); err != nil {
			return err
		}
	}
	tenant, requestID := c.idempotencyKey()
	switch c.(type) {
	case *Noop, *MarkServerRemoved, *RotateSigningKey, *SetExchangeRates: // cluster-level: no tenant
	default:
		if err := ValidateID("tenant", tenant); err != nil {
			return err
		}
	}
	if err := ValidateRequestID("request_id", requestID); err != nil {
		return err
	}
	switch c := c.(type) {
	case *Noop:
		return nil
	case *RotateSigningKey:
		if len(c.Seed) != ed25519.SeedSize {
			return invalidf("signing key seed is %d bytes; want %d", len(c.Seed), ed25519.SeedSize)
		}
		return nil
	case *MarkServerRemoved:
		if err := ValidateID("id", c.ID); err != nil {
			return err
		}
		if len(c.Incarnation) > IDBytesMax {
			return invalidf("incarnation is %d bytes long; at most %d", len(c.Incarnation), IDBytesMax)
		}
		return nil
	case *CreateBudget:
		return ValidateBudgetSpec(&c.Budget)
	case *UpdateBudget:
		if c.Fields == 0 || c.Fields&^updateBudgetAll != 0 {
			return invalidf("update_mask names no updatable field (amount, enforcement, thresholds_percent, selector)")
		}
		return validateBudgetSpec(&c.Budget, c.Fields, false)
	case *DeleteBudget:
		return ValidateID("budget_id", c.BudgetID)
	case *RecordCost:
		return validateRecordCost(c)
	case *SetExchangeRates:
		return validateSetExchangeRates(c)
	case *CreateQuotaPool:
		return validateQuotaPoolSpec(&c.Pool)
	case *SetQuotaConsumer:
		if err := ValidateID("pool_id", c.PoolID); err != nil {
			return err
		}
		if c.Delete {
			return ValidateID("consumer.id", c.Consumer.ID)
		}
		return validateQuotaConsumerSpec(&c.Consumer)
	case *SetQuotaDemand:
		if err := validateIDs2("pool_id", c.PoolID, "consumer_id", c.ConsumerID); err != nil {
			return err
		}
		return validateAmount("demand", c.DemandMicros, true)
	case *QuotaConsume:
		if err := validateIDs2("pool_id", c.PoolID, "consumer_id", c.ConsumerID); err != nil {
			return err
		}
		return validateAmount("amount", c.AmountMicros, false)
	case *RenewQuotaPool:
		return ValidateID("pool_id", c.PoolID)
	case *AckAlert:
		return validateAckAlert(c)
	case *UpdateQuotaPool:
		return validateUpdateQuotaPool(c)
	case *DeleteQuotaPool:
		return ValidateID("pool_id", c.PoolID)
	case *SetQuotaConsumers:
		return validateSetQuotaConsumers(c)
	case *CreateAPIKey:
		return validateCreateAPIKey(c)
	case *RevokeAPIKey:
		return validateRevokeAPIKey(c)
	case *SetAnomalyDetector:
		if c.Delete {
			return ValidateID("detector.id", c.Detector.ID)
		}
		return validateDetector(&c.Detector)
	case *Consume:
		if err := ValidateID("budget_id", c.BudgetID); err != nil {
			return err
		}
		return validateAmount("amount", c.AmountMicros, false)
	case *ConsumeAtomic:
		return validateConsumeItems(c.Items)
	case *Reserve:
		if err := ValidateID("budget_id", c.BudgetID); err != nil {
			return err
		}
		if err := validateAmount("amount", c.AmountMicros, false); err != nil {
			return err
		}
		if c.TTLMs < HoldTTLMinMs || c.TTLMs > HoldTTLMaxMs {
			return invalidf("ttl must be between 1s and 24h")
		}
		return nil
	case *Commit:
		if err := ValidateID("hold_id", c.HoldID); err != nil {
			return err
		}
		return validateAmount("amount", c.AmountMicros, true)
	case *Release:
		return ValidateID("hold_id", c.HoldID)
	case *CreatePolicy:
		return validatePolicySpec(&c.Policy)
	case *UpdatePolicy:
		if c.Fields == 0 || c.Fields&^updatePolicyAll != 0 {
			return invalidf("update_mask names no updatable field")
		}
		return ValidateID("policy.id", c.Policy.ID) // the merged spec is validated at apply
	case *DeletePolicy:
		return ValidateID("policy_id", c.PolicyID)
	case *RateCheck:
		if err := ValidateID("policy_id", c.PolicyID); err != nil {
			return err
		}
		if err := ValidateRateKey("key", c.Key); err != nil {
			return err
		}
		if c.Cost < 1 || c.Cost > RateLimitMax {
			return invalidf("cost must be between 1 and %d", RateLimitMax)
		}
		return nil
	}
	return invalidf("unknown command type %d", c.Type())
}

func validateIDs2(f1, v1, f2, v2 string) *Error {
	if err := ValidateID(f1, v1); err != nil {
		return err
	}
	return ValidateID(f2, v2)
}

func validateConsumeItems(items []ConsumeItem) *Error {
	if len(items) == 0 {
		return invalidf("items is empty")
	}
	if len(items) > BatchItemsMax {
		return invalidf("items has %d entries; at most %d", len(items), BatchItemsMax)
	}
	for i := range items {
		if err := ValidateID("items.budget_id", items[i].BudgetID); err != nil {
			return invalidf("items[%d]: %s", i, err.Message)
		}
		if err := validateAmount("amount", items[i].AmountMicros, false); err != nil {
			return invalidf("items[%d].%s", i, err.Message)
		}
	}
	return nil
}
