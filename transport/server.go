// Package transport serves tollgate's API over Connect (Connect, gRPC,
// gRPC-Web and JSON from the same handlers), with one error interceptor,
// request size limits, health, reflection, metrics and graceful shutdown.
package transport

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/node"
)

const (
	// RequestBytesMax bounds a request body; larger ones are refused with
	// ResourceExhausted before they are decoded.
	RequestBytesMax = 4 << 20
	// headerBytesMax bounds request headers.
	headerBytesMax = 64 << 10
	// readHeaderTimeout, readTimeout and idleTimeout keep slow or idle
	// clients from holding connections forever.
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Options configure the API handler.
type Options struct {
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
	// Registerer receives the API's request metrics (nil: none).
	Registerer prometheus.Registerer
	// Pprof serves net/http/pprof under /debug/pprof/ (profiling only: it
	// exposes the process's internals to anyone who reaches the port).
	Pprof bool
	// Auth authenticates every call (nil: authentication is off and every
	// caller is auth.Anonymous, an admin: --dev and --insecure only).
	Auth Authenticator
	// RateLimit is the API's own limit per credential (see RateLimit).
	RateLimit RateLimit
	// Now is the clock of the rate limit (default time.Now).
	Now func() time.Time
}

// Validate checks the options NewHandler cannot refuse.
func (o Options) Validate() error {
	_, err := newCallerLimiter(o.RateLimit, o.Now)
	return err
}

// compressMinBytes is the smallest reply the API compresses.
const compressMinBytes = 4096

// NewHandler returns the HTTP handler serving every service of n.
func NewHandler(n Node, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// Every message is bounded by RequestBytesMax before it is decoded;
	// streams (snapshot upload) are bounded per message and in total.
	limiter, err := newCallerLimiter(opts.RateLimit, opts.Now)
	if err != nil {
		// Options.Validate said so first; serve nothing rather than an
		// unlimited API.
		opts.Logger.Error("API handler not built", "err", err)
		return http.NotFoundHandler()
	}
	handlerOpts := []connect.HandlerOption{
		connect.WithInterceptors(newMetricsInterceptor(opts.Registerer), errorInterceptor{log: opts.Logger},
			authInterceptor{auth: opts.Auth, limiter: limiter, streams: newStreamLimiter()}, leaderInterceptor(n)),
		connect.WithReadMaxBytes(RequestBytesMax),
		// Replies are a few hundred bytes: gzip would cost more CPU than it
		// saves (a fresh flate state per reply was 16 % of a busy leader's
		// CPU). Large replies (snapshots, long listings) still compress.
		connect.WithCompressMinBytes(compressMinBytes),
	}
	mux := http.NewServeMux()
	mux.Handle(tollgatev1connect.NewBudgetServiceHandler(&budgetHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewRateLimitServiceHandler(&rateLimitHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewClusterServiceHandler(&clusterHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewReceiptServiceHandler(&receiptHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewCostServiceHandler(&costHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewAlertServiceHandler(&alertHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewQuotaServiceHandler(&quotaHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewInternalServiceHandler(&internalHandler{node: n}, handlerOpts...))
	mux.Handle(tollgatev1connect.NewApiKeyServiceHandler(&apiKeyHandler{node: n}, handlerOpts...))

	services := []string{
		tollgatev1connect.BudgetServiceName,
		tollgatev1connect.RateLimitServiceName,
		tollgatev1connect.ClusterServiceName,
		tollgatev1connect.ReceiptServiceName,
		tollgatev1connect.CostServiceName,
		tollgatev1connect.AlertServiceName,
		tollgatev1connect.QuotaServiceName,
		tollgatev1connect.InternalServiceName,
		tollgatev1connect.ApiKeyServiceName,
	}
	limit := connect.WithReadMaxBytes(RequestBytesMax)
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...), limit))
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, limit))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, limit))
	if opts.Gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", healthz(n))
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// healthz answers 200 while this node knows a leader (it can serve or
// forward), 503 otherwise, with the node's Raft state as JSON.
func healthz(n Node) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		st, err := n.Status(context.Background(), node.StatusOptions{})
		body := map[string]any{"node_id": st.NodeID, "state": st.State, "leader_id": st.LeaderID, "applied_index": st.AppliedIndex}
		code := http.StatusOK
		if err != nil || st.LeaderID == "" {
			code = http.StatusServiceUnavailable
			body["status"] = "no leader"
		} else {
			body["status"] = "ok"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(body)
	}
}

// Server is the API's HTTP server: HTTP/1.1 and h2c on one listener.
type Server struct {
	http *http.Server
	ln   net.Listener
}

// Listen binds addr ("127.0.0.1:0" picks a port) and serves h on it.
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewServer(ln, h), nil
}

// NewServer serves h on a listener the caller bound: plain HTTP/1.1 and
// h2c, or with tlsConfig HTTPS (HTTP/1.1 and HTTP/2 by ALPN), where a
// verified client certificate's role reaches the authorization interceptor.
func NewServer(ln net.Listener, h http.Handler, tlsConfig ...*tls.Config) *Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	var cfg *tls.Config
	if len(tlsConfig) > 0 && tlsConfig[0] != nil {
		cfg = tlsConfig[0]
		protocols.SetHTTP2(true)
		ln = tls.NewListener(ln, cfg)
		h = withPeerCertificate(h)
	} else {
		protocols.SetUnencryptedHTTP2(true) // h2c: gRPC without TLS
	}
	return &Server{
		ln: ln,
		http: &http.Server{
			TLSConfig: cfg,
			// Streams one HTTP/2 connection may have open at once.
			HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 250},
			Handler:           h,
			Protocols:         &protocols,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    headerBytesMax,
		},
	}
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve blocks until Shutdown; it returns nil after a graceful shutdown.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }
