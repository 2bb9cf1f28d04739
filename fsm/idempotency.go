package fsm

import "hash/fnv"

// idempotencyTable remembers (tenant, request_id) -> first result for
// IdempotencyRetentionMs of log time, so a retry after a timeout or a leader
// change returns the first reply and never charges twice.
//
// Records are appended in log order, so the oldest is always at the head of
// the queue and expiry is a pop from the front: deterministic and O(1).
type idempotencyTable struct {
	byKey map[objectKey]*idemRecord
	queue []*idemRecord
	head  int
}

type idemRecord struct {
	Tenant    string `msgpack:"t"`
	RequestID string `msgpack:"r"`
	// Fingerprint of the command's bytes: the same request_id with different
	// parameters is an error, not a silent replay of something else.
	Fingerprint uint64 `msgpack:"f"`
	AtMs        int64  `msgpack:"at"`
	Result      Result `msgpack:"res"`
}

func newIdempotencyTable() idempotencyTable {
	return idempotencyTable{byKey: map[objectKey]*idemRecord{}}
}

func fingerprint(raw []byte) uint64 {
	h := fnv.New64a()
	h.Write(raw)
	return h.Sum64()
}

func (t *idempotencyTable) len() int { return len(t.byKey) }

func (t *idempotencyTable) get(tenant, requestID string) *idemRecord {
	return t.byKey[objectKey{tenant, requestID}]
}

func (t *idempotencyTable) put(r *idemRecord) {
	t.byKey[objectKey{r.Tenant, r.RequestID}] = r
	t.queue = append(t.queue, r)
}

// expire forgets records older than the retention window at nowMs.
func (t *idempotencyTable) expire(nowMs int64) {
	for t.head < len(t.queue) && t.queue[t.head].AtMs+IdempotencyRetentionMs <= nowMs {
		r := t.queue[t.head]
		delete(t.byKey, objectKey{r.Tenant, r.RequestID})
		t.queue[t.head] = nil
		t.head++
	}
	// Compact once the dead prefix is at least half the slice.
	if t.head > 1024 && t.head*2 >= len(t.queue) {
		t.queue = append([]*idemRecord(nil), t.queue[t.head:]...)
		t.head = 0
	}
}

// records returns the live records in log order.
func (t *idempotencyTable) records() []*idemRecord { return t.queue[t.head:] }
