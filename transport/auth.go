package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tollgate/tollgate/auth"
	v1 "github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

// Authenticator says who sent a request (auth.Authenticator).
type Authenticator interface {
	Authenticate(ctx context.Context, h http.Header) (auth.Principal, error)
}

// access is what an RPC asks of its caller.
type access int

const (
	// accessRead, accessSpend and accessManage act on one tenant's objects
	// (the request's tenant field): reader, spender and tenant-admin and up.
	accessRead access = iota + 1
	accessSpend
	accessManage
	// accessAnyone: any authenticated caller, servers included (status,
	// public keys, checkpoints, exchange rates: nothing tenant-specific).
	accessAnyone
	// accessAdmin: cluster administration and cluster-wide settings.
	accessAdmin
	// accessServer: node-to-node calls (the cluster token) only.
	accessServer
)

// rules gives every RPC of every service its access. An RPC missing here
// is refused for everyone (TestEveryRPCHasARule keeps the table complete).
var rules = map[string]access{
	v1.BudgetServiceCreateBudgetProcedure: accessManage,
	v1.BudgetServiceGetBudgetProcedure:    accessRead,
	v1.BudgetServiceListBudgetsProcedure:  accessRead,
	v1.BudgetServiceUpdateBudgetProcedure: accessManage,
	v1.BudgetServiceDeleteBudgetProcedure: accessManage,
	v1.BudgetServiceCheckProcedure:        accessSpend,
	v1.BudgetServiceConsumeProcedure:      accessSpend,
	v1.BudgetServiceConsumeBatchProcedure: accessSpend,
	v1.BudgetServiceReserveProcedure:      accessSpend,
	v1.BudgetServiceCommitProcedure:       accessSpend,
	v1.BudgetServiceReleaseProcedure:      accessSpend,

	v1.RateLimitServiceCreatePolicyProcedure: accessManage,
	v1.RateLimitServiceGetPolicyProcedure:    accessRead,
	v1.RateLimitServiceListPoliciesProcedure: accessRead,
	v1.RateLimitServiceUpdatePolicyProcedure: accessManage,
	v1.RateLimitServiceDeletePolicyProcedure: accessManage,
	v1.RateLimitServiceCheckProcedure:        accessSpend,
	v1.RateLimitServiceCheckBatchProcedure:   accessSpend,

	v1.QuotaServiceCreatePoolProcedure:     accessManage,
	v1.QuotaServiceGetPoolProcedure:        accessRead,
	v1.QuotaServiceListPoolsProcedure:      accessRead,
	v1.QuotaServiceUpdatePoolProcedure:     accessManage,
	v1.QuotaServiceDeletePoolProcedure:     accessManage,
	v1.QuotaServiceAllocateBatchProcedure:  accessManage, // sets the consumers
	v1.QuotaServiceSetConsumerProcedure:    accessManage,
	v1.QuotaServiceDeleteConsumerProcedure: accessManage,
	v1.QuotaServiceSetDemandProcedure:      accessSpend,
	v1.QuotaServiceConsumeProcedure:        accessSpend,
	v1.QuotaServiceRenewProcedure:          accessManage,

	v1.CostServiceRecordCostProcedure:            accessSpend,
	v1.CostServiceRecordCostBatchProcedure:       accessSpend,
	v1.CostServiceReportProcedure:                accessRead,
	v1.CostServiceGetCostProcedure:               accessRead,
	v1.CostServiceListCostsProcedure:             accessRead,
	v1.CostServiceSetExchangeRatesProcedure:      accessAdmin,
	v1.CostServiceGetExchangeRatesProcedure:      accessAnyone,
	v1.CostServiceSetAnomalyDetectorProcedure:    accessManage,
	v1.CostServiceDeleteAnomalyDetectorProcedure: accessManage,
	v1.CostServiceListAnomalyDetectorsProcedure:  accessRead,

	v1.AlertServiceListAlertsProcedure:   accessRead,
	v1.AlertServiceAckAlertProcedure:     accessManage,
	v1.AlertServiceResolveAlertProcedure: accessManage,
	v1.AlertServiceWatchAlertsProcedure:  accessRead,

	v1.ReceiptServiceGetReceiptProcedure:       accessRead,
	v1.ReceiptServiceListCheckpointsProcedure:  accessAnyone,
	v1.ReceiptServiceGetPublicKeysProcedure:    accessAnyone,
	v1.ReceiptServiceRotateSigningKeyProcedure: accessAdmin,

	v1.ClusterServiceStatusProcedure:             accessAnyone,
	v1.ClusterServiceJoinProcedure:               accessAdmin,
	v1.ClusterServiceRemoveServerProcedure:       accessAdmin,
	v1.ClusterServiceTransferLeadershipProcedure: accessAdmin,
	v1.ClusterServiceSnapshotSaveProcedure:       accessAdmin,
	v1.ClusterServiceSnapshotRestoreProcedure:    accessAdmin,

	v1.ApiKeyServiceCreateApiKeyProcedure: accessManage,
	v1.ApiKeyServiceListApiKeysProcedure:  accessManage,
	v1.ApiKeyServiceRevokeApiKeyProcedure: accessManage,

	v1.InternalServiceForwardProcedure:       accessServer,
	v1.InternalServiceReadIndexProcedure:     accessServer,
	v1.InternalServiceFetchReceiptsProcedure: accessServer,
}

var accessNames = map[access]string{accessRead: "read", accessSpend: "spend", accessManage: "manage",
	accessAnyone: "anyone", accessAdmin: "admin", accessServer: "server"}

// AuthorizationRule names the access rule of a procedure
// ("/tollgate.v1.BudgetService/Consume"): read, spend or manage (the
// caller's tenant, reader / spender / tenant-admin and up), anyone, admin
// or server.
func AuthorizationRule(procedure string) (string, bool) {
	a, ok := rules[procedure]
	return accessNames[a], ok
}

// AuthorizationProcedures lists the procedures that have a rule.
func AuthorizationProcedures() []string {
	out := make([]string, 0, len(rules))
	for p := range rules {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// minRole is the least role a tenant-scoped access needs.
var minRole = map[access]auth.Role{accessRead: auth.RoleReader, accessSpend: auth.RoleSpender, accessManage: auth.RoleTenantAdmin}

type principalKey struct{}

type peerRoleKey struct{}

// withPeerCertificate records the role of a verified client certificate
// (HTTPS only) for the authorization interceptor.
func withPeerCertificate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
			leaf := r.TLS.PeerCertificates[0]
			r = r.WithContext(context.WithValue(r.Context(), peerRoleKey{}, peerCert{role: auth.CertRole(leaf), name: leaf.Subject.CommonName}))
		}
		next.ServeHTTP(w, r)
	})
}

type peerCert struct{ role, name string }

// PrincipalFrom returns the caller a handler serves (auth.Anonymous when
// authentication is off).
func PrincipalFrom(ctx context.Context) (auth.Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(auth.Principal)
	return p, ok
}

// authInterceptor authenticates every call and authorizes it against
// rules: the role, and the tenant (a credential bound to a tenant may only
// name that tenant; a request that names none gets the credential's).
type authInterceptor struct {
	auth    Authenticator // nil: authentication off, every caller is auth.Anonymous
	limiter *callerLimiter
	streams *streamLimiter
}

func (a authInterceptor) principal(ctx context.Context, procedure string, h http.Header) (auth.Principal, access, error) {
	acc, ok := rules[procedure]
	if !ok {
		return auth.Principal{}, 0, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s has no authorization rule", procedure))
	}
	p := auth.Anonymous
	if a.auth != nil {
		// A verified server certificate (mutual TLS) is a server; a client
		// certificate identifies but does not authorize: a token must.
		if pc, ok := ctx.Value(peerRoleKey{}).(peerCert); ok && pc.role == auth.CertRoleServer && h.Get("Authorization") == "" {
			p = auth.Principal{Subject: "server " + pc.name, Role: auth.RoleServer, Method: "mtls"}
		} else {
			var err error
			if p, err = a.auth.Authenticate(ctx, h); err != nil {
				return auth.Principal{}, 0, connect.NewError(connect.CodeUnauthenticated, err)
			}
		}
	}
	if err := a.limiter.allow(p); err != nil {
		return auth.Principal{}, 0, err
	}
	var allowed bool
	switch acc {
	case accessServer:
		allowed = p.Role == auth.RoleServer || p.Method == "none"
	case accessAnyone:
		allowed = true
	case accessAdmin:
		allowed = p.Role == auth.RoleAdmin
	default:
		allowed = p.Role != auth.RoleServer && p.Role >= minRole[acc]
	}
	if !allowed {
		return auth.Principal{}, 0, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%s (role %s) may not call %s", p.Subject, p.Role, procedure))
	}
	return p, acc, nil
}

// checkTenant applies the tenant rule to a request message.
func checkTenant(p auth.Principal, acc access, msg any) error {
	if acc != accessRead && acc != accessSpend && acc != accessManage {
		return nil
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, errors.New("request is not a protobuf message"))
	}
	r := m.ProtoReflect()
	f := r.Descriptor().Fields().ByName("tenant")
	if f == nil || f.Kind() != protoreflect.StringKind {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%s has no tenant field", r.Descriptor().FullName()))
	}
	if p.Role == auth.RoleAdmin {
		return nil
	}
	switch named := r.Get(f).String(); named {
	case "":
		r.Set(f, protoreflect.ValueOfString(p.Tenant))
	case p.Tenant:
	default:
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%s's credential is for tenant %q, not %q", p.Subject, p.Tenant, named))
	}
	return nil
}

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p, acc, err := a.principal(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		if err := checkTenant(p, acc, req.Any()); err != nil {
			return nil, err
		}
		return next(context.WithValue(ctx, principalKey{}, p), req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p, acc, err := a.principal(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		release, err := a.streams.acquire(p)
		if err != nil {
			return err
		}
		defer release()
		return next(context.WithValue(ctx, principalKey{}, p), &tenantCheckedConn{StreamingHandlerConn: conn, p: p, acc: acc})
	}
}

// tenantCheckedConn applies the tenant rule to every message a stream
// receives.
type tenantCheckedConn struct {
	connect.StreamingHandlerConn
	p   auth.Principal
	acc access
}

func (c *tenantCheckedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return checkTenant(c.p, c.acc, msg)
}
