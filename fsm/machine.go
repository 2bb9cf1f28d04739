// Package fsm is tollgate's deterministic replicated state machine: command
// types and their codec, budgets, holds, rate-limit counters, the idempotency
// table, and snapshot persist/restore. It never reads the clock, randomness
// or the environment: every time it uses is the leader's stamp on the entry.
package fsm

import (
	"fmt"
	"sync"
)

// Machine applies committed log entries to the state and answers reads. Apply
// is called by one goroutine (Raft's FSM loop); reads may run concurrently.
type Machine struct {
	mu sync.RWMutex
	s  *state
	// noReceipts turns receipts off (benchmarks of their cost only; every
	// replica of a cluster must agree, see DisableReceipts).
	noReceipts bool
}

// DisableReceipts makes the machine decide without leaves, checkpoints or a
// signing key. It exists to measure what receipts cost: a cluster must run
// all its replicas with the same setting, and one without receipts proves
// nothing. Call it before the first entry is applied.
func (m *Machine) DisableReceipts() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.noReceipts = true
}

// New returns an empty state machine.
func New() *Machine {
	return &Machine{s: newState()}
}

// ApplyEntry applies one committed log entry at index and returns one result
// per command. It panics on an entry it cannot decode: a replica that cannot
// apply the log exactly must stop rather than diverge.
func (m *Machine) ApplyEntry(index, term uint64, data []byte) *EntryResult {
	entry, err := DecodeEntry(data)
	if err != nil {
		panic(fmt.Sprintf("fsm: undecodable entry at index %d: %v", index, err))
	}
	cmds := make([]Command, len(entry.Commands))
	for i, raw := range entry.Commands {
		if cmds[i], err = DecodeCommand(raw); err != nil {
			panic(fmt.Sprintf("fsm: undecodable command %d at index %d: %v", i, index, err))
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.s
	s.advance(index)
	// Log time never goes backwards, even if a new leader's clock is behind.
	nowMs := max(entry.NowMs, s.lastNowMs)
	s.lastNowMs = nowMs
	s.expireHolds(nowMs)
	s.expireRateKeys(nowMs)
	s.expireRollups(nowMs)
	s.evaluateAnomalies(applyCtx{index: index, nowMs: nowMs})
	s.idem.expire(nowMs)

	out := &EntryResult{Index: index, NowMs: nowMs, Results: make([]Result, len(cmds))}
	var leaves *leafBuilder
	if !m.noReceipts {
		leaves = &leafBuilder{index: index, nowMs: nowMs}
	}
	type pendingKey struct {
		key  *SigningKey
		seed []byte
	}
	var pending []pendingKey
	for i, c := range cmds {
		ctx := applyCtx{index: index, nowMs: nowMs, pos: i, leaves: leaves, alerts: s.raiseAlert}
		r := s.applyIdempotent(ctx, c, entry.Commands[i])
		if rot, ok := c.(*RotateSigningKey); ok && r.Err == nil {
			// The first key signs its own entry; a rotation's entry is
			// signed with the key it replaces.
			if s.activeKey() == nil {
				s.activateKey(r.Key, rot.Seed)
			} else {
				pending = append(pending, pendingKey{r.Key, rot.Seed})
			}
		}
		out.Results[i] = r
	}
	if leaves != nil {
		out.Receipts = s.seal(leaves, term)
	}
	for _, p := range pending {
		s.activateKey(p.key, p.seed)
	}
	return out
}

// SkipEntry records that a log entry without commands (a Raft configuration
// change) was applied at index.
func (m *Machine) SkipEntry(index uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s.advance(index)
}

func (s *state) advance(index uint64) {
	if index <= s.lastIndex {
		panic(fmt.Sprintf("fsm: index %d applied after %d", index, s.lastIndex))
	}
	s.lastIndex = index
}

// applyIdempotent applies c unless its request id was seen: then it replays
// the first result (or refuses a reuse of the id for different parameters).
func (s *state) applyIdempotent(ctx applyCtx, c Command, raw []byte) Result {
	if err := Validate(c); err != nil {
		return Result{Index: ctx.index, Err: err}
	}
	if _, rotation := c.(*RotateSigningKey); !rotation && ctx.leaves != nil && makesLeaves(c) && s.activeKey() == nil {
		// Not stored for the request id: a retry after the key exists decides.
		return Result{Index: ctx.index, Err: errorf(CodeUnavailable, "the cluster has no receipt signing key yet; retry")}
	}
	tenant, requestID := c.idempotencyKey()
	if requestID == "" {
		return s.applyFirst(ctx, c)
	}
	fp := fingerprint(raw)
	if f, ok := c.(interface{ idempotencyFingerprint() uint64 }); ok {
		fp = f.idempotencyFingerprint()
	}
	if rec := s.idem.get(tenant, requestID); rec != nil {
		if rec.Fingerprint != fp {
			return Result{Index: ctx.index, Err: errorf(CodeFailedPrecondition,
				"request_id %q was already used in tenant %q for a different request", requestID, tenant)}
		}
		r := expandFromIdem(rec.Result)
		r.Replayed = true
		return r
	}
	if s.idem.len() >= IdempotencyEntriesMax {
		return Result{Index: ctx.index, Err: errorf(CodeResourceExhausted,
			"the idempotency table holds its maximum of %d request ids; retry later", IdempotencyEntriesMax)}
	}
	r := s.applyFirst(ctx, c)
	s.idem.put(&idemRecord{Tenant: tenant, RequestID: requestID, Fingerprint: fp, AtMs: ctx.nowMs, Result: compactForIdem(r)})
	return r
}

// applyFirst applies a command that was not applied before and adds the
// leaves of its decision to the entry's receipts.
func (s *state) applyFirst(ctx applyCtx, c Command) Result {
	r := s.apply(ctx, c)
	r.Index = ctx.index
	if r.Err == nil && makesLeaves(c) && ctx.leaves != nil {
		ctx.leaves.addLeaves(c, &r)
	}
	return r
}

func (s *state) apply(ctx applyCtx, c Command) Result {
	switch c := c.(type) {
	case *Noop:
		return Result{}
	case *MarkServerRemoved:
		s.markServerRemoved(ctx, c)
		return Result{}
	case *CreateBudget:
		return s.createBudget(ctx, c)
	case *UpdateBudget:
		return s.updateBudget(ctx, c)
	case *DeleteBudget:
		return s.deleteBudget(c)
	case *Consume:
		return s.consume(ctx, c)
	case *ConsumeAtomic:
		return s.consumeAtomic(ctx, c)
	case *Reserve:
		return s.reserve(ctx, c)
	case *Commit:
		return s.commit(ctx, c)
	case *Release:
		return s.release(ctx, c)
	case *CreatePolicy:
		return s.createPolicy(ctx, c)
	case *UpdatePolicy:
		return s.updatePolicy(ctx, c)
	case *DeletePolicy:
		return s.deletePolicy(c)
	case *RateCheck:
		return s.rateCheck(ctx, c)
	case *RotateSigningKey:
		return s.rotateSigningKey(ctx, c)
	case *RecordCost:
		return s.recordCost(ctx, c)
	case *SetExchangeRates:
		return s.setExchangeRates(ctx, c)
	case *SetAnomalyDetector:
		return s.setAnomalyDetector(ctx, c)
	case *CreateQuotaPool:
		return s.createQuotaPool(ctx, c)
	case *SetQuotaConsumer:
		return s.setQuotaConsumer(ctx, c)
	case *SetQuotaDemand:
		return s.setQuotaDemand(ctx, c)
	case *QuotaConsume:
		return s.quotaConsume(ctx, c)
	case *RenewQuotaPool:
		return s.renewQuotaPool(ctx, c)
	case *AckAlert:
		return s.ackAlert(ctx, c)
	case *UpdateQuotaPool:
		return s.updateQuotaPool(ctx, c)
	case *DeleteQuotaPool:
		return s.deleteQuotaPool(c)
	case *SetQuotaConsumers:
		return s.setQuotaConsumers(ctx, c)
	case *CreateAPIKey:
		return s.createAPIKey(ctx, c)
	case *RevokeAPIKey:
		return s.revokeAPIKey(ctx, c)
	}
	panic(fmt.Sprintf("fsm: no handler for command type %d", c.Type()))
}

// AppliedIndex is the index of the last applied entry.
func (m *Machine) AppliedIndex() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.lastIndex
}

// LastLogTimeMs is the log time of the last applied entry.
func (m *Machine) LastLogTimeMs() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.lastNowMs
}
