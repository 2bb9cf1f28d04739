package jepsen

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/receipt"
	"github.com/tollgate/tollgate/test/checker"
	"github.com/tollgate/tollgate/test/procs"
)

// Bounds of the receipts check: it must stay well under a minute on a long
// run (5 nodes, ~20k checkpoints, ~30k decisions).
const (
	// receiptSampleMax is how many acknowledged decisions have their
	// receipt fetched from every node that holds it.
	receiptSampleMax = 300
	// checkpointsPageSize is the largest page ListCheckpoints serves.
	checkpointsPageSize = 1000
	// checkpointPagesMax bounds one node's listing (10 million checkpoints).
	checkpointPagesMax = 10_000
	// headRoundsMax: how often a node's listing is extended when its chain
	// head moved on while it was listed.
	headRoundsMax = 3
	// receiptFetchers is how many GetReceipt calls run at once.
	receiptFetchers = 16
	// receiptCallTimeout bounds one ReceiptService call.
	receiptCallTimeout = 10 * time.Second
)

// receiptOperations: the leaf operation of each decision kind of the
// workload.
var receiptOperations = map[checker.Kind]string{
	checker.Consume:   "budget.consume",
	checker.Reserve:   "budget.reserve",
	checker.Commit:    "budget.commit",
	checker.Release:   "budget.release",
	checker.RateCheck: "ratelimit.check",
}

// receiptRef is the receipt reference an answer named: the log entry and
// the leaf's position in its tree.
type receiptRef struct {
	index    uint64
	position uint32
}

func (r receiptRef) String() string { return fmt.Sprintf("%d/%d", r.index, r.position) }

// clusterKey is the receipt signing key the harness makes with `tollgate
// keygen` and gives every node (--signing-key): the checks verify with the
// public half known out of band, never with what the nodes say it is.
type clusterKey struct {
	path string // the private key file, for --signing-key
	id   string
	pub  ed25519.PublicKey
}

func (k clusterKey) keySet() receipt.KeySet { return receipt.NewKeySet(k.pub) }

// newClusterKey runs `bin keygen` into a temporary directory and reads the
// public key back from FILE.pub.
func newClusterKey(t testing.TB, bin string) clusterKey {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.key")
	if out, err := exec.Command(bin, "keygen", "--out", path).CombinedOutput(); err != nil {
		t.Fatalf("jepsen: tollgate keygen: %v\n%s", err, out)
	}
	pemBytes, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("jepsen: keygen public key: %v", err)
	}
	pub, err := receipt.ParsePublicKey(pemBytes)
	if err != nil {
		t.Fatalf("jepsen: keygen public key %s.pub: %v", path, err)
	}
	return clusterKey{path: path, id: receipt.KeyID(pub), pub: pub}
}

// nodeChain is one node's receipt store as ListCheckpoints and
// GetPublicKeys (STALE, so the node answers from its own state) show it.
type nodeChain struct {
	node     *procs.Node
	cl       *client.Client
	heldFrom uint64
	cps      []receipt.SignedCheckpoint
	decoded  []*receipt.Checkpoint // nil where the body does not decode
	head     *tollgatev1.GetPublicKeysResponse
	err      error
}

// holds reports whether the node holds the receipts of the entry at index.
func (c *nodeChain) holds(index uint64) bool {
	return c.err == nil && len(c.decoded) > 0 && index >= c.heldFrom && index <= c.lastIndex()
}

func (c *nodeChain) lastIndex() uint64 {
	if len(c.decoded) == 0 || c.decoded[len(c.decoded)-1] == nil {
		return 0
	}
	return c.decoded[len(c.decoded)-1].Index
}

// receiptsInput is what the receipts check needs of a run.
type receiptsInput struct {
	history checker.History
	refs    map[int64]receiptRef // op ID -> the ref its OK answer named
	key     clusterKey
	nodes   []*procs.Node // the members after healing
	seed    int64
	// created counts the leaves of the objects made before the workload
	// (budgets and the policy; their request ids are not in the history).
	created int
}

// receiptsVerdict checks, after convergence, that the nodes hold one
// signed, gapless checkpoint chain, identical wherever several hold an
// index, and that every acknowledged decision has exactly one receipt: the
// same reference for every answer of its request id, none shared between
// request ids, and (for a seeded sample) a receipt that verifies with the
// cluster key on every node that holds it, says what the answer said, and
// is byte-identical on all of them.
func receiptsVerdict(ctx context.Context, in receiptsInput) checker.Verdict {
	start := time.Now()
	var problems, notes []string
	keys := in.key.keySet()

	// A node that installed a snapshot fetches the receipts it skipped from
	// its peers; every node must end up holding every receipt.
	if p := waitRepaired(ctx, in.nodes); p != "" {
		problems = append(problems, p)
	}
	repaired := time.Since(start)
	chains := fetchChains(ctx, in.nodes)
	defer func() {
		for _, c := range chains {
			if c.cl != nil {
				c.cl.Close()
			}
		}
	}()
	union, chainNotes, chainProblems := checkChains(chains, in.key, keys)
	notes = append(notes, chainNotes...)
	problems = append(problems, chainProblems...)

	decisions, refProblems := ackedDecisions(in.history, in.refs)
	problems = append(problems, refProblems...)
	held, unheld, heldProblems := splitHeld(decisions, chains)
	problems = append(problems, heldProblems...)
	if len(unheld) > 0 {
		problems = append(problems, fmt.Sprintf("%d acknowledged decisions (entries %d to %d) have no receipt on any node",
			len(unheld), unheld[0].ref.index, unheld[len(unheld)-1].ref.index))
	}
	for _, c := range chains {
		if c.err == nil && c.heldFrom != 1 {
			problems = append(problems, fmt.Sprintf("%s holds receipts from index %d, not from the start", c.node.ID, c.heldFrom))
		}
	}
	problems = append(problems, leafCountProblems(chains, union, held, in)...)

	sample := sampleDecisions(held, in.seed)
	fetched, sampleProblems := checkSample(ctx, sample, chains, union, keys)
	problems = append(problems, sampleProblems...)

	var leaves uint64
	for _, u := range union {
		if u.cp != nil {
			leaves += uint64(u.cp.LeafCount)
		}
	}
	indexes := sortedIndexes(union)
	span := "none"
	if len(indexes) > 0 {
		span = fmt.Sprintf("%d to %d", indexes[0], indexes[len(indexes)-1])
	}
	detail := fmt.Sprintf("chain: %d checkpoints (%d leaves) at indexes %s, signed by key %s, linked, identical on the %d nodes holding them (%s); "+
		"%d acknowledged decisions, one receipt_ref per request id, none shared, %d of them in held entries; "+
		"%d sampled receipts verified on every node holding them (%d fetches); snapshot installs repaired from peers in %s; checked in %s",
		len(union), leaves, span, in.key.id, len(chains), heldSummary(chains),
		len(decisions), len(held), len(sample), fetched, repaired.Round(time.Millisecond), (time.Since(start) - repaired).Round(time.Millisecond))
	if len(notes) > 0 {
		detail += "; note: " + strings.Join(notes, "; ")
	}
	v := verdict(checkReceipts, problems, detail)
	if !v.OK {
		v.Detail += fmt.Sprintf(" (held: %s)", heldSummary(chains))
	}
	return v
}

// splitHeld sorts the decisions by whether some node holds their entry.
// Entries before every node's first held index are gone from the cluster (a
// failure: nodes repair what snapshot installs skipped from their peers); a
// decision past every node's last checkpoint has no receipt at all.
func splitHeld(decisions []*ackedDecision, chains []*nodeChain) (held, unheld []*ackedDecision, problems []string) {
	var firstHeld, last uint64
	for _, c := range chains {
		if c.err != nil || len(c.decoded) == 0 {
			continue
		}
		if firstHeld == 0 || c.heldFrom < firstHeld {
			firstHeld = c.heldFrom
		}
		last = max(last, c.lastIndex())
	}
	for _, d := range decisions {
		switch {
		case d.ref.index < firstHeld:
			unheld = append(unheld, d)
		case d.ref.index > last:
			problems = append(problems, fmt.Sprintf("request %s (op %d): its receipt %s is past every node's last checkpoint (%d)",
				d.op.RequestID, d.op.ID, d.ref, last))
		default:
			held = append(held, d)
		}
	}
	sort.Slice(unheld, func(i, j int) bool { return unheld[i].ref.index < unheld[j].ref.index })
	return held, unheld, problems
}

// fetchChains lists every running node's checkpoints, all at once.
func fetchChains(ctx context.Context, nodes []*procs.Node) []*nodeChain {
	var chains []*nodeChain
	for _, n := range nodes {
		if n.Running() {
			chains = append(chains, &nodeChain{node: n})
		}
	}
	var wg sync.WaitGroup
	for _, c := range chains {
		wg.Go(func() {
			c.cl, c.err = client.New([]string{c.node.APIAddr}, client.WithoutRetries(), client.WithRequestTimeout(receiptCallTimeout))
			if c.err == nil {
				c.err = c.fetch(ctx)
			}
		})
	}
	wg.Wait()
	return chains
}

// fetch pages through the node's checkpoints from index 1, then reads its
// chain head; when the head moved on meanwhile (an entry applied between
// the two calls), it lists the rest and reads the head again.
func (c *nodeChain) fetch(ctx context.Context) error {
	from := uint64(1)
	for round := 1; ; round++ {
		if err := c.list(ctx, from); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, receiptCallTimeout)
		resp, err := c.cl.Receipts.GetPublicKeys(cctx, connect.NewRequest(&tollgatev1.GetPublicKeysRequest{
			Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
		cancel()
		if err != nil {
			return fmt.Errorf("GetPublicKeys: %w", err)
		}
		c.head = resp.Msg
		if c.head.HeadIndex <= c.lastIndex() || round == headRoundsMax || (len(c.cps) > 0 && c.lastIndex() == 0) {
			return nil // (a last body that does not decode is reported by checkChains)
		}
		from = c.lastIndex() + 1
	}
}

func (c *nodeChain) list(ctx context.Context, from uint64) error {
	for page := 0; ; page++ {
		if page == checkpointPagesMax {
			return fmt.Errorf("more than %d pages of checkpoints", checkpointPagesMax)
		}
		cctx, cancel := context.WithTimeout(ctx, receiptCallTimeout)
		resp, err := c.cl.Receipts.ListCheckpoints(cctx, connect.NewRequest(&tollgatev1.ListCheckpointsRequest{
			FromIndex: from, PageSize: checkpointsPageSize}))
		cancel()
		if err != nil {
			return fmt.Errorf("ListCheckpoints from %d: %w", from, err)
		}
		m := resp.Msg
		if c.heldFrom != 0 && m.HeldFromIndex != c.heldFrom {
			return fmt.Errorf("held_from_index moved from %d to %d while listing", c.heldFrom, m.HeldFromIndex)
		}
		c.heldFrom = m.HeldFromIndex
		for _, w := range m.Checkpoints {
			sc := receipt.SignedCheckpoint{Body: w.Body, Signature: w.Signature}
			cp, _ := receipt.DecodeCheckpoint(sc.Body) // a body that does not decode is reported by checkChains
			c.cps, c.decoded = append(c.cps, sc), append(c.decoded, cp)
		}
		if m.NextFromIndex == 0 {
			return nil
		}
		if m.NextFromIndex <= from {
			return fmt.Errorf("ListCheckpoints from %d says continue from %d", from, m.NextFromIndex)
		}
		from = m.NextFromIndex
	}
}

// heldCheckpoint is one index of the chain as the nodes hold it.
type heldCheckpoint struct {
	sc   receipt.SignedCheckpoint
	cp   *receipt.Checkpoint // nil when it does not verify
	node string              // the first node seen holding it
}

// checkChains verifies every node's checkpoints (signature with the
// cluster key, link to the one before, the zero prev hash for a node that
// holds the chain from index 1, the head its state names), that nodes
// holding the same index hold the same bytes, and that the union of what
// they hold links up where no single node holds both sides. It returns the
// union by index.
func checkChains(chains []*nodeChain, key clusterKey, keys receipt.KeySet) (map[uint64]*heldCheckpoint, []string, []string) {
	var notes, problems []string
	union := map[uint64]*heldCheckpoint{}
	var headList []string
	for _, c := range chains {
		id := c.node.ID
		if c.err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", id, c.err))
			continue
		}
		problems = append(problems, checkNodeChain(c, union, keys)...)
		problems = append(problems, checkNodeHead(c, key)...)
		headList = append(headList, fmt.Sprintf("%s@%d", id, c.head.HeadIndex))
	}
	if len(union) == 0 {
		return union, notes, append(problems, "no node holds any checkpoint")
	}
	if heads := slices.Compact(headIndexes(chains)); len(heads) > 1 {
		problems = append(problems, "the nodes' chain heads differ after convergence: "+strings.Join(headList, " "))
	}

	// Seams: consecutive indexes of the union that no node holds both of
	// (one side from a node that installed a snapshot). Each node's own
	// links are checked above.
	indexes := sortedIndexes(union)
	for i := 1; i < len(indexes); i++ {
		a, b := union[indexes[i-1]], union[indexes[i]]
		if a.cp == nil || b.cp == nil || heldByOne(chains, a.cp.Index, b.cp.Index) {
			continue
		}
		if err := receipt.VerifyLink(a.cp, b.cp); err != nil {
			problems = append(problems, fmt.Sprintf("checkpoint %d (held from %s) does not follow checkpoint %d (from %s), and no node holds both: %v",
				b.cp.Index, b.node, a.cp.Index, a.node, err))
		}
	}
	if first := union[indexes[0]]; first.cp != nil && first.cp.Prev != (receipt.Hash{}) {
		problems = append(problems, fmt.Sprintf("no node holds the chain from its start: the first checkpoint held, %d, links to %s", first.cp.Index, first.cp.Prev))
	}
	return union, notes, problems
}

func headIndexes(chains []*nodeChain) []uint64 {
	var out []uint64
	for _, c := range chains {
		if c.err == nil {
			out = append(out, c.head.HeadIndex)
		}
	}
	slices.Sort(out)
	return out
}

// checkNodeChain checks one node's listing and adds it to union.
func checkNodeChain(c *nodeChain, union map[uint64]*heldCheckpoint, keys receipt.KeySet) []string {
	var problems []string
	id := c.node.ID
	if c.heldFrom == 0 {
		problems = append(problems, fmt.Sprintf("%s: held_from_index 0", id))
	}
	var prev *receipt.Checkpoint
	for i, sc := range c.cps {
		cp := c.decoded[i]
		if cp == nil {
			_, err := receipt.DecodeCheckpoint(sc.Body)
			problems = append(problems, fmt.Sprintf("%s: checkpoint #%d of its listing: %v", id, i+1, err))
			prev = nil
			continue
		}
		if cp.Index < c.heldFrom {
			problems = append(problems, fmt.Sprintf("%s: lists checkpoint %d but holds receipts from %d", id, cp.Index, c.heldFrom))
		}
		if u := union[cp.Index]; u != nil {
			if !bytes.Equal(u.sc.Body, sc.Body) || !bytes.Equal(u.sc.Signature, sc.Signature) {
				_, err := receipt.VerifyCheckpoint(sc, keys)
				problems = append(problems, fmt.Sprintf("checkpoint %d differs between %s and %s (%s's: %s)", cp.Index, u.node, id, id, verifiedOr(err)))
			}
		} else {
			u := &heldCheckpoint{sc: sc, node: id}
			if _, err := receipt.VerifyCheckpoint(sc, keys); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", id, err))
			} else {
				u.cp = cp
			}
			union[cp.Index] = u
		}
		switch {
		case prev != nil:
			if err := receipt.VerifyLink(prev, cp); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", id, err))
			}
		case i == 0 && c.heldFrom == 1 && cp.Prev != (receipt.Hash{}):
			problems = append(problems, fmt.Sprintf("%s holds receipts from index 1, but its first checkpoint %d links to %s, not the zero hash", id, cp.Index, cp.Prev))
		}
		prev = cp
	}
	return problems
}

func verifiedOr(err error) string {
	if err == nil {
		return "validly signed: the key signed two different checkpoints for one index"
	}
	return err.Error()
}

// checkNodeHead: the chain head in the node's state is its last
// checkpoint, and it lists exactly the harness's key.
func checkNodeHead(c *nodeChain, key clusterKey) []string {
	var problems []string
	id, h := c.node.ID, c.head
	last := c.lastIndex()
	switch {
	case h.HeadIndex != last:
		problems = append(problems, fmt.Sprintf("%s: its state's chain head is at index %d, its last checkpoint at %d", id, h.HeadIndex, last))
	case last != 0 && h.HeadHash != c.decoded[len(c.decoded)-1].Hash().String():
		problems = append(problems, fmt.Sprintf("%s: chain head %d hashes to %s in its state, its last checkpoint to %s", id, last, h.HeadHash, c.decoded[len(c.decoded)-1].Hash()))
	}
	listed, err := client.PublicKeys(h)
	switch {
	case err != nil:
		problems = append(problems, fmt.Sprintf("%s: GetPublicKeys: %v", id, err))
	case len(listed) != 1 || !key.pub.Equal(listed[key.id]):
		var ids []string
		for _, k := range h.Keys {
			ids = append(ids, k.KeyId)
		}
		problems = append(problems, fmt.Sprintf("%s lists signing keys %v; the cluster was given only %s", id, ids, key.id))
	}
	return problems
}

// heldByOne: some node holds both indexes, and so every index between.
func heldByOne(chains []*nodeChain, a, b uint64) bool {
	for _, c := range chains {
		if c.holds(a) && c.holds(b) {
			return true
		}
	}
	return false
}

func sortedIndexes(union map[uint64]*heldCheckpoint) []uint64 {
	out := make([]uint64, 0, len(union))
	for i := range union {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

func heldSummary(chains []*nodeChain) string {
	var parts []string
	for _, c := range chains {
		if c.err != nil {
			parts = append(parts, c.node.ID+" unreadable")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d from index %d", c.node.ID, len(c.cps), c.heldFrom))
	}
	return strings.Join(parts, ", ")
}

// ackedDecision is a request id answered OK with a decision.
type ackedDecision struct {
	op  *checker.Op // its first OK answer
	ref receiptRef
}

// ackedDecisions collects the request ids answered OK, and checks that all
// answers of one request id name the same receipt, in the log entry they
// name, and that no two request ids share one.
func ackedDecisions(h checker.History, refs map[int64]receiptRef) ([]*ackedDecision, []string) {
	var problems []string
	byID := map[string]*ackedDecision{}
	byRef := map[receiptRef]string{}
	var out []*ackedDecision
	for i := range h.Ops {
		op := &h.Ops[i]
		if _, decides := receiptOperations[op.Kind]; !decides || op.Status != checker.OK || op.RequestID == "" {
			continue
		}
		ref, ok := refs[op.ID]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("op %d (%s %s, request %s) was answered OK without a receipt_ref", op.ID, op.Kind, op.Key, op.RequestID))
			continue
		case ref.index != op.LogIndex:
			problems = append(problems, fmt.Sprintf("op %d (request %s): receipt_ref %s is not in the log entry %d the answer names", op.ID, op.RequestID, ref, op.LogIndex))
		}
		if d := byID[op.RequestID]; d != nil {
			if d.ref != ref {
				problems = append(problems, fmt.Sprintf("request %s: op %d was answered with receipt %s, op %d with %s", op.RequestID, d.op.ID, d.ref, op.ID, ref))
			}
			continue
		}
		if other, shared := byRef[ref]; shared {
			problems = append(problems, fmt.Sprintf("receipt %s was named for request %s and for request %s (op %d)", ref, other, op.RequestID, op.ID))
		}
		byRef[ref] = op.RequestID
		d := &ackedDecision{op: op, ref: ref}
		byID[op.RequestID] = d
		out = append(out, d)
	}
	return out, problems
}

// leafCountProblems: the leaves of the checkpoints the nodes hold number
// at least one per acknowledged decision in them (held), and at most one
// per request id ever sent plus the objects made first and the key
// installs (which have no request id in the history). More means a
// decision was made twice.
func leafCountProblems(chains []*nodeChain, union map[uint64]*heldCheckpoint, held []*ackedDecision, in receiptsInput) []string {
	fromStart := false
	keys := 0
	for _, c := range chains {
		if c.err == nil {
			fromStart = fromStart || c.heldFrom == 1
			keys = len(c.head.Keys)
		}
	}
	var leaves int
	for _, u := range union {
		if u.cp == nil {
			return nil // reported already; the count would be off
		}
		leaves += int(u.cp.LeafCount)
	}
	sent := map[string]bool{}
	for _, op := range in.history.Ops {
		if _, decides := receiptOperations[op.Kind]; decides && op.RequestID != "" {
			sent[op.RequestID] = true
		}
	}
	lower := len(held)
	if fromStart {
		lower += in.created + keys
	}
	upper := len(sent) + in.created + keys
	if leaves < lower || leaves > upper {
		return []string{fmt.Sprintf("the checkpoints held count %d decisions (leaves), want %d to %d: %d acknowledged in them, %d request ids sent, %d objects created first, %d key installs",
			leaves, lower, upper, len(held), len(sent), in.created, keys)}
	}
	return nil
}

// sampleDecisions draws up to receiptSampleMax decisions with the run's
// seed.
func sampleDecisions(decisions []*ackedDecision, seed int64) []*ackedDecision {
	sample := slices.Clone(decisions)
	rnd := rand.New(rand.NewSource(seed))
	rnd.Shuffle(len(sample), func(i, j int) { sample[i], sample[j] = sample[j], sample[i] })
	sample = sample[:min(len(sample), receiptSampleMax)]
	sort.Slice(sample, func(i, j int) bool { return sample[i].op.ID < sample[j].op.ID })
	return sample
}

// fetchedReceipt is one GetReceipt answer.
type fetchedReceipt struct {
	chain *nodeChain
	resp  *tollgatev1.GetReceiptResponse
	err   error
}

// checkSample fetches each sampled decision's receipt by tenant and request
// id from every node that holds its entry, verifies it with the cluster key
// alone, and compares it with the answer and across nodes.
func checkSample(ctx context.Context, sample []*ackedDecision, chains []*nodeChain, union map[uint64]*heldCheckpoint, keys receipt.KeySet) (int, []string) {
	type job struct{ d, c int }
	var jobs []job
	got := make([][]fetchedReceipt, len(sample))
	for d, dec := range sample {
		for c, ch := range chains {
			if ch.holds(dec.ref.index) {
				got[d] = append(got[d], fetchedReceipt{chain: chains[c]})
				jobs = append(jobs, job{d, len(got[d]) - 1})
			}
		}
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for range receiptFetchers {
		wg.Go(func() {
			for j := range work {
				f := &got[j.d][j.c]
				cctx, cancel := context.WithTimeout(ctx, receiptCallTimeout)
				resp, err := f.chain.cl.Receipts.GetReceipt(cctx, connect.NewRequest(&tollgatev1.GetReceiptRequest{
					Tenant: tenant, RequestId: sample[j.d].op.RequestID, Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
				cancel()
				if err == nil {
					f.resp = resp.Msg
				}
				f.err = err
			}
		})
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()

	var problems []string
	for d, dec := range sample {
		if len(got[d]) == 0 {
			problems = append(problems, fmt.Sprintf("request %s: no node holds entry %d of its receipt %s", dec.op.RequestID, dec.ref.index, dec.ref))
			continue
		}
		var first *fetchedReceipt
		for i := range got[d] {
			f := &got[d][i]
			if p := checkFetched(dec, f, union, keys); p != "" {
				problems = append(problems, p)
				continue
			}
			if first == nil {
				first = f
			} else if p := sameReceipt(dec, first, f); p != "" {
				problems = append(problems, p)
			}
		}
	}
	return len(jobs), problems
}

// checkFetched verifies one fetched receipt and holds it to the answer.
func checkFetched(dec *ackedDecision, f *fetchedReceipt, union map[uint64]*heldCheckpoint, keys receipt.KeySet) string {
	op, id := dec.op, f.chain.node.ID
	where := fmt.Sprintf("%s: receipt of request %s (op %d, %s %s, ref %s)", id, op.RequestID, op.ID, op.Kind, op.Key, dec.ref)
	if f.err != nil {
		return fmt.Sprintf("%s: %v (the node holds receipts from %d)", where, f.err, f.chain.heldFrom)
	}
	r := f.resp
	if got := (receiptRef{r.GetRef().GetLogIndex(), r.GetRef().GetPosition()}); got != dec.ref {
		return fmt.Sprintf("%s: the node names ref %s", where, got)
	}
	if r.NodeId != id {
		return fmt.Sprintf("%s: answered by node %q", where, r.NodeId)
	}
	leaf, cp, err := client.VerifyReceipt(r.Receipt, keys)
	if err != nil {
		return fmt.Sprintf("%s: does not verify: %v", where, err)
	}
	if u := union[cp.Index]; u == nil || !bytes.Equal(u.sc.Body, r.Receipt.Checkpoint) || !bytes.Equal(u.sc.Signature, r.Receipt.Signature) {
		return fmt.Sprintf("%s: its checkpoint is not the one the nodes list for index %d", where, cp.Index)
	}
	if mismatch := leafMismatch(leaf, dec); mismatch != "" {
		return fmt.Sprintf("%s: %s", where, mismatch)
	}
	return ""
}

// leafMismatch compares a verified leaf with the acknowledged answer.
func leafMismatch(leaf *receipt.Leaf, dec *ackedDecision) string {
	op := dec.op
	field := func(fields []receipt.Field, name string) string {
		for _, f := range fields {
			if f.Name == name {
				return f.Value
			}
		}
		return ""
	}
	micros := func(fields []receipt.Field, name string) (int64, bool) {
		m, err := parseMicros(field(fields, name))
		return m, err == nil
	}
	outcome := "denied"
	if op.Allowed {
		outcome = "allowed"
	}
	switch {
	case leaf.Index != dec.ref.index || leaf.Position != dec.ref.position:
		return fmt.Sprintf("the leaf is at %d/%d", leaf.Index, leaf.Position)
	case leaf.Tenant != tenant || leaf.RequestID != op.RequestID:
		return fmt.Sprintf("the leaf is request %q of tenant %q", leaf.RequestID, leaf.Tenant)
	case leaf.Operation != receiptOperations[op.Kind] || (leaf.Object != op.Key && !holdGone(leaf, op)):
		return fmt.Sprintf("the leaf is %s of %q", leaf.Operation, leaf.Object)
	case op.Kind == checker.Release && leaf.Outcome != "allowed" && leaf.Outcome != "denied":
		return fmt.Sprintf("the leaf's outcome is %q", leaf.Outcome)
	case op.Kind != checker.Release && leaf.Outcome != outcome:
		return fmt.Sprintf("the leaf says %s (%s), the answer %s", leaf.Outcome, leaf.Reason, outcome)
	}
	switch op.Kind {
	case checker.RateCheck:
		if cost := field(leaf.Inputs, "cost"); cost != strconv.FormatInt(op.Amount, 10) {
			return fmt.Sprintf("the leaf's cost is %q, the request's %d", cost, op.Amount)
		}
	case checker.Consume, checker.Reserve, checker.Commit:
		if amount, ok := micros(leaf.Inputs, "amount"); !ok || amount != op.Amount {
			return fmt.Sprintf("the leaf's amount is %q, the request's %s", field(leaf.Inputs, "amount"), formatMicros(op.Amount))
		}
	}
	if (op.Kind == checker.Commit || op.Kind == checker.Release) && field(leaf.Inputs, "hold_id") != op.HoldID {
		return fmt.Sprintf("the leaf's hold is %q, the request's %q", field(leaf.Inputs, "hold_id"), op.HoldID)
	}
	if remaining, ok := micros(leaf.Balances, "remaining"); op.Err == "" && (!ok || remaining != op.Remaining) {
		return fmt.Sprintf("the leaf's remaining is %q, the answer's %s", field(leaf.Balances, "remaining"), formatMicros(op.Remaining))
	}
	return ""
}

// holdGone: a commit of a hold that is no longer active (expired by log
// time, which a clock-offset leader moves ahead by minutes) is denied by a
// state that no longer knows the hold's budget, so its leaf names none.
func holdGone(leaf *receipt.Leaf, op *checker.Op) bool {
	return op.Kind == checker.Commit && !op.Allowed && leaf.Reason == "hold_not_active" && leaf.Object == ""
}

// sameReceipt: two nodes hand out the same bytes for one decision.
func sameReceipt(dec *ackedDecision, a, b *fetchedReceipt) string {
	ra, rb := a.resp.Receipt, b.resp.Receipt
	same := bytes.Equal(ra.Leaf, rb.Leaf) && bytes.Equal(ra.Checkpoint, rb.Checkpoint) &&
		bytes.Equal(ra.Signature, rb.Signature) && slices.EqualFunc(ra.Proof, rb.Proof, bytes.Equal)
	if same {
		return ""
	}
	return fmt.Sprintf("request %s (ref %s): %s and %s hand out different receipt bytes", dec.op.RequestID, dec.ref, a.chain.node.ID, b.chain.node.ID)
}

// repairWaitMax bounds how long the check waits for nodes that installed a
// snapshot to fetch the receipts they skipped (they ask every 2 s).
const repairWaitMax = 30 * time.Second

// waitRepaired polls until no running node reports missing receipt ranges;
// it returns a problem if one still does after repairWaitMax.
func waitRepaired(ctx context.Context, nodes []*procs.Node) string {
	var last string
	ok := procs.Poll(repairWaitMax, 200*time.Millisecond, func() bool {
		last = ""
		for _, n := range nodes {
			if !n.Running() {
				continue
			}
			cl, err := client.New([]string{n.APIAddr}, client.WithoutRetries(), client.WithRequestTimeout(receiptCallTimeout))
			if err != nil {
				last = err.Error()
				return false
			}
			cctx, cancel := context.WithTimeout(ctx, receiptCallTimeout)
			resp, err := cl.Receipts.ListCheckpoints(cctx, connect.NewRequest(&tollgatev1.ListCheckpointsRequest{FromIndex: 1, PageSize: 1}))
			cancel()
			cl.Close()
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.ID, err)
				return false
			}
			if m := resp.Msg.Missing; len(m) > 0 {
				last = fmt.Sprintf("%s misses the receipts of %d ranges, first [%d, %d]", n.ID, len(m), m[0].FromIndex, m[0].ToIndex)
				return false
			}
		}
		return true
	})
	if ok {
		return ""
	}
	return fmt.Sprintf("receipts not repaired %s after convergence: %s", repairWaitMax, last)
}
