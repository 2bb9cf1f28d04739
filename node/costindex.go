package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// The cost index. A cost record's raw form is its receipt leaf (amount,
// currency, resource, service, labels, occurred_at, record id and what it
// charged, at which rate), which receipts.db already keeps at apply time and
// repairs from peers. The index in the same file orders records by
// (tenant, occurred_at, record id) for ListCosts and finds one by id for
// GetCost:
//
//	costs:   tenant 0x00 occurred_at (8, BE) record id -> index (8, BE) position (4, BE)
//	cost_ids: tenant 0x00 record id                    -> the costs key
//
// Records go when their entry is pruned by --receipt-retention; a key whose
// entry is gone is skipped by readers and deleted by the next prune.

var (
	bucketCosts   = []byte("costs")
	bucketCostIDs = []byte("cost_ids")
)

func costKey(k fsm.CostKey) []byte {
	b := make([]byte, 0, len(k.Tenant)+1+8+len(k.ID))
	b = append(b, k.Tenant...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(k.OccurredAtMs))
	return append(b, k.ID...)
}

func costIDKey(tenant, id string) []byte {
	return append(append([]byte(tenant), 0), id...)
}

// entryCosts returns the cost keys of an entry: carried by a freshly applied
// entry, decoded from the leaves of one fetched from a peer.
func entryCosts(e *fsm.EntryReceipts) ([]fsm.CostKey, error) {
	if e.Costs != nil || e.Requests != nil {
		return e.Costs, nil
	}
	var out []fsm.CostKey
	for _, raw := range e.Leaves {
		l, err := receipt.DecodeLeaf(raw)
		if err != nil {
			return nil, err
		}
		if k, ok := fsm.CostKeyOf(l); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// indexCosts adds an entry's cost records to the index (in the writer's
// transaction).
func indexCosts(tx *bolt.Tx, index uint64, e *fsm.EntryReceipts) error {
	keys, err := entryCosts(e)
	if err != nil || len(keys) == 0 {
		return err
	}
	costs, ids := tx.Bucket(bucketCosts), tx.Bucket(bucketCostIDs)
	for _, k := range keys {
		key := costKey(k)
		v := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, index), k.Position)
		if err := costs.Put(key, v); err != nil {
			return err
		}
		if err := ids.Put(costIDKey(k.Tenant, k.ID), key); err != nil {
			return err
		}
	}
	return nil
}

// pruneCosts deletes index keys whose entry is below heldFrom. Such an
// entry has a log time before cutoffMs, and a record's occurred_at is at
// most CostFutureSkewMs after its entry's log time, so per tenant only keys
// with occurred_at before cutoffMs + the skew are looked at.
func pruneCosts(tx *bolt.Tx, heldFrom uint64, cutoffMs int64) error {
	costs, ids := tx.Bucket(bucketCosts), tx.Bucket(bucketCostIDs)
	limit := uint64(max(cutoffMs+fsm.CostFutureSkewMs, 0))
	c := costs.Cursor()
	for k, v := c.First(); k != nil; {
		tenant, rest, ok := bytes.Cut(k, []byte{0})
		if !ok || len(rest) < 8 {
			k, v = c.Next()
			continue
		}
		if binary.BigEndian.Uint64(rest) >= limit {
			// Past this tenant's prunable keys: on to the next tenant.
			k, v = c.Seek(append(append([]byte(nil), tenant...), 1))
			continue
		}
		if len(v) == 12 && binary.BigEndian.Uint64(v) < heldFrom {
			if err := ids.Delete(costIDKey(string(tenant), string(rest[8:]))); err != nil {
				return err
			}
			next := append([]byte(nil), k...)
			if err := c.Delete(); err != nil {
				return err
			}
			k, v = c.Seek(next)
			continue
		}
		k, v = c.Next()
	}
	return nil
}

// CostRecord is a recorded cost as this node holds it: its leaf, and where
// the leaf is.
type CostRecord struct {
	Leaf *receipt.Leaf
	Ref  fsm.ReceiptRef
}

// ErrNoCost: this node holds no cost record with that id (never recorded,
// pruned, or not yet repaired after a snapshot install).
var ErrNoCost = errors.New("no such cost record on this node")

// CostQuery selects cost records of a tenant in [FromMs, ToMs) of
// occurred_at, after the cursor After (a key from a previous page).
type CostQuery struct {
	Tenant    string
	FromMs    int64
	ToMs      int64
	After     []byte
	Limit     int
	Match     func(*receipt.Leaf) bool
	ScanLimit int // keys looked at per page at most (filters that match little)
}

func (s *receiptStore) costByID(tenant, id string) (CostRecord, error) {
	var out CostRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		key := tx.Bucket(bucketCostIDs).Get(costIDKey(tenant, id))
		if key == nil {
			return ErrNoCost
		}
		v := tx.Bucket(bucketCosts).Get(key)
		if len(v) != 12 {
			return ErrNoCost
		}
		rec, err := costAt(tx, v)
		out = rec
		return err
	})
	return out, err
}

func costAt(tx *bolt.Tx, v []byte) (CostRecord, error) {
	index, pos := binary.BigEndian.Uint64(v), binary.BigEndian.Uint32(v[8:])
	raw := tx.Bucket(bucketCheckpoints).Get(u64(index))
	if raw == nil {
		return CostRecord{}, ErrNoCost // pruned; the next prune drops the key
	}
	e, err := decodeEntry(raw)
	if err != nil {
		return CostRecord{}, err
	}
	if int(pos) >= len(e.Leaves) {
		return CostRecord{}, errors.New("cost index points past its entry's leaves")
	}
	l, err := receipt.DecodeLeaf(e.Leaves[pos])
	if err != nil {
		return CostRecord{}, err
	}
	return CostRecord{Leaf: l, Ref: fsm.ReceiptRef{Index: index, Position: pos}}, nil
}

// costs returns a page of records in (occurred_at, id) order and the cursor
// to continue after (nil at the end).
func (s *receiptStore) costs(q CostQuery) ([]CostRecord, []byte, error) {
	var out []CostRecord
	var next []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(q.Tenant), 0)
		start := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(max(q.FromMs, 0)))
		end := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(max(q.ToMs, 0)))
		c := tx.Bucket(bucketCosts).Cursor()
		k, v := c.Seek(start)
		if q.After != nil && bytes.Compare(q.After, start) >= 0 {
			if k, v = c.Seek(q.After); k != nil && bytes.Equal(k, q.After) {
				k, v = c.Next()
			}
		}
		scanned := 0
		for ; k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
			if scanned == q.ScanLimit && q.ScanLimit > 0 {
				next = append([]byte(nil), k...)
				return nil
			}
			scanned++
			if len(v) != 12 {
				continue
			}
			rec, err := costAt(tx, v)
			if errors.Is(err, ErrNoCost) {
				continue
			}
			if err != nil {
				return err
			}
			if q.Match != nil && !q.Match(rec.Leaf) {
				continue
			}
			out = append(out, rec)
			if len(out) == q.Limit {
				if k2, _ := c.Next(); k2 != nil && bytes.Compare(k2, end) < 0 {
					next = append([]byte(nil), k...)
				}
				return nil
			}
		}
		return nil
	})
	return out, next, err
}

// CostRecords returns a page of this node's cost records once its store holds
// everything up to atIndex (the applied index a read level established).
func (n *Node) CostRecords(ctx context.Context, atIndex uint64, q CostQuery) ([]CostRecord, []byte, error) {
	if n.receipts == nil {
		return nil, nil, ErrNoReceiptStore
	}
	if err := n.receipts.waitWritten(ctx, atIndex); err != nil {
		return nil, nil, err
	}
	return n.receipts.costs(q)
}

// CostRecordByID returns one cost record once the store holds everything up
// to atIndex.
func (n *Node) CostRecordByID(ctx context.Context, atIndex uint64, tenant, id string) (CostRecord, error) {
	if n.receipts == nil {
		return CostRecord{}, ErrNoReceiptStore
	}
	if err := n.receipts.waitWritten(ctx, atIndex); err != nil {
		return CostRecord{}, err
	}
	return n.receipts.costByID(tenant, id)
}
