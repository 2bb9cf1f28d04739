package node

import (
	"bytes"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// raftFSM adapts fsm.Machine to hashicorp/raft. It is thin on purpose: all
// decisions are in fsm; this only moves bytes and tracks the applied index.
type raftFSM struct {
	machine *fsm.Machine
	applied *appliedIndex
	metrics *metrics
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
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			f.machine.SkipEntry(l.Index)
			continue
		}
		data := l.Data
		if planted("wall-clock-apply") {
			data = plantedRestamp(data)
		}
		res := f.machine.ApplyEntry(l.Index, data)
		f.metrics.observeEntry(res)
		out[i] = res
	}
	f.applied.set(logs[len(logs)-1].Index)
	return out
}

// Snapshot encodes the state into memory while Apply waits (Raft calls it on
// the FSM goroutine); Persist then writes the bytes while Apply goes on.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	var buf bytes.Buffer
	if err := f.machine.WriteSnapshot(&buf); err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: buf.Bytes()}, nil
}

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.machine.Restore(rc); err != nil {
		return err
	}
	f.metrics.restores.Inc()
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
