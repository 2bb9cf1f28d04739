package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// receiptStore keeps the signed checkpoints and leaves this node produced at
// apply time, in receipts.db beside raft.db.
//
// Durability: writes do not fsync (that would double the fsyncs per entry).
// Nothing is lost on a crash all the same: Raft replays every entry after
// the last snapshot at start-up, which rewrites the same bytes, and the
// store is synced before each snapshot is taken (raftFSM.Snapshot), so what a
// snapshot covers is on disk. A receipts.db that does not open (a torn write
// after power loss) is moved aside and the node holds receipts from the next
// restored snapshot on.
type receiptStore struct {
	db        *bolt.DB
	retention time.Duration
	applies   uint64
}

var (
	bucketCheckpoints = []byte("checkpoints") // index (8, BE) -> entry
	bucketRequests    = []byte("requests")    // tenant 0x00 request_id -> index (8) position (4)
	bucketMeta        = []byte("meta")
	keyHeldFrom       = []byte("held_from")
)

// errNoReceipt: see ErrNoReceipt.
var errNoReceipt = ErrNoReceipt

// pruneEvery is how many applied batches pass between retention sweeps.
const pruneEvery = 256

func openReceiptStore(dir string, retention time.Duration) (*receiptStore, error) {
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
		for _, b := range [][]byte{bucketCheckpoints, bucketRequests, bucketMeta} {
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
	return &receiptStore{db: db, retention: retention}, nil
}

func (s *receiptStore) close() error { return s.db.Close() }

// sync makes every write so far durable.
func (s *receiptStore) sync() error { return s.db.Sync() }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func requestKey(tenant, requestID string) []byte {
	return append(append([]byte(tenant), 0), requestID...)
}

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

// put stores the receipts of applied entries (one transaction per batch).
// Rewriting an entry after a restart writes the same bytes.
func (s *receiptStore) put(entries []*fsm.EntryResult) error {
	var lastNowMs int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		cps, reqs := tx.Bucket(bucketCheckpoints), tx.Bucket(bucketRequests)
		for _, e := range entries {
			if e.Receipts == nil {
				continue
			}
			lastNowMs = e.NowMs
			if err := cps.Put(u64(e.Index), encodeEntry(e.Receipts)); err != nil {
				return err
			}
			for i, raw := range e.Receipts.Leaves {
				l, err := receipt.DecodeLeaf(raw)
				if err != nil {
					return err
				}
				if l.RequestID == "" {
					continue
				}
				k := requestKey(l.Tenant, l.RequestID)
				if reqs.Get(k) != nil {
					continue // an atomic batch: the first item names it
				}
				v := binary.BigEndian.AppendUint32(u64(e.Index), uint32(i))
				if err := reqs.Put(k, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.applies++; s.retention > 0 && s.applies%pruneEvery == 0 && lastNowMs > 0 {
		return s.prune(lastNowMs - s.retention.Milliseconds())
	}
	return nil
}

// prune deletes entries with a log time before cutoffMs and moves held_from
// past them.
func (s *receiptStore) prune(cutoffMs int64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		cps, reqs := tx.Bucket(bucketCheckpoints), tx.Bucket(bucketRequests)
		c := cps.Cursor()
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
			for _, raw := range e.Leaves {
				if l, err := receipt.DecodeLeaf(raw); err == nil && l.RequestID != "" {
					if err := reqs.Delete(requestKey(l.Tenant, l.RequestID)); err != nil {
						return err
					}
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
			heldFrom = cp.Index + 1
		}
		if heldFrom == 0 {
			return nil
		}
		return tx.Bucket(bucketMeta).Put(keyHeldFrom, u64(heldFrom))
	})
}

// restored reconciles the store with a state restored from a snapshot at
// appliedIndex whose chain head is (headIndex, headHash). If the store holds
// that head, it continues the chain (a restart). Otherwise it has a gap (an
// install after lagging behind, or an admin restore): it is emptied and
// holds receipts from appliedIndex+1 on.
func (s *receiptStore) restored(appliedIndex, headIndex uint64, headHash receipt.Hash) error {
	if headIndex == 0 {
		return nil
	}
	if e, err := s.entry(headIndex); err == nil {
		if cp, err := receipt.DecodeCheckpoint(e.Checkpoint.Body); err == nil && cp.Hash() == headHash {
			return nil
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCheckpoints, bucketRequests} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyHeldFrom, u64(appliedIndex+1))
	})
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
		v := tx.Bucket(bucketRequests).Get(requestKey(tenant, requestID))
		if len(v) != 12 {
			return errNoReceipt
		}
		ref = fsm.ReceiptRef{Index: binary.BigEndian.Uint64(v), Position: binary.BigEndian.Uint32(v[8:])}
		return nil
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
}

func (s *receiptStore) checkpoints(from, to uint64, limit int) (CheckpointRange, error) {
	var out CheckpointRange
	err := s.db.View(func(tx *bolt.Tx) error {
		out.HeldFrom = 1
		if v := tx.Bucket(bucketMeta).Get(keyHeldFrom); len(v) == 8 {
			out.HeldFrom = binary.BigEndian.Uint64(v)
		}
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
