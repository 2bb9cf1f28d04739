package transport

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/node"
	"github.com/tollgate/tollgate/receipt"
)

// ReceiptNode is what ReceiptService needs of a node.
type ReceiptNode interface {
	// Receipt returns a decision's receipt from this node's store once this
	// node has applied its entry.
	Receipt(ctx context.Context, ref fsm.ReceiptRef) (*receipt.Receipt, error)
	ReceiptRefByRequest(ctx context.Context, tenant, requestID string) (fsm.ReceiptRef, error)
	Checkpoints(from, to uint64, limit int) (node.CheckpointRange, error)
	RotateSigningKey(ctx context.Context, by string) (*fsm.SigningKey, uint64, error)
}

const (
	checkpointsPageDefault = 100
	checkpointsPageMax     = 1000
	// receiptWaitMax bounds how long a reply waits for this node to apply
	// the entry whose receipt it includes.
	receiptWaitMax = 10 * time.Second
)

func refToWire(ref *fsm.ReceiptRef, offset uint32) *tollgatev1.ReceiptRef {
	if ref == nil {
		return nil
	}
	return &tollgatev1.ReceiptRef{LogIndex: ref.Index, Position: ref.Position + offset}
}

// fetchReceipt returns the whole receipt when the request asked for it.
func fetchReceipt(ctx context.Context, n Node, include bool, ref *tollgatev1.ReceiptRef) (*tollgatev1.Receipt, error) {
	if !include || ref == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, receiptWaitMax)
	defer cancel()
	r, err := n.Receipt(ctx, fsm.ReceiptRef{Index: ref.LogIndex, Position: ref.Position})
	if err != nil {
		return nil, fmt.Errorf("the decision is made (log index %d) but its receipt could not be read: %w", ref.LogIndex, err)
	}
	return receiptToWire(r), nil
}

func (h *budgetHandler) receipt(ctx context.Context, include bool, ref *tollgatev1.ReceiptRef) (*tollgatev1.Receipt, error) {
	return fetchReceipt(ctx, h.node, include, ref)
}

func (h *budgetHandler) batchReceipts(ctx context.Context, include bool, items []*tollgatev1.ConsumeResponse) error {
	for _, it := range items {
		var err error
		if it.Receipt, err = h.receipt(ctx, include, it.ReceiptRef); err != nil {
			return err
		}
	}
	return nil
}

func receiptToWire(r *receipt.Receipt) *tollgatev1.Receipt {
	out := &tollgatev1.Receipt{Leaf: r.Leaf, Checkpoint: r.Checkpoint.Body, Signature: r.Checkpoint.Signature}
	for _, h := range r.Proof {
		out.Proof = append(out.Proof, append([]byte(nil), h[:]...))
	}
	if l, err := receipt.DecodeLeaf(r.Leaf); err == nil {
		out.DecodedLeaf = leafToWire(l)
	}
	if c, err := receipt.DecodeCheckpoint(r.Checkpoint.Body); err == nil {
		out.DecodedCheckpoint = checkpointToWire(c)
	}
	return out
}

func fieldsToMap(fields []receipt.Field) map[string]string {
	if len(fields) == 0 {
		return nil
	}
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		m[f.Name] = f.Value
	}
	return m
}

func leafToWire(l *receipt.Leaf) *tollgatev1.ReceiptLeaf {
	return &tollgatev1.ReceiptLeaf{
		LogIndex: l.Index, Position: l.Position, Time: timestamppb.New(time.UnixMilli(l.TimeUnixMs)),
		Tenant: l.Tenant, Operation: l.Operation, Object: l.Object, RequestId: l.RequestID,
		Inputs: fieldsToMap(l.Inputs), Outcome: l.Outcome, Reason: l.Reason, Balances: fieldsToMap(l.Balances),
	}
}

func checkpointToWire(c *receipt.Checkpoint) *tollgatev1.Checkpoint {
	return &tollgatev1.Checkpoint{
		LogIndex: c.Index, Term: c.Term, LeaderTime: timestamppb.New(time.UnixMilli(c.TimeUnixMs)),
		PrevHash: c.Prev.String(), Root: c.Root.String(), LeafCount: c.LeafCount, KeyId: c.KeyID, Hash: c.Hash().String(),
	}
}

// SigningKeyToWire converts a key of the state (public half only).
func signingKeyToWire(k fsm.SigningKey, active bool) (*tollgatev1.SigningKey, error) {
	pem, err := receipt.MarshalPublicKey(k.Public)
	if err != nil {
		return nil, err
	}
	return &tollgatev1.SigningKey{KeyId: k.ID, PublicKeyPem: string(pem), FromIndex: k.FromIndex, Active: active}, nil
}

type receiptHandler struct {
	node Node
}

func (h *receiptHandler) GetReceipt(ctx context.Context, req *connect.Request[tollgatev1.GetReceiptRequest]) (*connect.Response[tollgatev1.GetReceiptResponse], error) {
	m := req.Msg
	byRef := m.Ref != nil
	if byRef == (m.RequestId != "") {
		return nil, invalid("set either ref or request_id (with tenant)")
	}
	if byRef && (m.Tenant != "") {
		return nil, invalid("tenant is only used with request_id")
	}
	if !byRef {
		if err := validateIDs("tenant", m.Tenant); err != nil {
			return nil, err
		}
		if err := fsm.ValidateRequestID("request_id", m.RequestId); err != nil {
			return nil, err
		}
	} else if m.Ref.LogIndex == 0 {
		return nil, invalid("ref.log_index must be at least 1")
	}
	level, maxStale, err := readLevel(m.Consistency, m.MaxStaleness)
	if err != nil {
		return nil, err
	}
	// The read fences this node: at LINEARIZABLE it has applied everything
	// acknowledged before the call, so "no receipt" is an answer, not lag.
	info, err := h.node.Read(ctx, level, maxStale, func(fsm.View) error { return nil })
	if err != nil {
		return nil, err
	}
	var ref fsm.ReceiptRef
	if byRef {
		ref = fsm.ReceiptRef{Index: m.Ref.LogIndex, Position: m.Ref.Position}
		if ref.Index > info.AppliedIndex {
			return nil, &fsm.Error{Code: fsm.CodeNotFound, Message: fmt.Sprintf("log index %d is not applied (applied %d)", ref.Index, info.AppliedIndex)}
		}
	} else if ref, err = h.node.ReceiptRefByRequest(ctx, m.Tenant, m.RequestId); err != nil {
		return nil, err
	}
	r, err := h.node.Receipt(ctx, ref)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.GetReceiptResponse{
		Receipt: receiptToWire(r), Ref: refToWire(&ref, 0), NodeId: info.NodeID,
	}), nil
}

func (h *receiptHandler) ListCheckpoints(ctx context.Context, req *connect.Request[tollgatev1.ListCheckpointsRequest]) (*connect.Response[tollgatev1.ListCheckpointsResponse], error) {
	m := req.Msg
	if m.ToIndex != 0 && m.ToIndex < m.FromIndex {
		return nil, invalid("to_index %d is before from_index %d", m.ToIndex, m.FromIndex)
	}
	size := int(m.PageSize)
	switch {
	case size == 0:
		size = checkpointsPageDefault
	case size > checkpointsPageMax:
		return nil, invalid("page_size %d exceeds %d", size, checkpointsPageMax)
	}
	r, err := h.node.Checkpoints(m.FromIndex, m.ToIndex, size)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ListCheckpointsResponse{NextFromIndex: r.Next, HeldFromIndex: r.HeldFrom, LastIndex: r.Last,
		NodeId: h.node.Progress().NodeID}
	for _, m := range r.Missing {
		out.Missing = append(out.Missing, &tollgatev1.IndexRange{FromIndex: m.From, ToIndex: m.To})
	}
	for _, sc := range r.Checkpoints {
		w := &tollgatev1.SignedCheckpoint{Body: sc.Body, Signature: sc.Signature}
		if c, err := receipt.DecodeCheckpoint(sc.Body); err == nil {
			w.Decoded = checkpointToWire(c)
		}
		out.Checkpoints = append(out.Checkpoints, w)
	}
	return connect.NewResponse(out), nil
}

func (h *receiptHandler) GetPublicKeys(ctx context.Context, req *connect.Request[tollgatev1.GetPublicKeysRequest]) (*connect.Response[tollgatev1.GetPublicKeysResponse], error) {
	level, maxStale, err := readLevel(req.Msg.Consistency, req.Msg.MaxStaleness)
	if err != nil {
		return nil, err
	}
	var keys []fsm.SigningKey
	var headIndex uint64
	var headHash receipt.Hash
	info, err := h.node.Read(ctx, level, maxStale, func(v fsm.View) error {
		keys = v.SigningKeys()
		headIndex, headHash = v.ChainHead()
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.GetPublicKeysResponse{HeadIndex: headIndex, ReadInfo: readInfo(info)}
	if headIndex != 0 {
		out.HeadHash = headHash.String()
	}
	for i, k := range keys {
		w, err := signingKeyToWire(k, i == len(keys)-1)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, w)
	}
	return connect.NewResponse(out), nil
}

func (h *receiptHandler) RotateSigningKey(ctx context.Context, req *connect.Request[tollgatev1.RotateSigningKeyRequest]) (*connect.Response[tollgatev1.RotateSigningKeyResponse], error) {
	k, index, err := h.node.RotateSigningKey(ctx, auditBy(ctx))
	if err != nil {
		return nil, err
	}
	w, err := signingKeyToWire(*k, true)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.RotateSigningKeyResponse{Key: w, LogIndex: index}), nil
}
