package node

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// Receipt repair. A node that installs a snapshot never applies the entries
// the snapshot covers, so it cannot make their receipts; receiptStore
// records them as missing. This loop fetches them from peers (any node that
// applied them holds byte-identical copies) and keeps only what verifies
// against the cluster's keys and links into the chain this node holds. So
// every node ends up with every receipt, and no decision's receipt depends
// on one node's disk.

const (
	// repairInterval is how often a node with missing receipts asks peers.
	repairInterval = 2 * time.Second
	// repairBatch is how many entries one fetch asks for.
	repairBatch = 512
	// repairCallTimeout bounds one fetch.
	repairCallTimeout = 5 * time.Second
)

func (n *Node) runReceiptRepair() {
	defer n.wg.Done()
	t := time.NewTicker(repairInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stopping:
			return
		case <-t.C:
			n.repairReceipts()
		}
	}
}

// ReceiptEntries serves FetchReceipts: stored entries in [from, to] and the
// index through which this node vouches it holds every checkpoint.
func (n *Node) ReceiptEntries(from, to uint64, limit int) ([]IndexedReceipts, uint64, error) {
	if n.receipts == nil {
		return nil, 0, ErrNoReceiptStore
	}
	return n.receipts.entries(from, to, limit)
}

func (n *Node) peerAPIAddrs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for id, addr := range n.apiAddrs {
		if id != n.cfg.NodeID && addr != "" {
			out = append(out, addr)
		}
	}
	return out
}

// repairReceipts tries to fill every missing range from the peers.
func (n *Node) repairReceipts() {
	missing := n.receipts.missing()
	if len(missing) == 0 || n.peers == nil {
		return
	}
	peers := n.peerAPIAddrs()
	for _, r := range missing {
		for from := r.From; from <= r.To; {
			through := n.repairFrom(peers, from, r.To)
			if through == 0 {
				break // no peer could help now; try again next round
			}
			n.log.Info("receipts repaired from a peer", "from", from, "through", through)
			from = through + 1
		}
	}
}

// repairFrom fetches, verifies and stores entries from the first peer that
// can vouch for from; it returns the index filled through (0: none).
func (n *Node) repairFrom(peers []string, from, to uint64) uint64 {
	for _, addr := range peers {
		select {
		case <-n.stopping:
			return 0
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), repairCallTimeout)
		entries, through, err := n.peers.FetchReceipts(ctx, addr, from, to, repairBatch)
		cancel()
		if err != nil || through < from {
			continue
		}
		through = min(through, to)
		if err := n.verifyFetched(entries, from, through, through == to); err != nil {
			n.log.Warn("receipts from a peer do not verify", "peer", addr, "from", from, "through", through, "err", err)
			continue
		}
		if err := n.receipts.fill(entries, from, through); err != nil {
			n.log.Error("store repaired receipts", "err", err)
			return 0
		}
		return through
	}
	return 0
}

// verifyFetched checks fetched entries: each checkpoint signed by a key of
// the replicated state, its root and leaf count those of the leaves, and
// the whole run linked to the stored checkpoint before it and (when it
// closes the range) to the one after it.
func (n *Node) verifyFetched(entries []IndexedReceipts, from, through uint64, closes bool) error {
	var keys receipt.KeySet
	n.machine.Read(0, func(v fsm.View) error {
		keys = receipt.KeySet{}
		for _, k := range v.SigningKeys() {
			keys[k.ID] = k.Public
		}
		return nil
	})
	before, after, err := n.receipts.neighbours(from, through)
	if err != nil {
		return err
	}
	prev := before
	for _, e := range entries {
		if e.Index < from || e.Index > through {
			return fmt.Errorf("entry %d outside [%d, %d]", e.Index, from, through)
		}
		cp, err := receipt.VerifyCheckpoint(e.Receipts.Checkpoint, keys)
		if err != nil {
			return err
		}
		if cp.Index != e.Index || int(cp.LeafCount) != len(e.Receipts.Leaves) {
			return fmt.Errorf("entry %d: checkpoint for %d with %d leaves, %d sent", e.Index, cp.Index, cp.LeafCount, len(e.Receipts.Leaves))
		}
		hashes := make([]receipt.Hash, len(e.Receipts.Leaves))
		for i, l := range e.Receipts.Leaves {
			hashes[i] = receipt.LeafHash(l)
		}
		if receipt.Root(hashes) != cp.Root {
			return fmt.Errorf("entry %d: leaves do not hash to the signed root", e.Index)
		}
		if prev != nil {
			if err := receipt.VerifyLink(prev, cp); err != nil {
				return err
			}
		} else if from == 1 && cp.Prev != (receipt.Hash{}) {
			return fmt.Errorf("entry %d: the first checkpoint links to %s", e.Index, cp.Prev)
		}
		prev = cp
	}
	if closes && prev != nil && after != nil {
		if err := receipt.VerifyLink(prev, after); err != nil {
			return fmt.Errorf("the repaired range does not link to the checkpoint after it: %w", err)
		}
	}
	return nil
}
