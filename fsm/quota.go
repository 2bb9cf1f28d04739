package fsm

import (
	"errors"
	"fmt"
	"sort"

	"github.com/tollgate/tollgate/receipt"
)

// Quota pools ([quotas]). A pool is a capacity of a resource per period
// (renewed at period boundaries in its timezone, like a budget), shared by
// consumers according to a strategy (see Allocate). Allocations are
// recomputed whenever capacity, strategy, consumers or demands change;
// consuming against an allocation is a decision like a budget consume.

// Limits of quota pools.
const (
	// QuotaPoolsMax bounds the pools across all tenants.
	QuotaPoolsMax = 100_000
	// QuotaConsumersMax bounds the consumers of one pool.
	QuotaConsumersMax = 256
	// QuotaHistoryMax is how many closed periods a pool keeps.
	QuotaHistoryMax = 36
	// QuotaWeightMax bounds a consumer's weight.
	QuotaWeightMax = 1_000_000
)

// QuotaPoolSpec is the configurable part of a pool.
type QuotaPoolSpec struct {
	ID             string      `msgpack:"id"`
	Resource       string      `msgpack:"rs"`
	CapacityMicros int64       `msgpack:"c"`
	Period         Period      `msgpack:"pe"`
	CustomPeriodMs int64       `msgpack:"cp,omitempty"`
	Timezone       string      `msgpack:"tz"`
	Enforcement    Enforcement `msgpack:"en"`
	Strategy       Strategy    `msgpack:"st"`
}

// QuotaConsumerSpec is a consumer of a pool.
type QuotaConsumerSpec struct {
	ID          string `msgpack:"id"`
	Weight      int64  `msgpack:"w"`
	Priority    int32  `msgpack:"p,omitempty"`
	MinMicros   int64  `msgpack:"mn,omitempty"`
	MaxMicros   int64  `msgpack:"mx,omitempty"`
	FixedMicros int64  `msgpack:"fx,omitempty"`
}

// QuotaConsumer is a consumer and its state in the current period.
type QuotaConsumer struct {
	Spec            QuotaConsumerSpec `msgpack:"s"`
	DemandMicros    int64             `msgpack:"d,omitempty"`
	AllocatedMicros int64             `msgpack:"a"`
	UsedMicros      int64             `msgpack:"u,omitempty"`
	// Exhausted: QUOTA_EXHAUSTED was raised this period.
	Exhausted bool `msgpack:"ex,omitempty"`
}

// QuotaPeriodUsage is a closed period of a pool.
type QuotaPeriodUsage struct {
	StartMs        int64            `msgpack:"s"`
	EndMs          int64            `msgpack:"e"`
	CapacityMicros int64            `msgpack:"c"`
	UsedMicros     int64            `msgpack:"u"`
	ByConsumer     map[string]int64 `msgpack:"b,omitempty"`
}

// QuotaPool is a pool, its consumers and the current period.
type QuotaPool struct {
	Tenant        string             `msgpack:"t"`
	Spec          QuotaPoolSpec      `msgpack:"s"`
	CreatedAtMs   int64              `msgpack:"ca"`
	UpdatedAtMs   int64              `msgpack:"ua"`
	Version       uint64             `msgpack:"v"`
	PeriodStartMs int64              `msgpack:"ps"`
	PeriodEndMs   int64              `msgpack:"pe"`
	Consumers     []*QuotaConsumer   `msgpack:"co,omitempty"` // sorted by id
	History       []QuotaPeriodUsage `msgpack:"hi,omitempty"` // newest first
}

func (p *QuotaPool) clone() *QuotaPool {
	c := *p
	c.Consumers = make([]*QuotaConsumer, len(p.Consumers))
	for i, q := range p.Consumers {
		x := *q
		c.Consumers[i] = &x
	}
	c.History = make([]QuotaPeriodUsage, len(p.History))
	for i, h := range p.History {
		c.History[i] = h
		c.History[i].ByConsumer = map[string]int64{}
		for k, v := range h.ByConsumer {
			c.History[i].ByConsumer[k] = v
		}
	}
	return &c
}

func (p *QuotaPool) consumer(id string) (int, *QuotaConsumer) {
	i := sort.Search(len(p.Consumers), func(i int) bool { return p.Consumers[i].Spec.ID >= id })
	if i < len(p.Consumers) && p.Consumers[i].Spec.ID == id {
		return i, p.Consumers[i]
	}
	return i, nil
}

func (p *QuotaPool) periodSpec() *BudgetSpec {
	return &BudgetSpec{Period: p.Spec.Period, CustomPeriodMs: p.Spec.CustomPeriodMs, Timezone: p.Spec.Timezone}
}

// reallocate recomputes every consumer's allocation.
func (p *QuotaPool) reallocate() {
	cs := make([]AllocConsumer, len(p.Consumers))
	for i, q := range p.Consumers {
		cs[i] = AllocConsumer{ID: q.Spec.ID, Weight: q.Spec.Weight, Priority: q.Spec.Priority, Min: q.Spec.MinMicros,
			Max: q.Spec.MaxMicros, Demand: q.DemandMicros, Fixed: q.Spec.FixedMicros}
	}
	for i, a := range Allocate(p.Spec.CapacityMicros, p.Spec.Strategy, cs) {
		p.Consumers[i].AllocatedMicros = a
	}
}

// rollQuota renews a pool whose period ended: usage goes to history.
func rollQuota(p *QuotaPool, nowMs int64) {
	if p.PeriodEndMs == 0 || nowMs < p.PeriodEndMs {
		return
	}
	p.closePeriod()
	p.PeriodStartMs, p.PeriodEndMs = periodBounds(p.periodSpec(), p.CreatedAtMs, nowMs)
}

func (p *QuotaPool) closePeriod() {
	closed := QuotaPeriodUsage{StartMs: p.PeriodStartMs, EndMs: p.PeriodEndMs, CapacityMicros: p.Spec.CapacityMicros, ByConsumer: map[string]int64{}}
	for _, q := range p.Consumers {
		closed.UsedMicros += q.UsedMicros
		if q.UsedMicros != 0 {
			closed.ByConsumer[q.Spec.ID] = q.UsedMicros
		}
		q.UsedMicros = 0
		q.Exhausted = false
	}
	p.History = append([]QuotaPeriodUsage{closed}, p.History...)
	if len(p.History) > QuotaHistoryMax {
		p.History = p.History[:QuotaHistoryMax]
	}
}

// CreateQuotaPool creates a pool without consumers.
type CreateQuotaPool struct {
	Tenant    string        `msgpack:"t"`
	RequestID string        `msgpack:"r,omitempty"`
	Pool      QuotaPoolSpec `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

// SetQuotaConsumer adds, replaces or (Delete) removes a consumer.
type SetQuotaConsumer struct {
	Tenant    string            `msgpack:"t"`
	RequestID string            `msgpack:"r,omitempty"`
	PoolID    string            `msgpack:"p"`
	Consumer  QuotaConsumerSpec `msgpack:"c"`
	Delete    bool              `msgpack:"x,omitempty"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

// SetQuotaDemand reports a consumer's demand.
type SetQuotaDemand struct {
	Tenant       string `msgpack:"t"`
	RequestID    string `msgpack:"r,omitempty"`
	PoolID       string `msgpack:"p"`
	ConsumerID   string `msgpack:"c"`
	DemandMicros int64  `msgpack:"d"`
}

// QuotaConsume spends against a consumer's allocation.
type QuotaConsume struct {
	Tenant       string `msgpack:"t"`
	RequestID    string `msgpack:"r,omitempty"`
	PoolID       string `msgpack:"p"`
	ConsumerID   string `msgpack:"c"`
	AmountMicros int64  `msgpack:"a"`
}

// RenewQuotaPool closes the pool's current period now and starts a new one
// (a manual renewal; periods also renew by themselves).
type RenewQuotaPool struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	PoolID    string `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

func (*CreateQuotaPool) Type() CommandType                   { return TypeCreateQuotaPool }
func (c *CreateQuotaPool) idempotencyKey() (string, string)  { return c.Tenant, c.RequestID }
func (*SetQuotaConsumer) Type() CommandType                  { return TypeSetQuotaConsumer }
func (c *SetQuotaConsumer) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }
func (*SetQuotaDemand) Type() CommandType                    { return TypeSetQuotaDemand }
func (c *SetQuotaDemand) idempotencyKey() (string, string)   { return c.Tenant, c.RequestID }
func (*QuotaConsume) Type() CommandType                      { return TypeQuotaConsume }
func (c *QuotaConsume) idempotencyKey() (string, string)     { return c.Tenant, c.RequestID }
func (*RenewQuotaPool) Type() CommandType                    { return TypeRenewQuotaPool }
func (c *RenewQuotaPool) idempotencyKey() (string, string)   { return c.Tenant, c.RequestID }

// QuotaResult is the outcome of a quota command: the pool after it, and for
// a consume the decision.
type QuotaResult struct {
	Pool    *QuotaPool `msgpack:"p"`
	Allowed bool       `msgpack:"ok,omitempty"`
	Reason  DenyReason `msgpack:"re,omitempty"`
	// WouldDeny: allowed by SOFT enforcement although past the allocation.
	WouldDeny bool `msgpack:"wd,omitempty"`
}

func validateQuotaPoolSpec(p *QuotaPoolSpec) *Error {
	if err := ValidateID("pool.id", p.ID); err != nil {
		return err
	}
	if err := validateCostName("pool.resource", p.Resource, true); err != nil {
		return err
	}
	if err := validateAmount("pool.capacity", p.CapacityMicros, false); err != nil {
		return err
	}
	if _, err := LoadTimezone("pool.timezone", p.Timezone); err != nil {
		return err
	}
	if err := validatePeriod(p.Period, p.CustomPeriodMs); err != nil {
		return err
	}
	if p.Enforcement != EnforcementHard && p.Enforcement != EnforcementSoft {
		return invalidf("pool.enforcement must be HARD or SOFT")
	}
	if p.Strategy < StrategyFixed || p.Strategy > StrategyPriority {
		return invalidf("pool.strategy %d is not FIXED, PROPORTIONAL, FAIR_SHARE or PRIORITY", p.Strategy)
	}
	return nil
}

func validateQuotaConsumerSpec(c *QuotaConsumerSpec) *Error {
	if err := ValidateID("consumer.id", c.ID); err != nil {
		return err
	}
	if c.Weight < 1 || c.Weight > QuotaWeightMax {
		return invalidf("consumer.weight must be between 1 and %d", QuotaWeightMax)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"consumer.min", c.MinMicros}, {"consumer.max", c.MaxMicros}, {"consumer.fixed", c.FixedMicros}} {
		if err := validateAmount(f.name, f.v, true); err != nil {
			return err
		}
	}
	if c.MaxMicros > 0 && c.MaxMicros < c.MinMicros {
		return invalidf("consumer.max is below consumer.min")
	}
	return nil
}

func (s *state) quotaPool(tenant, id string) (*QuotaPool, Result) {
	p := s.quotas[objectKey{tenant, id}]
	if p == nil {
		return nil, Result{Err: errorf(CodeNotFound, "quota pool %q not found in tenant %q", id, tenant)}
	}
	return p, Result{}
}

func (s *state) createQuotaPool(ctx applyCtx, c *CreateQuotaPool) Result {
	key := objectKey{c.Tenant, c.Pool.ID}
	if s.quotas[key] != nil {
		return Result{Err: errorf(CodeAlreadyExists, "quota pool %q already exists in tenant %q", c.Pool.ID, c.Tenant)}
	}
	if len(s.quotas) >= QuotaPoolsMax {
		return Result{Err: errorf(CodeResourceExhausted, "the cluster holds the maximum of %d quota pools", QuotaPoolsMax)}
	}
	p := &QuotaPool{Tenant: c.Tenant, Spec: c.Pool, CreatedAtMs: ctx.nowMs, UpdatedAtMs: ctx.nowMs, Version: 1}
	p.PeriodStartMs, p.PeriodEndMs = periodBounds(p.periodSpec(), p.CreatedAtMs, ctx.nowMs)
	s.quotas[key] = p
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

func (s *state) setQuotaConsumer(ctx applyCtx, c *SetQuotaConsumer) Result {
	p, miss := s.quotaPool(c.Tenant, c.PoolID)
	if p == nil {
		return miss
	}
	rollQuota(p, ctx.nowMs)
	i, q := p.consumer(c.Consumer.ID)
	switch {
	case c.Delete && q == nil:
		return Result{Err: errorf(CodeNotFound, "consumer %q not found in quota pool %q", c.Consumer.ID, c.PoolID)}
	case c.Delete:
		p.Consumers = append(p.Consumers[:i], p.Consumers[i+1:]...)
	case q != nil:
		q.Spec = c.Consumer
	default:
		if len(p.Consumers) >= QuotaConsumersMax {
			return Result{Err: errorf(CodeResourceExhausted, "quota pool %q has the maximum of %d consumers", c.PoolID, QuotaConsumersMax)}
		}
		p.Consumers = append(p.Consumers, nil)
		copy(p.Consumers[i+1:], p.Consumers[i:])
		p.Consumers[i] = &QuotaConsumer{Spec: c.Consumer}
	}
	p.reallocate()
	p.Version++
	p.UpdatedAtMs = ctx.nowMs
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

// poolConsumer finds a pool, renews its period, and finds one consumer.
func (s *state) poolConsumer(ctx applyCtx, tenant, poolID, consumerID string) (*QuotaPool, *QuotaConsumer, Result) {
	p, miss := s.quotaPool(tenant, poolID)
	if p == nil {
		return nil, nil, miss
	}
	rollQuota(p, ctx.nowMs)
	_, q := p.consumer(consumerID)
	if q == nil {
		return nil, nil, Result{Err: errorf(CodeNotFound, "consumer %q not found in quota pool %q", consumerID, poolID)}
	}
	return p, q, Result{}
}

func (s *state) setQuotaDemand(ctx applyCtx, c *SetQuotaDemand) Result {
	p, q, miss := s.poolConsumer(ctx, c.Tenant, c.PoolID, c.ConsumerID)
	if p == nil {
		return miss
	}
	q.DemandMicros = c.DemandMicros
	p.reallocate()
	p.UpdatedAtMs = ctx.nowMs
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

func (s *state) quotaConsume(ctx applyCtx, c *QuotaConsume) Result {
	p, q, miss := s.poolConsumer(ctx, c.Tenant, c.PoolID, c.ConsumerID)
	if p == nil {
		return miss
	}
	used, ok := addMicros(q.UsedMicros, c.AmountMicros)
	if !ok {
		return Result{Err: errorf(CodeResourceExhausted, "consumer %q: the usage counter would overflow", c.ConsumerID)}
	}
	r := &QuotaResult{Allowed: true}
	if used >= q.AllocatedMicros && !q.Exhausted {
		// Once per consumer and period: the allocation is used up (or a
		// consume did not fit it).
		q.Exhausted = true
		ctx.raise(&Alert{Tenant: c.Tenant, Kind: AlertQuotaExhausted, Object: c.PoolID, Group: []string{c.ConsumerID},
			BucketStartMs: p.PeriodStartMs, BucketEndMs: p.PeriodEndMs, ObservedMicros: used, BaselineMicros: q.AllocatedMicros})
	}
	if used > q.AllocatedMicros {
		if p.Spec.Enforcement == EnforcementHard {
			r.Allowed, r.Reason = false, ReasonQuotaExhausted
			r.Pool = p.clone()
			return Result{Quota: r}
		}
		r.WouldDeny = true
	}
	q.UsedMicros = used
	r.Pool = p.clone()
	return Result{Quota: r}
}

func (s *state) renewQuotaPool(ctx applyCtx, c *RenewQuotaPool) Result {
	p, miss := s.quotaPool(c.Tenant, c.PoolID)
	if p == nil {
		return miss
	}
	rollQuota(p, ctx.nowMs)
	// Usage so far closes now; the new period runs to the old one's end
	// (the next calendar boundary), or stays open for PERIOD_NONE.
	p.closePeriod()
	p.History[0].EndMs = ctx.nowMs
	p.PeriodStartMs = ctx.nowMs
	p.Version++
	p.UpdatedAtMs = ctx.nowMs
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

// QuotaPool returns a copy of a pool as the next entry at the view's time
// would see it (period renewed).
func (v View) QuotaPool(tenant, id string) (*QuotaPool, error) {
	p := v.s.quotas[objectKey{tenant, id}]
	if p == nil {
		return nil, errorf(CodeNotFound, "quota pool %q not found in tenant %q", id, tenant)
	}
	c := p.clone()
	rollQuota(c, v.nowMs)
	return c, nil
}

func quotaLeaf(b *leafBuilder, c Command, r *Result) ReceiptRef {
	pool := r.Quota.Pool
	switch c := c.(type) {
	case *CreateQuotaPool:
		return b.add(c.Tenant, "quota.pool_create", c.Pool.ID, c.RequestID, "ok", "",
			[]receipt.Field{fm("capacity", c.Pool.CapacityMicros), fs("resource", c.Pool.Resource), fi("strategy", int64(c.Pool.Strategy)),
				fi("period", int64(c.Pool.Period)), fs("timezone", c.Pool.Timezone), fi("enforcement", int64(c.Pool.Enforcement))}, nil)
	case *SetQuotaConsumer:
		op := "quota.consumer_set"
		if c.Delete {
			op = "quota.consumer_delete"
		}
		return b.add(c.Tenant, op, c.PoolID+"/"+c.Consumer.ID, c.RequestID, "ok", "",
			[]receipt.Field{fi("weight", c.Consumer.Weight), fi("priority", int64(c.Consumer.Priority)), fm("min", c.Consumer.MinMicros),
				fm("max", c.Consumer.MaxMicros), fm("fixed", c.Consumer.FixedMicros)}, allocations(pool))
	case *SetQuotaDemand:
		return b.add(c.Tenant, "quota.demand", c.PoolID+"/"+c.ConsumerID, c.RequestID, "ok", "",
			[]receipt.Field{fm("demand", c.DemandMicros)}, allocations(pool))
	case *QuotaConsume:
		_, q := pool.consumer(c.ConsumerID)
		return b.add(c.Tenant, "quota.consume", c.PoolID+"/"+c.ConsumerID, c.RequestID, outcome(r.Quota.Allowed), r.Quota.Reason.name(),
			[]receipt.Field{fm("amount", c.AmountMicros)}, []receipt.Field{fm("allocated", q.AllocatedMicros), fm("used", q.UsedMicros)})
	case *RenewQuotaPool:
		return b.add(c.Tenant, "quota.renew", c.PoolID, c.RequestID, "ok", "", nil, nil)
	case *UpdateQuotaPool:
		return b.add(c.Tenant, "quota.pool_update", c.Pool.ID, c.RequestID, "ok", "",
			[]receipt.Field{fi("fields", int64(c.Fields)), fm("capacity", pool.Spec.CapacityMicros), fi("strategy", int64(pool.Spec.Strategy)),
				fi("enforcement", int64(pool.Spec.Enforcement))}, allocations(pool))
	case *DeleteQuotaPool:
		return b.add(c.Tenant, "quota.pool_delete", c.PoolID, c.RequestID, "ok", "", nil, nil)
	case *SetQuotaConsumers:
		return b.add(c.Tenant, "quota.consumers_set", c.PoolID, c.RequestID, "ok", "",
			[]receipt.Field{fi("consumers", int64(len(c.Consumers)))}, allocations(pool))
	}
	panic(fmt.Sprintf("fsm: no quota leaf for %T", c))
}

// allocations lists a pool's allocations as leaf fields (at most 64: the
// first 63 consumers by id and a count).
func allocations(p *QuotaPool) []receipt.Field {
	f := []receipt.Field{fi("consumers", int64(len(p.Consumers)))}
	for i, q := range p.Consumers {
		if i == receipt.LeafFieldsMax-1 {
			break
		}
		f = append(f, fm("alloc:"+q.Spec.ID, q.AllocatedMicros))
	}
	return f
}

// checkRestoredQuota re-validates a snapshot's pool: its spec, consumers
// (sorted, unique, valid), and allocations equal to what Allocate gives.
func (s *state) checkRestoredQuota(p *QuotaPool) error {
	if err := ValidateID("tenant", p.Tenant); err != nil {
		return errors.New(err.Message)
	}
	if err := validateQuotaPoolSpec(&p.Spec); err != nil {
		return errors.New(err.Message)
	}
	if s.quotas[objectKey{p.Tenant, p.Spec.ID}] != nil {
		return errors.New("appears twice")
	}
	if len(p.Consumers) > QuotaConsumersMax || len(p.History) > QuotaHistoryMax {
		return errors.New("too many consumers or closed periods")
	}
	allocated := make([]int64, len(p.Consumers))
	for i, q := range p.Consumers {
		if q == nil {
			return errors.New("a nil consumer")
		}
		if err := validateQuotaConsumerSpec(&q.Spec); err != nil {
			return errors.New(err.Message)
		}
		if i > 0 && q.Spec.ID <= p.Consumers[i-1].Spec.ID {
			return errors.New("consumers are not sorted by unique id")
		}
		if q.DemandMicros < 0 || q.DemandMicros > AmountMaxMicros || q.UsedMicros < 0 {
			return errors.New("a consumer's demand or usage is out of range")
		}
		allocated[i] = q.AllocatedMicros
	}
	p.reallocate()
	for i, q := range p.Consumers {
		if q.AllocatedMicros != allocated[i] {
			return fmt.Errorf("consumer %s's allocation %d is not what its pool allocates (%d)", q.Spec.ID, allocated[i], q.AllocatedMicros)
		}
	}
	if p.PeriodStartMs < 0 || (p.PeriodEndMs != 0 && p.PeriodEndMs <= p.PeriodStartMs) {
		return errors.New("period bounds are inconsistent")
	}
	return nil
}

// Pool fields an UpdateQuotaPool may replace.
const (
	UpdatePoolCapacity    uint8 = 1 << 0
	UpdatePoolStrategy    uint8 = 1 << 1
	UpdatePoolEnforcement uint8 = 1 << 2
	updatePoolAll               = UpdatePoolCapacity | UpdatePoolStrategy | UpdatePoolEnforcement
)

// UpdateQuotaPool replaces the fields in Fields; allocations are recomputed.
type UpdateQuotaPool struct {
	Tenant    string        `msgpack:"t"`
	RequestID string        `msgpack:"r,omitempty"`
	Fields    uint8         `msgpack:"f"`
	Pool      QuotaPoolSpec `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

// DeleteQuotaPool removes a pool and its consumers.
type DeleteQuotaPool struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	PoolID    string `msgpack:"p"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

// SetQuotaConsumers adds or replaces several consumers at once (one
// reallocation).
type SetQuotaConsumers struct {
	Tenant    string              `msgpack:"t"`
	RequestID string              `msgpack:"r,omitempty"`
	PoolID    string              `msgpack:"p"`
	Consumers []QuotaConsumerSpec `msgpack:"c"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

func (*UpdateQuotaPool) Type() CommandType                    { return TypeUpdateQuotaPool }
func (c *UpdateQuotaPool) idempotencyKey() (string, string)   { return c.Tenant, c.RequestID }
func (*DeleteQuotaPool) Type() CommandType                    { return TypeDeleteQuotaPool }
func (c *DeleteQuotaPool) idempotencyKey() (string, string)   { return c.Tenant, c.RequestID }
func (*SetQuotaConsumers) Type() CommandType                  { return TypeSetQuotaConsumers }
func (c *SetQuotaConsumers) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }

func validateUpdateQuotaPool(c *UpdateQuotaPool) *Error {
	if c.Fields == 0 || c.Fields&^updatePoolAll != 0 {
		return invalidf("update_mask names no updatable field (capacity, strategy, enforcement)")
	}
	if err := ValidateID("pool.id", c.Pool.ID); err != nil {
		return err
	}
	if c.Fields&UpdatePoolCapacity != 0 {
		if err := validateAmount("pool.capacity", c.Pool.CapacityMicros, false); err != nil {
			return err
		}
	}
	if c.Fields&UpdatePoolStrategy != 0 && (c.Pool.Strategy < StrategyFixed || c.Pool.Strategy > StrategyPriority) {
		return invalidf("pool.strategy %d is not FIXED, PROPORTIONAL, FAIR_SHARE or PRIORITY", c.Pool.Strategy)
	}
	if c.Fields&UpdatePoolEnforcement != 0 && c.Pool.Enforcement != EnforcementHard && c.Pool.Enforcement != EnforcementSoft {
		return invalidf("pool.enforcement must be HARD or SOFT")
	}
	return nil
}

func validateSetQuotaConsumers(c *SetQuotaConsumers) *Error {
	if err := ValidateID("pool_id", c.PoolID); err != nil {
		return err
	}
	if len(c.Consumers) == 0 || len(c.Consumers) > QuotaConsumersMax {
		return invalidf("consumers has %d consumers; want 1 to %d", len(c.Consumers), QuotaConsumersMax)
	}
	seen := map[string]bool{}
	for i := range c.Consumers {
		if err := validateQuotaConsumerSpec(&c.Consumers[i]); err != nil {
			return invalidf("consumers[%d]: %s", i, err.Message)
		}
		if seen[c.Consumers[i].ID] {
			return invalidf("consumers[%d]: %q appears twice", i, c.Consumers[i].ID)
		}
		seen[c.Consumers[i].ID] = true
	}
	return nil
}

func (s *state) updateQuotaPool(ctx applyCtx, c *UpdateQuotaPool) Result {
	p, miss := s.quotaPool(c.Tenant, c.Pool.ID)
	if p == nil {
		return miss
	}
	rollQuota(p, ctx.nowMs)
	if c.Fields&UpdatePoolCapacity != 0 {
		p.Spec.CapacityMicros = c.Pool.CapacityMicros
	}
	if c.Fields&UpdatePoolStrategy != 0 {
		p.Spec.Strategy = c.Pool.Strategy
	}
	if c.Fields&UpdatePoolEnforcement != 0 {
		p.Spec.Enforcement = c.Pool.Enforcement
	}
	p.reallocate()
	p.Version++
	p.UpdatedAtMs = ctx.nowMs
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

func (s *state) deleteQuotaPool(c *DeleteQuotaPool) Result {
	p, miss := s.quotaPool(c.Tenant, c.PoolID)
	if p == nil {
		return miss
	}
	delete(s.quotas, objectKey{c.Tenant, c.PoolID})
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

func (s *state) setQuotaConsumers(ctx applyCtx, c *SetQuotaConsumers) Result {
	p, miss := s.quotaPool(c.Tenant, c.PoolID)
	if p == nil {
		return miss
	}
	added := 0
	for _, spec := range c.Consumers {
		if _, q := p.consumer(spec.ID); q == nil {
			added++
		}
	}
	if len(p.Consumers)+added > QuotaConsumersMax {
		return Result{Err: errorf(CodeResourceExhausted, "quota pool %q would have %d consumers; at most %d", c.PoolID, len(p.Consumers)+added, QuotaConsumersMax)}
	}
	rollQuota(p, ctx.nowMs)
	for _, spec := range c.Consumers {
		i, q := p.consumer(spec.ID)
		if q != nil {
			q.Spec = spec
			continue
		}
		p.Consumers = append(p.Consumers, nil)
		copy(p.Consumers[i+1:], p.Consumers[i:])
		p.Consumers[i] = &QuotaConsumer{Spec: spec}
	}
	p.reallocate()
	p.Version++
	p.UpdatedAtMs = ctx.nowMs
	return Result{Quota: &QuotaResult{Pool: p.clone()}}
}

// QuotaPools lists a tenant's pools by id after afterID, at most limit, and
// the id to continue after ("" at the end).
func (v View) QuotaPools(tenant, afterID string, limit int) ([]*QuotaPool, string) {
	var ids []string
	for k := range v.s.quotas {
		if k.Tenant == tenant && k.ID > afterID {
			ids = append(ids, k.ID)
		}
	}
	sort.Strings(ids)
	next := ""
	if len(ids) > limit {
		ids, next = ids[:limit], ids[limit-1]
	}
	out := make([]*QuotaPool, len(ids))
	for i, id := range ids {
		c := v.s.quotas[objectKey{tenant, id}].clone()
		rollQuota(c, v.nowMs)
		out[i] = c
	}
	return out, next
}

func (c *CreateQuotaPool) actor() string { return c.By }

func (c *UpdateQuotaPool) actor() string { return c.By }

func (c *DeleteQuotaPool) actor() string { return c.By }

func (c *SetQuotaConsumer) actor() string { return c.By }

func (c *SetQuotaConsumers) actor() string { return c.By }

func (c *RenewQuotaPool) actor() string { return c.By }
