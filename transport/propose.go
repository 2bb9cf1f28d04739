package transport

import (
	"context"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/node"
)

// Node is what transport needs of a server. *node.Node satisfies it.
type Node interface {
	// Propose appends commands to the log in one entry (forwarding them to
	// the leader from a follower) and returns their results.
	Propose(ctx context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error)
	// Read runs fn on the local state at the requested consistency level.
	Read(ctx context.Context, level node.Consistency, maxStaleness time.Duration, fn func(fsm.View) error) (node.ReadInfo, error)
	// Status reports the node's view of the cluster.
	Status(ctx context.Context, opts node.StatusOptions) (node.Status, error)
	// LeaderAddr reports whether this node leads, and the leader's API
	// address when it does not.
	LeaderAddr() (bool, string)
	ClusterAdmin
	InternalNode
	ReceiptNode
	CostNode
	AlertNode
}

// ClusterAdmin is the administration a node offers (ClusterService).
type ClusterAdmin interface {
	Join(addrs []string) (int, error)
	RemoveServer(ctx context.Context, id string) (uint64, error)
	TransferLeadership(ctx context.Context, id string) (string, error)
	SnapshotSave(ctx context.Context) ([]byte, uint64, error)
	SnapshotRestore(ctx context.Context, data []byte) (uint64, string, error)
}

// InternalNode is what other nodes ask of this one (InternalService).
type InternalNode interface {
	ProposeForwarded(ctx context.Context, cmds [][]byte) ([]fsm.Result, uint64, error)
	ReceiptEntries(from, to uint64, limit int) ([]node.IndexedReceipts, uint64, error)
	ReadIndex(ctx context.Context, verify bool) (uint64, error)
	Progress() node.Progress
}

// proposeOne validates cmd exactly as Apply will, proposes it, and turns a
// rejection into an error.
func proposeOne(ctx context.Context, n Node, cmd fsm.Command) (fsm.Result, error) {
	if err := fsm.Validate(cmd); err != nil {
		return fsm.Result{}, err
	}
	results, _, err := n.Propose(ctx, cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	if results[0].Err != nil {
		return results[0], results[0].Err
	}
	return results[0], nil
}

// proposeMany validates every command (naming the failing item) and proposes
// them together, so they share one log entry.
func proposeMany(ctx context.Context, n Node, field string, cmds []fsm.Command) ([]fsm.Result, uint64, error) {
	for i, c := range cmds {
		if err := fsm.Validate(c); err != nil {
			return nil, 0, invalid("%s[%d]: %s", field, i, err.Message)
		}
	}
	return n.Propose(ctx, cmds...)
}

func reply[T any](r fsm.Result, msg *T) *connect.Response[T] {
	return replyReplayed(r.Replayed, msg)
}

func replyReplayed[T any](replayed bool, msg *T) *connect.Response[T] {
	resp := connect.NewResponse(msg)
	if replayed {
		resp.Header().Set(ReplayHeader, "true")
	}
	return resp
}

// itemRequestID gives a batch item its idempotency key.
func itemRequestID(batchID, itemID string, i int) string {
	if itemID != "" || batchID == "" {
		return itemID
	}
	return batchID + "#" + strconv.Itoa(i)
}

// maskFields turns update_mask paths into a field mask; empty means all.
func maskFields(field string, paths []string, known map[string]uint8) (uint8, error) {
	var fields uint8
	if len(paths) == 0 {
		for _, bit := range known {
			fields |= bit
		}
		return fields, nil
	}
	for _, p := range paths {
		bit, ok := known[p]
		if !ok {
			return 0, invalid("%s path %q is not updatable", field, p)
		}
		fields |= bit
	}
	return fields, nil
}

func validateIDs(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := fsm.ValidateID(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}
