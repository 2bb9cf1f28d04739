package fsm

import (
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Cost anomaly detection. A detector watches one tenant's spend, grouped by
// label keys, per hour or per (UTC) day. When log time passes the end of a
// bucket (plus CostFutureSkewMs, so records stamped up to the allowed skew
// are in), each group's spend in that bucket is compared with the median of
// its spend in the Window buckets before it; the scale is the median
// absolute deviation (×1.4826, the normal-consistent MAD) but never less
// than a tenth of the median, so steady spend with no deviation does not
// turn every small wobble into an alert. A bucket whose spend is above the
// median by at least Threshold scales, and at least MinAmount, raises one
// COST_ANOMALY alert. Every bucket of every detector is evaluated exactly
// once, from log time, so every replica raises the same alerts.

// Limits of detectors and alerts.
const (
	// DetectorsPerTenantMax bounds a tenant's detectors.
	DetectorsPerTenantMax = 16
	// DetectorWindowMin and DetectorWindowMax bound the baseline window
	// (buckets). A window of hours may span at most 14 days.
	DetectorWindowMin = 3
	DetectorWindowMax = 336
	// AlertsMax bounds the alert history; the oldest go first.
	AlertsMax = 100_000
	// anomalyCatchUpMax bounds the buckets one entry evaluates per detector
	// (after a long quiet spell the rest follow with the next entries).
	anomalyCatchUpMax = 48
	// madToSigmaE4 is 1.4826 in 1/10000: MAD × 1.4826 estimates a standard
	// deviation for normally distributed data.
	madToSigmaE4 = 14826
)

// AnomalyDetector is a tenant's cost anomaly rule.
type AnomalyDetector struct {
	ID string `msgpack:"id"`
	// GroupBy are label keys (or resource/service); none: the tenant's total.
	GroupBy []string `msgpack:"g,omitempty"`
	// Bucket is BucketHour or BucketDay (UTC days).
	Bucket Bucket `msgpack:"b"`
	// Window is how many buckets before the one evaluated form its baseline.
	Window uint32 `msgpack:"w"`
	// ThresholdMilli is the score that alerts, in thousandths (5000 = 5.0).
	ThresholdMilli int64 `msgpack:"th"`
	// MinAmountMicros: a bucket below this never alerts.
	MinAmountMicros int64 `msgpack:"min"`
	// Currency the spend is compared in (converted with the rate table).
	Currency string `msgpack:"cu"`
}

// SetAnomalyDetector creates or replaces a detector; Delete removes it.
type SetAnomalyDetector struct {
	Tenant    string          `msgpack:"t"`
	RequestID string          `msgpack:"r,omitempty"`
	Detector  AnomalyDetector `msgpack:"d"`
	Delete    bool            `msgpack:"x,omitempty"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

func (*SetAnomalyDetector) Type() CommandType                  { return TypeSetAnomalyDetector }
func (c *SetAnomalyDetector) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }

// detectorState is a detector and how far it has evaluated.
type detectorState struct {
	Tenant string          `msgpack:"t"`
	Spec   AnomalyDetector `msgpack:"s"`
	// EvaluatedToMs is the end of the last bucket evaluated (a bucket start).
	EvaluatedToMs int64  `msgpack:"e"`
	CreatedAtMs   int64  `msgpack:"ca"`
	Version       uint64 `msgpack:"v"`
}

// AlertKind values match tollgate.v1.AlertKind.
type AlertKind uint8

const (
	AlertBudgetThreshold AlertKind = 1
	AlertBudgetExceeded  AlertKind = 2
	AlertQuotaExhausted  AlertKind = 3
	AlertCostAnomaly     AlertKind = 4
)

// AlertState values match tollgate.v1.AlertState.
type AlertState uint8

const (
	AlertOpen         AlertState = 0
	AlertAcknowledged AlertState = 1
	AlertResolved     AlertState = 2
)

// Alert is something the state machine raised.
type Alert struct {
	// Seq numbers alerts in raise order across the cluster; ID is "a<Seq>".
	Seq    uint64    `msgpack:"n"`
	ID     string    `msgpack:"id"`
	Tenant string    `msgpack:"t"`
	Kind   AlertKind `msgpack:"k"`
	// Object is what raised it (the detector's id for a cost anomaly).
	Object string `msgpack:"o"`
	// Group holds the detector's GroupBy values.
	Group          []string `msgpack:"g,omitempty"`
	BucketStartMs  int64    `msgpack:"bs"`
	BucketEndMs    int64    `msgpack:"be"`
	Currency       string   `msgpack:"cu"`
	ObservedMicros int64    `msgpack:"ob"`
	BaselineMicros int64    `msgpack:"bl"` // the median
	MADMicros      int64    `msgpack:"md"`
	ScoreMilli     int64    `msgpack:"sc"`
	RaisedAtMs     int64    `msgpack:"at"`
	LogIndex       uint64   `msgpack:"i"`
	// Percent is a budget threshold's.
	Percent uint32 `msgpack:"pc,omitempty"`
	// State and who moved it there, when.
	State        AlertState `msgpack:"st,omitempty"`
	AckedBy      string     `msgpack:"ab,omitempty"`
	AckedAtMs    int64      `msgpack:"aa,omitempty"`
	ResolvedBy   string     `msgpack:"rb,omitempty"`
	ResolvedAtMs int64      `msgpack:"ra,omitempty"`
}

func bucketMs(b Bucket) int64 {
	if b == BucketHour {
		return hourMs
	}
	return 24 * hourMs
}

func validateDetector(d *AnomalyDetector) *Error {
	if err := ValidateID("detector.id", d.ID); err != nil {
		return err
	}
	if len(d.GroupBy) > ReportGroupByMax {
		return invalidf("detector.group_by has %d keys; at most %d", len(d.GroupBy), ReportGroupByMax)
	}
	for i, k := range d.GroupBy {
		if err := validateLabelKey(fmt.Sprintf("detector.group_by[%d]", i), k); err != nil {
			return err
		}
		for _, o := range d.GroupBy[:i] {
			if o == k {
				return invalidf("detector.group_by: %q appears twice", k)
			}
		}
	}
	if d.Bucket != BucketHour && d.Bucket != BucketDay {
		return invalidf("detector.bucket must be hour or day")
	}
	if d.Window < DetectorWindowMin || d.Window > DetectorWindowMax || (d.Bucket == BucketDay && d.Window > 400) {
		return invalidf("detector.window must be between %d and %d buckets", DetectorWindowMin, DetectorWindowMax)
	}
	if d.ThresholdMilli < 1000 || d.ThresholdMilli > 1_000_000 {
		return invalidf("detector.threshold must be between 1 and 1000")
	}
	if d.MinAmountMicros < 0 || d.MinAmountMicros > AmountMaxMicros {
		return invalidf("detector.min_amount is out of range")
	}
	if err := ValidateCurrency(d.Currency); err != nil {
		return invalidf("detector.currency: %s", err.Message)
	}
	return nil
}

func (s *state) setAnomalyDetector(ctx applyCtx, c *SetAnomalyDetector) Result {
	key := objectKey{c.Tenant, c.Detector.ID}
	old := s.cost.detectors[key]
	if c.Delete {
		if old == nil {
			return Result{Err: errorf(CodeNotFound, "detector %q not found in tenant %q", c.Detector.ID, c.Tenant)}
		}
		delete(s.cost.detectors, key)
		return Result{Detector: &old.Spec}
	}
	if old == nil && s.cost.tenantDetectors(c.Tenant) >= DetectorsPerTenantMax {
		return Result{Err: errorf(CodeResourceExhausted, "tenant %q has the maximum of %d detectors", c.Tenant, DetectorsPerTenantMax)}
	}
	d := &detectorState{Tenant: c.Tenant, Spec: c.Detector, CreatedAtMs: ctx.nowMs, Version: 1}
	d.Spec.GroupBy = append([]string(nil), c.Detector.GroupBy...)
	// The first bucket evaluated is the one in progress now.
	d.EvaluatedToMs = alignDown(ctx.nowMs, bucketMs(d.Spec.Bucket))
	if old != nil {
		d.CreatedAtMs, d.Version = old.CreatedAtMs, old.Version+1
		if old.Spec.Bucket == d.Spec.Bucket {
			d.EvaluatedToMs = old.EvaluatedToMs
		}
	}
	s.cost.detectors[key] = d
	spec := d.Spec
	return Result{Detector: &spec}
}

func (cs *costState) tenantDetectors(tenant string) int {
	n := 0
	for k := range cs.detectors {
		if k.Tenant == tenant {
			n++
		}
	}
	return n
}

// evaluateAnomalies evaluates every bucket that closed (plus the skew) by
// nowMs, detectors in (tenant, id) order.
func (s *state) evaluateAnomalies(ctx applyCtx) {
	if len(s.cost.detectors) == 0 {
		return
	}
	keys := make([]objectKey, 0, len(s.cost.detectors))
	for k := range s.cost.detectors {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	for _, k := range keys {
		d := s.cost.detectors[k]
		step := bucketMs(d.Spec.Bucket)
		for n := 0; n < anomalyCatchUpMax && d.EvaluatedToMs+step+CostFutureSkewMs <= ctx.nowMs; n++ {
			s.evaluateBucket(ctx, d, d.EvaluatedToMs)
			d.EvaluatedToMs += step
		}
	}
}

// groupSpend sums one bucket of a tenant's rollups per group, converted
// into currency. Groups with a currency that has no rate are left out.
func (s *state) groupSpend(tenant string, groupBy []string, startMs, endMs int64, currency string) map[string]*groupValue {
	perCur := map[string]map[string]*big.Int{}
	groups := map[string][]string{}
	hours := s.cost.rollups[tenant]
	for h := startMs; h < endMs; h += hourMs {
		rh := hours[h]
		if rh == nil {
			continue
		}
		for _, row := range rh.rows {
			spec := CostSpec{Resource: row.Resource, Service: row.Service, Labels: row.Labels}
			vals := make([]string, len(groupBy))
			for i, k := range groupBy {
				vals[i], _ = spec.label(k)
			}
			key := strings.Join(vals, "\x00")
			groups[key] = vals
			if perCur[key] == nil {
				perCur[key] = map[string]*big.Int{}
			}
			sum := perCur[key][row.Currency]
			if sum == nil {
				sum = new(big.Int)
				perCur[key][row.Currency] = sum
			}
			sum.Add(sum, big.NewInt(row.AmountMicros))
		}
	}
	out := map[string]*groupValue{}
	for key, sums := range perCur {
		total := new(big.Int)
		ok := true
		for cur, sum := range sums {
			_, rate, has := s.cost.rateFor(cur, currency)
			if !has {
				ok = false
				break
			}
			total.Add(total, ConvertMicros(sum, rate))
		}
		if ok && total.IsInt64() {
			out[key] = &groupValue{group: groups[key], micros: total.Int64()}
		}
	}
	return out
}

type groupValue struct {
	group  []string
	micros int64
}

func (s *state) evaluateBucket(ctx applyCtx, d *detectorState, startMs int64) {
	step := bucketMs(d.Spec.Bucket)
	current := s.groupSpend(d.Tenant, d.Spec.GroupBy, startMs, startMs+step, d.Spec.Currency)
	if len(current) == 0 {
		return
	}
	window := int(d.Spec.Window)
	history := make([]map[string]*groupValue, window)
	for i := range history {
		from := startMs - int64(i+1)*step
		history[i] = s.groupSpend(d.Tenant, d.Spec.GroupBy, from, from+step, d.Spec.Currency)
	}
	keys := make([]string, 0, len(current))
	for k := range current {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		observed := current[key].micros
		if observed < d.Spec.MinAmountMicros {
			continue
		}
		values := make([]int64, window)
		seen := 0
		for i, h := range history {
			if v := h[key]; v != nil {
				values[i] = v.micros
				seen++
			}
		}
		// Too little history to call anything unusual: more than half the
		// window must have spend, so the median is spend, not silence.
		if seen*2 <= window {
			continue
		}
		median := medianOf(values)
		devs := make([]int64, window)
		for i, v := range values {
			devs[i] = absDiff(v, median)
		}
		mad := medianOf(devs)
		scale := max(mulDivCeil(mad, madToSigmaE4, 10_000), median/10, 1)
		if observed <= median {
			continue
		}
		score := mulDivFloor(observed-median, 1000, scale)
		if score < d.Spec.ThresholdMilli {
			continue
		}
		s.raiseAlert(&Alert{
			Tenant: d.Tenant, Kind: AlertCostAnomaly, Object: d.Spec.ID,
			Group: current[key].group, BucketStartMs: startMs, BucketEndMs: startMs + step, Currency: d.Spec.Currency,
			ObservedMicros: observed, BaselineMicros: median, MADMicros: mad, ScoreMilli: score,
			RaisedAtMs: ctx.nowMs, LogIndex: ctx.index,
		})
	}
}

// raise records an alert from a command's apply (nil-safe for contexts
// without one).
func (ctx applyCtx) raise(a *Alert) {
	if ctx.alerts == nil {
		return
	}
	a.RaisedAtMs, a.LogIndex = ctx.nowMs, ctx.index
	ctx.alerts(a)
}

func (s *state) raiseAlert(a *Alert) {
	s.cost.alertSeq++
	a.Seq, a.ID = s.cost.alertSeq, fmt.Sprintf("a%d", s.cost.alertSeq)
	s.cost.alerts = append(s.cost.alerts, a)
	if len(s.cost.alerts) > AlertsMax {
		s.cost.alerts = append([]*Alert(nil), s.cost.alerts[len(s.cost.alerts)-AlertsMax:]...)
	}
}

// medianOf returns the median (the lower middle value for an even count)
// of values; it sorts a copy.
func medianOf(values []int64) int64 {
	v := append([]int64(nil), values...)
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[(len(v)-1)/2]
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// Alerts returns a tenant's alerts of kind (0: all) with Seq > after, in
// raise order, at most limit, and the Seq to continue after (0 at the end).
func (v View) Alerts(tenant string, kind AlertKind, after uint64, limit int) ([]Alert, uint64) {
	return v.AlertsIn(tenant, kind, nil, after, limit)
}

// AlertsIn is Alerts limited to some states (none: any).
func (v View) AlertsIn(tenant string, kind AlertKind, states []AlertState, after uint64, limit int) ([]Alert, uint64) {
	all := v.s.cost.alerts
	i := sort.Search(len(all), func(i int) bool { return all[i].Seq > after })
	var out []Alert
	for ; i < len(all); i++ {
		a := all[i]
		if a.Tenant != tenant || (kind != 0 && a.Kind != kind) || (len(states) > 0 && !slices.Contains(states, a.State)) {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].Seq
		}
		c := *a
		c.Group = append([]string(nil), a.Group...)
		out = append(out, c)
	}
	return out, 0
}

// AnomalyDetectors returns a tenant's detectors sorted by id.
func (v View) AnomalyDetectors(tenant string) []AnomalyDetector {
	var out []AnomalyDetector
	for k, d := range v.s.cost.detectors {
		if k.Tenant == tenant {
			spec := d.Spec
			spec.GroupBy = append([]string(nil), d.Spec.GroupBy...)
			out = append(out, spec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AckAlert acknowledges (or, Resolve, resolves) an alert, saying who.
type AckAlert struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r,omitempty"`
	AlertID   string `msgpack:"a"`
	By        string `msgpack:"b"`
	Resolve   bool   `msgpack:"x,omitempty"`
}

func (*AckAlert) Type() CommandType                  { return TypeAckAlert }
func (c *AckAlert) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }

func validateAckAlert(c *AckAlert) *Error {
	if _, ok := alertSeq(c.AlertID); !ok {
		return invalidf("alert_id %q is not an alert id (a<number>)", c.AlertID)
	}
	if c.By == "" || len(c.By) > IDBytesMax {
		return invalidf("by must name who, 1 to %d bytes", IDBytesMax)
	}
	return validateLabelValue("by", c.By)
}

func alertSeq(id string) (uint64, bool) {
	if len(id) < 2 || id[0] != 'a' {
		return 0, false
	}
	n, err := strconv.ParseUint(id[1:], 10, 64)
	return n, err == nil && n > 0 && "a"+strconv.FormatUint(n, 10) == id
}

func (s *state) findAlert(tenant, id string) *Alert {
	seq, _ := alertSeq(id)
	all := s.cost.alerts
	i := sort.Search(len(all), func(i int) bool { return all[i].Seq >= seq })
	if i < len(all) && all[i].Seq == seq && all[i].Tenant == tenant {
		return all[i]
	}
	return nil
}

func (s *state) ackAlert(ctx applyCtx, c *AckAlert) Result {
	a := s.findAlert(c.Tenant, c.AlertID)
	if a == nil {
		return Result{Err: errorf(CodeNotFound, "alert %q not found in tenant %q", c.AlertID, c.Tenant)}
	}
	switch {
	case a.State == AlertResolved:
		return Result{Err: errorf(CodeFailedPrecondition, "alert %q was resolved by %s", c.AlertID, a.ResolvedBy)}
	case c.Resolve:
		a.State, a.ResolvedBy, a.ResolvedAtMs = AlertResolved, c.By, ctx.nowMs
	case a.State == AlertAcknowledged:
		return Result{Err: errorf(CodeFailedPrecondition, "alert %q was already acknowledged by %s", c.AlertID, a.AckedBy)}
	default:
		a.State, a.AckedBy, a.AckedAtMs = AlertAcknowledged, c.By, ctx.nowMs
	}
	cp := *a
	cp.Group = append([]string(nil), a.Group...)
	return Result{Alert: &cp}
}

func (c *SetAnomalyDetector) actor() string { return c.By }
