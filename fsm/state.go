package fsm

import (
	"crypto/ed25519"
	"strings"
)

// objectKey names a budget, hold or policy within its tenant.
type objectKey struct {
	Tenant string
	ID     string
}

func (k objectKey) less(o objectKey) bool {
	if k.Tenant != o.Tenant {
		return k.Tenant < o.Tenant
	}
	return k.ID < o.ID
}

// ThresholdCrossing records the first time in a period that spend reached a
// threshold.
type ThresholdCrossing struct {
	Percent  uint32 `msgpack:"p"`
	AtMs     int64  `msgpack:"t"`
	LogIndex uint64 `msgpack:"i"`
}

// PeriodUsage is a closed period of a budget.
type PeriodUsage struct {
	StartMs        int64    `msgpack:"s"`
	EndMs          int64    `msgpack:"e"`
	AmountMicros   int64    `msgpack:"a"`
	SpentMicros    int64    `msgpack:"sp"`
	AllowedCount   uint64   `msgpack:"ac"`
	DeniedCount    uint64   `msgpack:"dc"`
	WouldDenyCount uint64   `msgpack:"wc"`
	Thresholds     []uint32 `msgpack:"th,omitempty"`
}

// Budget is a budget and its usage in the current period.
type Budget struct {
	Tenant      string     `msgpack:"t"`
	Spec        BudgetSpec `msgpack:"s"`
	CreatedAtMs int64      `msgpack:"ca"`
	UpdatedAtMs int64      `msgpack:"ua"`
	Version     uint64     `msgpack:"v"`
	// PeriodStartMs/PeriodEndMs bound the current period; PeriodEndMs is 0 for
	// PERIOD_NONE.
	PeriodStartMs  int64               `msgpack:"ps"`
	PeriodEndMs    int64               `msgpack:"pe"`
	SpentMicros    int64               `msgpack:"sp"`
	HeldMicros     int64               `msgpack:"he"`
	AllowedCount   uint64              `msgpack:"ac"`
	DeniedCount    uint64              `msgpack:"dc"`
	WouldDenyCount uint64              `msgpack:"wc"`
	Crossed        []ThresholdCrossing `msgpack:"cr,omitempty"`
	// History holds closed periods, newest first, at most BudgetHistoryMax.
	History     []PeriodUsage `msgpack:"hi,omitempty"`
	ActiveHolds uint32        `msgpack:"ah"`
	Children    uint32        `msgpack:"ch"`
}

// BudgetView is a copy of a budget handed out of the state machine.
type BudgetView = Budget

// RemainingMicros is amount - spent - held (negative after SOFT/SHADOW overspend).
func (b *Budget) RemainingMicros() int64 {
	return b.Spec.AmountMicros - b.SpentMicros - b.HeldMicros
}

func (b *Budget) clone() *Budget {
	c := *b
	c.Spec.Thresholds = append([]uint32(nil), b.Spec.Thresholds...)
	c.Spec.Selector = b.Spec.Selector.clone()
	c.Crossed = append([]ThresholdCrossing(nil), b.Crossed...)
	c.History = make([]PeriodUsage, len(b.History))
	for i, h := range b.History {
		c.History[i] = h
		c.History[i].Thresholds = append([]uint32(nil), h.Thresholds...)
	}
	return &c
}

// Hold reserves an amount on a budget and its ancestors until it is committed,
// released or expires.
type Hold struct {
	Tenant       string `msgpack:"t"`
	ID           string `msgpack:"id"`
	BudgetID     string `msgpack:"b"`
	AmountMicros int64  `msgpack:"a"`
	CreatedAtMs  int64  `msgpack:"ca"`
	ExpiresAtMs  int64  `msgpack:"x"`
}

// Policy is a rate-limit policy and its live counters.
type Policy struct {
	Tenant      string     `msgpack:"t"`
	Spec        PolicySpec `msgpack:"s"`
	CreatedAtMs int64      `msgpack:"ca"`
	UpdatedAtMs int64      `msgpack:"ua"`
	Version     uint64     `msgpack:"v"`
	// ActiveKeys is the number of live counters (output only).
	ActiveKeys uint64 `msgpack:"k"`

	keys map[string]*rateEntry
}

func (p *Policy) view() *Policy {
	c := *p
	c.Spec.Scales = append([]PriorityScale(nil), p.Spec.Scales...)
	c.ActiveKeys = uint64(len(p.keys))
	c.keys = nil
	return &c
}

// params returns the algorithm's numbers for a check at priority.
func (p *Policy) params(priority uint32) rateParams {
	percent := int64(100)
	for _, s := range p.Spec.Scales {
		if s.Priority == priority {
			percent = int64(s.Percent)
			break
		}
	}
	return rateParams{
		Algorithm: p.Spec.Algorithm,
		Limit:     p.Spec.Limit,
		Burst:     p.Spec.Burst,
		WindowMs:  p.Spec.WindowMs,
		Percent:   percent,
	}
}

// rateEntry is one key's counter under a policy.
type rateEntry struct {
	Key string `msgpack:"k"`
	// PolicyVersion and Algorithm are the policy's when the state was last
	// updated; a mismatch means the policy changed and the state is adapted.
	PolicyVersion uint64    `msgpack:"v"`
	Algorithm     Algorithm `msgpack:"a"`
	State         rateState `msgpack:"s"`

	policy *Policy
}

type holdExpiry struct {
	atMs int64
	hold *Hold
}

type rateExpiry struct {
	atMs  int64
	entry *rateEntry
}

// state is everything the log has built. Only Machine touches it.
type state struct {
	lastIndex uint64
	lastNowMs int64

	budgets  map[objectKey]*Budget
	holds    map[objectKey]*Hold
	policies map[objectKey]*Policy
	// Per-tenant indexes for listing: tenant -> id -> object.
	tenantBudgets  tenantIndex[*Budget]
	tenantPolicies tenantIndex[*Policy]
	rateKeys       int // live counters across all policies

	// removedServers are admin removals in log order (RemovedServersMax).
	removedServers []RemovedServer
	// receipts is the signing key history and the checkpoint chain head.
	receipts receiptState
	// signer caches the active key derived from its seed (not state).
	signer ed25519.PrivateKey

	// quotas are the quota pools.
	quotas map[objectKey]*QuotaPool
	// cost is the exchange-rate table, the hourly cost rollups and the
	// budgets with label selectors.
	cost costState

	// apiKeys are the API keys by id.
	apiKeys map[string]*APIKey

	holdExpiries expiryHeap[holdExpiry]
	rateExpiries expiryHeap[rateExpiry]
	idem         idempotencyTable
}

func newState() *state {
	return &state{
		budgets:  map[objectKey]*Budget{},
		holds:    map[objectKey]*Hold{},
		policies: map[objectKey]*Policy{},
		apiKeys:  map[string]*APIKey{},

		tenantBudgets:  tenantIndex[*Budget]{},
		tenantPolicies: tenantIndex[*Policy]{},
		holdExpiries: expiryHeap[holdExpiry]{less: func(a, b holdExpiry) bool {
			if a.atMs != b.atMs {
				return a.atMs < b.atMs
			}
			return objectKey{a.hold.Tenant, a.hold.ID}.less(objectKey{b.hold.Tenant, b.hold.ID})
		}},
		rateExpiries: expiryHeap[rateExpiry]{less: func(a, b rateExpiry) bool {
			if a.atMs != b.atMs {
				return a.atMs < b.atMs
			}
			pa, pb := a.entry.policy, b.entry.policy
			if c := strings.Compare(pa.Tenant, pb.Tenant); c != 0 {
				return c < 0
			}
			if c := strings.Compare(pa.Spec.ID, pb.Spec.ID); c != 0 {
				return c < 0
			}
			return a.entry.Key < b.entry.Key
		}},
		idem:   newIdempotencyTable(),
		cost:   newCostState(),
		quotas: map[objectKey]*QuotaPool{},
	}
}

// tenantIndex lists one kind of object per tenant: tenant -> id -> object.
type tenantIndex[T any] map[string]map[string]T

func (ix tenantIndex[T]) put(tenant, id string, v T) {
	ids := ix[tenant]
	if ids == nil {
		ids = map[string]T{}
		ix[tenant] = ids
	}
	ids[id] = v
}

func (ix tenantIndex[T]) remove(tenant, id string) {
	delete(ix[tenant], id)
	if len(ix[tenant]) == 0 {
		delete(ix, tenant)
	}
}

func (s *state) putBudget(b *Budget) {
	s.budgets[objectKey{b.Tenant, b.Spec.ID}] = b
	s.tenantBudgets.put(b.Tenant, b.Spec.ID, b)
	s.indexSelector(b)
}

func (s *state) removeBudget(b *Budget) {
	delete(s.budgets, objectKey{b.Tenant, b.Spec.ID})
	s.tenantBudgets.remove(b.Tenant, b.Spec.ID)
	s.cost.selectors.remove(b.Tenant, b.Spec.ID)
}

// indexSelector keeps the per-tenant index of budgets with a selector.
func (s *state) indexSelector(b *Budget) {
	if b.Spec.Selector != nil {
		s.cost.selectors.put(b.Tenant, b.Spec.ID, b)
	} else if s.cost.selectors[b.Tenant][b.Spec.ID] != nil {
		s.cost.selectors.remove(b.Tenant, b.Spec.ID)
	}
}

func (s *state) putPolicy(p *Policy) {
	s.policies[objectKey{p.Tenant, p.Spec.ID}] = p
	s.tenantPolicies.put(p.Tenant, p.Spec.ID, p)
}

func (s *state) removePolicy(p *Policy) {
	delete(s.policies, objectKey{p.Tenant, p.Spec.ID})
	s.tenantPolicies.remove(p.Tenant, p.Spec.ID)
}

// RemovedServer is one admin removal of a server from the Raft configuration.
type RemovedServer struct {
	ID          string `msgpack:"id"`
	Incarnation string `msgpack:"in"`
	AtMs        int64  `msgpack:"at"`
	LogIndex    uint64 `msgpack:"i"`
}

func (s *state) markServerRemoved(ctx applyCtx, c *MarkServerRemoved) {
	s.removedServers = append(s.removedServers, RemovedServer{ID: c.ID, Incarnation: c.Incarnation, AtMs: ctx.nowMs, LogIndex: ctx.index})
	if len(s.removedServers) > RemovedServersMax {
		s.removedServers = append([]RemovedServer(nil), s.removedServers[len(s.removedServers)-RemovedServersMax:]...)
	}
}
