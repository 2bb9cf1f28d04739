package fsm

// Named maxima of every table and input. Hitting a table maximum is a clear
// ResourceExhausted result, never an out-of-memory crash.
const (
	// BudgetsMax bounds the budgets across all tenants.
	BudgetsMax = 1_000_000
	// HoldsMax bounds the active holds across all tenants.
	HoldsMax = 1_000_000
	// PoliciesMax bounds the rate-limit policies across all tenants.
	PoliciesMax = 100_000
	// RateKeysMax bounds the live rate-limit counters; idle ones expire.
	RateKeysMax = 5_000_000
	// IdempotencyEntriesMax bounds the remembered request ids.
	IdempotencyEntriesMax = 4_000_000
	// IdempotencyRetentionMs is how long (log time) a request id is remembered.
	// A client must not retry a request later than this after sending it.
	IdempotencyRetentionMs int64 = 10 * 60 * 1000
	// BudgetDepthMax bounds the length of a parent chain (a budget and its
	// ancestors).
	BudgetDepthMax = 8
	// BudgetHistoryMax is how many closed periods a budget keeps.
	BudgetHistoryMax = 36
	// ThresholdsMax bounds the thresholds of a budget.
	ThresholdsMax = 16
	// ThresholdPercentMax is the largest threshold (1000 % of the amount).
	ThresholdPercentMax = 1000
	// BatchItemsMax bounds the items of ConsumeBatch and CheckBatch.
	BatchItemsMax = 1000
	// IDBytesMax bounds tenant, budget, policy and hold ids.
	IDBytesMax = 128
	// RequestIDBytesMax bounds an idempotency key.
	RequestIDBytesMax = 128
	// RateKeyBytesMax bounds a rate-limit counter key.
	RateKeyBytesMax = 256
	// HoldTTLMinMs and HoldTTLMaxMs bound a hold's time to live.
	HoldTTLMinMs int64 = 1000
	HoldTTLMaxMs int64 = 24 * 3600 * 1000
	// CustomPeriodMinMs and CustomPeriodMaxMs bound PERIOD_CUSTOM.
	CustomPeriodMinMs int64 = 1000
	CustomPeriodMaxMs int64 = 10 * 366 * 24 * 3600 * 1000
	// PriorityScalesMax bounds a policy's priority scales.
	PriorityScalesMax = 16
	// RemovedServersMax bounds the remembered admin removals (oldest first
	// out).
	RemovedServersMax = 1000
	// TimezoneBytesMax bounds an IANA zone name.
	TimezoneBytesMax = 64
)
