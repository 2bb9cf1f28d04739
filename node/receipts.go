package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sync/semaphore"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// receiptStore keeps the signed checkpoints and leaves this node produced at
// apply time, in receipts.db beside the Raft log.
//
// Writes leave the apply path: ApplyBatch hands the entries to a writer
// goroutine (a bounded queue, so a slow disk slows Apply rather than growing
// memory), which writes whatever has queued up in one transaction. Readers
// that need an entry just applied wait for the writer's watermark
// (waitWritten); Snapshot and Restore flush the queue first.
//
// Durability: writes do not fsync (that would double the fsyncs per entry).
// Nothing is lost on a crash all the same: Raft replays every entry after
// the last snapshot at start-up, which rewrites the same bytes, and the
// store is synced before each snapshot is taken (raftFSM.Snapshot), so what a
// snapshot covers is on disk. A receipts.db that does not open (a torn write
// after power loss) is moved aside and started afresh.
//
// Missing ranges: entries this node never applied because it installed a
// snapshot instead (it lagged behind the leader's compacted log) have no
// receipts here. The range is recorded (keyMissing) and repair.go fetches
// those receipts from peers, verifies them and fills the range.
type receiptStore struct {
	db        *bolt.DB
	retention time.Duration
	onError   func(error)
	reqs      *reqIndex

	queue chan storeOp
	// queued bounds the leaves waiting for the writer (storeQueueLeavesMax):
	// put blocks, and so Apply, while the writer is that far behind.
	queued   *semaphore.Weighted
	urgent   chan struct{} // a reader waits: stop gathering, commit now
	done     chan struct{}
	enqueued atomic.Uint64 // highest index handed to the writer
	written  *appliedIndex // highest index the writer has written
	applies  uint64        // writer goroutine only
}

// storeOp is a batch of applied entries, or (flushed set) a marker closed
// once everything queued before it is written.
type storeOp struct {
	entries []*fsm.EntryResult
	flushed chan struct{}
	weight  int64 // leaves held against queued
}

const (
	// storeQueueMax bounds the apply batches waiting for the writer.
	storeQueueMax = 1024
	// storeTxEntriesMax bounds the entries one write transaction takes, and
	// storeTxLeavesMax their leaves (a bbolt transaction holds every page it
	// touches in memory until it commits).
	storeTxEntriesMax = 8192
	storeTxLeavesMax  = 5_000
	// storeQueueLeavesMax bounds the leaves waiting for the writer (about
	// 300 bytes each): memory stays bounded when decisions arrive faster
	// than the disk takes them, and Apply slows down instead.
	storeQueueLeavesMax = 100_000
	// storeGather is how long the writer gathers entries for one
	// transaction (a reader waiting for one flushes at once instead).
	storeGather = 20 * time.Millisecond
)

var (
	bucketCheckpoints = []byte("checkpoints") // index (8, BE) -> entry
	bucketMeta        = []byte("meta")
	keyHeldFrom       = []byte("held_from")
	keyMissing        = []byte("missing") // (from, to) pairs, 16 bytes each, sorted
)

// IndexRange is [From, To], both inclusive.
type IndexRange struct{ From, To uint64 }

// missingMax bounds the missing ranges kept (each snapshot install over a
// gap adds one; repair removes them). Past it the oldest are merged.
const missingMax = 1024

func decodeRanges(v []byte) []IndexRange {
	var out []IndexRange
	for len(v) >= 16 {
		out = append(out, IndexRange{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])})
		v = v[16:]
	}
	return out
}

func encodeRanges(rs []IndexRange) []byte {
	var b []byte
	for _, r := range rs {
		b = binary.BigEndian.AppendUint64(b, r.From)
		b = binary.BigEndian.AppendUint64(b, r.To)
	}
	return b
}

// addRange inserts r into sorted, non-overlapping ranges and merges.
func addRange(rs []IndexRange, r IndexRange) []IndexRange {
	out := make([]IndexRange, 0, len(rs)+1)
	for _, x := range rs {
		switch {
		case x.To+1 < r.From || r.To+1 < x.From:
			out = append(out, x)
		default:
			r = IndexRange{min(r.From, x.From), max(r.To, x.To)}
		}
	}
	out = append(out, r)
	sortRanges(out)
	for len(out) > missingMax {
		out = append([]IndexRange{{out[0].From, out[1].To}}, out[2:]...)
	}
	return out
}

// removeRange takes r out of the ranges.
func removeRange(rs []IndexRange, r IndexRange) []IndexRange {
	var out []IndexRange
	for _, x := range rs {
		if x.To < r.From || x.From > r.To {
			out = append(out, x)
			continue
		}
		if x.From < r.From {
			out = append(out, IndexRange{x.From, r.From - 1})
		}
		if x.To > r.To {
			out = append(out, IndexRange{r.To + 1, x.To})
		}
	}
	return out
}

func sortRanges(rs []IndexRange) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].From < rs[j-1].From; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// errNoReceipt: see ErrNoReceipt.
var errNoReceipt = ErrNoReceipt

// pruneEvery is how many applied batches pass between retention sweeps.
const pruneEvery = 256

func openReceiptStore(dir string, retention time.Duration, onError func(error)) (*receiptStore, error) {
	path := filepath.Join(dir, "receipts.db")
	opts := &bolt.Options{Timeout: 5 * time.Second, NoSync: true, NoFreelistSync: true}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil && !errors.Is(err, berrors.ErrTimeout) {
		aside := fmt.Sprintf("%s.broken-%d", path, time.Now().UnixNano())
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("node: open receipts.db: %w (and moving it aside: %v)", err, rerr)
		}
		db, err = bolt.Open(path, 0o600, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("node: open receipts.db: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCheckpoints, bucketReqSegments, bucketMeta, bucketCosts, bucketCostIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("node: init receipts.db: %w", err)
	}
	s := &receiptStore{db: db, retention: retention, onError: onError, reqs: &reqIndex{},
		queue: make(chan storeOp, storeQueueMax), queued: semaphore.NewWeighted(storeQueueLeavesMax), urgent: make(chan struct{}, 1), done: make(chan struct{}), written: newAppliedIndex()}
	if err := db.View(s.reqs.rebuild); err != nil {
		db.Close()
		return nil, fmt.Errorf("node: receipts.db: rebuild the request index: %w", err)
	}
	go s.run()
	return s, nil
}

// run is the writer: it writes every queued batch, several per transaction.
func (s *receiptStore) run() {
	defer close(s.done)
	for op := range s.queue {
		var entries []*fsm.EntryResult
		var markers []chan struct{}
		var leaves, weight int64
		take := func(op storeOp) {
			entries = append(entries, op.entries...)
			weight += op.weight
			for _, e := range op.entries {
				if e.Receipts != nil {
					leaves += int64(len(e.Receipts.Leaves))
				}
			}
			if op.flushed != nil {
				markers = append(markers, op.flushed)
			}
		}
		take(op)
		// Gather for up to storeGather unless a flush waits: a bbolt
		// commit costs far more than the puts in it (~140 µs against
		// ~6 µs per key on this machine), so fewer, larger transactions.
		gather := time.NewTimer(storeGather)
	drain:
		for len(entries) < storeTxEntriesMax && leaves < storeTxLeavesMax && len(markers) == 0 {
			select {
			case op, ok := <-s.queue:
				if !ok {
					break drain
				}
				take(op)
			case <-gather.C:
				break drain
			case <-s.urgent:
				break drain
			}
		}
		gather.Stop()
		if len(entries) > 0 {
			if err := s.write(entries); err != nil {
				s.onError(err)
			}
			last := entries[len(entries)-1].Index
			if w, _ := s.written.get(); last > w {
				s.written.set(last)
			}
			s.pruneIfDue(entries)
		}
		s.queued.Release(weight)
		for _, m := range markers {
			close(m)
		}
	}
}

// flush waits until everything queued so far is written.
func (s *receiptStore) flush() {
	m := make(chan struct{})
	s.queue <- storeOp{flushed: m}
	<-m
}

// waitWritten waits until the entry at index, if this process queued it,
// is written.
func (s *receiptStore) waitWritten(ctx context.Context, index uint64) error {
	target := min(index, s.enqueued.Load())
	for {
		w, changed := s.written.get()
		if w >= target {
			return nil
		}
		select {
		case s.urgent <- struct{}{}:
		default:
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for receipts of index %d to be stored: %w", index, ctx.Err())
		}
	}
}

func (s *receiptStore) close() error {
	s.flush()
	close(s.queue)
	<-s.done
	return s.db.Close()
}

// sync makes every write so far durable.
func (s *receiptStore) sync() error {
	s.flush()
	return s.db.Sync()
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// encodeEntry: uvarint-length-prefixed body, signature, then the leaves.
func encodeEntry(e *fsm.EntryReceipts) []byte {
	var b []byte
	put := func(p []byte) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	put(e.Checkpoint.Body)
	put(e.Checkpoint.Signature)
	b = binary.AppendUvarint(b, uint64(len(e.Leaves)))
	for _, l := range e.Leaves {
		put(l)
	}
	return b
}

func decodeEntry(b []byte) (*fsm.EntryReceipts, error) {
	r := bytes.NewReader(b)
	next := func() ([]byte, error) {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, errors.New("corrupt receipt entry")
		}
		p := make([]byte, n)
		r.Read(p)
		return p, nil
	}
	e := &fsm.EntryReceipts{}
	var err error
	if e.Checkpoint.Body, err = next(); err != nil {
		return nil, err
	}
	if e.Checkpoint.Signature, err = next(); err != nil {
		return nil, err
	}
	count, err := binary.ReadUvarint(r)
	if err != nil || count > uint64(r.Len()) {
		return nil, errors.New("corrupt receipt entry")
	}
	e.Leaves = make([][]byte, count)
	for i := range e.Leaves {
		if e.Leaves[i], err = next(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// put queues the receipts of applied entries (in index order) for the
// writer. Rewriting an entry after a restart writes the same bytes.
func (s *receiptStore) put(entries []*fsm.EntryResult) {
	var leaves int64
	for _, e := range entries {
		if e.Receipts != nil {
			leaves += int64(len(e.Receipts.Leaves))
		}
	}
	// One batch larger than the whole allowance still goes (alone).
	weight := min(leaves, storeQueueLeavesMax)
	s.queued.Acquire(context.Background(), weight) // cannot fail: no deadline
	s.enqueued.Store(entries[len(entries)-1].Index)
	s.queue <- storeOp{entries: entries, weight: weight}
}

func (s *receiptStore) pruneIfDue(entries []*fsm.EntryResult) {
	var lastNowMs int64
	for _, e := range entries {
		lastNowMs = max(lastNowMs, e.NowMs)
	}
	if s.applies++; s.retention > 0 && s.applies%pruneEvery == 0 && lastNowMs > 0 {
		if err := s.prune(lastNowMs - s.retention.Milliseconds()); err != nil {
			s.onError(err)
		}
	}
}

func (s *receiptStore) write(entries []*fsm.EntryResult) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		cps := tx.Bucket(bucketCheckpoints)
		for _, e := range entries {
			if e.Receipts == nil {
				continue
			}
			key := u64(e.Index)
			// A replay after a restart rewrites an entry it already
			// indexed; index only what is new.
			known := cps.Get(key) != nil
			if err := cps.Put(key, encodeEntry(e.Receipts)); err != nil {
				return err
			}
			if known {
				continue
			}
			refs, err := entryRefs(e.Index, e.Receipts)
			if err != nil {
				return err
			}
			if err := s.reqs.add(tx, e.Index, refs); err != nil {
				return err
			}
			if err := indexCosts(tx, e.Index, e.Receipts); err != nil {
				return err
			}
		}
		return nil
	})
}

// prune deletes entries with a log time before cutoffMs and moves held_from
// past them.
func (s *receiptStore) prune(cutoffMs int64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCheckpoints).Cursor()
		var heldFrom uint64
		for k, v := c.First(); k != nil; k, v = c.First() {
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			cp, err := receipt.DecodeCheckpoint(e.Checkpoint.Body)
			if err != nil {
				return err
			}
			if cp.TimeUnixMs >= cutoffMs {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
			heldFrom = cp.Index + 1
		}
		if heldFrom == 0 {
			return nil
		}
		if err := pruneSegments(tx, heldFrom); err != nil {
			return err
		}
		if err := pruneCosts(tx, heldFrom, cutoffMs); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyMissing, encodeRanges(removeRange(decodeRanges(meta.Get(keyMissing)), IndexRange{0, heldFrom - 1}))); err != nil {
			return err
		}
		return meta.Put(keyHeldFrom, u64(heldFrom))
	})
}

// restored reconciles the store with a state restored from a snapshot at
// snapIndex whose chain head is (headIndex, headHash); before the restore
// this node had applied up to prevApplied. If the store holds that head, it
// continues the chain (a restart). Otherwise the entries (prevApplied,
// snapIndex] were never applied here: the range is recorded as missing, for
// repair from peers. Receipts already held are kept.
func (s *receiptStore) restored(prevApplied, snapIndex, headIndex uint64, headHash receipt.Hash) error {
	s.flush()
	if headIndex == 0 {
		return nil
	}
	if e, err := s.entry(headIndex); err == nil {
		if cp, err := receipt.DecodeCheckpoint(e.Checkpoint.Body); err == nil && cp.Hash() == headHash {
			return nil
		}
	}
	from := prevApplied + 1
	if prevApplied >= snapIndex {
		from = 1 // the store lost entries it had (receipts.db was replaced)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		// Checkpoints past the snapshot belong to a history this node
		// applied but the cluster does not continue (an admin restore).
		c := tx.Bucket(bucketCheckpoints).Cursor()
		for k, _ := c.Seek(u64(snapIndex + 1)); k != nil; k, _ = c.Seek(u64(snapIndex + 1)) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return meta.Put(keyMissing, encodeRanges(addRange(decodeRanges(meta.Get(keyMissing)), IndexRange{from, snapIndex})))
	})
}

// missing returns the ranges this node lacks receipts for.
func (s *receiptStore) missing() []IndexRange {
	var out []IndexRange
	s.db.View(func(tx *bolt.Tx) error {
		out = decodeRanges(tx.Bucket(bucketMeta).Get(keyMissing))
		return nil
	})
	return out
}

// IndexedReceipts is one entry's receipts with its log index.
type IndexedReceipts struct {
	Index    uint64
	Receipts *fsm.EntryReceipts
}

// entries returns up to limit stored entries in [from, to] and the last
// index through which this store is complete from `from` (0 if it cannot
// vouch for from: it starts later or from is in a missing range).
func (s *receiptStore) entries(from, to uint64, limit int) ([]IndexedReceipts, uint64, error) {
	var out []IndexedReceipts
	var through uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		heldFrom := uint64(1)
		if v := meta.Get(keyHeldFrom); len(v) == 8 {
			heldFrom = binary.BigEndian.Uint64(v)
		}
		if from < heldFrom {
			return nil
		}
		through = to
		for _, r := range decodeRanges(meta.Get(keyMissing)) {
			if r.To < from || r.From > through {
				continue
			}
			if r.From <= from {
				through = 0
				return nil
			}
			through = r.From - 1
		}
		c := tx.Bucket(bucketCheckpoints).Cursor()
		last := uint64(0)
		if k, _ := c.Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		through = min(through, last) // nothing beyond what it applied
		for k, v := c.Seek(u64(from)); k != nil; k, v = c.Next() {
			index := binary.BigEndian.Uint64(k)
			if index > through {
				break
			}
			if len(out) == limit {
				through = index - 1
				break
			}
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			out = append(out, IndexedReceipts{Index: index, Receipts: e})
		}
		return nil
	})
	if through < from {
		through = 0
	}
	return out, through, err
}

// fill stores entries fetched from a peer (already verified) and marks
// [from, through] as no longer missing.
func (s *receiptStore) fill(entries []IndexedReceipts, from, through uint64) error {
	results := make([]*fsm.EntryResult, len(entries))
	for i, e := range entries {
		results[i] = &fsm.EntryResult{Index: e.Index, Receipts: e.Receipts}
	}
	if err := s.write(results); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		return meta.Put(keyMissing, encodeRanges(removeRange(decodeRanges(meta.Get(keyMissing)), IndexRange{from, through})))
	})
}

// neighbours returns the stored checkpoints right before from and right
// after through (nil where there is none).
func (s *receiptStore) neighbours(from, through uint64) (before, after *receipt.Checkpoint, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCheckpoints).Cursor()
		var k, v []byte
		if k, _ = c.Seek(u64(from)); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		if k != nil && binary.BigEndian.Uint64(k) < from {
			if before, err = checkpointOf(v); err != nil {
				return err
			}
		}
		if k, v := c.Seek(u64(through + 1)); k != nil {
			if after, err = checkpointOf(v); err != nil {
				return err
			}
		}
		return nil
	})
	return before, after, err
}

func checkpointOf(v []byte) (*receipt.Checkpoint, error) {
	e, err := decodeEntry(v)
	if err != nil {
		return nil, err
	}
	return receipt.DecodeCheckpoint(e.Checkpoint.Body)
}

// entry returns the receipts of the entry at index.
func (s *receiptStore) entry(index uint64) (*fsm.EntryReceipts, error) {
	var e *fsm.EntryReceipts
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCheckpoints).Get(u64(index))
		if v == nil {
			return errNoReceipt
		}
		var err error
		e, err = decodeEntry(v)
		return err
	})
	return e, err
}

// byRequest finds the decision a request id made.
func (s *receiptStore) byRequest(tenant, requestID string) (fsm.ReceiptRef, error) {
	var ref fsm.ReceiptRef
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, c := range s.reqs.candidates(tx, requestHash(tenant, requestID)) {
			if confirm(tx, c, tenant, requestID) {
				ref = fsm.ReceiptRef{Index: c.index, Position: c.position}
				return nil
			}
		}
		return errNoReceipt
	})
	return ref, err
}

// CheckpointRange is a page of the checkpoint chain as this node holds it.
type CheckpointRange struct {
	Checkpoints []receipt.SignedCheckpoint
	// Next is the index to continue from (0: the range is complete).
	Next uint64
	// HeldFrom is the first index this node holds receipts from; Last the
	// index of its last checkpoint (0 when it holds none).
	HeldFrom, Last uint64
	// Missing are ranges after HeldFrom this node lacks (being repaired).
	Missing []IndexRange
}

func (s *receiptStore) checkpoints(from, to uint64, limit int) (CheckpointRange, error) {
	var out CheckpointRange
	err := s.db.View(func(tx *bolt.Tx) error {
		out.HeldFrom = 1
		if v := tx.Bucket(bucketMeta).Get(keyHeldFrom); len(v) == 8 {
			out.HeldFrom = binary.BigEndian.Uint64(v)
		}
		out.Missing = decodeRanges(tx.Bucket(bucketMeta).Get(keyMissing))
		c := tx.Bucket(bucketCheckpoints).Cursor()
		if k, _ := c.Last(); k != nil {
			out.Last = binary.BigEndian.Uint64(k)
		}
		for k, v := c.Seek(u64(from)); k != nil; k, v = c.Next() {
			index := binary.BigEndian.Uint64(k)
			if to != 0 && index > to {
				break
			}
			if len(out.Checkpoints) == limit {
				out.Next = index
				break
			}
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			out.Checkpoints = append(out.Checkpoints, e.Checkpoint)
		}
		return nil
	})
	return out, err
}
