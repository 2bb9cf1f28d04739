package fsm

import "sort"

// View is a read-only window on the state, valid only inside Machine.Read.
// Everything it returns is a copy.
type View struct {
	s *state
	// nowMs is the time reads are evaluated at: the later of the caller's
	// clock and the last log time, so a budget whose period ended while no
	// entry was written still reads as rolled over. Reads never mutate.
	nowMs int64
}

// ListPageMax bounds a list page.
const ListPageMax = 1000

// Read runs fn on a consistent view of the state evaluated at nowMs and
// returns the applied index the view reflects.
func (m *Machine) Read(nowMs int64, fn func(v View) error) (uint64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.lastIndex, fn(View{s: m.s, nowMs: max(nowMs, m.s.lastNowMs)})
}

// AppliedIndex is the index the view reflects.
func (v View) AppliedIndex() uint64 { return v.s.lastIndex }

// NowMs is the time the view evaluates periods at.
func (v View) NowMs() int64 { return v.nowMs }

// Budget returns a copy of a budget as the next entry stamped at the view's
// time would see it: period rolled, expired holds released.
func (v View) Budget(tenant, id string) (*Budget, error) {
	b := v.s.budgets[objectKey{tenant, id}]
	if b == nil {
		return nil, budgetNotFound(tenant, id).Err
	}
	return v.project(b, v.s.expiredHolds(v.nowMs)), nil
}

// project copies b and applies to the copy what the next entry at the view's
// time would do before any command: roll the period and release the expired
// holds on b or its descendants.
func (v View) project(b *Budget, expired []*Hold) *Budget {
	c := b.clone()
	rollPeriod(c, v.nowMs)
	for _, h := range expired {
		holder := v.s.budgets[objectKey{h.Tenant, h.BudgetID}]
		if h.Tenant != b.Tenant {
			continue
		}
		if holder == b {
			c.ActiveHolds--
		}
		for _, x := range v.s.chain(holder) {
			if x == b {
				c.HeldMicros -= h.AmountMicros
			}
		}
	}
	return c
}

// Budgets lists a tenant's budgets in id order, starting after afterID, at
// most limit (capped at ListPageMax); next is the id to continue after, or "".
func (v View) Budgets(tenant, afterID string, limit int) (page []*Budget, next string) {
	ids := sortedKeys(v.s.tenantBudgets[tenant], afterID)
	limit = min(max(limit, 1), ListPageMax)
	expired := v.s.expiredHolds(v.nowMs)
	for i, id := range ids {
		if i == limit {
			return page, page[len(page)-1].Spec.ID
		}
		page = append(page, v.project(v.s.tenantBudgets[tenant][id], expired))
	}
	return page, ""
}

// CheckBudget is a dry run of Consume: the decision Consume would take now,
// without charging.
func (v View) CheckBudget(tenant, id string, amountMicros int64) (*SpendResult, error) {
	if err := validateAmount("amount", amountMicros, false); err != nil {
		return nil, err
	}
	b := v.s.budgets[objectKey{tenant, id}]
	if b == nil {
		return nil, budgetNotFound(tenant, id).Err
	}
	var chain []*Budget
	expired := v.s.expiredHolds(v.nowMs)
	for _, x := range v.s.chain(b) {
		chain = append(chain, v.project(x, expired))
	}
	f := checkFit(chain, amountMicros, v.nowMs)
	if f.overflow {
		return nil, overflowResult(id).Err
	}
	if f.deniedBy != nil {
		return spendDenied(chain[0], f), nil
	}
	return charge(applyCtx{nowMs: v.nowMs}, chain, amountMicros, f), nil
}

// Policy returns a copy of a rate-limit policy.
func (v View) Policy(tenant, id string) (*Policy, error) {
	p := v.s.policies[objectKey{tenant, id}]
	if p == nil {
		return nil, policyNotFound(tenant, id).Err
	}
	return p.view(), nil
}

// Policies lists a tenant's policies in id order (see Budgets).
func (v View) Policies(tenant, afterID string, limit int) (page []*Policy, next string) {
	ids := sortedKeys(v.s.tenantPolicies[tenant], afterID)
	limit = min(max(limit, 1), ListPageMax)
	for i, id := range ids {
		if i == limit {
			return page, page[len(page)-1].Spec.ID
		}
		page = append(page, v.s.tenantPolicies[tenant][id].view())
	}
	return page, ""
}

// Counts reports table sizes (for metrics and status).
type Counts struct {
	Budgets, Holds, Policies, RateKeys, IdempotencyEntries int
}

// Counts returns the current table sizes.
func (v View) Counts() Counts {
	return Counts{
		Budgets:            len(v.s.budgets),
		Holds:              len(v.s.holds),
		Policies:           len(v.s.policies),
		RateKeys:           v.s.rateKeys,
		IdempotencyEntries: v.s.idem.len(),
	}
}

func sortedKeys[T any](m map[string]T, after string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k > after {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// ServerRemoved reports whether an admin removed the server with this id and
// incarnation (an empty recorded incarnation matches any).
func (v View) ServerRemoved(id, incarnation string) bool {
	for _, r := range v.s.removedServers {
		if r.ID == id && (r.Incarnation == "" || r.Incarnation == incarnation) {
			return true
		}
	}
	return false
}
