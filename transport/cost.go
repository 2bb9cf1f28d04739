package transport

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
	"github.com/tollgate/tollgate/receipt"
)

type costHandler struct {
	node Node
}

var _ tollgatev1connect.CostServiceHandler = (*costHandler)(nil)

// selectorFromWire converts a selector, sorting requirements by key and
// values (the state machine keeps them canonical).
func selectorFromWire(field string, s *tollgatev1.LabelSelector) (*fsm.LabelSelector, error) {
	if s == nil {
		return nil, nil
	}
	if len(s.Match) > fsm.SelectorRequirementsMax {
		return nil, invalid("%s has %d requirements; at most %d", field, len(s.Match), fsm.SelectorRequirementsMax)
	}
	out := &fsm.LabelSelector{Match: make([]fsm.LabelRequirement, len(s.Match))}
	for i, r := range s.Match {
		if len(r.Values) > fsm.SelectorValuesMax {
			return nil, invalid("%s.match[%d].values has %d values; at most %d", field, i, len(r.Values), fsm.SelectorValuesMax)
		}
		vs := append([]string(nil), r.Values...)
		sort.Strings(vs)
		out.Match[i] = fsm.LabelRequirement{Key: r.Key, Values: vs}
	}
	sort.SliceStable(out.Match, func(i, j int) bool { return out.Match[i].Key < out.Match[j].Key })
	if err := fsm.ValidateSelector(field, out); err != nil {
		return nil, err
	}
	return out, nil
}

func selectorToWire(s *fsm.LabelSelector) *tollgatev1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &tollgatev1.LabelSelector{}
	for _, r := range s.Match {
		out.Match = append(out.Match, &tollgatev1.LabelRequirement{Key: r.Key, Values: append([]string(nil), r.Values...)})
	}
	return out
}

// costFromWire converts one record; field prefixes its errors ("record." or
// "records[i].").
func costFromWire(field string, r *tollgatev1.CostRecord) (fsm.CostSpec, error) {
	if r == nil {
		return fsm.CostSpec{}, invalid("%s is missing", field[:len(field)-1])
	}
	amount, err := parseAmount(field+"amount", r.Amount)
	if err != nil {
		return fsm.CostSpec{}, err
	}
	if len(r.Labels) > fsm.CostLabelsMax {
		return fsm.CostSpec{}, invalid("%slabels has %d labels; at most %d", field, len(r.Labels), fsm.CostLabelsMax)
	}
	labels := make([]fsm.Label, 0, len(r.Labels))
	for k, v := range r.Labels {
		labels = append(labels, fsm.Label{Key: k, Value: v})
	}
	sort.Slice(labels, func(i, j int) bool { return labels[i].Key < labels[j].Key })
	if r.OccurredAt == nil {
		return fsm.CostSpec{}, invalid("%soccurred_at is missing", field)
	}
	if err := r.OccurredAt.CheckValid(); err != nil {
		return fsm.CostSpec{}, invalid("%soccurred_at: %v", field, err)
	}
	c := fsm.CostSpec{AmountMicros: amount, Currency: r.Currency, Resource: r.Resource, Service: r.Service,
		Labels: labels, OccurredAtMs: r.OccurredAt.AsTime().UnixMilli()}
	if err := fsm.ValidateCostSpec(field, &c); err != nil {
		return fsm.CostSpec{}, err
	}
	return c, nil
}

func chargesToWire(cs []fsm.CostCharge) []*tollgatev1.CostCharge {
	out := make([]*tollgatev1.CostCharge, len(cs))
	for i, c := range cs {
		out[i] = &tollgatev1.CostCharge{BudgetId: c.BudgetID, Currency: c.Currency, Amount: formatAmount(c.AmountMicros, c.Currency),
			Rate: c.Rate, Spent: formatAmount(c.SpentMicros, c.Currency), Remaining: formatAmount(c.RemainingMicros, c.Currency),
			ThresholdsCrossed: c.Thresholds}
	}
	return out
}

func (h *costHandler) RecordCost(ctx context.Context, req *connect.Request[tollgatev1.RecordCostRequest]) (*connect.Response[tollgatev1.RecordCostResponse], error) {
	c, err := costFromWire("record.", req.Msg.Record)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.RecordCost{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, Costs: []fsm.CostSpec{c}})
	if err != nil {
		return nil, recordFieldPrefix(err, "record.")
	}
	return reply(r, &tollgatev1.RecordCostResponse{RecordId: r.Costs[0].ID, Charges: chargesToWire(r.Costs[0].Charges),
		LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

// recordFieldPrefix makes the state machine's field names of a single
// record ("currency: ...", "occurred_at is ...") name the request's field.
func recordFieldPrefix(err error, prefix string) error {
	var fe *fsm.Error
	if e, ok := err.(*fsm.Error); ok && e.Code == fsm.CodeInvalidArgument {
		fe = e
	}
	if fe == nil {
		return err
	}
	return &fsm.Error{Code: fe.Code, Message: prefix + fe.Message}
}

func (h *costHandler) RecordCostBatch(ctx context.Context, req *connect.Request[tollgatev1.RecordCostBatchRequest]) (*connect.Response[tollgatev1.RecordCostBatchResponse], error) {
	if len(req.Msg.Records) == 0 {
		return nil, invalid("records is empty")
	}
	if len(req.Msg.Records) > fsm.CostBatchMax {
		return nil, invalid("records has %d records; at most %d", len(req.Msg.Records), fsm.CostBatchMax)
	}
	costs := make([]fsm.CostSpec, len(req.Msg.Records))
	for i, rec := range req.Msg.Records {
		c, err := costFromWire(fmt.Sprintf("records[%d].", i), rec)
		if err != nil {
			return nil, err
		}
		costs[i] = c
	}
	r, err := proposeOne(ctx, h.node, &fsm.RecordCost{Tenant: req.Msg.Tenant, RequestID: req.Msg.RequestId, Costs: costs})
	if err != nil {
		if len(costs) == 1 {
			return nil, recordFieldPrefix(err, "records[0].")
		}
		return nil, err
	}
	out := &tollgatev1.RecordCostBatchResponse{LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}
	for _, c := range r.Costs {
		out.Results = append(out.Results, &tollgatev1.RecordedCost{RecordId: c.ID, Charges: chargesToWire(c.Charges)})
	}
	return reply(r, out), nil
}

// timeRange converts a request's required [from, to) to Unix ms.
func timeRange(from, to *timestamppb.Timestamp) (int64, int64, error) {
	if from == nil || to == nil {
		return 0, 0, invalid("from and to are required")
	}
	if err := from.CheckValid(); err != nil {
		return 0, 0, invalid("from: %v", err)
	}
	if err := to.CheckValid(); err != nil {
		return 0, 0, invalid("to: %v", err)
	}
	return from.AsTime().UnixMilli(), to.AsTime().UnixMilli(), nil
}

var buckets = map[tollgatev1.Bucket]fsm.Bucket{
	tollgatev1.Bucket_BUCKET_UNSPECIFIED: fsm.BucketDay,
	tollgatev1.Bucket_BUCKET_HOUR:        fsm.BucketHour,
	tollgatev1.Bucket_BUCKET_DAY:         fsm.BucketDay,
	tollgatev1.Bucket_BUCKET_WEEK:        fsm.BucketWeek,
	tollgatev1.Bucket_BUCKET_MONTH:       fsm.BucketMonth,
	tollgatev1.Bucket_BUCKET_ALL:         fsm.BucketAll,
}

func (h *costHandler) Report(ctx context.Context, req *connect.Request[tollgatev1.ReportRequest]) (*connect.Response[tollgatev1.ReportResponse], error) {
	m := req.Msg
	if err := validateIDs("tenant", m.Tenant); err != nil {
		return nil, err
	}
	fromMs, toMs, err := timeRange(m.From, m.To)
	if err != nil {
		return nil, err
	}
	bucket, ok := buckets[m.Bucket]
	if !ok {
		return nil, invalid("bucket %d is unknown", m.Bucket)
	}
	filter, err := selectorFromWire("filter", m.Filter)
	if err != nil {
		return nil, err
	}
	tz := m.Timezone
	if tz == "" {
		tz = "UTC"
	}
	level, maxStale, err := readLevel(m.Consistency, m.MaxStaleness)
	if err != nil {
		return nil, err
	}
	q := fsm.ReportQuery{Tenant: m.Tenant, FromMs: fromMs, ToMs: toMs,
		GroupBy: m.GroupBy, Bucket: bucket, Timezone: tz, Currency: m.Currency, Filter: filter}
	var rows []fsm.ReportRow
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) (err error) {
		rows, err = v.Report(q)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ReportResponse{Currency: m.Currency, GroupBy: m.GroupBy, ReadInfo: readInfo(info)}
	for _, r := range rows {
		out.Rows = append(out.Rows, &tollgatev1.ReportRow{BucketStart: timestampMs(r.BucketStartMs), Group: r.Group,
			Amount: formatAmount(r.AmountMicros, m.Currency), Count: r.Count})
	}
	return connect.NewResponse(out), nil
}

func ratesToWire(rs []fsm.ExchangeRate) []*tollgatev1.ExchangeRate {
	out := make([]*tollgatev1.ExchangeRate, len(rs))
	for i, r := range rs {
		out[i] = &tollgatev1.ExchangeRate{From: r.From, To: r.To, Rate: r.Rate, SetAt: timestampMs(r.SetAtMs), LogIndex: r.LogIndex}
	}
	return out
}

func (h *costHandler) SetExchangeRates(ctx context.Context, req *connect.Request[tollgatev1.SetExchangeRatesRequest]) (*connect.Response[tollgatev1.SetExchangeRatesResponse], error) {
	if len(req.Msg.Rates) > fsm.ExchangeRatesMax {
		return nil, invalid("rates has %d rates; at most %d", len(req.Msg.Rates), fsm.ExchangeRatesMax)
	}
	cmd := &fsm.SetExchangeRates{ReplaceAll: req.Msg.ReplaceAll, By: auditBy(ctx)}
	for i, r := range req.Msg.Rates {
		canon, _, err := fsm.ParseRate(r.Rate)
		if err != nil {
			return nil, invalid("rates[%d].rate: %s", i, err.Message)
		}
		cmd.Rates = append(cmd.Rates, fsm.ExchangeRate{From: r.From, To: r.To, Rate: canon})
	}
	r, err := proposeOne(ctx, h.node, cmd)
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.SetExchangeRatesResponse{Rates: ratesToWire(r.Rates), LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *costHandler) GetExchangeRates(ctx context.Context, req *connect.Request[tollgatev1.GetExchangeRatesRequest]) (*connect.Response[tollgatev1.GetExchangeRatesResponse], error) {
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var rates []fsm.ExchangeRate
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) error {
		rates = v.ExchangeRates()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.GetExchangeRatesResponse{Rates: ratesToWire(rates), ReadInfo: readInfo(info)}), nil
}

func detectorFromWire(d *tollgatev1.AnomalyDetector) (fsm.AnomalyDetector, error) {
	if d == nil {
		return fsm.AnomalyDetector{}, invalid("detector is missing")
	}
	bucket := fsm.BucketHour
	switch d.Bucket {
	case tollgatev1.Bucket_BUCKET_HOUR:
	case tollgatev1.Bucket_BUCKET_DAY:
		bucket = fsm.BucketDay
	default:
		return fsm.AnomalyDetector{}, invalid("detector.bucket must be BUCKET_HOUR or BUCKET_DAY")
	}
	threshold, err := parseAmount("detector.threshold", d.Threshold)
	if err != nil {
		return fsm.AnomalyDetector{}, err
	}
	if threshold%1000 != 0 {
		return fsm.AnomalyDetector{}, invalid("detector.threshold %q has more than 3 fractional digits", d.Threshold)
	}
	minAmount := int64(0)
	if d.MinAmount != "" {
		if minAmount, err = parseAmount("detector.min_amount", d.MinAmount); err != nil {
			return fsm.AnomalyDetector{}, err
		}
	}
	out := fsm.AnomalyDetector{ID: d.Id, GroupBy: d.GroupBy, Bucket: bucket, Window: d.Window, ThresholdMilli: threshold / 1000,
		MinAmountMicros: minAmount, Currency: d.Currency}
	return out, nil
}

func detectorToWire(d *fsm.AnomalyDetector) *tollgatev1.AnomalyDetector {
	bucket := tollgatev1.Bucket_BUCKET_HOUR
	if d.Bucket == fsm.BucketDay {
		bucket = tollgatev1.Bucket_BUCKET_DAY
	}
	return &tollgatev1.AnomalyDetector{Id: d.ID, GroupBy: append([]string(nil), d.GroupBy...), Bucket: bucket, Window: d.Window,
		Threshold: fsm.FormatAmount(d.ThresholdMilli*1000, 0), MinAmount: formatAmount(d.MinAmountMicros, d.Currency), Currency: d.Currency}
}

func (h *costHandler) SetAnomalyDetector(ctx context.Context, req *connect.Request[tollgatev1.SetAnomalyDetectorRequest]) (*connect.Response[tollgatev1.SetAnomalyDetectorResponse], error) {
	d, err := detectorFromWire(req.Msg.Detector)
	if err != nil {
		return nil, err
	}
	r, err := proposeOne(ctx, h.node, &fsm.SetAnomalyDetector{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId, Detector: d})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.SetAnomalyDetectorResponse{Detector: detectorToWire(r.Detector), LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *costHandler) DeleteAnomalyDetector(ctx context.Context, req *connect.Request[tollgatev1.DeleteAnomalyDetectorRequest]) (*connect.Response[tollgatev1.DeleteAnomalyDetectorResponse], error) {
	r, err := proposeOne(ctx, h.node, &fsm.SetAnomalyDetector{Tenant: req.Msg.Tenant, By: auditBy(ctx), RequestID: req.Msg.RequestId,
		Detector: fsm.AnomalyDetector{ID: req.Msg.DetectorId}, Delete: true})
	if err != nil {
		return nil, err
	}
	return reply(r, &tollgatev1.DeleteAnomalyDetectorResponse{LogIndex: r.Index, ReceiptRef: refToWire(r.Receipt, 0)}), nil
}

func (h *costHandler) ListAnomalyDetectors(ctx context.Context, req *connect.Request[tollgatev1.ListAnomalyDetectorsRequest]) (*connect.Response[tollgatev1.ListAnomalyDetectorsResponse], error) {
	if err := validateIDs("tenant", req.Msg.Tenant); err != nil {
		return nil, err
	}
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var ds []fsm.AnomalyDetector
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) error {
		ds = v.AnomalyDetectors(req.Msg.Tenant)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListAnomalyDetectorsResponse{ReadInfo: readInfo(info)}
	for i := range ds {
		out.Detectors = append(out.Detectors, detectorToWire(&ds[i]))
	}
	return connect.NewResponse(out), nil
}

// CostNode reads recorded costs from a node's store.
type CostNode interface {
	CostRecords(ctx context.Context, atIndex uint64, q node.CostQuery) ([]node.CostRecord, []byte, error)
	CostRecordByID(ctx context.Context, atIndex uint64, tenant, id string) (node.CostRecord, error)
}

// listCostsScanMax bounds the records one ListCosts page looks at.
const listCostsScanMax = 100_000

func storedCostToWire(rec node.CostRecord) (*tollgatev1.StoredCost, error) {
	sc, err := fsm.StoredCostOf(rec.Leaf)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	for _, l := range sc.Spec.Labels {
		labels[l.Key] = l.Value
	}
	out := &tollgatev1.StoredCost{RecordId: sc.ID, RecordedAt: timestampMs(sc.RecordedAtMs), LogIndex: rec.Ref.Index,
		ReceiptRef: refToWire(&rec.Ref, 0),
		Record: &tollgatev1.CostRecord{Amount: formatAmount(sc.Spec.AmountMicros, sc.Spec.Currency), Currency: sc.Spec.Currency,
			Resource: sc.Spec.Resource, Service: sc.Spec.Service, Labels: labels, OccurredAt: timestampMs(sc.Spec.OccurredAtMs)}}
	for _, ch := range sc.Charges {
		out.Charges = append(out.Charges, &tollgatev1.CostCharge{BudgetId: ch.BudgetID, Currency: ch.Currency,
			Amount: formatAmount(ch.AmountMicros, ch.Currency), Rate: ch.Rate, Spent: formatAmount(ch.SpentMicros, ch.Currency)})
	}
	return out, nil
}

func (h *costHandler) GetCost(ctx context.Context, req *connect.Request[tollgatev1.GetCostRequest]) (*connect.Response[tollgatev1.GetCostResponse], error) {
	m := req.Msg
	if err := validateIDs("tenant", m.Tenant); err != nil {
		return nil, err
	}
	if m.RecordId == "" || len(m.RecordId) > fsm.IDBytesMax {
		return nil, invalid("record_id is empty or longer than %d bytes", fsm.IDBytesMax)
	}
	level, maxStale, err := readLevel(m.Consistency, m.MaxStaleness)
	if err != nil {
		return nil, err
	}
	info, err := h.node.Read(ctx, level, maxStale, func(fsm.View) error { return nil })
	if err != nil {
		return nil, err
	}
	rec, err := h.node.CostRecordByID(ctx, info.AppliedIndex, m.Tenant, m.RecordId)
	if errors.Is(err, node.ErrNoCost) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("cost record %q of tenant %q: %w", m.RecordId, m.Tenant, err))
	}
	if err != nil {
		return nil, err
	}
	sc, err := storedCostToWire(rec)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.GetCostResponse{Cost: sc, ReadInfo: readInfo(info)}), nil
}

func (h *costHandler) ListCosts(ctx context.Context, req *connect.Request[tollgatev1.ListCostsRequest]) (*connect.Response[tollgatev1.ListCostsResponse], error) {
	m := req.Msg
	if err := validateIDs("tenant", m.Tenant); err != nil {
		return nil, err
	}
	fromMs, toMs, err := timeRange(m.From, m.To)
	if err != nil {
		return nil, err
	}
	if fromMs < 0 || toMs <= fromMs {
		return nil, invalid("time range: to must be after from (and from not before 1970)")
	}
	size, err := pageSize(m.PageSize)
	if err != nil {
		return nil, err
	}
	after, err := decodePageToken(m.PageToken)
	if err != nil {
		return nil, err
	}
	filter, err := selectorFromWire("filter", m.Filter)
	if err != nil {
		return nil, err
	}
	level, maxStale, err := readLevel(m.Consistency, m.MaxStaleness)
	if err != nil {
		return nil, err
	}
	info, err := h.node.Read(ctx, level, maxStale, func(fsm.View) error { return nil })
	if err != nil {
		return nil, err
	}
	q := node.CostQuery{Tenant: m.Tenant, FromMs: fromMs, ToMs: toMs, Limit: size, ScanLimit: listCostsScanMax}
	if after != "" {
		q.After = []byte(after)
	}
	if filter != nil {
		q.Match = func(l *receipt.Leaf) bool {
			sc, err := fsm.StoredCostOf(l)
			return err == nil && filter.Matches(&sc.Spec)
		}
	}
	recs, next, err := h.node.CostRecords(ctx, info.AppliedIndex, q)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListCostsResponse{ReadInfo: readInfo(info)}
	if next != nil {
		out.NextPageToken = encodePageToken(string(next))
	}
	for _, r := range recs {
		sc, err := storedCostToWire(r)
		if err != nil {
			return nil, err
		}
		out.Costs = append(out.Costs, sc)
	}
	return connect.NewResponse(out), nil
}
