package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Snapshot format: the magic bytes, then records, each a type byte, a uvarint
// length and a msgpack body. The first record is the header, the last the
// trailer with counts. Records are written in a canonical order (sorted keys,
// idempotency records in log order), so the same state always encodes to the
// same bytes and a SHA-256 of the encoding is a state hash.
const (
	snapshotMagic         = "TGSNAP"
	SnapshotFormatVersion = 1
	snapshotRecordMax     = 64 << 20
)

// Record types are append-only like command types.
const (
	recHeader  byte = 1
	recBudget  byte = 2
	recHold    byte = 3
	recPolicy  byte = 4
	recRateKey byte = 5
	recIdem    byte = 6
	recRemoved byte = 7
	// recReceipts: the signing keys and the chain head (absent in snapshots
	// from before receipts; then the leader sets a first key).
	recReceipts byte = 8
	// recRates: the exchange-rate table (absent when empty).
	recRates byte = 9
	// recRollup: one hourly cost rollup row.
	recRollup byte = 10
	// recDetector: one cost anomaly detector; recAlert: one alert.
	recDetector byte = 11
	recAlert    byte = 12
	// recQuota: one quota pool with its consumers.
	recQuota byte = 13
	// recAPIKey: one API key (its hash, never the secret).
	recAPIKey  byte = 14
	recTrailer byte = 255
)

type snapshotHeader struct {
	FormatVersion int    `msgpack:"v"`
	LastIndex     uint64 `msgpack:"i"`
	LastNowMs     int64  `msgpack:"t"`
}

type snapshotRateKey struct {
	Tenant   string    `msgpack:"t"`
	PolicyID string    `msgpack:"p"`
	Entry    rateEntry `msgpack:"e"`
}

type snapshotTrailer struct {
	Budgets   int `msgpack:"b"`
	Holds     int `msgpack:"h"`
	Policies  int `msgpack:"p"`
	RateKeys  int `msgpack:"k"`
	Idem      int `msgpack:"r"`
	Rates     int `msgpack:"x,omitempty"`
	Rollups   int `msgpack:"cr,omitempty"`
	Detectors int `msgpack:"ad,omitempty"`
	Alerts    int `msgpack:"al,omitempty"`
	Quotas    int `msgpack:"qp,omitempty"`
	APIKeys   int `msgpack:"ak,omitempty"`
}

type snapshotRates struct {
	Rates []ExchangeRate `msgpack:"r"`
}

type snapshotRollup struct {
	Tenant string    `msgpack:"t"`
	HourMs int64     `msgpack:"h"`
	Row    rollupRow `msgpack:"r"`
}

// WriteSnapshot encodes the whole state to w in canonical form. It holds the
// read lock for the duration, so Apply waits; callers that need Apply to go on
// encode into memory first (see node).
func (m *Machine) WriteSnapshot(w io.Writer) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.encode(w)
}

// StateHash returns the hex SHA-256 of the canonical encoding of the tables
// (budgets, holds, policies, counters, idempotency records) and the index it
// reflects. The log position (index and log time) is left out of the hash and
// reported beside it, so a node that restarted and committed its leader
// barrier still hashes equal to its state before the restart.
func (m *Machine) StateHash() (string, uint64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h := sha256.New()
	if err := m.s.encodeTables(h); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), m.s.lastIndex, nil
}

type recordWriter struct {
	w   *bufio.Writer
	buf bytes.Buffer
	err error
}

func (rw *recordWriter) write(typ byte, v any) {
	if rw.err != nil {
		return
	}
	rw.buf.Reset()
	if rw.err = encodeMsgpack(&rw.buf, v); rw.err != nil {
		return
	}
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(rw.buf.Len()))
	if _, rw.err = rw.w.Write(hdr[:1+n]); rw.err == nil {
		_, rw.err = rw.w.Write(rw.buf.Bytes())
	}
}

func (s *state) encode(w io.Writer) error {
	return s.encodeRecords(w, true)
}

func (s *state) encodeTables(w io.Writer) error {
	return s.encodeRecords(w, false)
}

func (s *state) encodeRecords(w io.Writer, withHeader bool) error {
	rw := &recordWriter{w: bufio.NewWriterSize(w, 64<<10)}
	if _, err := rw.w.WriteString(snapshotMagic); err != nil {
		return err
	}
	if withHeader {
		rw.write(recHeader, snapshotHeader{FormatVersion: SnapshotFormatVersion, LastIndex: s.lastIndex, LastNowMs: s.lastNowMs})
	}
	for _, k := range sortedObjectKeys(s.budgets) {
		rw.write(recBudget, s.budgets[k])
	}
	for _, k := range sortedObjectKeys(s.holds) {
		rw.write(recHold, s.holds[k])
	}
	for _, k := range sortedObjectKeys(s.policies) {
		p := s.policies[k]
		rw.write(recPolicy, p)
		for _, key := range sortedKeys(p.keys, "") {
			rw.write(recRateKey, snapshotRateKey{Tenant: p.Tenant, PolicyID: p.Spec.ID, Entry: *p.keys[key]})
		}
	}
	for _, r := range s.idem.records() {
		rw.write(recIdem, r)
	}
	for _, r := range s.removedServers {
		rw.write(recRemoved, r)
	}
	if len(s.receipts.Keys) > 0 || s.receipts.HeadIndex != 0 {
		rw.write(recReceipts, s.receipts)
	}
	if len(s.cost.rates) > 0 {
		rw.write(recRates, snapshotRates{Rates: s.exchangeRates()})
	}
	for _, tenant := range sortedKeys(s.cost.rollups, "") {
		hours := s.cost.rollups[tenant]
		for _, h := range sortedHours(hours) {
			rows := hours[h].rows
			for _, g := range sortedKeys(rows, "") {
				rw.write(recRollup, snapshotRollup{Tenant: tenant, HourMs: h, Row: *rows[g]})
			}
		}
	}
	for _, k := range sortedObjectKeys(s.cost.detectors) {
		rw.write(recDetector, s.cost.detectors[k])
	}
	for _, a := range s.cost.alerts {
		rw.write(recAlert, a)
	}
	for _, k := range sortedObjectKeys(s.quotas) {
		rw.write(recQuota, s.quotas[k])
	}
	keyIDs := make([]string, 0, len(s.apiKeys))
	for id := range s.apiKeys {
		keyIDs = append(keyIDs, id)
	}
	sort.Strings(keyIDs)
	for _, id := range keyIDs {
		rw.write(recAPIKey, s.apiKeys[id])
	}
	rw.write(recTrailer, s.trailer())
	if rw.err != nil {
		return rw.err
	}
	return rw.w.Flush()
}

func (s *state) trailer() snapshotTrailer {
	return snapshotTrailer{Budgets: len(s.budgets), Holds: len(s.holds), Policies: len(s.policies),
		RateKeys: s.rateKeys, Idem: s.idem.len(), Rates: len(s.cost.rates), Rollups: s.cost.rollupRows,
		Detectors: len(s.cost.detectors), Alerts: len(s.cost.alerts), Quotas: len(s.quotas), APIKeys: len(s.apiKeys)}
}

func sortedObjectKeys[T any](m map[objectKey]T) []objectKey {
	keys := make([]objectKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	return keys
}

// Restore replaces the whole state with the snapshot in r. The new state is
// built aside and swapped in only if the snapshot decodes and checks out.
func (m *Machine) Restore(r io.Reader) error {
	s, err := decodeState(bufio.NewReaderSize(r, 64<<10))
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s
	return nil
}

func readRecord(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if size > snapshotRecordMax {
		return 0, nil, fmt.Errorf("record of %d bytes exceeds %d", size, snapshotRecordMax)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return typ, body, nil
}

func decodeState(r *bufio.Reader) (*state, error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapshotMagic {
		return nil, errors.New("not a tollgate snapshot")
	}
	s := newState()
	var sawHeader bool
	for {
		typ, body, err := readRecord(r)
		if err != nil {
			return nil, fmt.Errorf("truncated snapshot: %w", err)
		}
		if !sawHeader && typ != recHeader {
			return nil, errors.New("snapshot does not start with a header")
		}
		if typ == recTrailer {
			var t snapshotTrailer
			if err := decodeMsgpack(body, &t); err != nil {
				return nil, err
			}
			if _, err := r.ReadByte(); err != io.EOF {
				return nil, errors.New("bytes after the snapshot trailer")
			}
			return s, s.checkRestored(t)
		}
		if err := s.restoreRecord(typ, body, &sawHeader); err != nil {
			return nil, err
		}
	}
}

func (s *state) restoreRecord(typ byte, body []byte, sawHeader *bool) error {
	switch typ {
	case recHeader:
		var h snapshotHeader
		if err := decodeMsgpack(body, &h); err != nil {
			return err
		}
		if *sawHeader || h.FormatVersion != SnapshotFormatVersion {
			return fmt.Errorf("unsupported snapshot header (format %d)", h.FormatVersion)
		}
		*sawHeader = true
		if h.LastNowMs < 0 || h.LastNowMs > entryTimeMaxMs {
			return fmt.Errorf("snapshot log time %d is outside [0, %d]", h.LastNowMs, entryTimeMaxMs)
		}
		s.lastIndex, s.lastNowMs = h.LastIndex, h.LastNowMs
	case recBudget:
		b := &Budget{}
		if err := decodeMsgpack(body, b); err != nil {
			return err
		}
		if err := ValidateBudgetSpec(&b.Spec); err != nil {
			return fmt.Errorf("budget %s/%s: %s", b.Tenant, b.Spec.ID, err.Message)
		}
		if s.budgets[objectKey{b.Tenant, b.Spec.ID}] != nil {
			return fmt.Errorf("budget %s/%s appears twice", b.Tenant, b.Spec.ID)
		}
		s.putBudget(b)
	case recHold:
		h := &Hold{}
		if err := decodeMsgpack(body, h); err != nil {
			return err
		}
		if err := s.checkRestoredHold(h); err != nil {
			return fmt.Errorf("hold %s/%s: %w", h.Tenant, h.ID, err)
		}
		s.holds[objectKey{h.Tenant, h.ID}] = h
		s.holdExpiries.Push(holdExpiry{atMs: h.ExpiresAtMs, hold: h})
	case recPolicy:
		p := &Policy{keys: map[string]*rateEntry{}}
		if err := decodeMsgpack(body, p); err != nil {
			return err
		}
		if err := validatePolicySpec(&p.Spec); err != nil {
			return fmt.Errorf("policy %s/%s: %s", p.Tenant, p.Spec.ID, err.Message)
		}
		p.ActiveKeys = 0
		if s.policies[objectKey{p.Tenant, p.Spec.ID}] != nil {
			return fmt.Errorf("policy %s/%s appears twice", p.Tenant, p.Spec.ID)
		}
		s.putPolicy(p)
	case recRateKey:
		var k snapshotRateKey
		if err := decodeMsgpack(body, &k); err != nil {
			return err
		}
		p := s.policies[objectKey{k.Tenant, k.PolicyID}]
		if p == nil {
			return fmt.Errorf("rate key for unknown policy %s/%s", k.Tenant, k.PolicyID)
		}
		e := k.Entry
		if err := s.checkRestoredRateEntry(p, &e); err != nil {
			return fmt.Errorf("rate key %s/%s/%q: %w", k.Tenant, k.PolicyID, e.Key, err)
		}
		e.policy = p
		p.keys[e.Key] = &e
		s.rateKeys++
		s.rateExpiries.Push(rateExpiry{atMs: e.State.ExpiresAtMs, entry: &e})
	case recIdem:
		rec := &idemRecord{}
		if err := decodeMsgpack(body, rec); err != nil {
			return err
		}
		if s.idem.get(rec.Tenant, rec.RequestID) != nil {
			return fmt.Errorf("request id %s/%q appears twice", rec.Tenant, rec.RequestID)
		}
		if last := s.idem.records(); len(last) > 0 && rec.AtMs < last[len(last)-1].AtMs {
			return fmt.Errorf("request id records are not in log order")
		}
		s.idem.put(rec)
	case recRemoved:
		var r RemovedServer
		if err := decodeMsgpack(body, &r); err != nil {
			return err
		}
		if len(s.removedServers) >= RemovedServersMax {
			return fmt.Errorf("more than %d removed-server records", RemovedServersMax)
		}
		s.removedServers = append(s.removedServers, r)
	case recReceipts:
		if len(s.receipts.Keys) > 0 || s.receipts.HeadIndex != 0 {
			return fmt.Errorf("receipt record appears twice")
		}
		if err := decodeMsgpack(body, &s.receipts); err != nil {
			return err
		}
	case recRates:
		var r snapshotRates
		if err := decodeMsgpack(body, &r); err != nil {
			return err
		}
		if len(s.cost.rates) > 0 {
			return fmt.Errorf("exchange-rate record appears twice")
		}
		if err := validateSetExchangeRates(&SetExchangeRates{Rates: r.Rates}); err != nil {
			return fmt.Errorf("exchange rates: %s", err.Message)
		}
		for i := range r.Rates {
			x := r.Rates[i]
			s.cost.rates[exchangeKey{x.From, x.To}] = x.withRat()
		}
	case recRollup:
		var r snapshotRollup
		if err := decodeMsgpack(body, &r); err != nil {
			return err
		}
		if err := s.restoreRollup(&r); err != nil {
			return fmt.Errorf("cost rollup %s/%d: %w", r.Tenant, r.HourMs, err)
		}
	case recDetector:
		d := &detectorState{}
		if err := decodeMsgpack(body, d); err != nil {
			return err
		}
		if err := ValidateID("tenant", d.Tenant); err != nil {
			return fmt.Errorf("detector: %s", err.Message)
		}
		if err := validateDetector(&d.Spec); err != nil {
			return fmt.Errorf("detector %s/%s: %s", d.Tenant, d.Spec.ID, err.Message)
		}
		key := objectKey{d.Tenant, d.Spec.ID}
		if s.cost.detectors[key] != nil {
			return fmt.Errorf("detector %s/%s appears twice", d.Tenant, d.Spec.ID)
		}
		if d.EvaluatedToMs%bucketMs(d.Spec.Bucket) != 0 || d.EvaluatedToMs < 0 {
			return fmt.Errorf("detector %s/%s: evaluation mark is not a bucket start", d.Tenant, d.Spec.ID)
		}
		s.cost.detectors[key] = d
	case recQuota:
		p := &QuotaPool{}
		if err := decodeMsgpack(body, p); err != nil {
			return err
		}
		if err := s.checkRestoredQuota(p); err != nil {
			return fmt.Errorf("quota pool %s/%s: %w", p.Tenant, p.Spec.ID, err)
		}
		s.quotas[objectKey{p.Tenant, p.Spec.ID}] = p
	case recAlert:
		a := &Alert{}
		if err := decodeMsgpack(body, a); err != nil {
			return err
		}
		if a.Seq <= s.cost.alertSeq || a.ID != fmt.Sprintf("a%d", a.Seq) || len(s.cost.alerts) >= AlertsMax {
			return fmt.Errorf("alert %q is out of order, malformed or beyond %d alerts", a.ID, AlertsMax)
		}
		s.cost.alerts = append(s.cost.alerts, a)
		s.cost.alertSeq = a.Seq
	case recAPIKey:
		k := &APIKey{}
		if err := decodeMsgpack(body, k); err != nil {
			return err
		}
		if err := s.checkRestoredAPIKey(k); err != nil {
			return fmt.Errorf("API key: %s", err.Message)
		}
		s.apiKeys[k.ID] = k
	default:
		return fmt.Errorf("unknown snapshot record type %d", typ)
	}
	return nil
}

// checkRestored re-derives what the records imply and compares it with the
// trailer and the stored counters: a snapshot that disagrees with itself is
// refused.
func (s *state) checkRestored(t snapshotTrailer) error {
	if got := s.trailer(); got != t {
		return fmt.Errorf("snapshot counts %+v do not match its trailer %+v", s.trailer(), t)
	}
	if err := s.checkRestoredReceipts(); err != nil {
		return err
	}
	children := map[objectKey]uint32{}
	holds := map[objectKey]uint32{}
	held := map[objectKey]int64{}
	for _, b := range s.budgets {
		if b.Spec.ParentID == "" {
			continue
		}
		parent := objectKey{b.Tenant, b.Spec.ParentID}
		if s.budgets[parent] == nil {
			return fmt.Errorf("budget %s/%s has a missing parent", b.Tenant, b.Spec.ID)
		}
		children[parent]++
	}
	for _, b := range s.budgets {
		x, depth := b, 1
		for x.Spec.ParentID != "" {
			if x = s.budgets[objectKey{x.Tenant, x.Spec.ParentID}]; x == nil || depth == BudgetDepthMax {
				return fmt.Errorf("budget %s/%s has a broken or too long parent chain", b.Tenant, b.Spec.ID)
			}
			depth++
		}
	}
	for _, h := range s.holds {
		b := s.budgets[objectKey{h.Tenant, h.BudgetID}]
		if b == nil {
			return fmt.Errorf("hold %s/%s is on a missing budget", h.Tenant, h.ID)
		}
		holds[objectKey{h.Tenant, h.BudgetID}]++
		for _, x := range s.chain(b) {
			held[objectKey{x.Tenant, x.Spec.ID}] += h.AmountMicros
		}
	}
	for k, b := range s.budgets {
		if b.Children != children[k] || b.ActiveHolds != holds[k] || b.HeldMicros != held[k] {
			return fmt.Errorf("budget %s/%s counters do not match its holds and children", k.Tenant, k.ID)
		}
	}
	return nil
}

// checkRestoredHold re-validates a hold: a positive amount, an expiry after
// its creation, and an id that an entry at or before the snapshot's index
// made (so a later Reserve cannot be given the same id).
func (s *state) checkRestoredHold(h *Hold) error {
	if h.AmountMicros <= 0 || h.AmountMicros > AmountMaxMicros {
		return fmt.Errorf("amount %d out of range", h.AmountMicros)
	}
	if h.ExpiresAtMs < h.CreatedAtMs {
		return fmt.Errorf("expires before it was created")
	}
	var index uint64
	var pos int
	if n, err := fmt.Sscanf(h.ID, "h%d-%d", &index, &pos); n != 2 || err != nil || fmt.Sprintf("h%d-%d", index, pos) != h.ID {
		return fmt.Errorf("malformed id")
	}
	if index > s.lastIndex {
		return fmt.Errorf("made at index %d, after the snapshot's %d", index, s.lastIndex)
	}
	if s.holds[objectKey{h.Tenant, h.ID}] != nil {
		return fmt.Errorf("appears twice")
	}
	return nil
}

// checkRestoredRateEntry re-validates a rate-limit counter against its
// policy, so a restored counter can never make a later check fail an
// assertion (which would stop the replica). A counter written under the
// current policy version must satisfy the algorithm's invariants; an older
// one must adapt to the current policy cleanly.
func (s *state) checkRestoredRateEntry(p *Policy, e *rateEntry) (err error) {
	if verr := ValidateRateKey("key", e.Key); verr != nil {
		return errors.New(verr.Message)
	}
	if p.keys[e.Key] != nil {
		return errors.New("appears twice")
	}
	if e.PolicyVersion == 0 || e.PolicyVersion > p.Version {
		return fmt.Errorf("policy version %d, the policy is at %d", e.PolicyVersion, p.Version)
	}
	if e.Algorithm < AlgorithmTokenBucket || e.Algorithm > AlgorithmGCRA {
		return fmt.Errorf("algorithm %d is unknown", e.Algorithm)
	}
	if e.State.WindowMs < 1 || e.State.WindowMs > RateWindowMaxMs {
		return fmt.Errorf("window %d ms out of range", e.State.WindowMs)
	}
	// The algorithms assert their invariants (a broken one is a bug and
	// panics); here a broken one is bad input.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("inconsistent counter: %v", r)
		}
	}()
	full := p.params(0)
	full.Percent = ratePercentMax
	check := e.State
	check.Log = append([]rateLogEntry(nil), e.State.Log...)
	if e.PolicyVersion == p.Version {
		if e.Algorithm != p.Spec.Algorithm || e.State.WindowMs != p.Spec.WindowMs {
			return errors.New("algorithm or window differs from its policy's current version")
		}
	} else {
		rateAdapt(&check, full, e.Algorithm != p.Spec.Algorithm, s.lastNowMs)
	}
	rateAlgorithmOf(full).checkInvariants(&check, full)
	rateCheck(&check, full, max(s.lastNowMs, check.ExpiresAtMs), 1)
	return nil
}
