package fsm

import "strconv"

// CommandType is the first byte of an encoded command. Types are append-only:
// a retired type keeps its number, and a new type goes at the end.
type CommandType uint8

const (
	_                      CommandType = iota
	TypeNoop                           // 1: barrier; changes nothing
	TypeCreateBudget                   // 2
	TypeUpdateBudget                   // 3
	TypeDeleteBudget                   // 4
	TypeConsume                        // 5
	TypeConsumeAtomic                  // 6: all-or-nothing batch of consumes
	TypeReserve                        // 7
	TypeCommit                         // 8
	TypeRelease                        // 9
	TypeCreatePolicy                   // 10
	TypeUpdatePolicy                   // 11
	TypeDeletePolicy                   // 12
	TypeRateCheck                      // 13
	TypeMarkServerRemoved              // 14: an admin removed a server from Raft
	TypeRotateSigningKey               // 15: a new cluster receipt-signing key
	TypeRecordCost                     // 16: cost records (one or a batch)
	TypeSetExchangeRates               // 17: the cluster's exchange-rate table
	TypeSetAnomalyDetector             // 18: create, replace or delete a cost anomaly detector
	TypeCreateQuotaPool                // 19
	TypeSetQuotaConsumer               // 20: add, replace or delete a consumer
	TypeSetQuotaDemand                 // 21
	TypeQuotaConsume                   // 22
	TypeRenewQuotaPool                 // 23
	TypeAckAlert                       // 24: acknowledge or resolve an alert
	TypeUpdateQuotaPool                // 25
	TypeDeleteQuotaPool                // 26
	TypeSetQuotaConsumers              // 27: several consumers, one reallocation
	TypeCreateAPIKey                   // 28: store an API key's hash
	TypeRevokeAPIKey                   // 29
)

// Command is one decoded command. Every command carries its tenant and an
// optional idempotency key.
type Command interface {
	Type() CommandType
	// idempotencyKey returns the tenant and request id ("" when none).
	idempotencyKey() (tenant, requestID string)
}

// Period is how a budget's usage resets. Values match tollgate.v1.Period.
type Period uint8

const (
	PeriodNone    Period = 1
	PeriodDay     Period = 2
	PeriodWeek    Period = 3
	PeriodMonth   Period = 4
	PeriodQuarter Period = 5
	PeriodYear    Period = 6
	PeriodCustom  Period = 7
)

// Enforcement is what happens when a budget has no room. Values match
// tollgate.v1.Enforcement.
type Enforcement uint8

const (
	EnforcementHard   Enforcement = 1
	EnforcementSoft   Enforcement = 2
	EnforcementShadow Enforcement = 3
)

// DenyReason values match tollgate.v1.DenyReason.
type DenyReason uint8

const (
	ReasonNone             DenyReason = 0
	ReasonBudgetExceeded   DenyReason = 1
	ReasonHoldNotActive    DenyReason = 2
	ReasonRateLimited      DenyReason = 3
	ReasonCostExceedsLimit DenyReason = 4
	ReasonBatchAborted     DenyReason = 5
	ReasonQuotaExhausted   DenyReason = 6
)

// Algorithm values match tollgate.v1.Algorithm.
type Algorithm uint8

const (
	AlgorithmTokenBucket          Algorithm = 1
	AlgorithmLeakyBucket          Algorithm = 2
	AlgorithmFixedWindow          Algorithm = 3
	AlgorithmSlidingWindowLog     Algorithm = 4
	AlgorithmSlidingWindowCounter Algorithm = 5
	AlgorithmGCRA                 Algorithm = 6
)

// BudgetSpec is the configurable part of a budget.
type BudgetSpec struct {
	ID             string      `msgpack:"id"`
	ParentID       string      `msgpack:"pa,omitempty"`
	AmountMicros   int64       `msgpack:"am"`
	Currency       string      `msgpack:"cu"`
	Period         Period      `msgpack:"pe"`
	CustomPeriodMs int64       `msgpack:"cp,omitempty"`
	Timezone       string      `msgpack:"tz"`
	Enforcement    Enforcement `msgpack:"en"`
	// Thresholds are percentages, strictly ascending.
	Thresholds []uint32 `msgpack:"th,omitempty"`
	// Selector, when set, makes recorded costs whose labels it matches
	// charge this budget (see cost.go).
	Selector *LabelSelector `msgpack:"sel,omitempty"`
}

// Noop is a barrier entry: a new leader commits one before serving reads.
type Noop struct{}

type CreateBudget struct {
	Tenant    string     `msgpack:"t"`
	RequestID string     `msgpack:"r,omitempty"`
	Budget    BudgetSpec `msgpack:"b"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

// Budget fields an UpdateBudget may replace.
const (
	UpdateAmount      uint8 = 1 << 0
	UpdateEnforcement uint8 = 1 << 1
	UpdateThresholds  uint8 = 1 << 2
	// UpdateSelector replaces the selector (nil removes it).
	UpdateSelector  uint8 = 1 << 3
	updateBudgetAll       = UpdateAmount | UpdateEnforcement | UpdateThresholds | UpdateSelector
)

type UpdateBudget struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	// Fields is a mask of Update* bits saying which of the spec's fields apply.
	Fields uint8      `msgpack:"f"`
	Budget BudgetSpec `msgpack:"b"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

type DeleteBudget struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	BudgetID  string `msgpack:"b"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

type Consume struct {
	Tenant       string `msgpack:"t"`
	RequestID    string `msgpack:"r,omitempty"`
	BudgetID     string `msgpack:"b"`
	AmountMicros int64  `msgpack:"a"`
}

// ConsumeItem is one item of an atomic batch.
type ConsumeItem struct {
	BudgetID     string `msgpack:"b"`
	AmountMicros int64  `msgpack:"a"`
}

// ConsumeAtomic charges every item or none.
type ConsumeAtomic struct {
	Tenant    string        `msgpack:"t"`
	RequestID string        `msgpack:"r,omitempty"`
	Items     []ConsumeItem `msgpack:"i"`
}

type Reserve struct {
	Tenant       string `msgpack:"t"`
	RequestID    string `msgpack:"r,omitempty"`
	BudgetID     string `msgpack:"b"`
	AmountMicros int64  `msgpack:"a"`
	TTLMs        int64  `msgpack:"l"`
}

type Commit struct {
	Tenant       string `msgpack:"t"`
	RequestID    string `msgpack:"r,omitempty"`
	HoldID       string `msgpack:"h"`
	AmountMicros int64  `msgpack:"a"`
}

type Release struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	HoldID    string `msgpack:"h"`
}

// PriorityScale limits checks at one priority to a share of the limit.
type PriorityScale struct {
	Priority uint32 `msgpack:"p"`
	Percent  uint32 `msgpack:"c"`
}

// PolicySpec is the configurable part of a rate-limit policy.
type PolicySpec struct {
	ID        string          `msgpack:"id"`
	Algorithm Algorithm       `msgpack:"al"`
	Limit     int64           `msgpack:"li"`
	WindowMs  int64           `msgpack:"wi"`
	Burst     int64           `msgpack:"bu"`
	Scales    []PriorityScale `msgpack:"sc,omitempty"`
}

// Policy fields an UpdatePolicy may replace.
const (
	UpdateAlgorithm uint8 = 1 << 0
	UpdateLimit     uint8 = 1 << 1
	UpdateWindow    uint8 = 1 << 2
	UpdateBurst     uint8 = 1 << 3
	UpdateScales    uint8 = 1 << 4
	updatePolicyAll       = UpdateAlgorithm | UpdateLimit | UpdateWindow | UpdateBurst | UpdateScales
)

type CreatePolicy struct {
	Tenant    string     `msgpack:"t"`
	RequestID string     `msgpack:"r,omitempty"`
	Policy    PolicySpec `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

type UpdatePolicy struct {
	Tenant    string     `msgpack:"t"`
	RequestID string     `msgpack:"r,omitempty"`
	Fields    uint8      `msgpack:"f"`
	Policy    PolicySpec `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

type DeletePolicy struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	PolicyID  string `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

type RateCheck struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	PolicyID  string `msgpack:"p"`
	Key       string `msgpack:"k"`
	Cost      int64  `msgpack:"c"`
	Priority  uint32 `msgpack:"y,omitempty"`
}

// MarkServerRemoved records that an admin removed a server (one data
// directory, named by its incarnation) from the Raft configuration, so that no
// later leader adds it back from gossip. A server started again with a fresh
// data directory has a new incarnation and may join.
type MarkServerRemoved struct {
	ID          string `msgpack:"id"`
	Incarnation string `msgpack:"in"`
}

func (*MarkServerRemoved) Type() CommandType { return TypeMarkServerRemoved }

func (*MarkServerRemoved) idempotencyKey() (string, string) { return "", "" }

func (*Noop) Type() CommandType          { return TypeNoop }
func (*CreateBudget) Type() CommandType  { return TypeCreateBudget }
func (*UpdateBudget) Type() CommandType  { return TypeUpdateBudget }
func (*DeleteBudget) Type() CommandType  { return TypeDeleteBudget }
func (*Consume) Type() CommandType       { return TypeConsume }
func (*ConsumeAtomic) Type() CommandType { return TypeConsumeAtomic }
func (*Reserve) Type() CommandType       { return TypeReserve }
func (*Commit) Type() CommandType        { return TypeCommit }
func (*Release) Type() CommandType       { return TypeRelease }
func (*CreatePolicy) Type() CommandType  { return TypeCreatePolicy }
func (*UpdatePolicy) Type() CommandType  { return TypeUpdatePolicy }
func (*DeletePolicy) Type() CommandType  { return TypeDeletePolicy }
func (*RateCheck) Type() CommandType     { return TypeRateCheck }

func (*Noop) idempotencyKey() (string, string)            { return "", "" }
func (c *CreateBudget) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (c *UpdateBudget) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (c *DeleteBudget) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (c *Consume) idempotencyKey() (string, string)       { return c.Tenant, c.RequestID }
func (c *ConsumeAtomic) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }
func (c *Reserve) idempotencyKey() (string, string)       { return c.Tenant, c.RequestID }
func (c *Commit) idempotencyKey() (string, string)        { return c.Tenant, c.RequestID }
func (c *Release) idempotencyKey() (string, string)       { return c.Tenant, c.RequestID }
func (c *CreatePolicy) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (c *UpdatePolicy) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (c *DeletePolicy) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (c *RateCheck) idempotencyKey() (string, string)     { return c.Tenant, c.RequestID }

// name is the reason as it appears in receipt leaves ("" for none).
func (r DenyReason) name() string {
	switch r {
	case ReasonNone:
		return ""
	case ReasonBudgetExceeded:
		return "budget_exceeded"
	case ReasonHoldNotActive:
		return "hold_not_active"
	case ReasonRateLimited:
		return "rate_limited"
	case ReasonCostExceedsLimit:
		return "cost_exceeds_limit"
	case ReasonBatchAborted:
		return "batch_aborted"
	case ReasonQuotaExhausted:
		return "quota_exhausted"
	}
	return "reason_" + strconv.Itoa(int(r))
}

func (c *CreateBudget) actor() string { return c.By }

func (c *UpdateBudget) actor() string { return c.By }

func (c *DeleteBudget) actor() string { return c.By }

func (c *CreatePolicy) actor() string { return c.By }

func (c *UpdatePolicy) actor() string { return c.By }

func (c *DeletePolicy) actor() string { return c.By }
