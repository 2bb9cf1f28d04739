package transport

import (
	"context"
	"strconv"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

type rateLimitHandler struct {
	node Node
}

var _ tollgatev1connect.RateLimitServiceHandler = (*rateLimitHandler)(nil)

var policyMaskFields = map[string]uint8{
	"algorithm":       fsm.UpdateAlgorithm,
	"limit":           fsm.UpdateLimit,
	"window":          fsm.UpdateWindow,
	"burst":           fsm.UpdateBurst,
	"priority_scales": fsm.UpdateScales,
}

func (h *rateLimitHandler) CreatePolicy(ctx context.Context, req *connect.Request[tollgatev1.CreatePolicyRequest]) (*connect.Response[tollgatev1.CreatePolicyResponse], error) {
	spec, err := policySpec(req.Msg.Policy, 0xff)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.CreatePolicy{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Policy: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.CreatePolicyResponse{Policy: policyToWire(r.Policy), LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *rateLimitHandler) UpdatePolicy(ctx context.Context, req *connect.Request[tollgatev1.UpdatePolicyRequest]) (*connect.Response[tollgatev1.UpdatePolicyResponse], error) {
	fields, err := maskFields("update_mask", req.Msg.UpdateMask.GetPaths(), policyMaskFields)
	if err != nil {
		return nil, err
	}
	spec, err := policySpec(req.Msg.Policy, fields)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.UpdatePolicy{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Fields: fields, Policy: spec})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.UpdatePolicyResponse{Policy: policyToWire(r.Policy), LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *rateLimitHandler) DeletePolicy(ctx context.Context, req *connect.Request[tollgatev1.DeletePolicyRequest]) (*connect.Response[tollgatev1.DeletePolicyResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.DeletePolicy{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, PolicyID: req.Msg.PolicyId})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.DeletePolicyResponse{RemovedKeys: r.Delete.RemovedKeys, LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *rateLimitHandler) GetPolicy(ctx context.Context, req *connect.Request[tollgatev1.GetPolicyRequest]) (*connect.Response[tollgatev1.GetPolicyResponse], error) {
	if err := validateIDs("tenant", req.Msg.Tenant, "policy_id", req.Msg.PolicyId); err != nil {
		return nil, err
	}
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var p *fsm.Policy
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) (err error) {
		p, err = v.Policy(req.Msg.Tenant, req.Msg.PolicyId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.GetPolicyResponse{Policy: policyToWire(p), ActiveKeys: p.ActiveKeys, ReadInfo: readInfo(info)}), nil
}

func (h *rateLimitHandler) ListPolicies(ctx context.Context, req *connect.Request[tollgatev1.ListPoliciesRequest]) (*connect.Response[tollgatev1.ListPoliciesResponse], error) {
	lp, err := parseList(req.Msg.Tenant, req.Msg.PageSize, req.Msg.PageToken, req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var page []*fsm.Policy
	var next string
	info, err := h.node.Read(ctx, lp.level, lp.maxStale, func(v fsm.View) error {
		page, next = v.Policies(req.Msg.Tenant, lp.after, lp.size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListPoliciesResponse{NextPageToken: encodePageToken(next), ReadInfo: readInfo(info)}
	for _, p := range page {
		out.Policies = append(out.Policies, policyToWire(p))
	}
	return connect.NewResponse(out), nil
}

// rateCost applies the default cost of 1 when the field is absent.
func rateCost(field string, cost *int64) (int64, error) {
	if cost == nil {
		return 1, nil
	}
	if *cost < 1 || *cost > fsm.RateLimitMax {
		return 0, invalid("%s must be between 1 and %d", field, fsm.RateLimitMax)
	}
	return *cost, nil
}

func (h *rateLimitHandler) Check(ctx context.Context, req *connect.Request[tollgatev1.RateLimitServiceCheckRequest]) (*connect.Response[tollgatev1.RateLimitServiceCheckResponse], error) {
	cost, err := rateCost("cost", req.Msg.Cost)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.RateCheck{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId,
		PolicyID: req.Msg.PolicyId, Key: req.Msg.Key, Cost: cost, Priority: req.Msg.Priority})
	if err != nil {
		return nil, err
	}
	out := rateToWire(r.Rate, r.Index)
	out.ReceiptRef = refToWire(r.Receipt, 0)
	if out.Receipt, err = fetchReceipt(ctx, h.node, req.Msg.IncludeReceipt, out.ReceiptRef); err != nil {
		return nil, err
	}
	return reply(r, out), nil
}

// CheckBatch proposes one RateCheck per item in one log entry. A rejected
// item (unknown policy) fails the whole call with the item named.
func (h *rateLimitHandler) CheckBatch(ctx context.Context, req *connect.Request[tollgatev1.CheckBatchRequest]) (*connect.Response[tollgatev1.CheckBatchResponse], error) {
	items := req.Msg.Items
	if len(items) == 0 {
		return nil, invalid("items is empty")
	}
	if len(items) > fsm.BatchItemsMax {
		return nil, invalid("items has %d entries; at most %d", len(items), fsm.BatchItemsMax)
	}
	cmds := make([]fsm.Command, len(items))
	for i, it := range items {
		cost, err := rateCost("items["+strconv.Itoa(i)+"].cost", it.Cost)
		if err != nil {
			return nil, err
		}
		cmds[i] = &fsm.RateCheck{Tenant: req.Msg.Tenant, RequestID: itemRequestID(req.Msg.RequestId, it.RequestId, i), PolicyID: it.PolicyId,
			Key: it.Key, Cost: cost, Priority: it.Priority}
	}
	results, index, err := proposeMany(ctx, h.node, "items", cmds)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.CheckBatchResponse{LogIndex: index}
	replayed := false
	for i, r := range results {
		if r.Err != nil {
			return nil, &fsm.Error{Code: r.Err.Code, Message: "items[" + strconv.Itoa(i) + "]: " + r.Err.Message}
		}
		replayed = replayed || r.Replayed
		item := rateToWire(r.Rate, r.Index)
		item.ReceiptRef = refToWire(r.Receipt, 0)
		out.Results = append(out.Results, item)
	}
	for _, item := range out.Results {
		if item.Receipt, err = fetchReceipt(ctx, h.node, req.Msg.IncludeReceipt, item.ReceiptRef); err != nil {
			return nil, err
		}
	}
	return replyReplayed(replayed, out), nil
}
