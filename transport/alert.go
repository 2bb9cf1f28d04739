package transport

import (
	"context"
	"strconv"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
)

type alertHandler struct {
	node Node
}

var _ tollgatev1connect.AlertServiceHandler = (*alertHandler)(nil)

func alertToWire(a *fsm.Alert) *tollgatev1.Alert {
	out := alertToWireBase(a)
	out.Percent, out.State = a.Percent, tollgatev1.AlertState(a.State+1)
	out.AckedBy, out.ResolvedBy = a.AckedBy, a.ResolvedBy
	if a.AckedAtMs != 0 {
		out.AckedAt = timestampMs(a.AckedAtMs)
	}
	if a.ResolvedAtMs != 0 {
		out.ResolvedAt = timestampMs(a.ResolvedAtMs)
	}
	return out
}

func alertToWireBase(a *fsm.Alert) *tollgatev1.Alert {
	return &tollgatev1.Alert{Id: a.ID, Seq: a.Seq, Kind: tollgatev1.AlertKind(a.Kind), ObjectId: a.Object, Group: a.Group,
		BucketStart: timestampMs(a.BucketStartMs), BucketEnd: timestampMs(a.BucketEndMs), Currency: a.Currency,
		Observed: formatAmount(a.ObservedMicros, a.Currency), Baseline: formatAmount(a.BaselineMicros, a.Currency),
		Mad: formatAmount(a.MADMicros, a.Currency), Score: fsm.FormatAmount(a.ScoreMilli*1000, 0),
		RaisedAt: timestampMs(a.RaisedAtMs), LogIndex: a.LogIndex}
}

func (h *alertHandler) ListAlerts(ctx context.Context, req *connect.Request[tollgatev1.ListAlertsRequest]) (*connect.Response[tollgatev1.ListAlertsResponse], error) {
	m := req.Msg
	if err := validateIDs("tenant", m.Tenant); err != nil {
		return nil, err
	}
	size, err := pageSize(m.PageSize)
	if err != nil {
		return nil, err
	}
	var after uint64
	if m.PageToken != "" {
		tok, err := decodePageToken(m.PageToken)
		if err != nil {
			return nil, err
		}
		if after, err = strconv.ParseUint(tok, 10, 64); err != nil {
			return nil, invalid("page_token is not a token this service returned")
		}
	}
	if _, ok := tollgatev1.AlertKind_name[int32(m.Kind)]; !ok {
		return nil, invalid("kind %d is unknown", m.Kind)
	}
	level, maxStale, err := readLevel(m.Consistency, m.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var states []fsm.AlertState
	for _, st := range m.States {
		if st < tollgatev1.AlertState_ALERT_STATE_OPEN || st > tollgatev1.AlertState_ALERT_STATE_RESOLVED {
			return nil, invalid("states: %d is not OPEN, ACKNOWLEDGED or RESOLVED", st)
		}
		states = append(states, fsm.AlertState(st-1))
	}
	var page []fsm.Alert
	var next uint64
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) error {
		page, next = v.AlertsIn(m.Tenant, fsm.AlertKind(m.Kind), states, after, size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListAlertsResponse{ReadInfo: readInfo(info)}
	if next != 0 {
		out.NextPageToken = encodePageToken(strconv.FormatUint(next, 10))
	}
	for i := range page {
		out.Alerts = append(out.Alerts, alertToWire(&page[i]))
	}
	return connect.NewResponse(out), nil
}

func (h *alertHandler) AckAlert(ctx context.Context, req *connect.Request[tollgatev1.AckAlertRequest]) (*connect.Response[tollgatev1.AckAlertResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.AckAlert{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, AlertID: req.Msg.AlertId, By: alertActor(ctx, req.Msg.By)})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.AckAlertResponse{Alert: alertToWire(r.Alert), LogIndex: r.Index}), nil
}

func (h *alertHandler) ResolveAlert(ctx context.Context, req *connect.Request[tollgatev1.ResolveAlertRequest]) (*connect.Response[tollgatev1.ResolveAlertResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.AckAlert{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, AlertID: req.Msg.AlertId, By: alertActor(ctx, req.Msg.By), Resolve: true})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.ResolveAlertResponse{Alert: alertToWire(r.Alert), LogIndex: r.Index}), nil
}

// AlertNode lets a stream wait for this node to apply more of the log.
type AlertNode interface {
	WaitApplied(ctx context.Context, index uint64) error
}

// watchPage is how many alerts one read of a watch takes.
const watchPage = 1000

// WatchAlerts reads this node's state (any node: alerts carry their log
// sequence numbers, so where they are read does not change what is sent)
// and sends every alert after the cursor, then waits for the node to apply
// more entries.
func (h *alertHandler) WatchAlerts(ctx context.Context, req *connect.Request[tollgatev1.WatchAlertsRequest], stream *connect.ServerStream[tollgatev1.WatchAlertsResponse]) error {
	m := req.Msg
	if err := validateIDs("tenant", m.Tenant); err != nil {
		return err
	}
	if _, ok := tollgatev1.AlertKind_name[int32(m.Kind)]; !ok {
		return invalid("kind %d is unknown", m.Kind)
	}
	// Send the response headers now: a client's call returns once the
	// watch is established, not with the first alert.
	if err := stream.Send(nil); err != nil {
		return err
	}
	after := m.AfterSeq
	for {
		var page []fsm.Alert
		info, err := h.node.Read(ctx, node.Stale, 0, func(v fsm.View) error {
			page, _ = v.Alerts(m.Tenant, fsm.AlertKind(m.Kind), after, watchPage)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range page {
			if err := stream.Send(&tollgatev1.WatchAlertsResponse{Alert: alertToWire(&page[i])}); err != nil {
				return err
			}
			after = page[i].Seq
		}
		if len(page) == watchPage {
			continue
		}
		if err := h.node.WaitApplied(ctx, info.AppliedIndex+1); err != nil {
			if ctx.Err() != nil {
				return nil // the client went away
			}
			return err
		}
	}
}

// alertActor is who acknowledged or resolved an alert: with authentication
// on, the credential (and what the request said, if it named someone
// else); without, what the request says.
func alertActor(ctx context.Context, by string) string {
	p, ok := PrincipalFrom(ctx)
	if !ok || p.Method == "none" {
		return by
	}
	if by == "" || by == p.Subject {
		return p.Subject
	}
	return p.Subject + " for " + by
}
