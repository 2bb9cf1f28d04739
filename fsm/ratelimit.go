package fsm

func policyNotFound(tenant, id string) Result {
	return Result{Err: errorf(CodeNotFound, "policy %q not found in tenant %q", id, tenant)}
}

func (s *state) createPolicy(ctx applyCtx, c *CreatePolicy) Result {
	key := objectKey{c.Tenant, c.Policy.ID}
	if _, ok := s.policies[key]; ok {
		return Result{Err: errorf(CodeAlreadyExists, "policy %q already exists in tenant %q", c.Policy.ID, c.Tenant)}
	}
	if len(s.policies) >= PoliciesMax {
		return Result{Err: errorf(CodeResourceExhausted, "the cluster holds the maximum of %d policies", PoliciesMax)}
	}
	p := &Policy{
		Tenant:      c.Tenant,
		Spec:        c.Policy,
		CreatedAtMs: ctx.nowMs,
		UpdatedAtMs: ctx.nowMs,
		Version:     1,
		keys:        map[string]*rateEntry{},
	}
	p.Spec.Scales = append([]PriorityScale(nil), c.Policy.Scales...)
	s.putPolicy(p)
	return Result{Policy: p.view()}
}

func (s *state) updatePolicy(ctx applyCtx, c *UpdatePolicy) Result {
	p := s.policies[objectKey{c.Tenant, c.Policy.ID}]
	if p == nil {
		return policyNotFound(c.Tenant, c.Policy.ID)
	}
	merged := p.Spec
	if c.Fields&UpdateAlgorithm != 0 {
		merged.Algorithm = c.Policy.Algorithm
	}
	if c.Fields&UpdateLimit != 0 {
		merged.Limit = c.Policy.Limit
	}
	if c.Fields&UpdateWindow != 0 {
		merged.WindowMs = c.Policy.WindowMs
	}
	if c.Fields&UpdateBurst != 0 {
		merged.Burst = c.Policy.Burst
	}
	if c.Fields&UpdateScales != 0 {
		merged.Scales = append([]PriorityScale(nil), c.Policy.Scales...)
	}
	if err := validatePolicySpec(&merged); err != nil {
		return Result{Err: err}
	}
	p.Spec = merged
	p.Version++
	p.UpdatedAtMs = ctx.nowMs
	return Result{Policy: p.view()}
}

func (s *state) deletePolicy(c *DeletePolicy) Result {
	key := objectKey{c.Tenant, c.PolicyID}
	p := s.policies[key]
	if p == nil {
		return policyNotFound(c.Tenant, c.PolicyID)
	}
	removed := uint64(len(p.keys))
	s.rateKeys -= len(p.keys)
	s.removePolicy(p)
	// Expiry records of its keys go stale and are dropped when popped.
	return Result{Delete: &DeleteResult{RemovedKeys: removed}}
}

func (s *state) rateCheck(ctx applyCtx, c *RateCheck) Result {
	p := s.policies[objectKey{c.Tenant, c.PolicyID}]
	if p == nil {
		return policyNotFound(c.Tenant, c.PolicyID)
	}
	full := p.params(0)
	full.Percent = 100
	e := p.keys[c.Key]
	if e == nil {
		if s.rateKeys >= RateKeysMax {
			return Result{Err: errorf(CodeResourceExhausted, "the cluster holds the maximum of %d live rate-limit keys", RateKeysMax)}
		}
		e = &rateEntry{Key: c.Key, PolicyVersion: p.Version, Algorithm: p.Spec.Algorithm,
			State: newRateState(full, ctx.nowMs), policy: p}
		p.keys[c.Key] = e
		s.rateKeys++
		s.rateExpiries.Push(rateExpiry{atMs: e.State.ExpiresAtMs, entry: e})
	} else if e.PolicyVersion != p.Version {
		rateAdapt(&e.State, full, e.Algorithm != p.Spec.Algorithm, ctx.nowMs)
		e.PolicyVersion, e.Algorithm = p.Version, p.Spec.Algorithm
	}
	d := rateCheck(&e.State, p.params(c.Priority), ctx.nowMs, c.Cost)
	return Result{Rate: &RateResult{
		Allowed:      d.Allowed,
		Reason:       d.Reason,
		Remaining:    d.Remaining,
		Limit:        d.Limit,
		ResetAfterMs: d.ResetAfterMs,
		RetryAfterMs: d.RetryAfterMs,
	}}
}

// expireRateKeys deletes every counter that is back to its fresh state at
// nowMs; deleting it cannot change a later decision. Each live counter has
// exactly one expiry record; a record whose counter moved on is re-queued
// with the counter's current expiry.
func (s *state) expireRateKeys(nowMs int64) {
	for s.rateExpiries.Len() > 0 && s.rateExpiries.Peek().atMs <= nowMs {
		e := s.rateExpiries.Pop().entry
		p := e.policy
		if s.policies[objectKey{p.Tenant, p.Spec.ID}] != p || p.keys[e.Key] != e {
			continue // policy deleted (or recreated): the record is stale
		}
		if e.State.ExpiresAtMs > nowMs {
			s.rateExpiries.Push(rateExpiry{atMs: e.State.ExpiresAtMs, entry: e})
			continue
		}
		delete(p.keys, e.Key)
		s.rateKeys--
	}
}
