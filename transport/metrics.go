package transport

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// newMetricsInterceptor counts requests and their latency by procedure and
// code. It runs outside the error interceptor so it sees the final code.
func newMetricsInterceptor(reg prometheus.Registerer) connect.UnaryInterceptorFunc {
	requests := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_api_request_seconds",
		Help:    "API request latency by procedure and code.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"procedure", "code"})
	if reg != nil {
		reg.MustRegister(requests)
	}
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			code := "ok"
			var cerr *connect.Error
			if errors.As(err, &cerr) {
				code = cerr.Code().String()
			} else if err != nil {
				code = connect.CodeUnknown.String()
			}
			requests.WithLabelValues(req.Spec().Procedure, code).Observe(time.Since(start).Seconds())
			return resp, err
		}
	}
}
