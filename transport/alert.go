package transport

import (
	"context"
	"strconv"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

type alertHandler struct {
	node Node
}

var _ tollgatev1connect.AlertServiceHandler = (*alertHandler)(nil)

func alertToWire(a *fsm.Alert) *tollgatev1.Alert {
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
	var page []fsm.Alert
	var next uint64
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) error {
		page, next = v.Alerts(m.Tenant, fsm.AlertKind(m.Kind), after, size)
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
