package transport

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
)

// LeaderHeader carries the leader's API address on Unavailable errors.
const LeaderHeader = "Tollgate-Leader"

// ReplayHeader is "true" on a reply that was replayed from the idempotency
// table (the body is identical to the first reply).
const ReplayHeader = "Tollgate-Idempotent-Replay"

// errorInterceptor is the one place errors become API codes. Handlers
// (unary and streaming) return plain errors — fsm rejections, node errors —
// and nothing else maps codes.
type errorInterceptor struct {
	log *slog.Logger
}

func (e errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, toConnectError(e.log, req.Spec().Procedure, err)
		}
		return resp, nil
	}
}

func (e errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (e errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return toConnectError(e.log, conn.Spec().Procedure, err)
		}
		return nil
	}
}

func toConnectError(log *slog.Logger, procedure string, err error) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr
	}
	code := codeOf(err)
	out := connect.NewError(code, err)
	var nl *node.NotLeaderError
	if errors.As(err, &nl) {
		if d, derr := connect.NewErrorDetail(&tollgatev1.LeaderHint{LeaderId: nl.LeaderID, LeaderApiAddr: nl.LeaderAPIAddr}); derr == nil {
			out.AddDetail(d)
		}
		if nl.LeaderAPIAddr != "" {
			out.Meta().Set(LeaderHeader, nl.LeaderAPIAddr)
		}
	}
	if code == connect.CodeInternal {
		log.Error("internal error", "procedure", procedure, "err", err)
	}
	return out
}

func codeOf(err error) connect.Code {
	switch {
	case errors.Is(err, fsm.ErrInvalidArgument):
		return connect.CodeInvalidArgument
	case errors.Is(err, fsm.ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, fsm.ErrAlreadyExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, fsm.ErrFailedPrecondition):
		return connect.CodeFailedPrecondition
	case errors.Is(err, fsm.ErrResourceExhausted):
		return connect.CodeResourceExhausted
	case errors.Is(err, node.ErrNoReceipt):
		return connect.CodeNotFound
	case errors.Is(err, fsm.ErrUnavailable), errors.Is(err, node.ErrNoReceiptStore):
		return connect.CodeUnavailable
	case errors.Is(err, node.ErrNotLeader), errors.Is(err, node.ErrNotReady), errors.Is(err, node.ErrTooStale),
		errors.Is(err, node.ErrShutdown), errors.Is(err, node.ErrUnknownOutcome), errors.Is(err, node.ErrOverloaded):
		return connect.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeInternal
}

// leaderInterceptor names the leader (LeaderHeader) on every successful
// reply to a change that a follower forwarded, so the SDK sends the next
// ones to the leader itself instead of paying the extra hop each time.
// Reads are left alone: a STALE read is meant to stay on its node.
func leaderInterceptor(n Node) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := next(ctx, req)
			if err != nil || req.Spec().IdempotencyLevel == connect.IdempotencyNoSideEffects ||
				strings.HasPrefix(req.Spec().Procedure, "/"+tollgatev1connect.InternalServiceName+"/") {
				return resp, err
			}
			if leader, addr := n.LeaderAddr(); !leader && addr != "" {
				resp.Header().Set(LeaderHeader, addr)
			}
			return resp, err
		}
	}
}
