package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
	"github.com/tollgate/tollgate/receipt"
)

// internalHandler serves InternalService: the leader's side of forwarding
// and follower reads.
type internalHandler struct {
	node InternalNode
}

var _ tollgatev1connect.InternalServiceHandler = (*internalHandler)(nil)

func (h *internalHandler) Forward(ctx context.Context, req *connect.Request[tollgatev1.ForwardRequest]) (*connect.Response[tollgatev1.ForwardResponse], error) {
	results, index, err := h.node.ProposeForwarded(ctx, req.Msg.Commands)
	if err != nil {
		return nil, err
	}
	encoded, err := fsm.EncodeResults(results)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.ForwardResponse{Results: encoded, LogIndex: index, Replayed: make([]bool, len(results))}
	for i, r := range results {
		out.Replayed[i] = r.Replayed
	}
	return connect.NewResponse(out), nil
}

func (h *internalHandler) ReadIndex(ctx context.Context, req *connect.Request[tollgatev1.ReadIndexRequest]) (*connect.Response[tollgatev1.ReadIndexResponse], error) {
	index, err := h.node.ReadIndex(ctx, req.Msg.VerifyLeader)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&tollgatev1.ReadIndexResponse{ReadIndex: index}), nil
}

// fetchReceiptsMax bounds one FetchReceipts answer.
const fetchReceiptsMax = 1024

func (h *internalHandler) FetchReceipts(ctx context.Context, req *connect.Request[tollgatev1.FetchReceiptsRequest]) (*connect.Response[tollgatev1.FetchReceiptsResponse], error) {
	m := req.Msg
	if m.FromIndex == 0 || m.ToIndex < m.FromIndex {
		return nil, invalid("want 1 <= from_index <= to_index, got [%d, %d]", m.FromIndex, m.ToIndex)
	}
	limit := int(m.MaxEntries)
	if limit <= 0 || limit > fetchReceiptsMax {
		limit = fetchReceiptsMax
	}
	entries, through, err := h.node.ReceiptEntries(m.FromIndex, m.ToIndex, limit)
	if err != nil {
		return nil, err
	}
	out := &tollgatev1.FetchReceiptsResponse{CompleteThrough: through}
	for _, e := range entries {
		out.Entries = append(out.Entries, &tollgatev1.ReceiptEntry{LogIndex: e.Index, Checkpoint: e.Receipts.Checkpoint.Body,
			Signature: e.Receipts.Checkpoint.Signature, Leaves: e.Receipts.Leaves})
	}
	return connect.NewResponse(out), nil
}

// PeerClient implements node.Peers over other nodes' internal API.
type PeerClient struct {
	http   *http.Client
	opts   []connect.ClientOption
	scheme string // http or https
}

var _ node.Peers = (*PeerClient)(nil)

// NewPeerClient returns a client for node-to-node calls (h2c, pooled); a
// non-empty clusterToken goes with every call (auth.ClusterTokenHeader).
// With tlsConfig the calls are HTTPS (HTTP/2) and the config's client
// certificate authenticates this server.
func NewPeerClient(clusterToken []byte, tlsConfig ...*tls.Config) *PeerClient {
	protocols := new(http.Protocols)
	scheme := "http"
	var tcfg *tls.Config
	if len(tlsConfig) > 0 && tlsConfig[0] != nil {
		tcfg, scheme = tlsConfig[0], "https"
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	var opts []connect.ClientOption
	if len(clusterToken) > 0 {
		opts = append(opts, connect.WithInterceptors(authHeader(auth.ClusterTokenHeader(clusterToken))))
	}
	return &PeerClient{opts: opts, scheme: scheme, http: &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tcfg,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		Protocols:           protocols,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}}}
}

func (p *PeerClient) internal(apiAddr string) tollgatev1connect.InternalServiceClient {
	return tollgatev1connect.NewInternalServiceClient(p.http, p.scheme+"://"+apiAddr, p.opts...)
}

// Forward proposes encoded commands on the leader. Errors come back with the
// leader's code and details (so a client still gets the leader hint); a
// failure to reach the leader or a timeout is an unknown outcome.
func (p *PeerClient) Forward(ctx context.Context, apiAddr string, cmds [][]byte) ([]fsm.Result, uint64, error) {
	resp, err := p.internal(apiAddr).Forward(ctx, connect.NewRequest(&tollgatev1.ForwardRequest{Commands: cmds}))
	if err != nil {
		return nil, 0, peerError(err)
	}
	results, err := fsm.DecodeResults(resp.Msg.Results)
	if err != nil || len(results) != len(cmds) || len(resp.Msg.Replayed) != len(cmds) {
		return nil, 0, errors.Join(node.ErrUnknownOutcome, errors.New("leader sent a malformed forward reply"), err)
	}
	for i := range results {
		results[i].Replayed = resp.Msg.Replayed[i]
	}
	return results, resp.Msg.LogIndex, nil
}

// ReadIndex asks the leader for a read index.
func (p *PeerClient) ReadIndex(ctx context.Context, apiAddr string, verify bool) (uint64, error) {
	resp, err := p.internal(apiAddr).ReadIndex(ctx, connect.NewRequest(&tollgatev1.ReadIndexRequest{VerifyLeader: verify}))
	if err != nil {
		return 0, peerError(err)
	}
	return resp.Msg.ReadIndex, nil
}

// Progress asks a node for its indexes (ClusterService/Status).
func (p *PeerClient) Progress(ctx context.Context, apiAddr string) (node.Progress, error) {
	c := tollgatev1connect.NewClusterServiceClient(p.http, p.scheme+"://"+apiAddr, p.opts...)
	resp, err := c.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{}))
	if err != nil {
		return node.Progress{}, err
	}
	m := resp.Msg
	return node.Progress{NodeID: m.NodeId, State: m.State, Version: m.Version, Term: m.Term,
		CommitIndex: m.CommitIndex, AppliedIndex: m.AppliedIndex, LastLogIndex: m.LastLogIndex}, nil
}

// peerError keeps the leader's answer (a connect error with its code and
// details) but turns "could not reach the leader / no answer" into an
// unknown outcome: the request may have been appended.
func peerError(err error) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		switch cerr.Code() {
		case connect.CodeUnavailable:
			if len(cerr.Details()) > 0 || cerr.Meta().Get(LeaderHeader) != "" {
				return cerr // the leader refused cleanly and says who leads
			}
			return errors.Join(node.ErrUnknownOutcome, cerr)
		case connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeUnknown, connect.CodeInternal:
			return errors.Join(node.ErrUnknownOutcome, cerr)
		}
		return cerr
	}
	return errors.Join(node.ErrUnknownOutcome, err)
}

// FetchReceipts asks a peer for its stored receipts (see node.Peers).
func (p *PeerClient) FetchReceipts(ctx context.Context, apiAddr string, from, to uint64, limit int) ([]node.IndexedReceipts, uint64, error) {
	resp, err := p.internal(apiAddr).FetchReceipts(ctx, connect.NewRequest(&tollgatev1.FetchReceiptsRequest{
		FromIndex: from, ToIndex: to, MaxEntries: uint32(limit)}))
	if err != nil {
		return nil, 0, peerError(err)
	}
	out := make([]node.IndexedReceipts, len(resp.Msg.Entries))
	for i, e := range resp.Msg.Entries {
		out[i] = node.IndexedReceipts{Index: e.LogIndex, Receipts: &fsm.EntryReceipts{
			Checkpoint: receipt.SignedCheckpoint{Body: e.Checkpoint, Signature: e.Signature}, Leaves: e.Leaves}}
	}
	return out, resp.Msg.CompleteThrough, nil
}

// authHeader sets the Authorization header of every call.
func authHeader(value string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", value)
			return next(ctx, req)
		}
	}
}
