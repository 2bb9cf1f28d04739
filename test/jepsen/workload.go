package jepsen

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/checker"
	"github.com/tollgate/tollgate/test/procs"
)

const (
	tenant = "jepsen"
	// recoveryKey is the budget of the consume that proves recovery after
	// healing (a budget no worker touches).
	recoveryKey = "recovery"
	policyID    = "p"
	// holdTTL: holds that are neither committed nor released expire by log
	// time.
	holdTTL = "30s"
	// retryAgeMin..retryAgeMax: which finished requests are re-sent. The
	// upper bound keeps re-sends well inside the 10-minute idempotency
	// retention (measured in log time, which a clock-offset leader moves
	// ahead by up to ClockOffsetMax).
	retryAgeMin = 500 * time.Millisecond
	retryAgeMax = 2 * time.Minute
	// retryPoolMax bounds the remembered requests.
	retryPoolMax = 4096
	// idempotencyRetention is how long (in log time) tollgate remembers a
	// request id's answer (proto: "within 10 minutes").
	idempotencyRetention = 10 * time.Minute
	// Client numbers of the harness's own operations (workers are 0..).
	clientResolver = 900
	clientRecovery = 901
	clientProbe    = 1000
)

// The rate-limit policy the workload checks against: a token bucket.
const (
	rateLimit  = 10 // tokens per rateWindow
	rateWindow = time.Second
	rateBurst  = 20
	rateKeys   = 3
)

// objects are what the run creates before the workload starts.
type objects struct {
	consumeKeys []string
	holdKeys    []string
	rateKeys    []string // counter keys of policyID
	// budgets: every budget key (consume, hold and recovery) -> micros.
	budgets map[string]int64
}

// newObjects sizes the budgets so that some run out during the run (so
// denials and the edge of the budget are exercised) and some never do.
func newObjects(cfg Config) objects {
	total := float64(cfg.Mix.Consume + cfg.Mix.Retry + cfg.Mix.LinRead + cfg.Mix.LeaderRead + cfg.Mix.StaleRead + cfg.Mix.Hold + cfg.Mix.Rate)
	opsPerSec := float64(cfg.Workers) * cfg.OpsPerSecond
	// Expected units consumed per key over the run (amounts average 3),
	// discounted for the time faults leave the cluster unavailable.
	perKey := opsPerSec * float64(cfg.Mix.Consume) / total * 3 / 4 * cfg.Duration.Seconds() * 0.6
	holdPerKey := opsPerSec * float64(cfg.Mix.Hold) / total * 0.4 * 3 / 2 * cfg.Duration.Seconds() * 0.6
	units := func(f float64) int64 { return max(int64(f), 20) * 1_000_000 }
	o := objects{
		consumeKeys: []string{"c0", "c1", "c2", "c3"},
		holdKeys:    []string{"h0", "h1"},
		budgets: map[string]int64{
			"c0": units(perKey * 0.3), "c1": units(perKey * 0.7), "c2": units(perKey * 1.5), "c3": units(1e9),
			"h0": units(holdPerKey * 0.5), "h1": units(1e9),
			recoveryKey: units(1e6),
		},
	}
	for i := range rateKeys {
		o.rateKeys = append(o.rateKeys, "k"+strconv.Itoa(i))
	}
	return o
}

// create makes the budgets and the policy (each with a request id, so a
// retry after an unknown outcome is safe).
func (o objects) create(ctx context.Context, cl *client.Client) error {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range o.budgets {
			if !yield(k) {
				return
			}
		}
	})
	for _, key := range keys {
		_, err := cl.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
			Tenant: tenant, RequestId: "create-" + key,
			Budget: &tollgatev1.Budget{Id: key, Amount: formatMicros(o.budgets[key]), Currency: "USD",
				Period: tollgatev1.Period_PERIOD_NONE, Enforcement: tollgatev1.Enforcement_ENFORCEMENT_HARD}}))
		if err != nil {
			return fmt.Errorf("create budget %s: %w", key, err)
		}
	}
	_, err := cl.RateLimits.CreatePolicy(ctx, connect.NewRequest(&tollgatev1.CreatePolicyRequest{
		Tenant: tenant, RequestId: "create-policy",
		Policy: &tollgatev1.Policy{Id: policyID, Algorithm: tollgatev1.Algorithm_ALGORITHM_TOKEN_BUCKET,
			Limit: rateLimit, Window: rateWindow.String(), Burst: rateBurst}}))
	if err != nil {
		return fmt.Errorf("create policy: %w", err)
	}
	return nil
}

// request is everything needed to send a mutation again with its request
// id: a deliberate retry during the run, or resolving an unknown outcome
// after healing.
type request struct {
	kind      checker.Kind
	key       string // budget id, or "policy/key" for rate checks
	amount    string // decimal units (consume, reserve, commit)
	cost      int64  // rate checks
	holdID    string // commit, release
	requestID string
	doneNs    int64
}

// workload runs the workers and probes and records every operation.
type workload struct {
	cfg     Config
	rec     *checker.Recorder
	obj     objects
	nodeIDs map[string]string // API address -> node id

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	clients []*client.Client

	mu       sync.Mutex
	pool     []request // finished requests that may be re-sent
	poolNext int
	unknown  []request // mutations recorded Unknown, resolved after healing
	// refs: op ID -> the receipt reference its OK answer named (the
	// history type has no field for it; the receipts check reads it).
	refs map[int64]receiptRef
	// violations found while the run goes (check name -> problems).
	violations map[string][]string
	seq        atomic.Int64
}

func newWorkload(cfg Config, rec *checker.Recorder, obj objects, nodes []*procs.Node) *workload {
	wl := &workload{cfg: cfg, rec: rec, obj: obj, nodeIDs: map[string]string{}, stop: make(chan struct{}),
		violations: map[string][]string{}, refs: map[int64]receiptRef{}}
	for _, n := range nodes {
		wl.nodeIDs[n.APIAddr] = n.ID
	}
	return wl
}

func (wl *workload) violation(check, format string, args ...any) {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	wl.violations[check] = append(wl.violations[check], fmt.Sprintf(format, args...))
}

// start launches the workers and the probes on nodes (the members at the
// start). A third of the workers talk to every node (the SDK follows
// leader hints); the others are pinned to one node, most of them a
// follower, which forwards.
func (wl *workload) start(nodes []*procs.Node) error {
	for i := range wl.cfg.Workers {
		var a []string
		pinned := ""
		if i%3 == 0 {
			// Every node, starting at a different one per worker.
			for j := range nodes {
				a = append(a, nodes[(i+j)%len(nodes)].APIAddr)
			}
		} else {
			n := nodes[i%len(nodes)]
			a, pinned = []string{n.APIAddr}, n.ID
		}
		cl, err := client.New(a, client.WithRequestTimeout(wl.cfg.TryTimeout))
		if err != nil {
			return err
		}
		wl.clients = append(wl.clients, cl)
		w := &worker{wl: wl, id: i, cl: cl, pinned: pinned, rnd: rand.New(rand.NewSource(wl.cfg.Seed*1000 + int64(i)))}
		wl.wg.Add(1)
		go w.run()
	}
	if wl.cfg.Probe.Interval > 0 {
		for i, n := range nodes {
			cl, err := client.New([]string{n.APIAddr}, client.WithoutRetries(), client.WithRequestTimeout(wl.cfg.Probe.Timeout))
			if err != nil {
				return err
			}
			wl.clients = append(wl.clients, cl)
			wl.wg.Add(1)
			go wl.probe(cl, n, i)
		}
	}
	return nil
}

// halt stops the workers and probes and waits for their last operations
// (each bounded by OpTimeout). Safe to call more than once.
func (wl *workload) halt() {
	wl.stopped.Do(func() { close(wl.stop) })
	wl.wg.Wait()
	for _, cl := range wl.clients {
		cl.Close()
	}
}

func (wl *workload) remember(r request) {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if len(wl.pool) < retryPoolMax {
		wl.pool = append(wl.pool, r)
		return
	}
	wl.pool[wl.poolNext] = r
	wl.poolNext = (wl.poolNext + 1) % retryPoolMax
}

// pick returns a finished request of a suitable age to re-send.
func (wl *workload) pick(rnd *rand.Rand) (request, bool) {
	now := wl.rec.Now()
	wl.mu.Lock()
	defer wl.mu.Unlock()
	for range 8 {
		if len(wl.pool) == 0 {
			break
		}
		r := wl.pool[rnd.Intn(len(wl.pool))]
		if age := time.Duration(now - r.doneNs); age >= retryAgeMin && age <= retryAgeMax {
			return r, true
		}
	}
	return request{}, false
}

func (wl *workload) unknownRequests() []request {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return slices.Clone(wl.unknown)
}

func (wl *workload) receiptRefs() map[int64]receiptRef {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return maps.Clone(wl.refs)
}

// worker runs operations one at a time, paced by a ticker.
type worker struct {
	wl     *workload
	id     int
	cl     *client.Client
	pinned string // node id, or "" for a client on every node
	rnd    *rand.Rand
	open   []openHold
}

type openHold struct {
	key    string
	holdID string
	units  int
}

func (w *worker) run() {
	defer w.wl.wg.Done()
	tick := time.NewTicker(time.Duration(float64(time.Second) / w.wl.cfg.OpsPerSecond))
	defer tick.Stop()
	m := w.wl.cfg.Mix
	weights := []int{m.Consume, m.Retry, m.LinRead, m.LeaderRead, m.StaleRead, m.Hold, m.Rate}
	total := 0
	for _, x := range weights {
		total += x
	}
	for {
		select {
		case <-w.wl.stop:
			return
		case <-tick.C:
		}
		r := w.rnd.Intn(total)
		choice := 0
		for r >= weights[choice] {
			r -= weights[choice]
			choice++
		}
		switch choice {
		case 0:
			w.consume()
		case 1:
			w.retry()
		case 2:
			w.read(tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE)
		case 3:
			w.read(tollgatev1.Consistency_CONSISTENCY_LEADER)
		case 4:
			w.read(tollgatev1.Consistency_CONSISTENCY_STALE)
		case 5:
			w.hold()
		case 6:
			w.rate()
		}
	}
}

func (w *worker) nextID(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, w.id, w.wl.seq.Add(1))
}

// node is where the client sends a call first.
func (w *worker) node() string {
	if w.pinned != "" {
		return w.pinned
	}
	addr := w.cl.Node()
	if id, ok := w.wl.nodeIDs[addr]; ok {
		return id
	}
	return addr // a node added during the run
}

func (w *worker) consume() {
	key := w.wl.obj.consumeKeys[w.rnd.Intn(len(w.wl.obj.consumeKeys))]
	w.wl.send(w.cl, w.id, w.node(), request{kind: checker.Consume, key: key,
		amount: strconv.Itoa(1 + w.rnd.Intn(5)), requestID: w.nextID("c")}, false)
}

func (w *worker) retry() {
	if r, ok := w.wl.pick(w.rnd); ok {
		w.wl.send(w.cl, w.id, w.node(), r, true)
	}
}

func (w *worker) rate() {
	key := w.wl.obj.rateKeys[w.rnd.Intn(len(w.wl.obj.rateKeys))]
	w.wl.send(w.cl, w.id, w.node(), request{kind: checker.RateCheck, key: policyID + "/" + key,
		cost: int64(1 + w.rnd.Intn(3)), requestID: w.nextID("r")}, false)
}

func (w *worker) hold() {
	if len(w.open) > 0 && w.rnd.Intn(10) < 6 {
		i := w.rnd.Intn(len(w.open))
		h := w.open[i]
		w.open = slices.Delete(w.open, i, i+1)
		if w.rnd.Intn(10) < 7 {
			w.wl.send(w.cl, w.id, w.node(), request{kind: checker.Commit, key: h.key, holdID: h.holdID,
				amount: strconv.Itoa(1 + w.rnd.Intn(h.units)), requestID: w.nextID("m")}, false)
		} else {
			w.wl.send(w.cl, w.id, w.node(), request{kind: checker.Release, key: h.key, holdID: h.holdID,
				requestID: w.nextID("l")}, false)
		}
		return
	}
	key := w.wl.obj.holdKeys[w.rnd.Intn(len(w.wl.obj.holdKeys))]
	units := 1 + w.rnd.Intn(10)
	op := w.wl.send(w.cl, w.id, w.node(), request{kind: checker.Reserve, key: key, amount: strconv.Itoa(units),
		requestID: w.nextID("h")}, false)
	if op.Status == checker.OK && op.Allowed && op.HoldID != "" {
		w.open = append(w.open, openHold{key: key, holdID: op.HoldID, units: units})
	}
}

func (w *worker) read(level tollgatev1.Consistency) {
	key := w.wl.obj.consumeKeys[w.rnd.Intn(len(w.wl.obj.consumeKeys))]
	maxStale := ""
	if level == tollgatev1.Consistency_CONSISTENCY_STALE {
		maxStale = []string{"", "500ms", "2s"}[w.rnd.Intn(3)]
	}
	w.wl.read(w.cl, w.id, w.node(), key, level, maxStale, w.wl.cfg.OpTimeout)
}

var levelNames = map[tollgatev1.Consistency]string{
	tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE: "linearizable",
	tollgatev1.Consistency_CONSISTENCY_LEADER:       "leader",
	tollgatev1.Consistency_CONSISTENCY_STALE:        "stale",
}

// read sends one GetBudget and records it. A read that fails had no
// effect: Fail, never Unknown.
func (wl *workload) read(cl *client.Client, clientNo int, node, key string, level tollgatev1.Consistency, maxStale string, timeout time.Duration) {
	op := checker.Op{Client: clientNo, Node: node, Kind: checker.Read, Key: key, Level: levelNames[level]}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	op.InvokeNs = wl.rec.Now()
	resp, err := cl.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{
		Tenant: tenant, BudgetId: key, Consistency: level, MaxStaleness: maxStale}))
	op.CompleteNs = wl.rec.Now()
	cancel()
	if err == nil {
		op.Spent, err = parseMicros(resp.Msg.Spent)
	}
	if err != nil {
		op.Status, op.Err = checker.Fail, err.Error()
		wl.rec.Add(op)
		return
	}
	op.Status = checker.OK
	info := resp.Msg.ReadInfo
	op.LogIndex, op.ServedBy = info.GetAppliedIndex(), info.GetNodeId()
	op = wl.rec.Add(op)
	if info.GetConsistency() != level {
		wl.violation(checkReadInfo, "op %d: asked for a %s read, served at %s", op.ID, op.Level, info.GetConsistency())
	}
	if maxStale != "" {
		bound, _ := time.ParseDuration(maxStale)
		if got := info.GetStaleness().AsDuration(); got > bound {
			wl.violation(checkReadInfo, "op %d: stale read with max_staleness %s answered from a state %s stale (node %s)",
				op.ID, maxStale, got, op.ServedBy)
		}
	}
}

// send performs one mutation and records it; retry marks a deliberate
// re-send of an earlier request id.
func (wl *workload) send(cl *client.Client, clientNo int, node string, r request, retry bool) checker.Op {
	op := checker.Op{Client: clientNo, Node: node, Kind: r.kind, Key: r.key, RequestID: r.requestID, HoldID: r.holdID, Retry: retry}
	if r.kind == checker.RateCheck {
		op.Amount = r.cost
	} else if r.amount != "" {
		op.Amount, _ = parseMicros(r.amount)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wl.cfg.OpTimeout)
	op.InvokeNs = wl.rec.Now()
	ref, err := wl.call(ctx, cl, r, &op)
	op.CompleteNs = wl.rec.Now()
	cancel()
	op.Status = mutationStatus(err)
	if err != nil {
		op.Err = err.Error()
	}
	op = wl.rec.Add(op)
	r.doneNs = op.CompleteNs
	if op.Status == checker.OK && ref != nil {
		wl.mu.Lock()
		wl.refs[op.ID] = receiptRef{index: ref.LogIndex, position: ref.Position}
		wl.mu.Unlock()
	}
	switch {
	case op.Status == checker.Unknown:
		wl.mu.Lock()
		wl.unknown = append(wl.unknown, r)
		wl.mu.Unlock()
	case !retry && op.Status == checker.OK:
		wl.remember(r)
	}
	return op
}

// call sends r, fills op's answer and returns the receipt reference the
// answer names.
func (wl *workload) call(ctx context.Context, cl *client.Client, r request, op *checker.Op) (*tollgatev1.ReceiptRef, error) {
	var err error
	var remaining string
	var ref *tollgatev1.ReceiptRef
	switch r.kind {
	case checker.Consume:
		var resp *connect.Response[tollgatev1.ConsumeResponse]
		resp, err = cl.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{
			Tenant: tenant, BudgetId: r.key, Amount: r.amount, RequestId: r.requestID}))
		if err == nil {
			op.Allowed, op.LogIndex, remaining = resp.Msg.Allowed, resp.Msg.LogIndex, resp.Msg.Remaining
			ref = resp.Msg.ReceiptRef
		}
	case checker.Reserve:
		var resp *connect.Response[tollgatev1.ReserveResponse]
		resp, err = cl.Budgets.Reserve(ctx, connect.NewRequest(&tollgatev1.ReserveRequest{
			Tenant: tenant, BudgetId: r.key, Amount: r.amount, Ttl: holdTTL, RequestId: r.requestID}))
		if err == nil {
			op.Allowed, op.LogIndex, op.HoldID, remaining = resp.Msg.Allowed, resp.Msg.LogIndex, resp.Msg.HoldId, resp.Msg.Remaining
			ref = resp.Msg.ReceiptRef
		}
	case checker.Commit:
		var resp *connect.Response[tollgatev1.CommitResponse]
		resp, err = cl.Budgets.Commit(ctx, connect.NewRequest(&tollgatev1.CommitRequest{
			Tenant: tenant, HoldId: r.holdID, Amount: r.amount, RequestId: r.requestID}))
		if err == nil {
			op.Allowed, op.LogIndex, remaining = resp.Msg.Allowed, resp.Msg.LogIndex, resp.Msg.Remaining
			ref = resp.Msg.ReceiptRef
		}
	case checker.Release:
		var resp *connect.Response[tollgatev1.ReleaseResponse]
		resp, err = cl.Budgets.Release(ctx, connect.NewRequest(&tollgatev1.ReleaseRequest{
			Tenant: tenant, HoldId: r.holdID, RequestId: r.requestID}))
		if err == nil {
			op.LogIndex, remaining = resp.Msg.LogIndex, resp.Msg.Remaining
			ref = resp.Msg.ReceiptRef
		}
	case checker.RateCheck:
		policy, key, _ := strings.Cut(r.key, "/")
		cost := r.cost
		var resp *connect.Response[tollgatev1.RateLimitServiceCheckResponse]
		resp, err = cl.RateLimits.Check(ctx, connect.NewRequest(&tollgatev1.RateLimitServiceCheckRequest{
			Tenant: tenant, PolicyId: policy, Key: key, Cost: &cost, RequestId: r.requestID}))
		if err == nil {
			// Tokens, scaled like money so details print them as units.
			op.Allowed, op.LogIndex, op.Remaining = resp.Msg.Allowed, resp.Msg.LogIndex, resp.Msg.Remaining*1_000_000
			ref = resp.Msg.ReceiptRef
		}
	default:
		return nil, fmt.Errorf("jepsen: no request of kind %q", r.kind)
	}
	if err == nil && remaining != "" {
		var perr error
		if op.Remaining, perr = parseMicros(remaining); perr != nil {
			op.Err = "unparsable remaining: " + perr.Error()
		}
	}
	return ref, err
}

// mutationStatus: only a deterministic rejection means "certainly did not
// happen"; anything else without an answer (Unavailable, deadline, a dead
// connection, lost leadership) may have happened.
func mutationStatus(err error) checker.Status {
	if err == nil {
		return checker.OK
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeFailedPrecondition,
		connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeResourceExhausted, connect.CodeOutOfRange,
		connect.CodeUnimplemented:
		return checker.Fail
	}
	return checker.Unknown
}

// probe sends linearizable reads to one node on a fixed period, each its
// own single try, up to InFlightMax at once.
func (wl *workload) probe(cl *client.Client, n *procs.Node, index int) {
	defer wl.wg.Done()
	p := wl.cfg.Probe
	rnd := rand.New(rand.NewSource(wl.cfg.Seed*1000 + 500 + int64(index)))
	slots := make(chan int, p.InFlightMax)
	for s := range p.InFlightMax {
		slots <- s
	}
	tick := time.NewTicker(p.Interval)
	defer tick.Stop()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		select {
		case <-wl.stop:
			return
		case <-tick.C:
		}
		select {
		case slot := <-slots:
			key := wl.obj.consumeKeys[rnd.Intn(len(wl.obj.consumeKeys))]
			// Each slot is its own porcupine client: a client's operations
			// must not overlap.
			clientNo := clientProbe + index*p.InFlightMax + slot
			inflight.Go(func() {
				defer func() { slots <- slot }()
				wl.read(cl, clientNo, n.ID, key, tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, "", p.Timeout)
			})
		default: // every slot busy: skip this tick
		}
	}
}

// resolve re-sends every mutation recorded Unknown, with its request id,
// once the cluster is healthy again: the idempotency table answers with
// what happened, so fewer operations stay ambiguous for the checks.
//
// Only requests young enough that tollgate still remembers their id are
// re-sent (log time may run ahead of the wall clock by ClockOffsetMax); an
// older one would be applied anew, a second charge the checks would rightly
// count against tollgate.
func (wl *workload) resolve(members []*procs.Node) (resolved, left int) {
	oldest := wl.rec.Now() - int64(idempotencyRetention-wl.cfg.ClockOffsetMax-time.Minute)
	unknown := wl.unknownRequests()
	var reqs []request
	for _, r := range unknown {
		if r.doneNs >= oldest {
			reqs = append(reqs, r)
		}
	}
	if len(reqs) == 0 {
		return 0, len(unknown)
	}
	cl, err := client.New(addrs(members), client.WithRequestTimeout(wl.cfg.TryTimeout))
	if err != nil {
		return 0, len(reqs)
	}
	defer cl.Close()
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(reqs) {
					return
				}
				if op := wl.send(cl, clientResolver, "", reqs[i], true); op.Status == checker.OK {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load()), len(unknown) - int(ok.Load())
}

// parseMicros reads a decimal amount ("12.5", "-3") as micro-units.
func parseMicros(s string) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(s, ".")
	if intPart == "" || len(frac) > 6 {
		return 0, fmt.Errorf("amount %q: want a decimal with at most 6 fractional digits", s)
	}
	units, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q: %v", s, err)
	}
	if units > math.MaxInt64/1_000_000-1 {
		return 0, fmt.Errorf("amount %q: out of range", s)
	}
	micros := units * 1_000_000
	if frac != "" {
		f, err := strconv.ParseInt((frac + "000000")[:6], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("amount %q: %v", s, err)
		}
		micros += f
	}
	if neg {
		micros = -micros
	}
	return micros, nil
}

// formatMicros writes micro-units as a decimal string.
func formatMicros(m int64) string {
	s := strconv.FormatInt(m/1_000_000, 10)
	if frac := m % 1_000_000; frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	}
	return s
}
