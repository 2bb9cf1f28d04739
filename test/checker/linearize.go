package checker

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// keyHistory is the part of a history one porcupine check sees: the
// answered consumes and linearizable reads of one budget key without holds
// as porcupine operations, and its unanswered consumes in the model's side
// table.
type keyHistory struct {
	key       string
	limit     int64
	ops       []porcupine.Operation
	unknowns  []unanswered // by invocation
	retried   int          // consumes assembled from more than one attempt
	malformed []string
	// annotations show the unanswered consumes in a visualization.
	annotations []porcupine.Annotation
}

// logicalConsume gathers the attempts (first send and retries) of one
// request id: one operation for the model, however often it was sent.
type logicalConsume struct {
	kh       *keyHistory
	name     string // the request id, or the op for a consume without one
	amount   int64
	invokeNs int64
	attempts []int64 // op IDs
	answer   *Op     // the OK attempt that completed first, if any
	first    *Op     // the attempt invoked first
}

func (lc *logicalConsume) add(op *Op) {
	if lc.first == nil || op.InvokeNs < lc.invokeNs {
		lc.invokeNs, lc.first = op.InvokeNs, op
	}
	lc.attempts = append(lc.attempts, op.ID)
	if op.Status == OK && (lc.answer == nil || op.CompleteNs < lc.answer.CompleteNs) {
		lc.answer = op
	}
}

// operation is the answered consume as one porcupine operation: invoked
// with the first send, answered by the first answer.
func (lc *logicalConsume) operation() porcupine.Operation {
	a := lc.answer
	return porcupine.Operation{
		ClientId: clientID(a.Client),
		Input:    budgetInput{amount: lc.amount, requestID: lc.name, returnNs: a.CompleteNs},
		Call:     lc.invokeNs,
		Output:   budgetOutput{allowed: a.Allowed, remaining: a.Remaining},
		Return:   a.CompleteNs,
		Metadata: fmt.Sprintf("request %q, attempts: ops %v, answered by %s", lc.name, lc.attempts, opOrigin(a)),
	}
}

func (lc *logicalConsume) annotation() porcupine.Annotation {
	return porcupine.Annotation{
		ClientId:        clientID(lc.first.Client),
		Start:           lc.invokeNs,
		End:             lc.first.CompleteNs,
		Description:     describeOperation(budgetInput{amount: lc.amount, requestID: lc.name}, budgetOutput{unknown: true}),
		Details:         fmt.Sprintf("never answered (ops %v): may have taken effect at any time after its invocation, or never", lc.attempts),
		BackgroundColor: "#f0e0a0",
	}
}

// holdKeys are the budgets with reserve/commit/release operations that may
// have taken effect. Holds expire with time, which the model does not know,
// so those keys are judged by the accounting checks only.
func holdKeys(h History) map[string]bool {
	keys := map[string]bool{}
	for i := range h.Ops {
		op := &h.Ops[i]
		switch op.Kind {
		case Reserve, Commit, Release:
			if op.Status != Fail {
				keys[op.Key] = true
			}
		}
	}
	return keys
}

// modelled reports whether an op is one the porcupine model judges.
func modelled(op *Op) bool {
	switch op.Kind {
	case Consume:
		return op.Status == OK || op.Status == Unknown
	case Read:
		return op.Level == "linearizable" && op.Status == OK
	}
	return false
}

// keyHistories splits h into one keyHistory per budget key without holds,
// sorted by key. unbudgeted lists keys with modelled operations but no
// amount in h.Budgets: the check cannot judge them and says so.
func keyHistories(h History) (histories []*keyHistory, unbudgeted []string) {
	holds := holdKeys(h)
	byKey := map[string]*keyHistory{}
	consumes := map[[2]string]*logicalConsume{} // by key and request id
	var order []*logicalConsume                 // first seen first, so porcupine's input is deterministic
	missing := map[string]bool{}
	for i := range h.Ops {
		op := &h.Ops[i]
		if !modelled(op) || holds[op.Key] {
			continue
		}
		limit, ok := h.Budgets[op.Key]
		if !ok {
			missing[op.Key] = true
			continue
		}
		kh := byKey[op.Key]
		if kh == nil {
			kh = &keyHistory{key: op.Key, limit: limit}
			byKey[op.Key] = kh
		}
		if op.Status == OK && op.CompleteNs < op.InvokeNs {
			kh.malformed = append(kh.malformed, fmt.Sprintf("op %d completes at %d before its invocation at %d", op.ID, op.CompleteNs, op.InvokeNs))
			continue
		}
		if op.Kind == Read {
			kh.ops = append(kh.ops, porcupine.Operation{
				ClientId: clientID(op.Client),
				Input:    budgetInput{read: true, returnNs: op.CompleteNs},
				Call:     op.InvokeNs,
				Output:   budgetOutput{spent: op.Spent},
				Return:   op.CompleteNs,
				Metadata: opOrigin(op),
			})
			continue
		}
		name := op.RequestID
		if name == "" {
			// Without a request id every send is its own request.
			name = fmt.Sprintf("op#%d", op.ID)
		}
		lc := consumes[[2]string{op.Key, name}]
		if lc == nil {
			lc = &logicalConsume{kh: kh, name: name, amount: op.Amount}
			consumes[[2]string{op.Key, name}] = lc
			order = append(order, lc)
		}
		lc.add(op)
	}
	for _, lc := range order {
		kh := lc.kh
		if len(lc.attempts) > 1 {
			kh.retried++
		}
		if lc.answer != nil {
			kh.ops = append(kh.ops, lc.operation())
			continue
		}
		kh.unknowns = append(kh.unknowns, unanswered{invokeNs: lc.invokeNs, amount: lc.amount, requestID: lc.name})
		kh.annotations = append(kh.annotations, lc.annotation())
	}
	for _, kh := range byKey {
		orderAnswers(kh.limit, kh.ops)
		slices.SortStableFunc(kh.unknowns, func(a, b unanswered) int { return cmp.Compare(a.invokeNs, b.invokeNs) })
		histories = append(histories, kh)
	}
	sort.Slice(histories, func(i, j int) bool { return histories[i].key < histories[j].key })
	for key := range missing {
		unbudgeted = append(unbudgeted, key)
	}
	sort.Strings(unbudgeted)
	return histories, unbudgeted
}

// opOrigin names an op for a visualization's tooltip.
func opOrigin(op *Op) string {
	s := fmt.Sprintf("op %d (client %d", op.ID, op.Client)
	if op.ServedBy != "" {
		s += ", served by " + op.ServedBy
	}
	return s + ")"
}

// clientID maps a client number to porcupine's zero-indexed client ids
// (they only place operations in rows of the visualization).
func clientID(client int) int { return max(client, 0) }

// keyResult is the outcome of one key's porcupine check.
type keyResult struct {
	result   porcupine.CheckResult
	notRun   bool // the time budget ran out before the key's turn
	artifact string
	err      error // writing the artifact failed
}

// drawTimeoutMax bounds the second search that records what a failed key's
// visualization shows.
const drawTimeoutMax = 10 * time.Second

// Porcupine's checks; variables so a test can stand in for them.
var (
	checkOperations        = porcupine.CheckOperationsTimeout
	checkOperationsVerbose = porcupine.CheckOperationsVerbose
)

// checkKeys runs porcupine on every key, GOMAXPROCS keys at a time, all
// sharing one deadline: timeout bounds the whole linearizability check, not
// each key (0: no bound). Failed keys get a visualization in outDir.
func checkKeys(histories []*keyHistory, timeout time.Duration, outDir string) []keyResult {
	results := make([]keyResult, len(histories))
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(histories)) {
		wg.Go(func() {
			for i := range next {
				results[i] = checkKey(histories[i], deadline, outDir)
			}
		})
	}
	for i := range histories {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

// checkKey decides a key with porcupine's plain search; only a failed key
// is searched again with the bookkeeping a visualization needs, which costs
// several times more.
func checkKey(kh *keyHistory, deadline time.Time, outDir string) keyResult {
	var left time.Duration // porcupine reads 0 as "no timeout"
	if !deadline.IsZero() {
		left = time.Until(deadline)
		if left <= 0 {
			return keyResult{result: porcupine.Unknown, notRun: true}
		}
	}
	model := budgetModel(kh.limit, kh.unknowns)
	r := keyResult{result: checkOperations(model, kh.ops, left)}
	if r.result != porcupine.Ok && outDir != "" {
		drawTimeout := drawTimeoutMax
		if left > 0 {
			drawTimeout = min(left, drawTimeoutMax)
		}
		_, info := checkOperationsVerbose(model, kh.ops, drawTimeout)
		info.AddAnnotations(kh.annotations)
		r.artifact, r.err = visualize(model, info, kh.key, outDir)
	}
	return r
}
func visualize(model porcupine.Model, info porcupine.LinearizationInfo, key, outDir string) (string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(outDir, "linearizability-"+fileSafe(key)+".html")
	if err := porcupine.VisualizePath(model, info, path); err != nil {
		return "", err
	}
	return path, nil
}

// fileSafe keeps a key readable in a file name: anything but letters,
// digits, '.', '-' and '_' (a '/' in "tenant/budget") becomes '_'.
func fileSafe(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, key)
}
