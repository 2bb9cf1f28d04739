package fsm

import "bytes"

// Result is the outcome of one command. Exactly one of the payload fields is
// set, or Err. Results of commands with a request id are kept in the
// idempotency table and replayed unchanged.
type Result struct {
	// Index is the log index of the entry that first applied the command.
	Index  uint64        `msgpack:"i"`
	Err    *Error        `msgpack:"e,omitempty"`
	Budget *BudgetView   `msgpack:"b,omitempty"`
	Spend  *SpendResult  `msgpack:"s,omitempty"`
	Batch  []SpendResult `msgpack:"a,omitempty"`
	Policy *Policy       `msgpack:"p,omitempty"`
	Rate   *RateResult   `msgpack:"r,omitempty"`
	Delete *DeleteResult `msgpack:"d,omitempty"`
	// Costs are the records of a RecordCost, in order. Their ids are not
	// encoded: they follow from Index, CostPos and the item (fillCostIDs).
	Costs []CostResult `msgpack:"co,omitempty"`
	// CostPos is the RecordCost's position in its entry.
	CostPos uint32 `msgpack:"cp,omitempty"`
	// CostCount and CostCharged hold Costs compactly in the idempotency
	// table (records without charges take no space there).
	CostCount   uint32        `msgpack:"cn,omitempty"`
	CostCharged []ItemCharges `msgpack:"cc,omitempty"`
	// Alert is the alert after an AckAlert.
	Alert *Alert `msgpack:"al,omitempty"`
	// Quota is the pool after a quota command (and a consume's decision).
	Quota *QuotaResult `msgpack:"q,omitempty"`
	// Detector is the detector a SetAnomalyDetector set or deleted.
	Detector *AnomalyDetector `msgpack:"ad,omitempty"`
	// Rates is the exchange-rate table after a SetExchangeRates.
	Rates []ExchangeRate `msgpack:"x,omitempty"`
	// APIKey is the key a CreateAPIKey or RevokeAPIKey stored (no hash).
	APIKey *APIKey `msgpack:"ak,omitempty"`
	// Key is the new signing key of a RotateSigningKey (public half only).
	Key *SigningKey `msgpack:"k,omitempty"`
	// Receipt names the decision's leaf; for an atomic batch, the first
	// item's (item i is at Position+i).
	Receipt *ReceiptRef `msgpack:"rc,omitempty"`
	// Replayed is true when the result came from the idempotency table. It is
	// not stored; the reply itself is identical.
	Replayed bool `msgpack:"-"`
}

// SpendResult is the decision of a Consume, Reserve, Commit or Release.
type SpendResult struct {
	Allowed bool       `msgpack:"ok"`
	Reason  DenyReason `msgpack:"re,omitempty"`
	// DeniedBy is the budget (the named one or an ancestor) without room.
	DeniedBy string `msgpack:"db,omitempty"`
	BudgetID string `msgpack:"b"`
	Currency string `msgpack:"cu"`
	// RemainingMicros and SpentMicros are the named budget's after the decision.
	RemainingMicros int64 `msgpack:"rm"`
	SpentMicros     int64 `msgpack:"sp"`
	// WouldDeny: allowed by SOFT / SHADOW enforcement although it did not fit.
	WouldDeny bool `msgpack:"wd,omitempty"`
	// Thresholds of the named budget this decision crossed.
	Thresholds      []uint32 `msgpack:"th,omitempty"`
	HoldID          string   `msgpack:"h,omitempty"`
	HoldExpiresAtMs int64    `msgpack:"he,omitempty"`
	ReleasedMicros  int64    `msgpack:"rl,omitempty"`
}

// RateResult is the decision of a rate-limit check.
type RateResult struct {
	Allowed      bool       `msgpack:"ok"`
	Reason       DenyReason `msgpack:"re,omitempty"`
	Remaining    int64      `msgpack:"rm"`
	Limit        int64      `msgpack:"li"`
	ResetAfterMs int64      `msgpack:"ra"`
	RetryAfterMs int64      `msgpack:"rt"`
}

// DeleteResult reports what a delete removed along with the object.
type DeleteResult struct {
	ReleasedHolds uint32 `msgpack:"h,omitempty"`
	RemovedKeys   uint64 `msgpack:"k,omitempty"`
}

// EntryResult is what applying one log entry returns: one Result per command.
type EntryResult struct {
	Index   uint64
	NowMs   int64
	Results []Result
	// Receipts is the entry's signed checkpoint and leaves (nil when the
	// entry decided nothing).
	Receipts *EntryReceipts
}

// EncodeResults encodes results for a follower that forwarded their commands
// (node-to-node only; Replayed travels separately).
func EncodeResults(results []Result) ([]byte, error) {
	var buf bytes.Buffer
	if err := encodeMsgpack(&buf, results); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeResults is the inverse of EncodeResults.
func DecodeResults(b []byte) ([]Result, error) {
	var out []Result
	if err := decodeMsgpack(b, &out); err != nil {
		return nil, err
	}
	for i := range out {
		out[i].fillCostIDs()
	}
	return out, nil
}
