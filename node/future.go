package node

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// waitFuture waits for a Raft future, but never longer than ctx or the
// node's life. hashicorp/raft buffers some request channels (verifyCh holds
// 64, applyCh MaxAppendEntries), so a request that races a shutdown can be
// queued where no loop will ever answer it; an unbounded f.Error() would then
// hang its caller forever (found by the simulation: a follower's forwarded
// read index waited 8 minutes on a leader that had been stopped). The
// goroutine left waiting on such a future ends when Raft answers or never
// does; it holds nothing.
func (n *Node) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for raft: %v", ErrUnknownOutcome, ctx.Err())
	case <-n.stopping:
		return ErrShutdown
	}
}

// waitChange waits for a configuration change, bounded like every Raft wait.
func (n *Node) waitChange(f raft.Future) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*membershipChangeTimeout)
	defer cancel()
	return n.waitFuture(ctx, f)
}
