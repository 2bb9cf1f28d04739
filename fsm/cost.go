package fsm

import (
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate/tollgate/receipt"
)

// Cost records. Recording a cost never denies (the money is already spent):
// it charges every budget of the tenant whose label selector matches the
// record, and the ancestors of those, each once, converted into the budget's
// currency with the cluster's exchange-rate table; and it adds the record to
// the tenant's hourly rollup, which reports read instead of raw records.
//
// Exactness: a conversion multiplies micro-units by a decimal rate of at most
// RateFractionDigitsMax fractional digits and rounds half to even to a
// micro-unit, with big integers; the rate used is part of the result and the
// receipt. A report converts each currency's exact sum once, the same way.

// Limits of cost records and rates.
const (
	// CostBatchMax bounds the records of one RecordCostBatch.
	CostBatchMax = 1000
	// CostLabelsMax bounds the labels of a record.
	CostLabelsMax = 16
	// LabelKeyBytesMax and LabelValueBytesMax bound a label.
	LabelKeyBytesMax   = 64
	LabelValueBytesMax = 128
	// CostNameBytesMax bounds a record's resource and service.
	CostNameBytesMax = 128
	// CostFutureSkewMs is how far past the log time a record's occurred_at
	// may be (clock skew between the caller and the cluster).
	CostFutureSkewMs int64 = 5 * 60 * 1000
	// CostRetentionMs is how long (log time) hourly rollups are kept, and so
	// how old a record's occurred_at may be.
	CostRetentionMs int64 = 400 * 24 * 3600 * 1000
	// RollupRowsMax bounds the rollup rows (tenant, hour, resource, service,
	// labels, currency) across all tenants.
	RollupRowsMax = 2_000_000
	// CostChargesMax bounds the budgets one record charges (matched budgets
	// and their ancestors).
	CostChargesMax = 32
	// SelectorBudgetsMax bounds the budgets with a label selector per tenant.
	SelectorBudgetsMax = 256
	// SelectorRequirementsMax and SelectorValuesMax bound a selector.
	SelectorRequirementsMax = 16
	SelectorValuesMax       = 64
	// ExchangeRatesMax bounds the exchange-rate table.
	ExchangeRatesMax = 10_000
	// RateFractionDigitsMax is the most fractional digits of an exchange rate.
	RateFractionDigitsMax = 12
	// rateIntDigitsMax bounds the integer part of an exchange rate (< 10^10).
	rateIntDigitsMax = 10
	// ReportGroupByMax bounds a report's group-by keys.
	ReportGroupByMax = 8
	// ReportRowsMax bounds the rows one report returns.
	ReportRowsMax = 100_000

	hourMs int64 = 3600 * 1000
)

// Reserved label keys: a selector and a report's group-by use them to name a
// record's resource and service, so a label may not use them.
const (
	LabelResource = "resource"
	LabelService  = "service"
)

// Label is one key=value of a cost record.
type Label struct {
	Key   string `msgpack:"k"`
	Value string `msgpack:"v"`
}

// LabelRequirement matches a record whose label (or resource/service) Key
// has one of Values: one value is equality, several are set membership.
type LabelRequirement struct {
	Key    string   `msgpack:"k"`
	Values []string `msgpack:"v"`
}

// LabelSelector matches a record that meets every requirement.
type LabelSelector struct {
	Match []LabelRequirement `msgpack:"m"`
}

func (s *LabelSelector) clone() *LabelSelector {
	if s == nil {
		return nil
	}
	c := &LabelSelector{Match: make([]LabelRequirement, len(s.Match))}
	for i, r := range s.Match {
		c.Match[i] = LabelRequirement{Key: r.Key, Values: append([]string(nil), r.Values...)}
	}
	return c
}

// matches reports whether the record meets every requirement.
func (s *LabelSelector) matches(c *CostSpec) bool {
	for _, r := range s.Match {
		v, ok := c.label(r.Key)
		if !ok || !containsString(r.Values, v) {
			return false
		}
	}
	return true
}

func containsString(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// String renders the selector canonically: key in (a,b) and key2 = c.
func (s *LabelSelector) String() string {
	parts := make([]string, len(s.Match))
	for i, r := range s.Match {
		if len(r.Values) == 1 {
			parts[i] = r.Key + "=" + r.Values[0]
		} else {
			parts[i] = r.Key + " in (" + strings.Join(r.Values, ",") + ")"
		}
	}
	return strings.Join(parts, " and ")
}

// CostSpec is one cost that already happened.
type CostSpec struct {
	AmountMicros int64  `msgpack:"a"`
	Currency     string `msgpack:"cu"`
	Resource     string `msgpack:"rs"`
	Service      string `msgpack:"sv,omitempty"`
	// Labels are sorted by key, keys unique.
	Labels       []Label `msgpack:"l,omitempty"`
	OccurredAtMs int64   `msgpack:"o"`
}

// label returns the value of a label or of the reserved resource/service.
func (c *CostSpec) label(key string) (string, bool) {
	switch key {
	case LabelResource:
		return c.Resource, true
	case LabelService:
		return c.Service, c.Service != ""
	}
	i := sort.Search(len(c.Labels), func(i int) bool { return c.Labels[i].Key >= key })
	if i < len(c.Labels) && c.Labels[i].Key == key {
		return c.Labels[i].Value, true
	}
	return "", false
}

// RecordCost records costs: one for RecordCost, up to CostBatchMax for
// RecordCostBatch. The batch is all or nothing: a record that cannot be
// applied (a missing rate, a full table) rejects the whole command.
type RecordCost struct {
	Tenant    string     `msgpack:"t"`
	RequestID string     `msgpack:"r,omitempty"`
	Costs     []CostSpec `msgpack:"c"`
}

func (*RecordCost) Type() CommandType                  { return TypeRecordCost }
func (c *RecordCost) idempotencyKey() (string, string) { return c.Tenant, c.RequestID }

// ExchangeRate says one unit of From is worth Rate units of To. Rate is a
// canonical decimal string (no leading zeros, no trailing fractional zeros).
type ExchangeRate struct {
	From string `msgpack:"f"`
	To   string `msgpack:"t"`
	Rate string `msgpack:"r"`
	// SetAtMs and LogIndex say when the rate was set (output only in
	// commands; the state fills them).
	SetAtMs  int64  `msgpack:"at,omitempty"`
	LogIndex uint64 `msgpack:"i,omitempty"`

	// rat is Rate parsed, set where a rate enters the state (not encoded).
	rat *big.Rat
}

// withRat returns x with its rate parsed (the rate was validated).
func (x ExchangeRate) withRat() *ExchangeRate {
	_, r, err := ParseRate(x.Rate)
	if err != nil {
		panic(fmt.Sprintf("fsm: rate %s->%s %q: %s", x.From, x.To, x.Rate, err.Message)) // validated before
	}
	x.rat = r
	return &x
}

// SetExchangeRates sets rates in the cluster's table (cluster-wide, no
// tenant). ReplaceAll drops every rate not named first.
type SetExchangeRates struct {
	Rates      []ExchangeRate `msgpack:"r"`
	ReplaceAll bool           `msgpack:"a,omitempty"`
	// By is who asked (the credential), for the receipt; empty without
	// authentication.
	By string `msgpack:"by,omitempty"`
}

func (*SetExchangeRates) Type() CommandType                { return TypeSetExchangeRates }
func (*SetExchangeRates) idempotencyKey() (string, string) { return "", "" }

// CostCharge is what a record charged one budget.
type CostCharge struct {
	BudgetID string `msgpack:"b"`
	Currency string `msgpack:"cu"`
	// AmountMicros is the record's amount in the budget's currency.
	AmountMicros int64 `msgpack:"a"`
	// Rate is the exchange rate used ("" when the currencies are the same).
	Rate            string   `msgpack:"r,omitempty"`
	SpentMicros     int64    `msgpack:"sp"`
	RemainingMicros int64    `msgpack:"rm"`
	Thresholds      []uint32 `msgpack:"th,omitempty"`
}

// CostResult is one recorded cost.
type CostResult struct {
	// ID is "c<log index>-<command position>-<item>", unique in the
	// cluster (derived, not encoded).
	ID      string       `msgpack:"-"`
	Charges []CostCharge `msgpack:"ch,omitempty"`
}

// ItemCharges are the charges of one record of a batch.
type ItemCharges struct {
	Item    uint32       `msgpack:"i"`
	Charges []CostCharge `msgpack:"c"`
}

func costID(index uint64, pos, item uint32) string {
	return "c" + strconv.FormatUint(index, 10) + "-" + strconv.FormatUint(uint64(pos), 10) + "-" + strconv.FormatUint(uint64(item), 10)
}

// fillCostIDs derives the records' ids after decoding.
func (r *Result) fillCostIDs() {
	for i := range r.Costs {
		r.Costs[i].ID = costID(r.Index, r.CostPos, uint32(i))
	}
}

// compactForIdem returns r as the idempotency table keeps it: a cost batch
// as its count and the charges of the records that charged something.
func compactForIdem(r Result) Result {
	if r.Costs == nil {
		return r
	}
	c := r
	c.CostCount = uint32(len(r.Costs))
	for i, cr := range r.Costs {
		if len(cr.Charges) > 0 {
			c.CostCharged = append(c.CostCharged, ItemCharges{Item: uint32(i), Charges: cr.Charges})
		}
	}
	c.Costs = nil
	return c
}

// expandFromIdem is the inverse of compactForIdem.
func expandFromIdem(r Result) Result {
	if r.CostCount == 0 {
		return r
	}
	e := r
	e.Costs = make([]CostResult, r.CostCount)
	for _, ic := range r.CostCharged {
		if int(ic.Item) < len(e.Costs) {
			e.Costs[ic.Item].Charges = ic.Charges
		}
	}
	e.CostCount, e.CostCharged = 0, nil
	e.fillCostIDs()
	return e
}

// exchangeKey names a rate.
type exchangeKey struct{ From, To string }

// rollupRow is the sum of one hour's records of one group.
type rollupRow struct {
	Resource     string  `msgpack:"rs"`
	Service      string  `msgpack:"sv,omitempty"`
	Labels       []Label `msgpack:"l,omitempty"`
	Currency     string  `msgpack:"cu"`
	AmountMicros int64   `msgpack:"a"`
	Count        uint64  `msgpack:"n"`
}

// groupKey is the canonical identity of a rollup row within its hour.
func groupKey(resource, service string, labels []Label, currency string) string {
	var b strings.Builder
	b.WriteString(resource)
	b.WriteByte(0)
	b.WriteString(service)
	b.WriteByte(0)
	b.WriteString(currency)
	for _, l := range labels {
		b.WriteByte(0)
		b.WriteString(l.Key)
		b.WriteByte(1)
		b.WriteString(l.Value)
	}
	return b.String()
}

// rollupHour is one tenant's rows of one hour, by group key.
type rollupHour struct {
	tenant string
	hourMs int64
	rows   map[string]*rollupRow
}

type rollupExpiry struct {
	atMs int64
	hour *rollupHour
}

// costState is the cost part of the state.
type costState struct {
	rates map[exchangeKey]*ExchangeRate
	// rollups: tenant -> hour start (ms, UTC-aligned) -> rows.
	rollups    map[string]map[int64]*rollupHour
	rollupRows int
	// expiries orders rollup hours for retention.
	expiries expiryHeap[rollupExpiry]
	// selectors: tenant -> budget id -> budget, for budgets with a selector.
	selectors tenantIndex[*Budget]
	// detectors are the cost anomaly detectors; alerts what they raised, in
	// raise order (AlertsMax, oldest out); alertSeq the last alert's number.
	detectors map[objectKey]*detectorState
	alerts    []*Alert
	alertSeq  uint64
}

func newCostState() costState {
	return costState{
		rates:     map[exchangeKey]*ExchangeRate{},
		rollups:   map[string]map[int64]*rollupHour{},
		selectors: tenantIndex[*Budget]{},
		detectors: map[objectKey]*detectorState{},
		expiries: expiryHeap[rollupExpiry]{less: func(a, b rollupExpiry) bool {
			if a.atMs != b.atMs {
				return a.atMs < b.atMs
			}
			return a.hour.tenant < b.hour.tenant
		}},
	}
}

// ParseRate parses a positive decimal exchange rate ("1.0837") into its
// canonical string and a rational. It rejects signs, exponents, zero, more
// than 12 fractional digits and 10 or more integer digits.
func ParseRate(s string) (string, *big.Rat, *Error) {
	if s == "" {
		return "", nil, invalidf("is empty; want a positive decimal such as \"1.0837\"")
	}
	if len(s) > 40 {
		return "", nil, invalidf("is %d characters long; at most 40", len(s))
	}
	intPart, fracPart, hasDot := strings.Cut(s, ".")
	if intPart == "" || (hasDot && fracPart == "") || !allDigits(intPart) || !allDigits(fracPart) {
		return "", nil, invalidf("%q is not a positive decimal number", s)
	}
	if len(fracPart) > RateFractionDigitsMax {
		return "", nil, invalidf("%q has %d fractional digits; at most %d", s, len(fracPart), RateFractionDigitsMax)
	}
	intPart = strings.TrimLeft(intPart, "0")
	fracPart = strings.TrimRight(fracPart, "0")
	if len(intPart) >= rateIntDigitsMax {
		return "", nil, invalidf("%q is too large; at most %d integer digits", s, rateIntDigitsMax-1)
	}
	if intPart == "" && fracPart == "" {
		return "", nil, invalidf("%q is zero; a rate must be positive", s)
	}
	canon := intPart
	if canon == "" {
		canon = "0"
	}
	if fracPart != "" {
		canon += "." + fracPart
	}
	r, ok := new(big.Rat).SetString(canon)
	if !ok {
		return "", nil, invalidf("%q is not a decimal number", s)
	}
	return canon, r, nil
}

// ConvertMicros converts micro-units at rate, rounding half to even.
func ConvertMicros(micros *big.Int, rate *big.Rat) *big.Int {
	num := new(big.Int).Mul(micros, rate.Num())
	den := rate.Denom()
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	// Half to even on |r|*2 vs den (micros are non-negative here, but keep
	// it general).
	twice := new(big.Int).Mul(new(big.Int).Abs(r), big.NewInt(2))
	switch twice.Cmp(den) {
	case 1:
		q.Add(q, big.NewInt(int64(num.Sign())))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(int64(num.Sign())))
		}
	}
	return q
}

// rateFor returns the rate from one currency to another: 1 when they are the
// same, else the table's (never the inverse of the opposite pair, which need
// not be a terminating decimal).
func (cs *costState) rateFor(from, to string) (*ExchangeRate, *big.Rat, bool) {
	if from == to {
		return nil, big.NewRat(1, 1), true
	}
	x := cs.rates[exchangeKey{from, to}]
	if x == nil {
		return nil, nil, false
	}
	return x, x.rat, true
}

// ValidateLabels checks a record's labels: at most CostLabelsMax, sorted by
// key, keys unique, not reserved, both within their byte limits.
func ValidateLabels(field string, labels []Label) *Error {
	if len(labels) > CostLabelsMax {
		return invalidf("%s has %d labels; at most %d", field, len(labels), CostLabelsMax)
	}
	for i, l := range labels {
		if err := validateLabelKey(fmt.Sprintf("%s[%d].key", field, i), l.Key); err != nil {
			return err
		}
		if l.Key == LabelResource || l.Key == LabelService {
			return invalidf("%s[%d].key %q is reserved (it names the record's %s)", field, i, l.Key, l.Key)
		}
		if i > 0 && l.Key <= labels[i-1].Key {
			return invalidf("%s: key %q appears twice or out of order (labels are sorted by key)", field, l.Key)
		}
		if err := validateLabelValue(fmt.Sprintf("%s.%s", field, l.Key), l.Value); err != nil {
			return err
		}
	}
	return nil
}

func validateLabelKey(field, k string) *Error {
	if k == "" {
		return invalidf("%s is empty", field)
	}
	if len(k) > LabelKeyBytesMax {
		return invalidf("%s is %d bytes long; at most %d", field, len(k), LabelKeyBytesMax)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' || c == '/') {
			return invalidf("%s %q has character %q; allowed are a-z 0-9 _ . - /", field, k, c)
		}
	}
	return nil
}

func validateLabelValue(field, v string) *Error {
	if len(v) > LabelValueBytesMax {
		return invalidf("%s is %d bytes long; at most %d", field, len(v), LabelValueBytesMax)
	}
	if !utf8.ValidString(v) {
		return invalidf("%s is not valid UTF-8", field)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return invalidf("%s has a control character", field)
		}
	}
	return nil
}

func validateCostName(field, v string, required bool) *Error {
	if v == "" {
		if required {
			return invalidf("%s is empty", field)
		}
		return nil
	}
	if len(v) > CostNameBytesMax {
		return invalidf("%s is %d bytes long; at most %d", field, len(v), CostNameBytesMax)
	}
	return validateLabelValue(field, v)
}

// ValidateCostSpec checks one record, field names prefixed by field.
func ValidateCostSpec(field string, c *CostSpec) *Error {
	if err := validateAmount(field+"amount", c.AmountMicros, false); err != nil {
		return err
	}
	if err := ValidateCurrency(c.Currency); err != nil {
		return invalidf("%scurrency: %s", field, err.Message)
	}
	if err := validateCostName(field+"resource", c.Resource, true); err != nil {
		return err
	}
	if err := validateCostName(field+"service", c.Service, false); err != nil {
		return err
	}
	if err := ValidateLabels(field+"labels", c.Labels); err != nil {
		return err
	}
	if c.OccurredAtMs <= 0 || c.OccurredAtMs > entryTimeMaxMs {
		return invalidf("%soccurred_at is not set or out of range", field)
	}
	return nil
}

// ValidateSelector checks a budget's label selector.
func ValidateSelector(field string, s *LabelSelector) *Error {
	if s == nil {
		return nil
	}
	if len(s.Match) == 0 {
		return invalidf("%s has no requirement; omit it instead", field)
	}
	if len(s.Match) > SelectorRequirementsMax {
		return invalidf("%s has %d requirements; at most %d", field, len(s.Match), SelectorRequirementsMax)
	}
	for i, r := range s.Match {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := validateLabelKey(f+".key", r.Key); err != nil {
			return err
		}
		if i > 0 && r.Key <= s.Match[i-1].Key {
			return invalidf("%s: key %q appears twice or out of order (requirements are sorted by key)", field, r.Key)
		}
		if len(r.Values) == 0 || len(r.Values) > SelectorValuesMax {
			return invalidf("%s.values has %d values; want 1 to %d", f, len(r.Values), SelectorValuesMax)
		}
		for j, v := range r.Values {
			if err := validateLabelValue(fmt.Sprintf("%s.values[%d]", f, j), v); err != nil {
				return err
			}
			if j > 0 && v <= r.Values[j-1] {
				return invalidf("%s.values: %q appears twice or out of order (values are sorted)", f, v)
			}
		}
	}
	return nil
}

func validateRecordCost(c *RecordCost) *Error {
	if len(c.Costs) == 0 {
		return invalidf("records is empty")
	}
	if len(c.Costs) > CostBatchMax {
		return invalidf("records has %d records; at most %d", len(c.Costs), CostBatchMax)
	}
	for i := range c.Costs {
		prefix := ""
		if len(c.Costs) > 1 {
			prefix = fmt.Sprintf("records[%d].", i)
		}
		if err := ValidateCostSpec(prefix, &c.Costs[i]); err != nil {
			return err
		}
	}
	return nil
}

func validateSetExchangeRates(c *SetExchangeRates) *Error {
	if len(c.Rates) == 0 && !c.ReplaceAll {
		return invalidf("rates is empty")
	}
	if len(c.Rates) > ExchangeRatesMax {
		return invalidf("rates has %d rates; at most %d", len(c.Rates), ExchangeRatesMax)
	}
	seen := map[exchangeKey]bool{}
	for i, r := range c.Rates {
		f := fmt.Sprintf("rates[%d]", i)
		if err := ValidateCurrency(r.From); err != nil {
			return invalidf("%s.from: %s", f, err.Message)
		}
		if err := ValidateCurrency(r.To); err != nil {
			return invalidf("%s.to: %s", f, err.Message)
		}
		if r.From == r.To {
			return invalidf("%s: from and to are both %s", f, r.From)
		}
		canon, _, err := ParseRate(r.Rate)
		if err != nil {
			return invalidf("%s.rate: %s", f, err.Message)
		}
		if canon != r.Rate {
			return invalidf("%s.rate %q is not canonical (want %q)", f, r.Rate, canon)
		}
		k := exchangeKey{r.From, r.To}
		if seen[k] {
			return invalidf("%s: %s->%s appears twice", f, r.From, r.To)
		}
		seen[k] = true
	}
	return nil
}

func (s *state) setExchangeRates(ctx applyCtx, c *SetExchangeRates) Result {
	next := map[exchangeKey]*ExchangeRate{}
	if !c.ReplaceAll {
		for k, v := range s.cost.rates {
			next[k] = v
		}
	}
	for _, r := range c.Rates {
		next[exchangeKey{r.From, r.To}] = ExchangeRate{From: r.From, To: r.To, Rate: r.Rate, SetAtMs: ctx.nowMs, LogIndex: ctx.index}.withRat()
	}
	if len(next) > ExchangeRatesMax {
		return Result{Err: errorf(CodeResourceExhausted, "the exchange-rate table would hold %d rates; at most %d", len(next), ExchangeRatesMax)}
	}
	s.cost.rates = next
	return Result{Rates: s.exchangeRates()}
}

// exchangeRates returns the table sorted by (from, to).
func (s *state) exchangeRates() []ExchangeRate {
	out := make([]ExchangeRate, 0, len(s.cost.rates))
	for _, r := range s.cost.rates {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// plannedCharge is one budget a record will charge.
type plannedCharge struct {
	b      *Budget
	amount int64
	rate   *ExchangeRate
}

// planCharges finds the budgets a record charges (matched budgets and their
// ancestors, each once, in the order of matched budget ids) and converts
// the amount into each one's currency. It changes nothing.
func (s *state) planCharges(tenant string, c *CostSpec, field string) ([]plannedCharge, *Error) {
	sel := s.cost.selectors[tenant]
	if len(sel) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(sel))
	for id, b := range sel {
		if b.Spec.Selector.matches(c) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var plan []plannedCharge
	seen := map[string]bool{}
	micros := big.NewInt(c.AmountMicros)
	for _, id := range ids {
		for _, b := range s.chain(sel[id]) {
			if seen[b.Spec.ID] {
				continue
			}
			seen[b.Spec.ID] = true
			if len(plan) == CostChargesMax {
				return nil, errorf(CodeFailedPrecondition, "%srecord matches more than %d budgets (with their ancestors); at most %d can be charged by one record",
					field, CostChargesMax, CostChargesMax)
			}
			x, rate, ok := s.cost.rateFor(c.Currency, b.Spec.Currency)
			if !ok {
				return nil, invalidf("%scurrency: no exchange rate from %s to %s (budget %q); set one with SetExchangeRates",
					field, c.Currency, b.Spec.Currency, b.Spec.ID)
			}
			conv := ConvertMicros(micros, rate)
			if !conv.IsInt64() || conv.Int64() > AmountMaxMicros {
				return nil, errorf(CodeResourceExhausted, "%samount converted to %s for budget %q exceeds the maximum amount", field, b.Spec.Currency, b.Spec.ID)
			}
			plan = append(plan, plannedCharge{b: b, amount: conv.Int64(), rate: x})
		}
	}
	return plan, nil
}

// rollupRow finds the rollup hour and row of a record (nil when new) and
// the row's group key.
func (s *state) rollupRow(tenant string, c *CostSpec) (*rollupHour, string, *rollupRow) {
	hour := alignDown(c.OccurredAtMs, hourMs)
	key := groupKey(c.Resource, c.Service, c.Labels, c.Currency)
	h := s.cost.rollups[tenant][hour]
	if h == nil {
		return nil, key, nil
	}
	return h, key, h.rows[key]
}

func (s *state) recordCost(ctx applyCtx, c *RecordCost) Result {
	// Check everything first: the command is all or nothing.
	plans := make([][]plannedCharge, len(c.Costs))
	keys := make([]string, len(c.Costs)) // each record's rollup group
	newRows := 0
	// pending is what the batch adds to each rollup row (hour + group).
	pending := map[string]int64{}
	for i := range c.Costs {
		cs := &c.Costs[i]
		field := ""
		if len(c.Costs) > 1 {
			field = fmt.Sprintf("records[%d].", i)
		}
		if cs.OccurredAtMs > ctx.nowMs+CostFutureSkewMs {
			return Result{Err: invalidf("%soccurred_at is %s after the cluster's time; at most %s", field,
				fmtDurationMs(cs.OccurredAtMs-ctx.nowMs), fmtDurationMs(CostFutureSkewMs))}
		}
		if cs.OccurredAtMs < ctx.nowMs-CostRetentionMs {
			return Result{Err: invalidf("%soccurred_at is more than %s before the cluster's time (the cost retention)", field,
				fmtDurationMs(CostRetentionMs))}
		}
		plan, err := s.planCharges(c.Tenant, cs, field)
		if err != nil {
			return Result{Err: err}
		}
		plans[i] = plan
		_, key, row := s.rollupRow(c.Tenant, cs)
		keys[i] = key
		slot := strconv.FormatInt(alignDown(cs.OccurredAtMs, hourMs), 10) + "\x02" + key
		before, seen := pending[slot]
		if !seen && row == nil {
			newRows++
		}
		if !seen && row != nil {
			before = row.AmountMicros
		}
		sum, ok := addMicros(before, cs.AmountMicros)
		if !ok {
			return Result{Err: errorf(CodeResourceExhausted, "%sthe hourly sum of this group would overflow", field)}
		}
		pending[slot] = sum
	}
	if s.cost.rollupRows+newRows > RollupRowsMax {
		return Result{Err: errorf(CodeResourceExhausted, "the cost rollup table holds its maximum of %d rows (hour x group); fewer distinct label sets or a shorter retention are needed",
			RollupRowsMax)}
	}
	// Charges: the sum per budget over the batch must not overflow.
	totals := map[*Budget]int64{}
	for _, plan := range plans {
		for _, p := range plan {
			t, ok := addMicros(totals[p.b], p.amount)
			if ok {
				rollPeriod(p.b, ctx.nowMs)
				_, ok = addMicros(p.b.SpentMicros, t)
			}
			if !ok {
				return Result{Err: errorf(CodeResourceExhausted, "budget %q: the spend counter would overflow", p.b.Spec.ID)}
			}
			totals[p.b] = t
		}
	}
	// Apply.
	out := make([]CostResult, len(c.Costs))
	for i := range c.Costs {
		cs := &c.Costs[i]
		res := CostResult{ID: costID(ctx.index, uint32(ctx.pos), uint32(i))}
		for _, p := range plans[i] {
			p.b.SpentMicros += p.amount
			ch := CostCharge{BudgetID: p.b.Spec.ID, Currency: p.b.Spec.Currency, AmountMicros: p.amount,
				SpentMicros: p.b.SpentMicros, RemainingMicros: p.b.RemainingMicros(), Thresholds: recordThresholds(ctx, p.b)}
			if p.rate != nil {
				ch.Rate = p.rate.Rate
			}
			res.Charges = append(res.Charges, ch)
		}
		s.addToRollup(c.Tenant, cs, keys[i])
		out[i] = res
	}
	return Result{Costs: out, CostPos: uint32(ctx.pos)}
}

func (s *state) addToRollup(tenant string, c *CostSpec, key string) {
	hour := alignDown(c.OccurredAtMs, hourMs)
	hours := s.cost.rollups[tenant]
	if hours == nil {
		hours = map[int64]*rollupHour{}
		s.cost.rollups[tenant] = hours
	}
	h := hours[hour]
	if h == nil {
		h = &rollupHour{tenant: tenant, hourMs: hour, rows: map[string]*rollupRow{}}
		hours[hour] = h
		s.cost.expiries.Push(rollupExpiry{atMs: hour + CostRetentionMs, hour: h})
	}
	row := h.rows[key]
	if row == nil {
		row = &rollupRow{Resource: c.Resource, Service: c.Service, Labels: append([]Label(nil), c.Labels...), Currency: c.Currency}
		h.rows[key] = row
		s.cost.rollupRows++
	}
	row.AmountMicros += c.AmountMicros // checked in recordCost
	row.Count++
}

// expireRollups drops rollup hours past the retention.
func (s *state) expireRollups(nowMs int64) {
	for s.cost.expiries.Len() > 0 && s.cost.expiries.Peek().atMs+hourMs <= nowMs {
		h := s.cost.expiries.Pop().hour
		s.cost.rollupRows -= len(h.rows)
		delete(s.cost.rollups[h.tenant], h.hourMs)
		if len(s.cost.rollups[h.tenant]) == 0 {
			delete(s.cost.rollups, h.tenant)
		}
	}
}

func fmtDurationMs(ms int64) string {
	switch {
	case ms%(24*hourMs) == 0:
		return strconv.FormatInt(ms/(24*hourMs), 10) + "d"
	case ms%60_000 == 0:
		return strconv.FormatInt(ms/60_000, 10) + "m"
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

// costLeaves adds one leaf per record.
func (b *leafBuilder) costLeaves(c *RecordCost, r *Result) ReceiptRef {
	var first ReceiptRef
	for i := range c.Costs {
		cs := &c.Costs[i]
		res := &r.Costs[i]
		in := []receipt.Field{fm("amount", cs.AmountMicros), fs("currency", cs.Currency), fs("resource", cs.Resource),
			fi("occurred_at_ms", cs.OccurredAtMs)}
		if cs.Service != "" {
			in = append(in, fs("service", cs.Service))
		}
		for _, l := range cs.Labels {
			in = append(in, fs("label:"+l.Key, l.Value))
		}
		if len(c.Costs) > 1 {
			in = append(in, fi("item", int64(i)), fi("items", int64(len(c.Costs))))
		}
		bal := []receipt.Field{fs("record_id", res.ID)}
		for _, ch := range res.Charges {
			v := FormatAmount(ch.AmountMicros, 0) + " " + ch.Currency
			if ch.Rate != "" {
				v += " at " + ch.Rate
			}
			bal = append(bal, fs("charge:"+ch.BudgetID, v+"; spent "+FormatAmount(ch.SpentMicros, 0)))
		}
		ref := b.add(c.Tenant, OpRecordCost, cs.Resource, c.RequestID, "recorded", "", in, bal)
		b.costs = append(b.costs, CostKey{Tenant: c.Tenant, OccurredAtMs: cs.OccurredAtMs, ID: res.ID, Position: ref.Position})
		if i == 0 {
			first = ref
		}
	}
	return first
}

// ExchangeRates returns the cluster's table sorted by (from, to).
func (v View) ExchangeRates() []ExchangeRate { return v.s.exchangeRates() }

// Bucket is a report's time bucket. Values match tollgate.v1.Bucket.
type Bucket uint8

const (
	BucketHour  Bucket = 1
	BucketDay   Bucket = 2
	BucketWeek  Bucket = 3 // ISO weeks, starting Monday
	BucketMonth Bucket = 4
	BucketAll   Bucket = 5 // one bucket for the whole range
)

// ReportQuery asks for a tenant's costs in [FromMs, ToMs) (hours are
// included by their start), grouped by GroupBy keys (labels, or the reserved
// resource/service) and time buckets in Timezone, totalled in Currency.
type ReportQuery struct {
	Tenant   string
	FromMs   int64
	ToMs     int64
	GroupBy  []string
	Bucket   Bucket
	Timezone string
	Currency string
	// Filter, when set, keeps only records it matches.
	Filter *LabelSelector
}

// ReportRow is one (bucket, group) of a report.
type ReportRow struct {
	BucketStartMs int64
	// Group holds the GroupBy keys' values in GroupBy order ("" when a
	// record has no such label).
	Group        []string
	AmountMicros int64
	Count        uint64
}

// ReportMaxHours bounds the range of one report.
const ReportMaxHours = 2 * 366 * 24

// Report sums the tenant's rollups. Each (bucket, group) converts its exact
// per-currency sums into Currency once (half to even); a currency without a
// rate to Currency is an InvalidArgument naming it.
func (v View) Report(q ReportQuery) ([]ReportRow, error) {
	rows, err := v.report(q)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (v View) report(q ReportQuery) ([]ReportRow, *Error) {
	if err := ValidateID("tenant", q.Tenant); err != nil {
		return nil, err
	}
	if q.FromMs < 0 || q.ToMs <= q.FromMs {
		return nil, invalidf("time range: to must be after from")
	}
	if (q.ToMs-q.FromMs)/hourMs > ReportMaxHours {
		return nil, invalidf("time range spans more than %d hours", ReportMaxHours)
	}
	if len(q.GroupBy) > ReportGroupByMax {
		return nil, invalidf("group_by has %d keys; at most %d", len(q.GroupBy), ReportGroupByMax)
	}
	for i, k := range q.GroupBy {
		if err := validateLabelKey(fmt.Sprintf("group_by[%d]", i), k); err != nil {
			return nil, err
		}
		for _, o := range q.GroupBy[:i] {
			if o == k {
				return nil, invalidf("group_by: %q appears twice", k)
			}
		}
	}
	if q.Bucket < BucketHour || q.Bucket > BucketAll {
		return nil, invalidf("bucket is not set")
	}
	loc, terr := LoadTimezone("timezone", q.Timezone)
	if terr != nil {
		return nil, terr
	}
	if err := ValidateCurrency(q.Currency); err != nil {
		return nil, invalidf("currency: %s", err.Message)
	}
	if err := ValidateSelector("filter", q.Filter); err != nil {
		return nil, err
	}
	type cell struct {
		bucket int64
		group  []string
		sums   map[string]*big.Int
		count  uint64
	}
	cells := map[string]*cell{}
	hours := v.s.cost.rollups[q.Tenant]
	for h := alignDown(q.FromMs, hourMs); h < q.ToMs; h += hourMs {
		if h < q.FromMs {
			continue
		}
		rh := hours[h]
		if rh == nil {
			continue
		}
		bucket := bucketStart(h, q.Bucket, loc, q.FromMs)
		for _, row := range rh.rows {
			spec := CostSpec{Resource: row.Resource, Service: row.Service, Labels: row.Labels}
			if q.Filter != nil && !q.Filter.matches(&spec) {
				continue
			}
			group := make([]string, len(q.GroupBy))
			var key strings.Builder
			key.WriteString(strconv.FormatInt(bucket, 10))
			for i, k := range q.GroupBy {
				group[i], _ = spec.label(k)
				key.WriteByte(0)
				key.WriteString(group[i])
			}
			c := cells[key.String()]
			if c == nil {
				if len(cells) == ReportRowsMax {
					return nil, errorf(CodeResourceExhausted, "the report has more than %d rows; narrow the range, the grouping or the bucket", ReportRowsMax)
				}
				c = &cell{bucket: bucket, group: group, sums: map[string]*big.Int{}}
				cells[key.String()] = c
			}
			sum := c.sums[row.Currency]
			if sum == nil {
				sum = new(big.Int)
				c.sums[row.Currency] = sum
			}
			sum.Add(sum, big.NewInt(row.AmountMicros))
			c.count += row.Count
		}
	}
	out := make([]ReportRow, 0, len(cells))
	for _, c := range cells {
		total := new(big.Int)
		for cur, sum := range c.sums {
			_, rate, ok := v.s.cost.rateFor(cur, q.Currency)
			if !ok {
				return nil, invalidf("currency: no exchange rate from %s to %s; set one with SetExchangeRates", cur, q.Currency)
			}
			total.Add(total, ConvertMicros(sum, rate))
		}
		if !total.IsInt64() {
			return nil, errorf(CodeResourceExhausted, "a report total exceeds the largest amount")
		}
		out = append(out, ReportRow{BucketStartMs: c.bucket, Group: c.group, AmountMicros: total.Int64(), Count: c.count})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].BucketStartMs != out[j].BucketStartMs {
			return out[i].BucketStartMs < out[j].BucketStartMs
		}
		a, b := out[i].Group, out[j].Group
		for k := range a {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return false
	})
	return out, nil
}

// bucketStart returns the start of the bucket holding the hour starting at
// hMs. Day, week and month start at local midnight in loc; an hour belongs
// to the bucket its start falls in (exact in zones with whole-hour offsets).
func bucketStart(hMs int64, b Bucket, loc *time.Location, fromMs int64) int64 {
	switch b {
	case BucketHour:
		return hMs
	case BucketAll:
		return fromMs
	}
	t := time.UnixMilli(hMs).In(loc)
	y, m, d := t.Date()
	switch b {
	case BucketDay:
	case BucketWeek:
		wd := (int(t.Weekday()) + 6) % 7 // Monday = 0
		d -= wd
	case BucketMonth:
		d = 1
	}
	return localDayStart(y, m, d, loc).UnixMilli()
}

func sortedHours(m map[int64]*rollupHour) []int64 {
	out := make([]int64, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// restoreRollup re-validates a snapshot's rollup row and adds it.
func (s *state) restoreRollup(r *snapshotRollup) error {
	if verr := ValidateID("tenant", r.Tenant); verr != nil {
		return errors.New(verr.Message)
	}
	if r.HourMs < 0 || r.HourMs%hourMs != 0 || r.HourMs > entryTimeMaxMs {
		return errors.New("hour is not an aligned time")
	}
	row := r.Row
	spec := CostSpec{AmountMicros: max(row.AmountMicros, 1), Currency: row.Currency, Resource: row.Resource,
		Service: row.Service, Labels: row.Labels, OccurredAtMs: max(r.HourMs, 1)}
	if verr := ValidateCostSpec("", &spec); verr != nil {
		return errors.New(verr.Message)
	}
	if row.AmountMicros < 0 || row.Count == 0 {
		return errors.New("negative sum or no records")
	}
	if s.cost.rollupRows >= RollupRowsMax {
		return fmt.Errorf("more than %d rollup rows", RollupRowsMax)
	}
	hours := s.cost.rollups[r.Tenant]
	if hours == nil {
		hours = map[int64]*rollupHour{}
		s.cost.rollups[r.Tenant] = hours
	}
	h := hours[r.HourMs]
	if h == nil {
		h = &rollupHour{tenant: r.Tenant, hourMs: r.HourMs, rows: map[string]*rollupRow{}}
		hours[r.HourMs] = h
		s.cost.expiries.Push(rollupExpiry{atMs: r.HourMs + CostRetentionMs, hour: h})
	}
	key := groupKey(row.Resource, row.Service, row.Labels, row.Currency)
	if h.rows[key] != nil {
		return errors.New("a row appears twice")
	}
	h.rows[key] = &row
	s.cost.rollupRows++
	return nil
}

// Matches reports whether a record meets every requirement of the selector.
func (s *LabelSelector) Matches(c *CostSpec) bool { return s.matches(c) }

// StoredCost is a cost record read back from its receipt leaf.
type StoredCost struct {
	ID      string
	Spec    CostSpec
	Charges []CostCharge // RemainingMicros and Thresholds are not in the leaf
	// RecordedAtMs is the log time of the entry that recorded it.
	RecordedAtMs int64
}

// StoredCostOf decodes a cost record's leaf (see costLeaves).
func StoredCostOf(l *receipt.Leaf) (StoredCost, error) {
	if l.Operation != OpRecordCost {
		return StoredCost{}, fmt.Errorf("leaf is a %s, not a cost record", l.Operation)
	}
	out := StoredCost{RecordedAtMs: l.TimeUnixMs}
	for _, f := range l.Inputs {
		switch {
		case f.Name == "amount":
			m, err := ParseAmount(f.Value)
			if err != nil {
				return StoredCost{}, fmt.Errorf("cost leaf amount: %s", err.Message)
			}
			out.Spec.AmountMicros = m
		case f.Name == "currency":
			out.Spec.Currency = f.Value
		case f.Name == "resource":
			out.Spec.Resource = f.Value
		case f.Name == "service":
			out.Spec.Service = f.Value
		case f.Name == "occurred_at_ms":
			out.Spec.OccurredAtMs, _ = strconv.ParseInt(f.Value, 10, 64)
		case strings.HasPrefix(f.Name, "label:"):
			out.Spec.Labels = append(out.Spec.Labels, Label{Key: strings.TrimPrefix(f.Name, "label:"), Value: f.Value})
		}
	}
	for _, f := range l.Balances {
		switch {
		case f.Name == "record_id":
			out.ID = f.Value
		case strings.HasPrefix(f.Name, "charge:"):
			// "<amount> <CUR>[ at <rate>]; spent <spent>"
			ch := CostCharge{BudgetID: strings.TrimPrefix(f.Name, "charge:")}
			head, spent, _ := strings.Cut(f.Value, "; spent ")
			parts := strings.Fields(head)
			if len(parts) != 2 && len(parts) != 4 {
				return StoredCost{}, fmt.Errorf("cost leaf charge %q is malformed", f.Value)
			}
			var perr *Error
			if ch.AmountMicros, perr = ParseAmount(parts[0]); perr != nil {
				return StoredCost{}, fmt.Errorf("cost leaf charge amount: %s", perr.Message)
			}
			ch.Currency = parts[1]
			if len(parts) == 4 {
				ch.Rate = parts[3]
			}
			if ch.SpentMicros, perr = parseSigned(spent); perr != nil {
				return StoredCost{}, fmt.Errorf("cost leaf charge spent: %s", perr.Message)
			}
			out.Charges = append(out.Charges, ch)
		}
	}
	sort.Slice(out.Spec.Labels, func(i, j int) bool { return out.Spec.Labels[i].Key < out.Spec.Labels[j].Key })
	return out, nil
}

// parseSigned parses an amount that may be negative.
func parseSigned(s string) (int64, *Error) {
	if strings.HasPrefix(s, "-") {
		m, err := ParseAmount(s[1:])
		return -m, err
	}
	return ParseAmount(s)
}

func (c *SetExchangeRates) actor() string { return c.By }
