package node

import (
	"errors"
	"fmt"
)

// Errors a node returns. Transport maps them to API codes; errors.Is works
// through wrapping.
var (
	// ErrNotLeader: the operation needs the leader and this node is not it.
	// The concrete error is *NotLeaderError with the leader, if known.
	ErrNotLeader = errors.New("this node is not the leader")
	// ErrUnknownOutcome: the command was handed to Raft but no result came
	// back (timeout, lost leadership, shutdown). It may or may not have been
	// applied; retry with the same request_id.
	ErrUnknownOutcome = errors.New("outcome unknown")
	// ErrTooStale: a STALE read would be older than the caller's max_staleness.
	ErrTooStale = errors.New("local state is older than max_staleness")
	// ErrOverloaded: the proposal queue is full.
	ErrOverloaded = errors.New("too many requests waiting for the log")
	// ErrShutdown: the node is shutting down.
	ErrShutdown = errors.New("node is shutting down")
	// ErrNotReady: this node is the leader but has not yet committed an entry
	// of its term, so it cannot serve linearizable reads yet.
	ErrNotReady = errors.New("new leader not ready to serve reads")
	// ErrNoReceipt: this node does not hold the receipt or checkpoint asked
	// for (never made, before the node's held-from index, or pruned).
	ErrNoReceipt = errors.New("no such receipt on this node")
	// ErrNoReceiptStore: this node keeps no receipts (no data directory).
	ErrNoReceiptStore = errors.New("this node keeps no receipts")
)

// NotLeaderError carries the leader hint.
type NotLeaderError struct {
	LeaderID      string
	LeaderAPIAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "this node is not the leader and no leader is known"
	}
	return fmt.Sprintf("this node is not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAPIAddr)
}

func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
