package transport

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/fsm"
)

// callersMax bounds how many credentials' buckets a node keeps; full
// buckets are forgotten first (that changes no decision).
const callersMax = 100_000

// RateLimit is the API's own limit on each credential's calls to one node.
type RateLimit struct {
	// PerSecond calls per second, with bursts of Burst; 0 turns it off.
	PerSecond, Burst int64
}

// callerLimiter applies RateLimit per authenticated credential with
// tollgate's own token bucket (fsm.LocalBucket), on the node's clock.
// Servers (the cluster token) and the anonymous caller of a node without
// authentication are not limited.
type callerLimiter struct {
	limit RateLimit
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*fsm.LocalBucket
}

func newCallerLimiter(l RateLimit, now func() time.Time) (*callerLimiter, error) {
	if l.PerSecond == 0 {
		return nil, nil
	}
	if _, err := fsm.NewLocalBucket(l.PerSecond, l.Burst, 1000, 0); err != nil {
		return nil, fmt.Errorf("API rate limit %d/s burst %d: want both between 1 and %d", l.PerSecond, l.Burst, fsm.RateLimitMax)
	}
	if now == nil {
		now = time.Now
	}
	return &callerLimiter{limit: l, now: now, buckets: map[string]*fsm.LocalBucket{}}, nil
}

func (c *callerLimiter) allow(p auth.Principal) error {
	if c == nil || p.Method == "none" || p.Role == auth.RoleServer {
		return nil
	}
	key := p.Method + "\x00" + p.Tenant + "\x00" + p.Subject
	nowMs := c.now().UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buckets[key]
	if b == nil {
		if len(c.buckets) >= callersMax {
			for k, old := range c.buckets {
				if old.FullAtMs() <= nowMs {
					delete(c.buckets, k)
				}
			}
			if len(c.buckets) >= callersMax {
				return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("API rate limit: %d credentials are already being limited on this node", callersMax))
			}
		}
		b, _ = fsm.NewLocalBucket(c.limit.PerSecond, c.limit.Burst, 1000, nowMs)
		c.buckets[key] = b
	}
	if ok, retryMs := b.Take(nowMs); !ok {
		err := connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("API rate limit of %d calls/s for %s exceeded; retry after %dms", c.limit.PerSecond, p.Subject, retryMs))
		err.Meta().Set("Retry-After-Ms", strconv.FormatInt(retryMs, 10))
		return err
	}
	return nil
}

// Open streams (WatchAlerts, snapshot transfers) a node serves at once: in
// all, and per credential (the anonymous caller of a node without
// authentication counts as one credential only towards the total).
const (
	StreamsMax          = 4096
	StreamsPerCallerMax = 64
)

// streamLimiter counts open streams.
type streamLimiter struct {
	mu       sync.Mutex
	total    int
	byCaller map[string]int
}

func newStreamLimiter() *streamLimiter { return &streamLimiter{byCaller: map[string]int{}} }

// acquire admits one more stream of p, or says why not; release undoes it.
func (s *streamLimiter) acquire(p auth.Principal) (release func(), err error) {
	key := p.Method + "\x00" + p.Tenant + "\x00" + p.Subject
	perCaller := p.Method != "none" && p.Role != auth.RoleServer
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= StreamsMax {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("this node serves its maximum of %d open streams; retry later or on another node", StreamsMax))
	}
	if perCaller && s.byCaller[key] >= StreamsPerCallerMax {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s has %d streams open on this node, the most one credential may", p.Subject, StreamsPerCallerMax))
	}
	s.total++
	if perCaller {
		s.byCaller[key]++
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.total--
		if perCaller {
			if s.byCaller[key]--; s.byCaller[key] == 0 {
				delete(s.byCaller, key)
			}
		}
	}, nil
}
