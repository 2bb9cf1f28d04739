package transport

import (
	"context"
	"strconv"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

type budgetHandler struct {
	node Node
}

var _ tollgatev1connect.BudgetServiceHandler = (*budgetHandler)(nil)

func (h *budgetHandler) CreateBudget(ctx context.Context, req *connect.Request[tollgatev1.CreateBudgetRequest]) (*connect.Response[tollgatev1.CreateBudgetResponse], error) {
	spec, err := budgetSpec(req.Msg.Budget)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.CreateBudget{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Budget: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.CreateBudgetResponse{State: budgetStateToWire(r.Budget), LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *budgetHandler) UpdateBudget(ctx context.Context, req *connect.Request[tollgatev1.UpdateBudgetRequest]) (*connect.Response[tollgatev1.UpdateBudgetResponse], error) {
	b := req.Msg.Budget
	if b == nil {
		return nil, invalid("budget is missing")
	}
	// An empty mask means the three fields an update had before selectors
	// existed, so an old client never removes a selector by accident.
	fields := fsm.UpdateAmount | fsm.UpdateEnforcement | fsm.UpdateThresholds
	var err error
	if paths := req.Msg.UpdateMask.GetPaths(); len(paths) > 0 {
		if fields, err = maskFields("update_mask", paths, map[string]uint8{
			"amount":             fsm.UpdateAmount,
			"enforcement":        fsm.UpdateEnforcement,
			"thresholds_percent": fsm.UpdateThresholds,
			"selector":           fsm.UpdateSelector,
		}); err != nil {
			return nil, err
		}
	}
	spec := fsm.BudgetSpec{ID: b.Id, Thresholds: b.ThresholdsPercent}
	if fields&fsm.UpdateSelector != 0 {
		if spec.Selector, err = selectorFromWire("budget.selector", b.Selector); err != nil {
			return nil, err
		}
	}
	if fields&fsm.UpdateAmount != 0 {
		if spec.AmountMicros, err = parseAmount("budget.amount", b.Amount); err != nil {
			return nil, err
		}
	}
	if fields&fsm.UpdateEnforcement != 0 {
		if spec.Enforcement, err = enforcementFromWire(b.Enforcement); err != nil {
			return nil, err
		}
	}
	r, err := proposeOne(ctx, h.node, &fsm.UpdateBudget{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Fields: fields, Budget: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.UpdateBudgetResponse{State: budgetStateToWire(r.Budget), LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *budgetHandler) DeleteBudget(ctx context.Context, req *connect.Request[tollgatev1.DeleteBudgetRequest]) (*connect.Response[tollgatev1.DeleteBudgetResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.DeleteBudget{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, BudgetID: req.Msg.BudgetId})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.DeleteBudgetResponse{ReleasedHolds: r.Delete.ReleasedHolds, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *budgetHandler) GetBudget(ctx context.Context, req *connect.Request[tollgatev1.GetBudgetRequest]) (*connect.Response[tollgatev1.GetBudgetResponse], error) {
	if err := validateIDs("tenant", req.Msg.Tenant, "budget_id", req.Msg.BudgetId); err != nil {
		return nil, err
	}
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var b *fsm.Budget
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) (err error) {
		b, err = v.Budget(req.Msg.Tenant, req.Msg.BudgetId)
		return err
	})
	if err != nil {
		return nil, err
	}
	st := budgetStateToWire(b)
	return connect.NewResponse(&tollgatev1.GetBudgetResponse{
		Budget:            st.Budget,
		Spent:             st.Spent,
		Held:              st.Held,
		Remaining:         st.Remaining,
		PeriodStart:       st.PeriodStart,
		PeriodEnd:         st.PeriodEnd,
		ThresholdsCrossed: st.ThresholdsCrossed,
		AllowedCount:      st.AllowedCount,
		DeniedCount:       st.DeniedCount,
		WouldDenyCount:    st.WouldDenyCount,
		History:           st.History,
		ActiveHolds:       st.ActiveHolds,
		ReadInfo:          readInfo(info),
	}), nil
}

func (h *budgetHandler) ListBudgets(ctx context.Context, req *connect.Request[tollgatev1.ListBudgetsRequest]) (*connect.Response[tollgatev1.ListBudgetsResponse], error) {
	lp, err := parseList(req.Msg.Tenant, req.Msg.PageSize, req.Msg.PageToken, req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var page []*fsm.Budget
	var next string
	info, err := h.node.Read(ctx, lp.level, lp.maxStale, func(v fsm.View) error {
		page, next = v.Budgets(req.Msg.Tenant, lp.after, lp.size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListBudgetsResponse{NextPageToken: encodePageToken(next), ReadInfo: readInfo(info)}
	for _, b := range page {
		out.Budgets = append(out.Budgets, budgetStateToWire(b))
	}
	return connect.NewResponse(out), nil
}

func (h *budgetHandler) Check(ctx context.Context, req *connect.Request[tollgatev1.BudgetServiceCheckRequest]) (*connect.Response[tollgatev1.BudgetServiceCheckResponse], error) {
	if err := validateIDs("tenant", req.Msg.Tenant, "budget_id", req.Msg.BudgetId); err != nil {
		return nil, err
	}
	amount, err := parseAmount("amount", req.Msg.Amount)
	if err != nil {
		return nil, err
	}
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var s *fsm.SpendResult
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) (err error) {
		s, err = v.CheckBudget(req.Msg.Tenant, req.Msg.BudgetId, amount)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.BudgetServiceCheckResponse{
		Allowed:          s.Allowed,
		Remaining:        formatAmount(s.RemainingMicros, s.Currency),
		Reason:           tollgatev1.DenyReason(s.Reason),
		DeniedByBudgetId: s.DeniedBy,
		WouldDeny:        s.WouldDeny,
		ReadInfo:         readInfo(info),
	}), nil
}

func (h *budgetHandler) Consume(ctx context.Context, req *connect.Request[tollgatev1.ConsumeRequest]) (*connect.Response[tollgatev1.ConsumeResponse], error) {
	amount, err := parseAmount("amount", req.Msg.Amount)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.Consume{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, BudgetID: req.Msg.BudgetId, AmountMicros: amount})
	if err != nil {
		return nil, err
	}
	out := consumeToWire(r.Spend, r.Index)
	out.ReceiptRef = refToWire(r.Receipt, 0)
	if out.Receipt, err = h.receipt(ctx, req.Msg.IncludeReceipt, out.ReceiptRef); err != nil {
		return nil, err
	}
	return reply(r, out), nil
}

// ConsumeBatch: a non-atomic batch is one Consume command per item, all in
// one proposal (so one log entry); an atomic batch is one ConsumeAtomic
// command. An item without a request_id inherits "<batch request_id>#<i>", so
// retrying the whole batch with the same request_id is safe.
func (h *budgetHandler) ConsumeBatch(ctx context.Context, req *connect.Request[tollgatev1.ConsumeBatchRequest]) (*connect.Response[tollgatev1.ConsumeBatchResponse], error) {
	items := req.Msg.Items
	if len(items) == 0 {
		return nil, invalid("items is empty")
	}
	if len(items) > fsm.BatchItemsMax {
		return nil, invalid("items has %d entries; at most %d", len(items), fsm.BatchItemsMax)
	}
	if req.Msg.Atomic {
		return h.consumeAtomic(ctx, req.Msg)
	}
	cmds := make([]fsm.Command, len(items))
	for i, it := range items {
		amount, err := parseAmount("items["+strconv.Itoa(i)+"].amount", it.Amount)
		if err != nil {
			return nil, err
		}
		cmds[i] = &fsm.Consume{Tenant: req.Msg.Tenant, RequestID: itemRequestID(req.Msg.RequestId, it.RequestId, i),
			BudgetID: it.BudgetId, AmountMicros: amount}
	}
	results, index, err := proposeMany(ctx, h.node, "items", cmds)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ConsumeBatchResponse{AllAllowed: true, LogIndex: index}
	replayed := false
	for _, r := range results {
		replayed = replayed || r.Replayed
		if r.Err != nil {
			return nil, r.Err // validated up front, so only a rejection of the whole request remains
		}
		item := consumeToWire(r.Spend, r.Index)
		item.ReceiptRef = refToWire(r.Receipt, 0)
		out.Results = append(out.Results, item)
		out.AllAllowed = out.AllAllowed && r.Spend.Allowed
	}
	if err := h.batchReceipts(ctx, req.Msg.IncludeReceipt, out.Results); err != nil {
		return nil, err
	}
	return replyReplayed(replayed, out), nil
}

func (h *budgetHandler) consumeAtomic(ctx context.Context, msg *tollgatev1.ConsumeBatchRequest) (*connect.Response[tollgatev1.ConsumeBatchResponse], error) {
	cmd := &fsm.ConsumeAtomic{Tenant: msg.Tenant, RequestID: msg.RequestId}
	for i, it := range msg.Items {
		amount, err := parseAmount("items["+strconv.Itoa(i)+"].amount", it.Amount)
		if err != nil {
			return nil, err
		}
		if it.RequestId != "" {
			return nil, invalid("items[%d].request_id is not used in an atomic batch; set the batch's request_id", i)
		}
		cmd.Items = append(cmd.Items, fsm.ConsumeItem{BudgetID: it.BudgetId, AmountMicros: amount})
	}
	r, err := proposeOne(ctx, h.node, cmd)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ConsumeBatchResponse{AllAllowed: true, LogIndex: r.Index}
	for i := range r.Batch {
		item := consumeToWire(&r.Batch[i], r.Index)
		item.ReceiptRef = refToWire(r.Receipt, uint32(i))
		out.Results = append(out.Results, item)
		out.AllAllowed = out.AllAllowed && r.Batch[i].Allowed
	}
	if err := h.batchReceipts(ctx, msg.IncludeReceipt, out.Results); err != nil {
		return nil, err
	}
	return reply(r, out), nil
}

func (h *budgetHandler) Reserve(ctx context.Context, req *connect.Request[tollgatev1.ReserveRequest]) (*connect.Response[tollgatev1.ReserveResponse], error) {
	amount, err := parseAmount("amount", req.Msg.Amount)
	if err != nil {
		return nil, err
	}
	ttl, err := parseDurationMs("ttl", req.Msg.Ttl, fsm.HoldTTLMinMs, fsm.HoldTTLMaxMs)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.Reserve{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId,
		BudgetID: req.Msg.BudgetId, AmountMicros: amount, TTLMs: ttl})
	if err != nil {
		return nil, err
	}
	s := r.Spend
	ref := refToWire(r.Receipt, 0)
	full, err := h.receipt(ctx, req.Msg.IncludeReceipt, ref)
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.ReserveResponse{
		ReceiptRef:       ref,
		Receipt:          full,
		Allowed:          s.Allowed,
		HoldId:           s.HoldID,
		Remaining:        formatAmount(s.RemainingMicros, s.Currency),
		Reason:           tollgatev1.DenyReason(s.Reason),
		DeniedByBudgetId: s.DeniedBy,
		ExpiresAt:        timestampMs(s.HoldExpiresAtMs),
		WouldDeny:        s.WouldDeny,
		LogIndex:         r.Index,
	}), nil
}

func (h *budgetHandler) Commit(ctx context.Context, req *connect.Request[tollgatev1.CommitRequest]) (*connect.Response[tollgatev1.CommitResponse], error) {
	amount, err := parseAmount("amount", req.Msg.Amount)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.Commit{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, HoldID: req.Msg.HoldId, AmountMicros: amount})
	if err != nil {
		return nil, err
	}
	c := consumeToWire(r.Spend, r.Index)
	ref := refToWire(r.Receipt, 0)
	full, err := h.receipt(ctx, req.Msg.IncludeReceipt, ref)
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.CommitResponse{
		ReceiptRef:        ref,
		Receipt:           full,
		Allowed:           c.Allowed,
		Remaining:         c.Remaining,
		Reason:            c.Reason,
		DeniedByBudgetId:  c.DeniedByBudgetId,
		Spent:             c.Spent,
		WouldDeny:         c.WouldDeny,
		ThresholdsCrossed: c.ThresholdsCrossed,
		LogIndex:          c.LogIndex,
		BudgetId:          c.BudgetId,
	}), nil
}

func (h *budgetHandler) Release(ctx context.Context, req *connect.Request[tollgatev1.ReleaseRequest]) (*connect.Response[tollgatev1.ReleaseResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.Release{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, HoldID: req.Msg.HoldId})
	if err != nil {
		return nil, err
	}
	s := r.Spend
	ref := refToWire(r.Receipt, 0)
	full, err := h.receipt(ctx, req.Msg.IncludeReceipt, ref)
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.ReleaseResponse{
		ReceiptRef: ref,
		Receipt:    full,
		Released:   formatAmount(s.ReleasedMicros, s.Currency),
		Remaining:  formatAmount(s.RemainingMicros, s.Currency),
		LogIndex:   r.Index,
		BudgetId:   s.BudgetID,
	}), nil
}
