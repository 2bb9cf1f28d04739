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
}

// New returns an empty state machine.
func New() *Machine {
	return &Machine{s: newState()}
}

// ApplyEntry applies one committed log entry at index and returns one result
// per command. It panics on an entry it cannot decode: a replica that cannot
// apply the log exactly must stop rather than diverge.
func (m *Machine) ApplyEntry(index uint64, data []byte) *EntryResult {
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
	s.idem.expire(nowMs)

	out := &EntryResult{Index: index, NowMs: nowMs, Results: make([]Result, len(cmds))}
	for i, c := range cmds {
		ctx := applyCtx{index: index, nowMs: nowMs, pos: i}
		out.Results[i] = s.applyIdempotent(ctx, c, entry.Commands[i])
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
	tenant, requestID := c.idempotencyKey()
	if requestID == "" {
		r := s.apply(ctx, c)
		r.Index = ctx.index
		return r
	}
	fp := fingerprint(raw)
	if rec := s.idem.get(tenant, requestID); rec != nil {
		if rec.Fingerprint != fp {
			return Result{Index: ctx.index, Err: errorf(CodeFailedPrecondition,
				"request_id %q was already used in tenant %q for a different request", requestID, tenant)}
		}
		r := rec.Result
		r.Replayed = true
		return r
	}
	if s.idem.len() >= IdempotencyEntriesMax {
		return Result{Index: ctx.index, Err: errorf(CodeResourceExhausted,
			"the idempotency table holds its maximum of %d request ids; retry later", IdempotencyEntriesMax)}
	}
	r := s.apply(ctx, c)
	r.Index = ctx.index
	s.idem.put(&idemRecord{Tenant: tenant, RequestID: requestID, Fingerprint: fp, AtMs: ctx.nowMs, Result: r})
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
