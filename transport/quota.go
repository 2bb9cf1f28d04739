package transport

import (
	"context"
	"sort"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

type quotaHandler struct {
	node Node
}

var _ tollgatev1connect.QuotaServiceHandler = (*quotaHandler)(nil)

// quotaAmount formats a quantity of a pool's resource (no currency: at
// least no fractional digits, at most 6).
func quotaAmount(micros int64) string { return fsm.FormatAmount(micros, 0) }

func optionalAmount(field, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return parseAmount(field, s)
}

func quotaPoolSpec(p *tollgatev1.QuotaPool) (fsm.QuotaPoolSpec, error) {
	if p == nil {
		return fsm.QuotaPoolSpec{}, invalid("pool is missing")
	}
	capacity, err := parseAmount("pool.capacity", p.Capacity)
	if err != nil {
		return fsm.QuotaPoolSpec{}, err
	}
	period, customMs, err := periodFromWire("pool", p.Period, p.CustomPeriod)
	if err != nil {
		return fsm.QuotaPoolSpec{}, err
	}
	enforcement := fsm.EnforcementHard
	switch p.Enforcement {
	case tollgatev1.Enforcement_ENFORCEMENT_UNSPECIFIED, tollgatev1.Enforcement_ENFORCEMENT_HARD:
	case tollgatev1.Enforcement_ENFORCEMENT_SOFT:
		enforcement = fsm.EnforcementSoft
	default:
		return fsm.QuotaPoolSpec{}, invalid("pool.enforcement must be HARD or SOFT")
	}
	if p.Strategy == tollgatev1.QuotaStrategy_QUOTA_STRATEGY_UNSPECIFIED {
		return fsm.QuotaPoolSpec{}, invalid("pool.strategy is required (FIXED, PROPORTIONAL, FAIR_SHARE or PRIORITY)")
	}
	tz := p.Timezone
	if tz == "" {
		tz = "UTC"
	}
	return fsm.QuotaPoolSpec{ID: p.Id, Resource: p.Resource, CapacityMicros: capacity, Period: period, CustomPeriodMs: customMs,
		Timezone: tz, Enforcement: enforcement, Strategy: fsm.Strategy(p.Strategy)}, nil
}

func quotaConsumerSpec(c *tollgatev1.QuotaConsumer) (fsm.QuotaConsumerSpec, error) {
	if c == nil {
		return fsm.QuotaConsumerSpec{}, invalid("consumer is missing")
	}
	out := fsm.QuotaConsumerSpec{ID: c.Id, Weight: c.Weight, Priority: c.Priority}
	if out.Weight == 0 {
		out.Weight = 1
	}
	var err error
	if out.MinMicros, err = optionalAmount("consumer.min", c.Min); err != nil {
		return out, err
	}
	if out.MaxMicros, err = optionalAmount("consumer.max", c.Max); err != nil {
		return out, err
	}
	if out.FixedMicros, err = optionalAmount("consumer.fixed", c.Fixed); err != nil {
		return out, err
	}
	return out, nil
}

func quotaStateToWire(p *fsm.QuotaPool) *tollgatev1.QuotaPoolState {
	custom := ""
	if p.Spec.Period == fsm.PeriodCustom {
		custom = formatDurationMs(p.Spec.CustomPeriodMs)
	}
	st := &tollgatev1.QuotaPoolState{
		Pool: &tollgatev1.QuotaPool{Id: p.Spec.ID, Resource: p.Spec.Resource, Capacity: quotaAmount(p.Spec.CapacityMicros),
			Period: tollgatev1.Period(p.Spec.Period), CustomPeriod: custom, Timezone: p.Spec.Timezone,
			Enforcement: tollgatev1.Enforcement(p.Spec.Enforcement), Strategy: tollgatev1.QuotaStrategy(p.Spec.Strategy)},
		PeriodStart: timestampMs(p.PeriodStartMs), Version: p.Version,
	}
	if p.PeriodEndMs != 0 {
		st.PeriodEnd = timestampMs(p.PeriodEndMs)
	}
	for _, q := range p.Consumers {
		c := &tollgatev1.QuotaConsumer{Id: q.Spec.ID, Weight: q.Spec.Weight, Priority: q.Spec.Priority}
		if q.Spec.MinMicros > 0 {
			c.Min = quotaAmount(q.Spec.MinMicros)
		}
		if q.Spec.MaxMicros > 0 {
			c.Max = quotaAmount(q.Spec.MaxMicros)
		}
		if q.Spec.FixedMicros > 0 {
			c.Fixed = quotaAmount(q.Spec.FixedMicros)
		}
		st.Consumers = append(st.Consumers, &tollgatev1.QuotaConsumerState{Consumer: c, Demand: quotaAmount(q.DemandMicros),
			Allocated: quotaAmount(q.AllocatedMicros), Used: quotaAmount(q.UsedMicros)})
	}
	for _, h := range p.History {
		by := map[string]string{}
		keys := make([]string, 0, len(h.ByConsumer))
		for k := range h.ByConsumer {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			by[k] = quotaAmount(h.ByConsumer[k])
		}
		st.History = append(st.History, &tollgatev1.QuotaPeriod{Start: timestampMs(h.StartMs), End: timestampMs(h.EndMs),
			Capacity: quotaAmount(h.CapacityMicros), Used: quotaAmount(h.UsedMicros), UsedByConsumer: by})
	}
	return st
}

// poolReply proposes a quota command and returns the pool after it.
func (h *quotaHandler) poolReply(ctx context.Context, cmd fsm.Command) (fsm.Result, *tollgatev1.QuotaPoolState, error) {
	r, err := proposeOne(ctx, h.node, cmd)
	if err != nil {
		return r, nil, err
	}
	return r, quotaStateToWire(r.Quota.Pool), nil
}

func (h *quotaHandler) CreatePool(ctx context.Context, req *connect.Request[tollgatev1.CreatePoolRequest]) (*connect.Response[tollgatev1.CreatePoolResponse], error) {
	spec, err := quotaPoolSpec(req.Msg.Pool)
	if err != nil {
		return nil, err
	}
	r, st, err := h.poolReply(ctx, &fsm.CreateQuotaPool{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Pool: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.CreatePoolResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) GetPool(ctx context.Context, req *connect.Request[tollgatev1.GetPoolRequest]) (*connect.Response[tollgatev1.GetPoolResponse], error) {
	if err := validateIDs("tenant", req.Msg.Tenant, "pool_id", req.Msg.PoolId); err != nil {
		return nil, err
	}
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var p *fsm.QuotaPool
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) (err error) {
		p, err = v.QuotaPool(req.Msg.Tenant, req.Msg.PoolId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.GetPoolResponse{State: quotaStateToWire(p), ReadInfo: readInfo(info)}), nil
}

func (h *quotaHandler) SetConsumer(ctx context.Context, req *connect.Request[tollgatev1.SetConsumerRequest]) (*connect.Response[tollgatev1.SetConsumerResponse], error) {
	spec, err := quotaConsumerSpec(req.Msg.Consumer)
	if err != nil {
		return nil, err
	}
	r, st, err := h.poolReply(ctx, &fsm.SetQuotaConsumer{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId, Consumer: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.SetConsumerResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) DeleteConsumer(ctx context.Context, req *connect.Request[tollgatev1.DeleteConsumerRequest]) (*connect.Response[tollgatev1.DeleteConsumerResponse], error) {
	r, st, err := h.poolReply(ctx, &fsm.SetQuotaConsumer{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId,
		Consumer: fsm.QuotaConsumerSpec{ID: req.Msg.ConsumerId}, Delete: true})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.DeleteConsumerResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) SetDemand(ctx context.Context, req *connect.Request[tollgatev1.SetDemandRequest]) (*connect.Response[tollgatev1.SetDemandResponse], error) {
	demand, err := parseAmount("demand", req.Msg.Demand)
	if err != nil {
		return nil, err
	}
	r, st, err := h.poolReply(ctx, &fsm.SetQuotaDemand{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId,
		ConsumerID: req.Msg.ConsumerId, DemandMicros: demand})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.SetDemandResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) Consume(ctx context.Context, req *connect.Request[tollgatev1.QuotaServiceConsumeRequest]) (*connect.Response[tollgatev1.QuotaServiceConsumeResponse], error) {
	amount, err := parseAmount("amount", req.Msg.Amount)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.QuotaConsume{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId,
		ConsumerID: req.Msg.ConsumerId, AmountMicros: amount})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.QuotaServiceConsumeResponse{Allowed: r.Quota.Allowed, Reason: tollgatev1.DenyReason(r.Quota.Reason),
		WouldDeny: r.Quota.WouldDeny, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}
	for _, q := range r.Quota.Pool.Consumers {
		if q.Spec.ID == req.Msg.ConsumerId {
			out.Allocated, out.Used = quotaAmount(q.AllocatedMicros), quotaAmount(q.UsedMicros)
		}
	}
	return reply(r, out), nil
}

func (h *quotaHandler) Renew(ctx context.Context, req *connect.Request[tollgatev1.RenewRequest]) (*connect.Response[tollgatev1.RenewResponse], error) {
	r, st, err := h.poolReply(ctx, &fsm.RenewQuotaPool{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.RenewResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) ListPools(ctx context.Context, req *connect.Request[tollgatev1.ListPoolsRequest]) (*connect.Response[tollgatev1.ListPoolsResponse], error) {
	lp, err := parseList(req.Msg.Tenant, req.Msg.PageSize, req.Msg.PageToken, req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var page []*fsm.QuotaPool
	var next string
	info, err := h.node.Read(ctx, lp.level, lp.maxStale, func(v fsm.View) error {
		page, next = v.QuotaPools(req.Msg.Tenant, lp.after, lp.size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListPoolsResponse{NextPageToken: encodePageToken(next), ReadInfo: readInfo(info)}
	for _, p := range page {
		out.Pools = append(out.Pools, quotaStateToWire(p))
	}
	return connect.NewResponse(out), nil
}

func (h *quotaHandler) UpdatePool(ctx context.Context, req *connect.Request[tollgatev1.UpdatePoolRequest]) (*connect.Response[tollgatev1.UpdatePoolResponse], error) {
	p := req.Msg.Pool
	if p == nil {
		return nil, invalid("pool is missing")
	}
	if len(req.Msg.UpdateMask.GetPaths()) == 0 {
		return nil, invalid("update_mask is required (capacity, strategy, enforcement)")
	}
	fields, err := maskFields("update_mask", req.Msg.UpdateMask.GetPaths(), map[string]uint8{
		"capacity": fsm.UpdatePoolCapacity, "strategy": fsm.UpdatePoolStrategy, "enforcement": fsm.UpdatePoolEnforcement})
	if err != nil {
		return nil, err
	}
	spec := fsm.QuotaPoolSpec{ID: p.Id, Strategy: fsm.Strategy(p.Strategy), Enforcement: fsm.Enforcement(p.Enforcement)}
	if fields&fsm.UpdatePoolCapacity != 0 {
		if spec.CapacityMicros, err = parseAmount("pool.capacity", p.Capacity); err != nil {
			return nil, err
		}
	}
	r, st, err := h.poolReply(ctx, &fsm.UpdateQuotaPool{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Fields: fields, Pool: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.UpdatePoolResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) DeletePool(ctx context.Context, req *connect.Request[tollgatev1.DeletePoolRequest]) (*connect.Response[tollgatev1.DeletePoolResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.DeleteQuotaPool{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.DeletePoolResponse{LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *quotaHandler) AllocateBatch(ctx context.Context, req *connect.Request[tollgatev1.AllocateBatchRequest]) (*connect.Response[tollgatev1.AllocateBatchResponse], error) {
	if len(req.Msg.Consumers) > fsm.QuotaConsumersMax {
		return nil, invalid("consumers has %d consumers; at most %d", len(req.Msg.Consumers), fsm.QuotaConsumersMax)
	}
	cmd := &fsm.SetQuotaConsumers{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, PoolID: req.Msg.PoolId}
	for i, c := range req.Msg.Consumers {
		spec, err := quotaConsumerSpec(c)
		if err != nil {
			return nil, invalid("consumers[%d]: %s", i, err.Error())
		}
		cmd.Consumers = append(cmd.Consumers, spec)
	}
	r, st, err := h.poolReply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.AllocateBatchResponse{State: st, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}
