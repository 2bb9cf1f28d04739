package fsm

import (
	"math/bits"
	"strconv"
)

// applyCtx is what one command may know about its entry.
type applyCtx struct {
	index uint64
	nowMs int64
	pos   int // position of the command in the entry
	// leaves collects the entry's receipt leaves.
	leaves *leafBuilder
	// alerts records an alert the command raised (nil: none kept).
	alerts func(*Alert)
}

func (s *state) createBudget(ctx applyCtx, c *CreateBudget) Result {
	key := objectKey{c.Tenant, c.Budget.ID}
	if _, ok := s.budgets[key]; ok {
		return Result{Err: errorf(CodeAlreadyExists, "budget %q already exists in tenant %q", c.Budget.ID, c.Tenant)}
	}
	if len(s.budgets) >= BudgetsMax {
		return Result{Err: errorf(CodeResourceExhausted, "the cluster holds the maximum of %d budgets", BudgetsMax)}
	}
	if c.Budget.Selector != nil && len(s.cost.selectors[c.Tenant]) >= SelectorBudgetsMax {
		return Result{Err: errorf(CodeResourceExhausted, "tenant %q has the maximum of %d budgets with a selector", c.Tenant, SelectorBudgetsMax)}
	}
	var parent *Budget
	if c.Budget.ParentID != "" {
		parent = s.budgets[objectKey{c.Tenant, c.Budget.ParentID}]
		if parent == nil {
			return Result{Err: errorf(CodeNotFound, "budget.parent_id: budget %q not found in tenant %q", c.Budget.ParentID, c.Tenant)}
		}
		if parent.Spec.Currency != c.Budget.Currency {
			return Result{Err: invalidf("budget.currency %s differs from the parent's %s", c.Budget.Currency, parent.Spec.Currency)}
		}
		if depth := len(s.chain(parent)) + 1; depth > BudgetDepthMax {
			return Result{Err: invalidf("budget.parent_id: a budget chain may be at most %d deep", BudgetDepthMax)}
		}
	}
	b := &Budget{
		Tenant:      c.Tenant,
		Spec:        c.Budget,
		CreatedAtMs: ctx.nowMs,
		UpdatedAtMs: ctx.nowMs,
		Version:     1,
	}
	b.Spec.Thresholds = append([]uint32(nil), c.Budget.Thresholds...)
	b.Spec.Selector = c.Budget.Selector.clone()
	b.PeriodStartMs, b.PeriodEndMs = periodBounds(&b.Spec, b.CreatedAtMs, ctx.nowMs)
	s.putBudget(b)
	if parent != nil {
		parent.Children++
	}
	return Result{Budget: b.clone()}
}

func (s *state) updateBudget(ctx applyCtx, c *UpdateBudget) Result {
	b := s.budgets[objectKey{c.Tenant, c.Budget.ID}]
	if b == nil {
		return budgetNotFound(c.Tenant, c.Budget.ID)
	}
	if c.Fields&UpdateSelector != 0 && c.Budget.Selector != nil && b.Spec.Selector == nil &&
		len(s.cost.selectors[c.Tenant]) >= SelectorBudgetsMax {
		return Result{Err: errorf(CodeResourceExhausted, "tenant %q has the maximum of %d budgets with a selector", c.Tenant, SelectorBudgetsMax)}
	}
	rollPeriod(b, ctx.nowMs)
	if c.Fields&UpdateSelector != 0 {
		b.Spec.Selector = c.Budget.Selector.clone()
		s.indexSelector(b)
	}
	if c.Fields&UpdateAmount != 0 {
		b.Spec.AmountMicros = c.Budget.AmountMicros
	}
	if c.Fields&UpdateEnforcement != 0 {
		b.Spec.Enforcement = c.Budget.Enforcement
	}
	if c.Fields&UpdateThresholds != 0 {
		b.Spec.Thresholds = append([]uint32(nil), c.Budget.Thresholds...)
	}
	b.Version++
	b.UpdatedAtMs = ctx.nowMs
	return Result{Budget: b.clone()}
}

func (s *state) deleteBudget(c *DeleteBudget) Result {
	key := objectKey{c.Tenant, c.BudgetID}
	b := s.budgets[key]
	if b == nil {
		return budgetNotFound(c.Tenant, c.BudgetID)
	}
	if b.Children > 0 {
		return Result{Err: errorf(CodeFailedPrecondition, "budget %q has %d child budgets; delete them first", c.BudgetID, b.Children)}
	}
	released := uint32(0)
	if b.ActiveHolds > 0 {
		// Releasing is a sum over the holds, so the map's iteration order
		// does not change the resulting state.
		for hk, h := range s.holds {
			if hk.Tenant == c.Tenant && h.BudgetID == c.BudgetID {
				s.dropHold(h)
				released++
			}
		}
	}
	if b.Spec.ParentID != "" {
		s.budgets[objectKey{c.Tenant, b.Spec.ParentID}].Children--
	}
	s.removeBudget(b)
	return Result{Delete: &DeleteResult{ReleasedHolds: released}}
}

func budgetNotFound(tenant, id string) Result {
	return Result{Err: errorf(CodeNotFound, "budget %q not found in tenant %q", id, tenant)}
}

// chain returns b followed by its ancestors, nearest first.
func (s *state) chain(b *Budget) []*Budget {
	out := []*Budget{b}
	for b.Spec.ParentID != "" {
		b = s.budgets[objectKey{b.Tenant, b.Spec.ParentID}]
		if b == nil || len(out) > BudgetDepthMax {
			panic("fsm: broken budget chain") // create keeps parents alive and chains short
		}
		out = append(out, b)
	}
	return out
}

// fit is the outcome of checking an amount against a chain of budgets.
type fit struct {
	deniedBy  *Budget // first HARD budget without room
	wouldDeny bool    // a SOFT/SHADOW budget without room
	overflow  bool    // charging would overflow a counter
}

// checkFit rolls each budget of the chain to nowMs and checks that amount fits
// in what is neither spent nor held.
func checkFit(chain []*Budget, amount, nowMs int64) fit {
	var f fit
	for _, b := range chain {
		rollPeriod(b, nowMs)
		used, ok := addMicros(b.SpentMicros, b.HeldMicros)
		if ok {
			used, ok = addMicros(used, amount)
		}
		if !ok {
			f.overflow = true
			return f
		}
		if used <= b.Spec.AmountMicros {
			continue
		}
		if b.Spec.Enforcement == EnforcementHard {
			if f.deniedBy == nil {
				f.deniedBy = b
			}
		} else {
			f.wouldDeny = true
		}
	}
	return f
}

func overflowResult(id string) Result {
	return Result{Err: errorf(CodeResourceExhausted, "budget %q: the spend counter would overflow", id)}
}

func spendDenied(b *Budget, f fit) *SpendResult {
	b.DeniedCount++
	return &SpendResult{
		Allowed:         false,
		Reason:          ReasonBudgetExceeded,
		DeniedBy:        f.deniedBy.Spec.ID,
		BudgetID:        b.Spec.ID,
		Currency:        b.Spec.Currency,
		RemainingMicros: b.RemainingMicros(),
		SpentMicros:     b.SpentMicros,
	}
}

// charge adds amount to the spend of every budget in the chain, records the
// thresholds crossed and returns the named budget's result.
func charge(ctx applyCtx, chain []*Budget, amount int64, f fit) *SpendResult {
	b := chain[0]
	var crossed []uint32
	for i, x := range chain {
		x.SpentMicros += amount // checkFit proved it cannot overflow
		got := recordThresholds(ctx, x)
		if i == 0 {
			crossed = got
		}
	}
	b.AllowedCount++
	if f.wouldDeny {
		b.WouldDenyCount++
		exceededAlert(ctx, b)
	}
	return &SpendResult{
		Allowed:         true,
		BudgetID:        b.Spec.ID,
		Currency:        b.Spec.Currency,
		RemainingMicros: b.RemainingMicros(),
		SpentMicros:     b.SpentMicros,
		WouldDeny:       f.wouldDeny,
		Thresholds:      crossed,
	}
}

// recordThresholds notes each threshold that spend reached for the first time
// this period. SHADOW budgets only count would-deny decisions.
func recordThresholds(ctx applyCtx, b *Budget) []uint32 {
	if b.Spec.Enforcement == EnforcementShadow {
		return nil
	}
	var crossed []uint32
	for _, t := range b.Spec.Thresholds {
		if !reachedPercent(b.SpentMicros, b.Spec.AmountMicros, t) || thresholdCrossed(b, t) {
			continue
		}
		b.Crossed = append(b.Crossed, ThresholdCrossing{Percent: t, AtMs: ctx.nowMs, LogIndex: ctx.index})
		crossed = append(crossed, t)
		ctx.raise(&Alert{Tenant: b.Tenant, Kind: AlertBudgetThreshold, Object: b.Spec.ID, Percent: t, BucketStartMs: b.PeriodStartMs,
			BucketEndMs: b.PeriodEndMs, Currency: b.Spec.Currency, ObservedMicros: b.SpentMicros, BaselineMicros: b.Spec.AmountMicros})
	}
	return crossed
}

func thresholdCrossed(b *Budget, percent uint32) bool {
	for _, c := range b.Crossed {
		if c.Percent == percent {
			return true
		}
	}
	return false
}

// reachedPercent reports spent*100 >= amount*percent without overflow.
func reachedPercent(spent, amount int64, percent uint32) bool {
	if spent <= 0 {
		return false
	}
	lh, ll := bits.Mul64(uint64(spent), 100)
	rh, rl := bits.Mul64(uint64(amount), uint64(percent))
	return lh > rh || (lh == rh && ll >= rl)
}

func (s *state) consume(ctx applyCtx, c *Consume) Result {
	b := s.budgets[objectKey{c.Tenant, c.BudgetID}]
	if b == nil {
		return budgetNotFound(c.Tenant, c.BudgetID)
	}
	chain := s.chain(b)
	f := checkFit(chain, c.AmountMicros, ctx.nowMs)
	switch {
	case f.overflow:
		return overflowResult(c.BudgetID)
	case f.deniedBy != nil:
		return Result{Spend: spendDenied(b, f)}
	}
	return Result{Spend: charge(ctx, chain, c.AmountMicros, f)}
}

// consumeAtomic charges every item or none. Items are checked in order against
// the state as it would be after the earlier items, so two items on one
// budget cannot together pass its amount.
func (s *state) consumeAtomic(ctx applyCtx, c *ConsumeAtomic) Result {
	chains := make([][]*Budget, len(c.Items))
	for i, it := range c.Items {
		b := s.budgets[objectKey{c.Tenant, it.BudgetID}]
		if b == nil {
			r := budgetNotFound(c.Tenant, it.BudgetID)
			r.Err.Message = "items[" + strconv.Itoa(i) + "]: " + r.Err.Message
			return r
		}
		chains[i] = s.chain(b)
	}
	// Roll every chain first: the items after a failing one are never
	// checked, and their results and denial counts must still belong to the
	// current period.
	for _, chain := range chains {
		for _, x := range chain {
			rollPeriod(x, ctx.nowMs)
		}
	}
	// Tentatively charge in order; undo everything if one item fails.
	results := make([]SpendResult, len(c.Items))
	fits := make([]fit, len(c.Items))
	failed := -1
	for i, it := range c.Items {
		fits[i] = checkFit(chains[i], it.AmountMicros, ctx.nowMs)
		if fits[i].overflow {
			s.uncharge(chains[:i], c.Items[:i])
			return overflowResult(it.BudgetID)
		}
		if fits[i].deniedBy != nil {
			failed = i
			break
		}
		for _, x := range chains[i] {
			x.SpentMicros += it.AmountMicros
		}
	}
	if failed >= 0 {
		s.uncharge(chains[:failed], c.Items[:failed])
		for i := range c.Items {
			b := chains[i][0]
			if i == failed {
				results[i] = *spendDenied(b, fits[i])
				continue
			}
			b.DeniedCount++
			results[i] = SpendResult{Reason: ReasonBatchAborted, BudgetID: b.Spec.ID, Currency: b.Spec.Currency,
				RemainingMicros: b.RemainingMicros(), SpentMicros: b.SpentMicros}
		}
		return Result{Batch: results}
	}
	// All fit: take the tentative charges back and apply them for real, so
	// thresholds and counters are recorded exactly as for single consumes.
	s.uncharge(chains, c.Items)
	for i, it := range c.Items {
		results[i] = *charge(ctx, chains[i], it.AmountMicros, fits[i])
	}
	return Result{Batch: results}
}

func (s *state) uncharge(chains [][]*Budget, items []ConsumeItem) {
	for i := range chains {
		for _, x := range chains[i] {
			x.SpentMicros -= items[i].AmountMicros
		}
	}
}

func (s *state) reserve(ctx applyCtx, c *Reserve) Result {
	b := s.budgets[objectKey{c.Tenant, c.BudgetID}]
	if b == nil {
		return budgetNotFound(c.Tenant, c.BudgetID)
	}
	if len(s.holds) >= HoldsMax {
		return Result{Err: errorf(CodeResourceExhausted, "the cluster holds the maximum of %d holds", HoldsMax)}
	}
	chain := s.chain(b)
	f := checkFit(chain, c.AmountMicros, ctx.nowMs)
	switch {
	case f.overflow:
		return overflowResult(c.BudgetID)
	case f.deniedBy != nil:
		return Result{Spend: spendDenied(b, f)}
	}
	h := &Hold{
		Tenant:       c.Tenant,
		ID:           "h" + strconv.FormatUint(ctx.index, 10) + "-" + strconv.Itoa(ctx.pos),
		BudgetID:     c.BudgetID,
		AmountMicros: c.AmountMicros,
		CreatedAtMs:  ctx.nowMs,
		ExpiresAtMs:  ctx.nowMs + c.TTLMs,
	}
	s.addHold(h)
	if f.wouldDeny {
		b.WouldDenyCount++
		exceededAlert(ctx, b)
	}
	return Result{Spend: &SpendResult{
		Allowed:         true,
		BudgetID:        b.Spec.ID,
		Currency:        b.Spec.Currency,
		RemainingMicros: b.RemainingMicros(),
		SpentMicros:     b.SpentMicros,
		WouldDeny:       f.wouldDeny,
		HoldID:          h.ID,
		HoldExpiresAtMs: h.ExpiresAtMs,
	}}
}

func (s *state) addHold(h *Hold) {
	b := s.budgets[objectKey{h.Tenant, h.BudgetID}]
	for _, x := range s.chain(b) {
		x.HeldMicros += h.AmountMicros
	}
	b.ActiveHolds++
	s.holds[objectKey{h.Tenant, h.ID}] = h
	s.holdExpiries.Push(holdExpiry{atMs: h.ExpiresAtMs, hold: h})
}

// dropHold removes a hold and gives its amount back to the chain.
func (s *state) dropHold(h *Hold) {
	b := s.budgets[objectKey{h.Tenant, h.BudgetID}]
	for _, x := range s.chain(b) {
		x.HeldMicros -= h.AmountMicros
		if x.HeldMicros < 0 {
			panic("fsm: negative held amount")
		}
	}
	b.ActiveHolds--
	delete(s.holds, objectKey{h.Tenant, h.ID})
}

func (s *state) commit(ctx applyCtx, c *Commit) Result {
	h := s.holds[objectKey{c.Tenant, c.HoldID}]
	if h == nil {
		return Result{Spend: &SpendResult{Reason: ReasonHoldNotActive}}
	}
	b := s.budgets[objectKey{h.Tenant, h.BudgetID}]
	chain := s.chain(b)
	// What was reserved is always granted; only an excess must fit.
	excess := c.AmountMicros - h.AmountMicros
	f := checkFit(chain, max(excess, 0), ctx.nowMs)
	switch {
	case f.overflow:
		return overflowResult(h.BudgetID)
	case excess > 0 && f.deniedBy != nil:
		return Result{Spend: spendDenied(b, f)}
	}
	if excess <= 0 {
		f = fit{}
	}
	s.dropHold(h)
	return Result{Spend: charge(ctx, chain, c.AmountMicros, f)}
}

func (s *state) release(ctx applyCtx, c *Release) Result {
	h := s.holds[objectKey{c.Tenant, c.HoldID}]
	if h == nil {
		return Result{Err: errorf(CodeNotFound, "hold %q is not active in tenant %q (expired, committed, released or never made)", c.HoldID, c.Tenant)}
	}
	s.dropHold(h)
	b := s.budgets[objectKey{h.Tenant, h.BudgetID}]
	// The result reports the budget in the period of the release.
	rollPeriod(b, ctx.nowMs)
	return Result{Spend: &SpendResult{
		Allowed:         true,
		BudgetID:        b.Spec.ID,
		Currency:        b.Spec.Currency,
		RemainingMicros: b.RemainingMicros(),
		SpentMicros:     b.SpentMicros,
		ReleasedMicros:  h.AmountMicros,
	}}
}

// expiredHolds returns the live holds whose expiry is at or before nowMs
// without changing anything (for reads). It walks only the part of the heap
// at or before nowMs: a node later than nowMs has no earlier descendants.
func (s *state) expiredHolds(nowMs int64) []*Hold {
	var out []*Hold
	items := s.holdExpiries.items
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(items) || items[i].atMs > nowMs {
			continue
		}
		if h := items[i].hold; s.holds[objectKey{h.Tenant, h.ID}] == h {
			out = append(out, h)
		}
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return out
}

// expireHolds releases every hold whose expiry is at or before nowMs.
func (s *state) expireHolds(nowMs int64) {
	for s.holdExpiries.Len() > 0 && s.holdExpiries.Peek().atMs <= nowMs {
		h := s.holdExpiries.Pop().hold
		if s.holds[objectKey{h.Tenant, h.ID}] == h {
			s.dropHold(h)
		}
	}
}

// exceededAlert raises BUDGET_EXCEEDED the first time in a period that a
// SOFT or SHADOW budget let through what HARD would have denied.
func exceededAlert(ctx applyCtx, b *Budget) {
	if b.WouldDenyCount == 1 {
		ctx.raise(&Alert{Tenant: b.Tenant, Kind: AlertBudgetExceeded, Object: b.Spec.ID, BucketStartMs: b.PeriodStartMs,
			BucketEndMs: b.PeriodEndMs, Currency: b.Spec.Currency, ObservedMicros: b.SpentMicros, BaselineMicros: b.Spec.AmountMicros})
	}
}
