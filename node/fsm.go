package node

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// raftFSM adapts fsm.Machine to hashicorp/raft. It is thin on purpose: all
// decisions are in fsm; this only moves bytes and tracks the applied index.
type raftFSM struct {
	machine  *fsm.Machine
	applied  *appliedIndex
	metrics  *metrics
	receipts *receiptStore // nil: no receipts kept
	log      *slog.Logger
}

var (
	_ raft.FSM         = (*raftFSM)(nil)
	_ raft.BatchingFSM = (*raftFSM)(nil)
)

func (f *raftFSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch receives command and configuration entries (Raft's own no-op and
// barrier entries never reach it) and returns one response per entry.
func (f *raftFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	var sealed []*fsm.EntryResult
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			f.machine.SkipEntry(l.Index)
			continue
		}
		data := l.Data
		if planted("wall-clock-apply") {
			data = plantedRestamp(data)
		}
		res := f.machine.ApplyEntry(l.Index, l.Term, data)
		f.metrics.observeEntry(res)
		if res.Receipts != nil {
			sealed = append(sealed, &fsm.EntryResult{Index: res.Index, NowMs: res.NowMs, Receipts: res.Receipts})
			// The reply to the proposer does not carry the leaves: Raft's
			// log cache keeps the last 512 entries' futures, and with them
			// their responses (a 1000-record entry's leaves are ~300 KB).
			res.Receipts = nil
		}
		out[i] = res
	}
	if f.receipts != nil && len(sealed) > 0 {
		// Queued for the store's writer; a reader that needs them waits
		// for it (Node.Receipt).
		f.receipts.put(sealed)
	}
	f.applied.set(logs[len(logs)-1].Index)
	return out
}

// Snapshot encodes the state into memory while Apply waits (Raft calls it on
// the FSM goroutine); Persist then writes the bytes while Apply goes on.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	if f.receipts != nil {
		// Everything the snapshot covers must be durable in the receipt
		// store: after the log is compacted it cannot be replayed.
		if err := f.receipts.sync(); err != nil {
			return nil, fmt.Errorf("sync receipts: %w", err)
		}
	}
	var buf bytes.Buffer
	if err := f.machine.WriteSnapshot(&buf); err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: buf.Bytes()}, nil
}

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	prevApplied := f.machine.AppliedIndex()
	if err := f.machine.Restore(rc); err != nil {
		return err
	}
	f.metrics.restores.Inc()
	if f.receipts != nil {
		headIndex, headHash := f.machine.ChainHead()
		if err := f.receipts.restored(prevApplied, f.machine.AppliedIndex(), headIndex, headHash); err != nil {
			return fmt.Errorf("receipt store after restore: %w", err)
		}
	}
	f.applied.set(f.machine.AppliedIndex())
	return nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// appliedIndex is the last index the state machine has applied, with a way to
// wait for it to reach a value.
type appliedIndex struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{} // closed and replaced on every advance
}

func newAppliedIndex() *appliedIndex {
	return &appliedIndex{changed: make(chan struct{})}
}

func (a *appliedIndex) set(index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.index = index
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *appliedIndex) get() (uint64, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index, a.changed
}
