package fsm

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/receipt"
)

// Receipts. Every command that decides or changes something (not Noop, not
// MarkServerRemoved) yields one leaf per decision: an atomic batch yields one
// leaf per item. The leaves of one entry form a Merkle tree whose root goes
// into a checkpoint that chains to the previous one and is signed with the
// cluster's signing key, which is part of the replicated state. Ed25519 is
// deterministic, so every replica produces byte-identical checkpoints.
//
// A replayed result (a retry of a request id) yields no new leaf: it carries
// the receipt reference of the first decision.

// SigningKey is one cluster signing key. Only the active (last) key keeps its
// private seed; retired keys keep their public half so old receipts verify.
type SigningKey struct {
	ID        string `msgpack:"id"`
	Public    []byte `msgpack:"pub"`
	Seed      []byte `msgpack:"seed,omitempty"`
	FromIndex uint64 `msgpack:"from"`
}

// SigningKeysMax bounds the key history.
const SigningKeysMax = 1024

// receiptState is the chain head and the keys (snapshot record recReceipts).
type receiptState struct {
	Keys      []SigningKey `msgpack:"keys"`
	HeadIndex uint64       `msgpack:"hi"`
	HeadHash  []byte       `msgpack:"hh"`
}

// ReceiptRef names a decision's leaf: the entry and the leaf's position.
type ReceiptRef struct {
	Index    uint64 `msgpack:"i"`
	Position uint32 `msgpack:"p"`
}

// EntryReceipts is what one entry adds to the receipt chain: the signed
// checkpoint and the canonical leaves in tree order.
type EntryReceipts struct {
	Checkpoint receipt.SignedCheckpoint
	Leaves     [][]byte
	// Requests are the leaves' (tenant, request id), in leaf order, so the
	// receipt store can index them without decoding the leaves. Not part of
	// the receipts themselves (nil for entries fetched from a peer).
	Requests []RequestKey
	// Costs locate the entry's cost records among the leaves, for the
	// receipt store's cost index (nil for entries fetched from a peer; see
	// CostKeyOf).
	Costs []CostKey
}

// CostKey locates a cost record: the leaf at Position of its entry.
type CostKey struct {
	Tenant       string
	OccurredAtMs int64
	ID           string
	Position     uint32
}

// OpRecordCost is the operation of a cost record's leaf.
const OpRecordCost = "cost.record"

// CostKeyOf returns the cost key of a decoded leaf, and false when the leaf
// is not a cost record.
func CostKeyOf(l *receipt.Leaf) (CostKey, bool) {
	if l.Operation != OpRecordCost {
		return CostKey{}, false
	}
	k := CostKey{Tenant: l.Tenant, Position: l.Position}
	for _, f := range l.Inputs {
		if f.Name == "occurred_at_ms" {
			k.OccurredAtMs, _ = strconv.ParseInt(f.Value, 10, 64)
		}
	}
	for _, f := range l.Balances {
		if f.Name == "record_id" {
			k.ID = f.Value
		}
	}
	return k, k.ID != "" && k.OccurredAtMs > 0
}

// RequestKey names a request: its tenant and request id ("" for none).
type RequestKey struct{ Tenant, RequestID string }

// RotateSigningKey makes Seed (an Ed25519 seed chosen by the leader) the
// cluster signing key from the next checkpoint on. The entry that rotates
// is signed with the previous key (or, for the first key, with itself).
type RotateSigningKey struct {
	Seed []byte `msgpack:"s"`
	// By is who asked (the credential), for the receipt.
	By string `msgpack:"by,omitempty"`
}

func (*RotateSigningKey) Type() CommandType                { return TypeRotateSigningKey }
func (*RotateSigningKey) idempotencyKey() (string, string) { return "", "" }

// HasSigningKey reports whether the cluster has a signing key yet.
func (m *Machine) HasSigningKey() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.s.receipts.Keys) > 0
}

// SigningKeys returns the public keys in activation order (no seeds).
func (v View) SigningKeys() []SigningKey {
	out := make([]SigningKey, len(v.s.receipts.Keys))
	for i, k := range v.s.receipts.Keys {
		out[i] = SigningKey{ID: k.ID, Public: append([]byte(nil), k.Public...), FromIndex: k.FromIndex}
	}
	return out
}

// ChainHead returns the index and hash of the last checkpoint (0 and the
// zero hash before the first).
func (v View) ChainHead() (uint64, receipt.Hash) {
	var h receipt.Hash
	copy(h[:], v.s.receipts.HeadHash)
	return v.s.receipts.HeadIndex, h
}

// ChainHead is View.ChainHead under the machine's lock.
func (m *Machine) ChainHead() (uint64, receipt.Hash) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return View{s: m.s}.ChainHead()
}

// makesLeaves reports whether a command's successful result is a decision
// that gets a receipt.
func makesLeaves(c Command) bool {
	switch c.(type) {
	case *Noop, *MarkServerRemoved:
		return false
	}
	return true
}

func (s *state) activeKey() *SigningKey {
	if len(s.receipts.Keys) == 0 {
		return nil
	}
	return &s.receipts.Keys[len(s.receipts.Keys)-1]
}

func (s *state) rotateSigningKey(ctx applyCtx, c *RotateSigningKey) Result {
	priv := ed25519.NewKeyFromSeed(c.Seed)
	pub := priv.Public().(ed25519.PublicKey)
	id := receipt.KeyID(pub)
	for _, k := range s.receipts.Keys {
		if k.ID == id {
			return Result{Err: errorf(CodeAlreadyExists, "signing key %s was already used", id)}
		}
	}
	if len(s.receipts.Keys) >= SigningKeysMax {
		return Result{Err: errorf(CodeResourceExhausted, "the cluster has had its maximum of %d signing keys", SigningKeysMax)}
	}
	// The first key signs its own entry; a later one signs from the next.
	from := ctx.index + 1
	if s.activeKey() == nil {
		from = ctx.index
	}
	return Result{Key: &SigningKey{ID: id, Public: pub, FromIndex: from}}
}

// activateKey installs a rotation's key after the entry that rotates it was
// signed. The first key ever signs its own entry.
func (s *state) activateKey(k *SigningKey, seed []byte) {
	for i := range s.receipts.Keys {
		s.receipts.Keys[i].Seed = nil
	}
	s.receipts.Keys = append(s.receipts.Keys, SigningKey{ID: k.ID, Public: k.Public, Seed: append([]byte(nil), seed...), FromIndex: k.FromIndex})
}

// leafBuilder collects one entry's leaves.
type leafBuilder struct {
	index    uint64
	nowMs    int64
	leaves   [][]byte
	requests []RequestKey
	costs    []CostKey
	// by is the actor of the command whose leaves are being added.
	by string
}

// attributed commands say who asked (admin actions), for their receipts.
type attributed interface{ actor() string }

func (b *leafBuilder) add(tenant, op, object, requestID, outcome, reason string, inputs, balances []receipt.Field) ReceiptRef {
	l := receipt.Leaf{
		Index: b.index, Position: uint32(len(b.leaves)), TimeUnixMs: b.nowMs,
		Tenant: tenant, Operation: op, Object: object, RequestID: requestID,
		Inputs: sortFields(inputs), Outcome: outcome, Reason: reason, Balances: sortFields(balances),
	}
	if b.by != "" {
		l.Inputs = sortFields(append(append([]receipt.Field(nil), inputs...), fs("by", b.by)))
	}
	enc, err := l.Encode()
	if err != nil {
		// Every string here passed Validate, which is stricter than the
		// leaf limits; a failure is a bug that must stop the replica.
		panic(fmt.Sprintf("fsm: leaf at index %d: %v", b.index, err))
	}
	b.leaves = append(b.leaves, enc)
	b.requests = append(b.requests, RequestKey{tenant, requestID})
	return ReceiptRef{Index: b.index, Position: l.Position}
}

func sortFields(f []receipt.Field) []receipt.Field {
	// Few fields: insertion sort keeps this allocation-free and obvious.
	for i := 1; i < len(f); i++ {
		for j := i; j > 0 && f[j].Name < f[j-1].Name; j-- {
			f[j], f[j-1] = f[j-1], f[j]
		}
	}
	return f
}

func fi(name string, v int64) receipt.Field {
	return receipt.Field{Name: name, Value: strconv.FormatInt(v, 10)}
}
func fs(name, v string) receipt.Field { return receipt.Field{Name: name, Value: v} }
func fm(name string, micros int64) receipt.Field {
	return receipt.Field{Name: name, Value: FormatAmount(micros, 0)}
}

func outcome(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func spendBalances(r *SpendResult) []receipt.Field {
	f := []receipt.Field{fs("currency", r.Currency), fm("remaining", r.RemainingMicros), fm("spent", r.SpentMicros)}
	if r.WouldDeny {
		f = append(f, fs("would_deny", "true"))
	}
	if r.DeniedBy != "" {
		f = append(f, fs("denied_by", r.DeniedBy))
	}
	return f
}

func budgetFields(b *BudgetSpec) []receipt.Field {
	f := []receipt.Field{fm("amount", b.AmountMicros), fs("currency", b.Currency),
		fi("period", int64(b.Period)), fs("timezone", b.Timezone), fi("enforcement", int64(b.Enforcement))}
	if b.ParentID != "" {
		f = append(f, fs("parent", b.ParentID))
	}
	if b.CustomPeriodMs != 0 {
		f = append(f, fi("custom_period_ms", b.CustomPeriodMs))
	}
	if b.Selector != nil {
		f = append(f, fs("selector", b.Selector.String()))
	}
	return f
}

func policyFields(p *PolicySpec) []receipt.Field {
	return []receipt.Field{fi("algorithm", int64(p.Algorithm)), fi("limit", p.Limit), fi("window_ms", p.WindowMs), fi("burst", p.Burst)}
}

// addLeaves records the leaves of one successful, first-time result and
// sets its receipt reference.
func (b *leafBuilder) addLeaves(c Command, r *Result) {
	b.by = ""
	if a, ok := c.(attributed); ok {
		b.by = a.actor()
	}
	defer func() { b.by = "" }()
	var ref ReceiptRef
	switch c := c.(type) {
	case *CreateBudget:
		ref = b.add(c.Tenant, "budget.create", c.Budget.ID, c.RequestID, "ok", "", budgetFields(&c.Budget), nil)
	case *UpdateBudget:
		in := append(budgetFields(&r.Budget.Spec), fi("fields", int64(c.Fields)))
		ref = b.add(c.Tenant, "budget.update", c.Budget.ID, c.RequestID, "ok", "", in, nil)
	case *DeleteBudget:
		ref = b.add(c.Tenant, "budget.delete", c.BudgetID, c.RequestID, "ok", "", nil,
			[]receipt.Field{fi("released_holds", int64(r.Delete.ReleasedHolds))})
	case *Consume:
		ref = b.add(c.Tenant, "budget.consume", c.BudgetID, c.RequestID, outcome(r.Spend.Allowed), r.Spend.Reason.name(),
			[]receipt.Field{fm("amount", c.AmountMicros)}, spendBalances(r.Spend))
	case *ConsumeAtomic:
		for i, it := range c.Items {
			res := &r.Batch[i]
			p := b.add(c.Tenant, "budget.consume_atomic", it.BudgetID, c.RequestID, outcome(res.Allowed), res.Reason.name(),
				[]receipt.Field{fm("amount", it.AmountMicros), fi("item", int64(i)), fi("items", int64(len(c.Items)))}, spendBalances(res))
			if i == 0 {
				ref = p
			}
		}
	case *Reserve:
		bal := spendBalances(r.Spend)
		if r.Spend.Allowed {
			bal = append(bal, fs("hold_id", r.Spend.HoldID), fi("hold_expires_at_ms", r.Spend.HoldExpiresAtMs))
		}
		ref = b.add(c.Tenant, "budget.reserve", c.BudgetID, c.RequestID, outcome(r.Spend.Allowed), r.Spend.Reason.name(),
			[]receipt.Field{fm("amount", c.AmountMicros), fi("ttl_ms", c.TTLMs)}, bal)
	case *Commit:
		ref = b.add(c.Tenant, "budget.commit", r.Spend.BudgetID, c.RequestID, outcome(r.Spend.Allowed), r.Spend.Reason.name(),
			[]receipt.Field{fm("amount", c.AmountMicros), fs("hold_id", c.HoldID)}, spendBalances(r.Spend))
	case *Release:
		ref = b.add(c.Tenant, "budget.release", r.Spend.BudgetID, c.RequestID, outcome(r.Spend.Allowed), r.Spend.Reason.name(),
			[]receipt.Field{fs("hold_id", c.HoldID)}, append(spendBalances(r.Spend), fm("released", r.Spend.ReleasedMicros)))
	case *CreatePolicy:
		ref = b.add(c.Tenant, "ratelimit.policy_create", c.Policy.ID, c.RequestID, "ok", "", policyFields(&c.Policy), nil)
	case *UpdatePolicy:
		in := append(policyFields(&r.Policy.Spec), fi("fields", int64(c.Fields)))
		ref = b.add(c.Tenant, "ratelimit.policy_update", c.Policy.ID, c.RequestID, "ok", "", in, nil)
	case *DeletePolicy:
		ref = b.add(c.Tenant, "ratelimit.policy_delete", c.PolicyID, c.RequestID, "ok", "", nil,
			[]receipt.Field{fi("removed_keys", int64(r.Delete.RemovedKeys))})
	case *RateCheck:
		ref = b.add(c.Tenant, "ratelimit.check", c.PolicyID+"/"+c.Key, c.RequestID, outcome(r.Rate.Allowed), r.Rate.Reason.name(),
			[]receipt.Field{fi("cost", c.Cost), fi("priority", int64(c.Priority))},
			[]receipt.Field{fi("remaining", r.Rate.Remaining), fi("limit", r.Rate.Limit),
				fi("reset_after_ms", r.Rate.ResetAfterMs), fi("retry_after_ms", r.Rate.RetryAfterMs)})
	case *RecordCost:
		ref = b.costLeaves(c, r)
	case *AckAlert:
		op := "alert.ack"
		if c.Resolve {
			op = "alert.resolve"
		}
		ref = b.add(c.Tenant, op, c.AlertID, c.RequestID, "ok", "", []receipt.Field{fs("by", c.By)}, nil)
	case *CreateQuotaPool, *SetQuotaConsumer, *SetQuotaDemand, *QuotaConsume, *RenewQuotaPool, *UpdateQuotaPool, *DeleteQuotaPool, *SetQuotaConsumers:
		ref = quotaLeaf(b, c, r)
	case *CreateAPIKey, *RevokeAPIKey:
		ref = apiKeyLeaf(b, c, r)
	case *SetAnomalyDetector:
		op, in := "cost.detector_set", []receipt.Field{fs("group_by", strings.Join(c.Detector.GroupBy, ",")),
			fi("bucket", int64(c.Detector.Bucket)), fi("window", int64(c.Detector.Window)), fi("threshold_milli", c.Detector.ThresholdMilli),
			fm("min_amount", c.Detector.MinAmountMicros), fs("currency", c.Detector.Currency)}
		if c.Delete {
			op, in = "cost.detector_delete", nil
		}
		ref = b.add(c.Tenant, op, c.Detector.ID, c.RequestID, "ok", "", in, nil)
	case *SetExchangeRates:
		in := []receipt.Field{fi("rates", int64(len(c.Rates)))}
		if c.ReplaceAll {
			in = append(in, fs("replace_all", "true"))
		}
		for _, x := range c.Rates {
			in = append(in, fs("rate:"+x.From+"/"+x.To, x.Rate))
		}
		if len(in) > receipt.LeafFieldsMax-1 { // one field is kept for "by"
			// A large table is summarised by its canonical digest.
			in = []receipt.Field{fi("rates", int64(len(c.Rates))), fs("rates_sha256", ratesDigest(c.Rates))}
			if c.ReplaceAll {
				in = append(in, fs("replace_all", "true"))
			}
		}
		ref = b.add("", "cost.set_exchange_rates", "", "", "ok", "", in, []receipt.Field{fi("table_size", int64(len(r.Rates)))})
	case *RotateSigningKey:
		ref = b.add("", "receipt.rotate_key", r.Key.ID, "", "ok", "",
			[]receipt.Field{fs("public_key", fmt.Sprintf("%x", r.Key.Public)), fi("from_index", int64(r.Key.FromIndex))}, nil)
	default:
		panic(fmt.Sprintf("fsm: no leaf for command type %d", c.Type()))
	}
	r.Receipt = &ref
}

// seal signs the entry's checkpoint with the active key and advances the
// chain head. It returns nil when the entry made no leaves.
func (s *state) seal(b *leafBuilder, term uint64) *EntryReceipts {
	if len(b.leaves) == 0 {
		return nil
	}
	key := s.activeKey()
	if key == nil {
		panic(fmt.Sprintf("fsm: entry %d has decisions but the cluster has no signing key", b.index))
	}
	hashes := make([]receipt.Hash, len(b.leaves))
	for i, l := range b.leaves {
		hashes[i] = receipt.LeafHash(l)
	}
	cp := &receipt.Checkpoint{Index: b.index, Term: term, TimeUnixMs: b.nowMs,
		Root: receipt.Root(hashes), LeafCount: uint32(len(hashes)), KeyID: key.ID}
	copy(cp.Prev[:], s.receipts.HeadHash)
	if s.signer == nil || !bytes.Equal(s.signer.Seed(), key.Seed) {
		// Deriving the key costs as much as a signature: once per key.
		s.signer = ed25519.NewKeyFromSeed(key.Seed)
	}
	sig := receipt.Sign(s.signer, cp)
	head := cp.Hash()
	s.receipts.HeadIndex = b.index
	s.receipts.HeadHash = head[:]
	return &EntryReceipts{Checkpoint: receipt.SignedCheckpoint{Body: cp.Encode(), Signature: sig}, Leaves: b.leaves, Requests: b.requests,
		Costs: b.costs}
}

func (s *state) checkRestoredReceipts() error {
	r := &s.receipts
	if len(r.HeadHash) != 0 && len(r.HeadHash) != receipt.HashSize {
		return fmt.Errorf("receipt chain head hash of %d bytes", len(r.HeadHash))
	}
	if (r.HeadIndex == 0) != (len(r.HeadHash) == 0) || r.HeadIndex > s.lastIndex {
		return fmt.Errorf("receipt chain head at index %d does not fit the state at %d", r.HeadIndex, s.lastIndex)
	}
	if len(r.Keys) > SigningKeysMax {
		return fmt.Errorf("%d signing keys exceed %d", len(r.Keys), SigningKeysMax)
	}
	if r.HeadIndex != 0 && len(r.Keys) == 0 {
		return fmt.Errorf("receipt chain without a signing key")
	}
	for i, k := range r.Keys {
		if len(k.Public) != ed25519.PublicKeySize || receipt.KeyID(k.Public) != k.ID {
			return fmt.Errorf("signing key %d (%q) is malformed", i, k.ID)
		}
		last := i == len(r.Keys)-1
		if last != (len(k.Seed) != 0) {
			return fmt.Errorf("signing key %s: only the active key keeps its seed", k.ID)
		}
		if last {
			if len(k.Seed) != ed25519.SeedSize {
				return fmt.Errorf("signing key %s: seed of %d bytes", k.ID, len(k.Seed))
			}
			if pub := ed25519.NewKeyFromSeed(k.Seed).Public().(ed25519.PublicKey); !pub.Equal(ed25519.PublicKey(k.Public)) {
				return fmt.Errorf("signing key %s: seed does not match the public key", k.ID)
			}
		}
		if i > 0 && k.FromIndex < r.Keys[i-1].FromIndex {
			return fmt.Errorf("signing keys are not in activation order")
		}
	}
	return nil
}

// Receipt builds the receipt of the leaf at pos.
func (e *EntryReceipts) Receipt(pos uint32) (*receipt.Receipt, error) {
	if int(pos) >= len(e.Leaves) {
		return nil, fmt.Errorf("position %d is outside the entry's %d leaves", pos, len(e.Leaves))
	}
	hashes := make([]receipt.Hash, len(e.Leaves))
	for i, l := range e.Leaves {
		hashes[i] = receipt.LeafHash(l)
	}
	proof, err := receipt.InclusionProof(hashes, int(pos))
	if err != nil {
		return nil, err
	}
	return &receipt.Receipt{Leaf: e.Leaves[pos], Proof: proof, Checkpoint: e.Checkpoint}, nil
}

// ratesDigest is the hex SHA-256 of the rates' canonical text (one
// "FROM/TO=RATE" line each, in the command's order).
func ratesDigest(rates []ExchangeRate) string {
	h := sha256.New()
	for _, r := range rates {
		fmt.Fprintf(h, "%s/%s=%s\n", r.From, r.To, r.Rate)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func (c *RotateSigningKey) actor() string { return c.By }
