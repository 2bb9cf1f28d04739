package embed

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/node"
)

// lazyNode lets the API listen before the node exists: until set, every call
// answers ErrNotReady (Unavailable), which clients retry.
type lazyNode struct {
	n atomic.Pointer[node.Node]
}

func (l *lazyNode) set(n *node.Node) { l.n.Store(n) }

func (l *lazyNode) Propose(ctx context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error) {
	n := l.n.Load()
	if n == nil {
		return nil, 0, node.ErrNotReady
	}
	return n.Propose(ctx, cmds...)
}

func (l *lazyNode) Read(ctx context.Context, level node.Consistency, maxStaleness time.Duration, fn func(fsm.View) error) (node.ReadInfo, error) {
	n := l.n.Load()
	if n == nil {
		return node.ReadInfo{}, node.ErrNotReady
	}
	return n.Read(ctx, level, maxStaleness, fn)
}

func (l *lazyNode) Status(hash bool) (node.Status, error) {
	n := l.n.Load()
	if n == nil {
		return node.Status{}, node.ErrNotReady
	}
	return n.Status(hash)
}
