package node

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// The request index maps (tenant, request id) to the decision's receipt.
//
// A B+tree keyed by request id takes random inserts: on this machine they
// made the receipt store the largest cost receipts add (a 24 % throughput
// loss at 64 clients against 3 % without the index). So the index is kept
// in segments of reqSegmentSpan log indexes instead: the open segment is a
// slice in memory (appended to by the writer), and when the log passes the
// segment's end it is sorted by hash and written as one value. A lookup
// binary-searches every sealed segment, newest first, and scans the open
// one; every candidate is confirmed against the stored leaf, so a hash
// collision costs a read, never a wrong answer. After a restart the open
// segment is rebuilt from the stored entries of its index range.

// reqSegmentSpan is how many log indexes one segment covers.
const reqSegmentSpan = 4096

var bucketReqSegments = []byte("request_segments") // segment (8, BE) -> sorted reqRefs

// reqRef is one request's decision: hash of (tenant, request id), log index
// and leaf position; 20 bytes packed.
type reqRef struct {
	hash     uint64
	index    uint64
	position uint32
}

const reqRefSize = 20

func requestHash(tenant, requestID string) uint64 {
	h := sha256.New()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(requestID))
	var sum [32]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

func packRefs(refs []reqRef) []byte {
	b := make([]byte, 0, len(refs)*reqRefSize)
	for _, r := range refs {
		b = binary.BigEndian.AppendUint64(b, r.hash)
		b = binary.BigEndian.AppendUint64(b, r.index)
		b = binary.BigEndian.AppendUint32(b, r.position)
	}
	return b
}

func refAt(v []byte, i int) reqRef {
	p := v[i*reqRefSize:]
	return reqRef{binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:]), binary.BigEndian.Uint32(p[16:])}
}

func sortRefs(refs []reqRef) {
	slices.SortFunc(refs, func(a, b reqRef) int {
		switch {
		case a.hash != b.hash:
			return cmpU64(a.hash, b.hash)
		case a.index != b.index:
			return cmpU64(a.index, b.index)
		}
		return int(a.position) - int(b.position)
	})
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// reqIndex is the open segment.
type reqIndex struct {
	mu   sync.Mutex
	seg  uint64
	open []reqRef
}

// entryRefs lists the request refs of one entry's leaves.
func entryRefs(index uint64, e *fsm.EntryReceipts) ([]reqRef, error) {
	var out []reqRef
	var prev fsm.RequestKey
	for i, raw := range e.Leaves {
		var req fsm.RequestKey
		if i < len(e.Requests) {
			req = e.Requests[i]
		} else { // fetched from a peer, or rebuilt: decode
			l, err := receipt.DecodeLeaf(raw)
			if err != nil {
				return nil, err
			}
			req = fsm.RequestKey{Tenant: l.Tenant, RequestID: l.RequestID}
		}
		// A batch's items follow each other with one request id: the
		// request's receipt is its first item's, so only that is indexed.
		if req.RequestID != "" && req != prev {
			out = append(out, reqRef{requestHash(req.Tenant, req.RequestID), index, uint32(i)})
		}
		prev = req
	}
	return out, nil
}

// add indexes refs of an entry at index, within the writer's transaction:
// into the open segment, sealing it first when the log has moved past it;
// refs of an older segment (a repair) are merged into its sealed value.
func (ri *reqIndex) add(tx *bolt.Tx, index uint64, refs []reqRef) error {
	seg := index / reqSegmentSpan
	ri.mu.Lock()
	defer ri.mu.Unlock()
	switch {
	case seg == ri.seg:
		ri.open = append(ri.open, refs...)
		return nil
	case seg > ri.seg:
		if err := mergeSegment(tx, ri.seg, ri.open); err != nil {
			return err
		}
		ri.seg, ri.open = seg, append([]reqRef(nil), refs...)
		return nil
	}
	return mergeSegment(tx, seg, refs)
}

// mergeSegment adds refs to the sealed segment seg.
func mergeSegment(tx *bolt.Tx, seg uint64, refs []reqRef) error {
	if len(refs) == 0 {
		return nil
	}
	b := tx.Bucket(bucketReqSegments)
	all := append([]reqRef(nil), refs...)
	if v := b.Get(u64(seg)); v != nil {
		for i := 0; i < len(v)/reqRefSize; i++ {
			all = append(all, refAt(v, i))
		}
	}
	sortRefs(all)
	all = slices.Compact(all)
	return b.Put(u64(seg), packRefs(all))
}

// rebuild loads the open segment from the stored entries of its range (at
// start-up: the last segment was never sealed).
func (ri *reqIndex) rebuild(tx *bolt.Tx) error {
	c := tx.Bucket(bucketCheckpoints).Cursor()
	k, _ := c.Last()
	if k == nil {
		return nil
	}
	seg := binary.BigEndian.Uint64(k) / reqSegmentSpan
	var open []reqRef
	for k, v := c.Seek(u64(seg * reqSegmentSpan)); k != nil; k, v = c.Next() {
		e, err := decodeEntry(v)
		if err != nil {
			return err
		}
		refs, err := entryRefs(binary.BigEndian.Uint64(k), e)
		if err != nil {
			return err
		}
		open = append(open, refs...)
	}
	ri.mu.Lock()
	ri.seg, ri.open = seg, open
	ri.mu.Unlock()
	return nil
}

// candidates returns the refs whose hash is h: the open segment's, then the
// sealed segments' from the newest.
func (ri *reqIndex) candidates(tx *bolt.Tx, h uint64) []reqRef {
	var out []reqRef
	ri.mu.Lock()
	for _, r := range ri.open {
		if r.hash == h {
			out = append(out, r)
		}
	}
	ri.mu.Unlock()
	c := tx.Bucket(bucketReqSegments).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		n := len(v) / reqRefSize
		lo, hi := 0, n
		for lo < hi {
			mid := (lo + hi) / 2
			if refAt(v, mid).hash < h {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		for j := lo; j < n && refAt(v, j).hash == h; j++ {
			out = append(out, refAt(v, j))
		}
	}
	return out
}

// pruneSegments drops sealed segments entirely before heldFrom.
func pruneSegments(tx *bolt.Tx, heldFrom uint64) error {
	c := tx.Bucket(bucketReqSegments).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if (binary.BigEndian.Uint64(k)+1)*reqSegmentSpan > heldFrom {
			return nil
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// confirm reports whether the leaf at ref is tenant's request id.
func confirm(tx *bolt.Tx, ref reqRef, tenant, requestID string) bool {
	v := tx.Bucket(bucketCheckpoints).Get(u64(ref.index))
	if v == nil {
		return false
	}
	e, err := decodeEntry(v)
	if err != nil || int(ref.position) >= len(e.Leaves) {
		return false
	}
	l, err := receipt.DecodeLeaf(e.Leaves[ref.position])
	return err == nil && l.Tenant == tenant && l.RequestID == requestID
}
