package node

import (
	"context"
	"errors"
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
	case Linearizable, Leader:
		if err := n.readFence(ctx, level == Linearizable); err != nil {
			return info, err
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

// readFence makes the local state fit for a read at the leader's level. On
// the leader: the read-index protocol (ReadIndex) and a wait until applied.
// On a follower: the same read index, asked of the leader over the internal
// API, and a wait until this node has applied it (Raft §6.4 follower reads).
// A read after the fence sees every write acknowledged before it started.
func (n *Node) readFence(ctx context.Context, verify bool) error {
	var index uint64
	var err error
	if n.raft.State() == raft.Leader {
		index, err = n.ReadIndex(ctx, verify)
	} else {
		index, err = n.followerReadIndex(ctx, verify)
	}
	if err != nil {
		return err
	}
	return n.waitApplied(ctx, index)
}

// ReadIndex is the leader's part of a read: remember the commit index and,
// with verify, prove we are still leader with a quorum round (VerifyLeader)
// and check the term did not change in between. Without verify (LEADER
// reads) the leader's lease stands in for the round: it steps down after
// LeaderLeaseTimeout without a quorum.
func (n *Node) ReadIndex(ctx context.Context, verify bool) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	term := n.raft.CurrentTerm()
	n.mu.Lock()
	ready := n.readyTerm == term
	n.mu.Unlock()
	if !ready {
		// Until our barrier of this term commits, the commit index may not
		// cover entries committed by earlier leaders.
		return 0, ErrNotReady
	}
	readIndex := n.raft.CommitIndex()
	if !verify || planted("no-verify-leader") {
		return readIndex, nil
	}
	if err := n.waitFuture(ctx, n.raft.VerifyLeader()); err != nil {
		if errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrShutdown) {
			return 0, err
		}
		return 0, n.notLeader()
	}
	if n.raft.CurrentTerm() != term {
		return 0, n.notLeader()
	}
	return readIndex, nil
}

func (n *Node) followerReadIndex(ctx context.Context, verify bool) (uint64, error) {
	err := n.notLeader()
	var nl *NotLeaderError
	if n.peers == nil || !errors.As(err, &nl) || nl.LeaderAPIAddr == "" || nl.LeaderID == n.cfg.NodeID {
		return 0, err
	}
	return n.peers.ReadIndex(ctx, nl.LeaderAPIAddr, verify)
}

// waitApplied blocks until the state machine has applied index. After the
// leader's barrier every entry is one the state machine sees (commands and
// configuration changes), so the applied index reaches any commit index.
// WaitApplied waits until this node has applied the entry at index.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error { return n.waitApplied(ctx, index) }

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
