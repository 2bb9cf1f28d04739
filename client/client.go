// Package client is the Go SDK for tollgate. It talks to any node, follows
// leader hints, retries Unavailable with backoff, and sets a request_id on
// every mutation so a retry can never charge twice.
//
//	c, err := client.New([]string{"localhost:7070"})
//	resp, err := c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{
//		Tenant: "acme", BudgetId: "llm", Amount: "0.0125"}))
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

const (
	// attemptsMax bounds the tries of one call (first try included).
	attemptsMax = 10
	// backoffMin and backoffMax bound the wait between tries.
	backoffMin = 25 * time.Millisecond
	backoffMax = time.Second
	// requestIDField is the field the SDK fills on mutations.
	requestIDField = "request_id"
)

// Client holds a Connect client per service. All share node selection,
// retries and request ids.
type Client struct {
	Budgets    tollgatev1connect.BudgetServiceClient
	RateLimits tollgatev1connect.RateLimitServiceClient
	Cluster    tollgatev1connect.ClusterServiceClient
	Receipts   tollgatev1connect.ReceiptServiceClient
	Costs      tollgatev1connect.CostServiceClient
	Alerts     tollgatev1connect.AlertServiceClient
	Quotas     tollgatev1connect.QuotaServiceClient
	APIKeys    tollgatev1connect.ApiKeyServiceClient

	nodes *nodeSet
	http  *http.Client
}

type options struct {
	grpc     bool
	http1    bool
	noRetry  bool
	timeout  time.Duration
	newReqID func() string
	token    string
	tls      *tls.Config
}

// Option configures a Client.
type Option func(*options)

// WithGRPC speaks gRPC (over h2c) instead of the Connect protocol.
func WithGRPC() Option { return func(o *options) { o.grpc = true } }

// WithHTTP1 uses HTTP/1.1 connections instead of h2c.
func WithHTTP1() Option { return func(o *options) { o.http1 = true } }

// WithoutRetries makes every call a single try (tests of error paths).
func WithoutRetries() Option { return func(o *options) { o.noRetry = true } }

// WithRequestTimeout bounds each try (default 10s); the caller's context
// bounds the whole call.
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRequestIDs replaces the request id generator (default: random UUIDs).
func WithRequestIDs(next func() string) Option { return func(o *options) { o.newReqID = next } }

// WithToken sends 'Authorization: Bearer token' with every call (a JWT the
// cluster accepts; see docs/security.md).
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTLS speaks HTTPS (HTTP/2 by ALPN) to nodes serving TLS; cfg holds
// the cluster CA (RootCAs) and optionally a client certificate.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// New returns a client for a cluster reachable at any of addrs (host:port).
func New(addrs []string, opts ...Option) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: at least one node address is required")
	}
	o := options{timeout: 10 * time.Second, newReqID: uuid.NewString}
	for _, opt := range opts {
		opt(&o)
	}
	nodes := &nodeSet{}
	for _, a := range addrs {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "http://"), "https://")
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("client: node address %q: want host:port", a)
		}
		nodes.add(a)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	protocols := new(http.Protocols)
	scheme := "http"
	switch {
	case o.tls != nil:
		transport.TLSClientConfig = o.tls
		protocols.SetHTTP1(true)
		if !o.http1 {
			protocols.SetHTTP2(true)
		}
		scheme = "https"
	case o.http1:
		protocols.SetHTTP1(true)
	default:
		protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	}
	transport.Protocols = protocols
	hc := &http.Client{Transport: &nodeRoundTripper{nodes: nodes, next: transport, token: o.token, scheme: scheme}}

	clientOpts := []connect.ClientOption{connect.WithInterceptors(&interceptor{opts: o, nodes: nodes})}
	if o.grpc {
		clientOpts = append(clientOpts, connect.WithGRPC())
	}
	// The host is a placeholder; nodeRoundTripper sends each try to the
	// currently preferred node.
	const base = "http://tollgate"
	return &Client{
		Budgets:    tollgatev1connect.NewBudgetServiceClient(hc, base, clientOpts...),
		RateLimits: tollgatev1connect.NewRateLimitServiceClient(hc, base, clientOpts...),
		Cluster:    tollgatev1connect.NewClusterServiceClient(hc, base, clientOpts...),
		Receipts:   tollgatev1connect.NewReceiptServiceClient(hc, base, clientOpts...),
		Costs:      tollgatev1connect.NewCostServiceClient(hc, base, clientOpts...),
		Alerts:     tollgatev1connect.NewAlertServiceClient(hc, base, clientOpts...),
		Quotas:     tollgatev1connect.NewQuotaServiceClient(hc, base, clientOpts...),
		APIKeys:    tollgatev1connect.NewApiKeyServiceClient(hc, base, clientOpts...),
		nodes:      nodes,
		http:       hc,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Node returns the address calls currently go to.
func (c *Client) Node() string { return c.nodes.current() }

// nodeSet is the known nodes and the one calls go to.
type nodeSet struct {
	mu    sync.Mutex
	addrs []string
	cur   int
}

func (s *nodeSet) add(addr string) int {
	for i, a := range s.addrs {
		if a == addr {
			return i
		}
	}
	s.addrs = append(s.addrs, addr)
	return len(s.addrs) - 1
}

func (s *nodeSet) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[s.cur]
}

// prefer makes addr (a leader hint) the node calls go to.
func (s *nodeSet) prefer(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = s.add(addr)
}

// next moves on to another node after a failure at failed.
func (s *nodeSet) next(failed string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addrs[s.cur] == failed {
		s.cur = (s.cur + 1) % len(s.addrs)
	}
}

type nodeRoundTripper struct {
	nodes  *nodeSet
	next   http.RoundTripper
	token  string
	scheme string
}

func (rt *nodeRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	addr, _ := req.Context().Value(targetKey{}).(string)
	if addr == "" {
		addr = rt.nodes.current()
	}
	req = req.Clone(req.Context())
	req.URL.Host = addr
	req.URL.Scheme = rt.scheme
	req.Host = addr
	if rt.token != "" {
		req.Header.Set("Authorization", "Bearer "+rt.token)
	}
	return rt.next.RoundTrip(req)
}

type targetKey struct{}

// leaderHeader names the leader on a forwarded change's reply (the value of
// transport.LeaderHeader; the SDK does not import the server side).
const leaderHeader = "Tollgate-Leader"

// interceptor sets request ids and retries.
type interceptor struct {
	opts  options
	nodes *nodeSet
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects {
			i.setRequestID(req.Any())
		}
		backoff := backoffMin
		for attempt := 1; ; attempt++ {
			target := i.nodes.current()
			tryCtx, cancel := context.WithTimeout(context.WithValue(ctx, targetKey{}, target), i.opts.timeout)
			resp, err := next(tryCtx, req)
			cancel()
			if err == nil {
				// A follower forwarded the change and named the leader:
				// the next calls go there directly.
				if hint := resp.Header().Get(leaderHeader); hint != "" && hint != target {
					i.nodes.prefer(hint)
				}
				return resp, nil
			}
			if i.opts.noRetry || attempt == attemptsMax || !retryable(ctx, err) {
				return resp, err
			}
			if hint := leaderHint(err); hint != "" && hint != target {
				i.nodes.prefer(hint)
				continue // go to the leader at once
			}
			i.nodes.next(target)
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, backoffMax)
		}
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// setRequestID fills an empty request_id field, so that retries of this call
// (here or by the caller with the same message) are deduplicated.
func (i *interceptor) setRequestID(msg any) {
	m, ok := msg.(interface{ ProtoReflect() protoreflect.Message })
	if !ok {
		return
	}
	pm := m.ProtoReflect()
	fd := pm.Descriptor().Fields().ByName(requestIDField)
	if fd == nil || fd.Kind() != protoreflect.StringKind || pm.Get(fd).String() != "" {
		return
	}
	pm.Set(fd, protoreflect.ValueOfString(i.opts.newReqID()))
}

// retryable: Unavailable (not leader, no leader yet, node down, outcome
// unknown — safe because of the request id) and a try that timed out while
// the caller's context is still alive.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return true
	}
	return false
}

func leaderHint(err error) string {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return ""
	}
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if hint, ok := v.(*tollgatev1.LeaderHint); ok {
			return hint.LeaderApiAddr
		}
	}
	return ""
}
