package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// proposal is a group of commands that must land in one log entry together
// (a request's batch), with the channel its results come back on.
type proposal struct {
	cmds [][]byte
	done chan proposalResult
}

type proposalResult struct {
	results []fsm.Result
	index   uint64
	err     error
}

// Propose appends cmds to the log in one entry (shared with other concurrent
// proposals: group commit) and returns their results once the entry is
// committed and applied. On a follower the commands are forwarded to the
// leader. An error wrapping ErrUnknownOutcome means the commands may or may
// not have been applied.
func (n *Node) Propose(ctx context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error) {
	if len(cmds) == 0 || len(cmds) > entryCommandsMax {
		return nil, 0, fmt.Errorf("node: a proposal holds 1 to %d commands, not %d", entryCommandsMax, len(cmds))
	}
	encoded := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			return nil, 0, err
		}
		encoded[i] = b
	}
	return n.propose(ctx, encoded, true)
}

// ProposeForwarded is the leader's side of a follower's forward. Every
// command is decoded and validated before anything reaches the log (a command
// no replica can decode would stop them all), and a node that is not the
// leader refuses rather than forwarding again.
func (n *Node) ProposeForwarded(ctx context.Context, cmds [][]byte) ([]fsm.Result, uint64, error) {
	if len(cmds) == 0 || len(cmds) > entryCommandsMax {
		return nil, 0, &fsm.Error{Code: fsm.CodeInvalidArgument, Message: fmt.Sprintf("a forward holds 1 to %d commands, not %d", entryCommandsMax, len(cmds))}
	}
	for i, b := range cmds {
		c, err := fsm.DecodeCommand(b)
		if err != nil {
			return nil, 0, &fsm.Error{Code: fsm.CodeInvalidArgument, Message: fmt.Sprintf("forwarded command %d: %v", i, err)}
		}
		if verr := fsm.Validate(c); verr != nil {
			return nil, 0, verr
		}
	}
	return n.propose(ctx, cmds, false)
}

func (n *Node) propose(ctx context.Context, cmds [][]byte, mayForward bool) ([]fsm.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return n.forward(ctx, cmds, mayForward)
	}
	if planted("no-idempotency") {
		cmds = plantedStripRequestIDs(cmds)
	}
	p := &proposal{cmds: cmds, done: make(chan proposalResult, 1)}
	start := time.Now()
	select {
	case n.proposals <- p:
	case <-n.stopping:
		return nil, 0, ErrShutdown
	case <-ctx.Done():
		return nil, 0, ctx.Err() // not handed over: certainly not applied
	default:
		return nil, 0, ErrOverloaded
	}
	select {
	case r := <-p.done:
		n.metrics.proposeSeconds.Observe(time.Since(start).Seconds())
		return r.results, r.index, r.err
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}

// forward sends the commands to the leader's internal API.
func (n *Node) forward(ctx context.Context, cmds [][]byte, mayForward bool) ([]fsm.Result, uint64, error) {
	err := n.notLeader()
	var nl *NotLeaderError
	if !mayForward || n.peers == nil || !errors.As(err, &nl) || nl.LeaderAPIAddr == "" || nl.LeaderID == n.cfg.NodeID {
		return nil, 0, err
	}
	n.metrics.forwarded.Add(float64(len(cmds)))
	return n.peers.Forward(ctx, nl.LeaderAPIAddr, cmds)
}

// runBatcher packs waiting proposals into log entries. It takes an in-flight
// slot first and only then collects proposals, so while entriesInFlightMax
// entries are in Raft the queue fills and the next entry carries all of it:
// one consensus round and one fsync per batch, not per request.
func (n *Node) runBatcher() {
	defer n.wg.Done()
	var carry *proposal
	for {
		select {
		case n.inflight <- struct{}{}:
		case <-n.stopping:
			n.failQueued(carry)
			return
		}
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-n.proposals:
			case <-n.stopping:
				n.failQueued(nil)
				return
			}
		}
		batch, count := []*proposal{first}, len(first.cmds)
	drain:
		for count < entryCommandsMax {
			select {
			case p := <-n.proposals:
				if count+len(p.cmds) > entryCommandsMax {
					carry = p
					break drain
				}
				batch = append(batch, p)
				count += len(p.cmds)
			default:
				break drain
			}
		}
		n.submit(batch, count)
	}
}

// submit stamps the entry with the leader's clock (never below the previous
// stamp or the last applied log time) and hands it to Raft.
func (n *Node) submit(batch []*proposal, count int) {
	cmds := make([][]byte, 0, count)
	for _, p := range batch {
		cmds = append(cmds, p.cmds...)
	}
	n.mu.Lock()
	stamp := max(n.cfg.Clock().UnixMilli(), n.lastStamp, n.machine.LastLogTimeMs())
	n.lastStamp = stamp
	n.mu.Unlock()
	data := fsm.EncodeEntry(fsm.Entry{NowMs: stamp, Commands: cmds})
	future := n.raft.Apply(data, n.cfg.ApplyTimeout)
	go n.complete(future, batch)
}

// complete waits for an entry and hands each proposal its results.
func (n *Node) complete(future raft.ApplyFuture, batch []*proposal) {
	defer func() { <-n.inflight }()
	// Bounded by the apply timeout Raft was given plus a margin, and by
	// shutdown: a future Raft never answers must not hold a slot forever.
	ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.ApplyTimeout)
	defer cancel()
	err := n.waitFuture(ctx, future)
	if err != nil {
		err = n.applyError(err)
		for _, p := range batch {
			p.done <- proposalResult{err: err}
		}
		return
	}
	res, ok := future.Response().(*fsm.EntryResult)
	if !ok {
		panic(fmt.Sprintf("node: unexpected apply response %T", future.Response()))
	}
	offset := 0
	for _, p := range batch {
		p.done <- proposalResult{results: res.Results[offset : offset+len(p.cmds)], index: res.Index}
		offset += len(p.cmds)
	}
}

// applyError classifies a failed Apply: not leader before the entry was
// appended is a clean refusal; anything after is an unknown outcome.
func (n *Node) applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader()
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrShutdown):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ErrShutdown)
	case errors.Is(err, ErrUnknownOutcome):
		return err
	default: // ErrLeadershipLost, ErrEnqueueTimeout, ...
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	}
}

// failQueued answers every proposal still queued at shutdown.
func (n *Node) failQueued(carry *proposal) {
	if carry != nil {
		carry.done <- proposalResult{err: ErrShutdown}
	}
	for {
		select {
		case p := <-n.proposals:
			p.done <- proposalResult{err: ErrShutdown}
		default:
			return
		}
	}
}
