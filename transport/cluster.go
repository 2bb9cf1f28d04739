package transport

import (
	"bytes"
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
)

const (
	// snapshotChunkBytes is the size of one streamed snapshot message.
	snapshotChunkBytes = 1 << 20
	// snapshotUploadBytesMax bounds an uploaded snapshot.
	snapshotUploadBytesMax = 2 << 30
)

var errSnapshotTooLarge = errors.New("snapshot upload exceeds 2 GiB")

type clusterHandler struct {
	node Node
}

var _ tollgatev1connect.ClusterServiceHandler = (*clusterHandler)(nil)

func (h *clusterHandler) Status(ctx context.Context, req *connect.Request[tollgatev1.StatusRequest]) (*connect.Response[tollgatev1.StatusResponse], error) {
	st, err := h.node.Status(ctx, node.StatusOptions{Hash: req.Msg.IncludeStateHash, Progress: req.Msg.IncludeProgress})
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.StatusResponse{
		NodeId:               st.NodeID,
		State:                st.State,
		LeaderId:             st.LeaderID,
		LeaderRaftAddr:       st.LeaderRaftAddr,
		LeaderApiAddr:        st.LeaderAPIAddr,
		Term:                 st.Term,
		CommitIndex:          st.CommitIndex,
		AppliedIndex:         st.AppliedIndex,
		LastLogIndex:         st.LastLogIndex,
		StateHash:            st.StateHash,
		Version:              st.Version,
		ApiAddr:              st.APIAddr,
		LastAppliedLogTimeMs: st.LastLogTimeMs,
		LastSnapshotIndex:    st.LastSnapshotIndex,
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, memberToWire(m))
	}
	for _, m := range st.GossipOnly {
		out.GossipOnly = append(out.GossipOnly, memberToWire(m))
	}
	return connect.NewResponse(out), nil
}

func memberToWire(m node.Member) *tollgatev1.Member {
	return &tollgatev1.Member{
		Id: m.ID, RaftAddr: m.RaftAddr, Suffrage: m.Suffrage, Leader: m.Leader, ApiAddr: m.APIAddr, Gossip: m.Gossip,
		Reachable: m.Reachable, State: m.State, Term: m.Term, AppliedIndex: m.AppliedIndex, LastLogIndex: m.LastLogIndex,
		Lag: m.Lag, Version: m.Version,
	}
}

func (h *clusterHandler) Join(_ context.Context, req *connect.Request[tollgatev1.JoinRequest]) (*connect.Response[tollgatev1.JoinResponse], error) {
	if len(req.Msg.Addrs) == 0 || len(req.Msg.Addrs) > 64 {
		return nil, invalid("addrs must list 1 to 64 gossip addresses")
	}
	n, err := h.node.Join(req.Msg.Addrs)
	if n == 0 && err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&tollgatev1.JoinResponse{Joined: uint32(n)}), nil
}

func (h *clusterHandler) RemoveServer(ctx context.Context, req *connect.Request[tollgatev1.RemoveServerRequest]) (*connect.Response[tollgatev1.RemoveServerResponse], error) {
	if err := fsm.ValidateID("id", req.Msg.Id); err != nil {
		return nil, err
	}
	index, err := h.node.RemoveServer(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.RemoveServerResponse{LogIndex: index}), nil
}

func (h *clusterHandler) TransferLeadership(ctx context.Context, req *connect.Request[tollgatev1.TransferLeadershipRequest]) (*connect.Response[tollgatev1.TransferLeadershipResponse], error) {
	if req.Msg.Id != "" {
		if err := fsm.ValidateID("id", req.Msg.Id); err != nil {
			return nil, err
		}
	}
	leader, err := h.node.TransferLeadership(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.TransferLeadershipResponse{NewLeaderId: leader}), nil
}

func (h *clusterHandler) SnapshotSave(ctx context.Context, _ *connect.Request[tollgatev1.SnapshotSaveRequest], stream *connect.ServerStream[tollgatev1.SnapshotSaveResponse]) error {
	data, index, err := h.node.SnapshotSave(ctx)
	if err != nil {
		return err
	}
	for off := 0; off == 0 || off < len(data); off += snapshotChunkBytes {
		msg := &tollgatev1.SnapshotSaveResponse{Chunk: data[off:min(off+snapshotChunkBytes, len(data))]}
		if off == 0 {
			msg.AppliedIndex = index
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

func (h *clusterHandler) SnapshotRestore(ctx context.Context, stream *connect.ClientStream[tollgatev1.SnapshotRestoreRequest]) (*connect.Response[tollgatev1.SnapshotRestoreResponse], error) {
	var buf bytes.Buffer
	for stream.Receive() {
		if buf.Len()+len(stream.Msg().Chunk) > snapshotUploadBytesMax {
			return nil, connect.NewError(connect.CodeResourceExhausted, errSnapshotTooLarge)
		}
		buf.Write(stream.Msg().Chunk)
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	index, hash, err := h.node.SnapshotRestore(ctx, buf.Bytes())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.SnapshotRestoreResponse{AppliedIndex: index, StateHash: hash}), nil
}
