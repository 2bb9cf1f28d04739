package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/receipt"
)

// ensureSigningKey makes a ready leader install the cluster's first receipt
// signing key (the configured one, or a fresh one) when the state has none:
// a new cluster, or one restored from a snapshot taken before receipts.
// Until then the state machine answers decisions with Unavailable.
func (n *Node) ensureSigningKey() {
	if !n.isReadyLeader() {
		return
	}
	rot := n.firstKeyCommand()
	if rot == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	// Two proposals may race (leadership and reconcile); the second is
	// refused as a duplicate key, or rotates: both are harmless.
	rs, _, err := n.Propose(ctx, rot)
	switch {
	case err != nil:
		n.log.Warn("install signing key", "err", err)
	case rs[0].Err != nil:
		n.log.Warn("install signing key", "err", rs[0].Err)
	default:
		n.log.Info("receipt signing key installed", "key_id", rs[0].Key.ID, "index", rs[0].Index)
	}
}

// firstKeyCommand returns the command that installs the first signing key,
// or nil when this node's state has one.
func (n *Node) firstKeyCommand() *fsm.RotateSigningKey {
	if n.cfg.NoReceipts || n.machine.HasSigningKey() {
		return nil
	}
	if n.cfg.SigningKey != nil {
		return &fsm.RotateSigningKey{Seed: n.cfg.SigningKey.Seed()}
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		n.log.Error("generate signing key", "err", err)
		return nil
	}
	return &fsm.RotateSigningKey{Seed: seed}
}

// RotateSigningKey generates a new signing key and replicates it; the
// rotation entry is signed with the old key, later ones with the new. by
// names who asked, for the receipt ("" when unknown).
func (n *Node) RotateSigningKey(ctx context.Context, by string) (*fsm.SigningKey, uint64, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, 0, err
	}
	rs, index, err := n.Propose(ctx, &fsm.RotateSigningKey{Seed: seed, By: by})
	if err != nil {
		return nil, 0, err
	}
	if rs[0].Err != nil {
		return nil, 0, rs[0].Err
	}
	return rs[0].Key, index, nil
}

// Receipt returns the receipt of one decision from this node's store, once
// this node has applied its entry (bounded by ctx).
func (n *Node) Receipt(ctx context.Context, ref fsm.ReceiptRef) (*receipt.Receipt, error) {
	if n.receipts == nil {
		return nil, ErrNoReceiptStore
	}
	if err := n.waitApplied(ctx, ref.Index); err != nil {
		return nil, err
	}
	if err := n.receipts.waitWritten(ctx, ref.Index); err != nil {
		return nil, err
	}
	e, err := n.receipts.entry(ref.Index)
	if err != nil {
		return nil, n.noReceipt(err, "log index %d", ref.Index)
	}
	if int(ref.Position) >= len(e.Leaves) {
		return nil, fmt.Errorf("%w: entry %d has %d leaves, not position %d", ErrNoReceipt, ref.Index, len(e.Leaves), ref.Position)
	}
	return e.Receipt(ref.Position)
}

// ReceiptRefByRequest finds the decision a request id made, in this node's
// store (request ids are remembered as long as their receipts).
func (n *Node) ReceiptRefByRequest(ctx context.Context, tenant, requestID string) (fsm.ReceiptRef, error) {
	if n.receipts == nil {
		return fsm.ReceiptRef{}, ErrNoReceiptStore
	}
	applied, _ := n.applied.get()
	if err := n.receipts.waitWritten(ctx, applied); err != nil {
		return fsm.ReceiptRef{}, err
	}
	ref, err := n.receipts.byRequest(tenant, requestID)
	if err != nil {
		return ref, n.noReceipt(err, "request_id %q of tenant %q", requestID, tenant)
	}
	return ref, nil
}

// Checkpoints returns up to limit stored checkpoints with index in [from, to]
// (to 0: no upper bound).
func (n *Node) Checkpoints(from, to uint64, limit int) (CheckpointRange, error) {
	if n.receipts == nil {
		return CheckpointRange{}, ErrNoReceiptStore
	}
	return n.receipts.checkpoints(from, to, limit)
}

func (n *Node) noReceipt(err error, format string, args ...any) error {
	if err != errNoReceipt {
		return err
	}
	r, _ := n.receipts.checkpoints(0, 0, 0)
	msg := fmt.Sprintf("%s (this node holds receipts from index %d", fmt.Sprintf(format, args...), r.HeldFrom)
	if len(r.Missing) > 0 {
		msg += fmt.Sprintf("; it is fetching those of %d ranges it installed a snapshot over from its peers, first [%d, %d]",
			len(r.Missing), r.Missing[0].From, r.Missing[0].To)
	}
	return fmt.Errorf("%w: %s)", ErrNoReceipt, msg)
}
