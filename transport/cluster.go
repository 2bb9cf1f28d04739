package transport

import (
	"context"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

type clusterHandler struct {
	node    Node
	version string
}

var _ tollgatev1connect.ClusterServiceHandler = (*clusterHandler)(nil)

func (h *clusterHandler) Status(_ context.Context, req *connect.Request[tollgatev1.StatusRequest]) (*connect.Response[tollgatev1.StatusResponse], error) {
	st, err := h.node.Status(req.Msg.IncludeStateHash)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.StatusResponse{
		NodeId:               st.NodeID,
		State:                st.State,
		LeaderId:             st.LeaderID,
		LeaderRaftAddr:       st.LeaderRaftAddr,
		Term:                 st.Term,
		CommitIndex:          st.CommitIndex,
		AppliedIndex:         st.AppliedIndex,
		LastLogIndex:         st.LastLogIndex,
		StateHash:            st.StateHash,
		Version:              h.version,
		ApiAddr:              st.APIAddr,
		LastAppliedLogTimeMs: st.LastLogTimeMs,
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, &tollgatev1.Member{Id: m.ID, RaftAddr: m.RaftAddr, Suffrage: m.Suffrage, Leader: m.Leader})
	}
	return connect.NewResponse(out), nil
}
