package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// Consistency is a read level (see DESIGN.md).
type Consistency int

const (
	// Linearizable: read index + VerifyLeader + wait until applied.
	Linearizable Consistency = iota
	// Leader: the leader's local state while its lease holds.
	Leader
	// Stale: any node's local state, as stale as max_staleness allows.
	Stale
)

func (c Consistency) String() string {
	switch c {
	case Linearizable:
		return "linearizable"
	case Leader:
		return "leader"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("consistency(%d)", int(c))
}

// ReadInfo says how a read was served.
type ReadInfo struct {
	Consistency  Consistency
	AppliedIndex uint64
	// Staleness bounds how far behind the leader the state may be: zero on
	// a leader, time since the last contact with the leader on a follower.
	Staleness time.Duration
	NodeID    string
}

// Read runs fn on the local state after establishing the requested level.
// maxStaleness (Stale only; 0 = unbounded) refuses a state older than that.
func (n *Node) Read(ctx context.Context, level Consistency, maxStaleness time.Duration, fn func(fsm.View) error) (ReadInfo, error) {
	info := ReadInfo{Consistency: level, NodeID: n.cfg.NodeID}
	switch level {
	case Linearizable:
		if err := n.linearizableFence(ctx); err != nil {
			return info, err
		}
	case Leader:
		if !n.isReadyLeader() {
			if n.raft.State() == raft.Leader {
				return info, ErrNotReady
			}
			return info, n.notLeader()
		}
	case Stale:
		staleness := n.staleness()
		if maxStaleness > 0 && staleness > maxStaleness {
			return info, fmt.Errorf("%w: %s behind, max %s", ErrTooStale, staleness.Round(time.Millisecond), maxStaleness)
		}
		info.Staleness = staleness
	default:
		return info, fmt.Errorf("node: unknown consistency %d", level)
	}
	index, err := n.machine.Read(n.cfg.Clock().UnixMilli(), fn)
	info.AppliedIndex = index
	return info, err
}

// linearizableFence is the read-index protocol: remember the commit index,
// prove we are still leader with a quorum round (VerifyLeader), check the term
// did not change in between, then wait until the state machine has applied
// the remembered index. A read after the fence sees every write acknowledged
// before the read started.
func (n *Node) linearizableFence(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	term := n.raft.CurrentTerm()
	n.mu.Lock()
	ready := n.readyTerm == term
	n.mu.Unlock()
	if !ready {
		// Until our barrier of this term commits, the commit index may not
		// cover entries committed by earlier leaders.
		return ErrNotReady
	}
	readIndex := n.raft.CommitIndex()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return n.notLeader()
	}
	if n.raft.CurrentTerm() != term {
		return n.notLeader()
	}
	return n.waitApplied(ctx, readIndex)
}

// waitApplied blocks until the state machine has applied index. After the
// leader's barrier every entry is one the state machine sees (commands and
// configuration changes), so the applied index reaches any commit index.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	for {
		applied, changed := n.applied.get()
		if applied >= index {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (applied %d): %w", index, applied, ctx.Err())
		case <-n.stopping:
			return ErrShutdown
		}
	}
}

func (n *Node) staleness() time.Duration {
	if n.raft.State() == raft.Leader {
		return 0
	}
	last := n.raft.LastContact()
	if last.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(last)
}

// Status is a snapshot of this node's view of the cluster.
type Status struct {
	NodeID, State, LeaderID, LeaderRaftAddr, APIAddr string
	Term, CommitIndex, AppliedIndex, LastLogIndex    uint64
	LastLogTimeMs                                    int64
	Members                                          []Member
	StateHash                                        string
}

// Member is one server of the Raft configuration.
type Member struct {
	ID, RaftAddr, Suffrage string
	Leader                 bool
}

// Status reports the node's Raft state; with hash, also the state hash (a
// full serialization of the state machine).
func (n *Node) Status(hash bool) (Status, error) {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	applied, _ := n.applied.get()
	st := Status{
		NodeID:         n.cfg.NodeID,
		State:          n.raft.State().String(),
		LeaderID:       string(leaderID),
		LeaderRaftAddr: string(leaderAddr),
		APIAddr:        n.cfg.APIAddr,
		Term:           n.raft.CurrentTerm(),
		CommitIndex:    n.raft.CommitIndex(),
		AppliedIndex:   applied,
		LastLogIndex:   n.raft.LastIndex(),
		LastLogTimeMs:  n.machine.LastLogTimeMs(),
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return st, err
	}
	for _, s := range cf.Configuration().Servers {
		st.Members = append(st.Members, Member{
			ID:       string(s.ID),
			RaftAddr: string(s.Address),
			Suffrage: s.Suffrage.String(),
			Leader:   s.ID == leaderID,
		})
	}
	if hash {
		h, index, err := n.machine.StateHash()
		if err != nil {
			return st, err
		}
		st.StateHash, st.AppliedIndex = h, index
	}
	return st, nil
}
