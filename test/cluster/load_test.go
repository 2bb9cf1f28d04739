package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// consumeLoad runs workers that consume from a budget through the SDK and
// records every request: acknowledged (allowed or denied) or ambiguous (no
// answer). Request ids are unique per request; the SDK retries each one with
// the same id.
type consumeLoad struct {
	tenant, budget, amount string
	clients                []*client.Client

	mu        sync.Mutex
	acked     map[string]bool // request id -> allowed
	ambiguous map[string]bool
	next      atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
}

func newConsumeLoad(t *testing.T, addrs [][]string, tenant, budget, amount string) *consumeLoad {
	l := &consumeLoad{tenant: tenant, budget: budget, amount: amount, acked: map[string]bool{},
		ambiguous: map[string]bool{}, stop: make(chan struct{})}
	for _, a := range addrs {
		c, err := client.New(a, client.WithRequestTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		l.clients = append(l.clients, c)
	}
	return l
}

// start runs n workers, spread over the clients.
func (l *consumeLoad) start(n int) {
	for w := 0; w < n; w++ {
		c := l.clients[w%len(l.clients)]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				id := fmt.Sprintf("%s-%d", l.budget, l.next.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				resp, err := c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{
					Tenant: l.tenant, BudgetId: l.budget, Amount: l.amount, RequestId: id}))
				cancel()
				l.mu.Lock()
				if err != nil {
					l.ambiguous[id] = true
				} else {
					l.acked[id] = resp.Msg.Allowed
				}
				l.mu.Unlock()
			}
		}()
	}
}

func (l *consumeLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

func (l *consumeLoad) counts() (acked, allowed, ambiguous int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ok := range l.acked {
		if ok {
			allowed++
		}
	}
	return len(l.acked), allowed, len(l.ambiguous)
}

// settle re-sends every request with its id (16 at a time). An
// acknowledged one must come back with the same decision (replayed); an
// ambiguous one is applied now or replayed. It returns how many were allowed
// in the end, so the budget's spend must be exactly that many times the
// amount: nothing lost, nothing charged twice.
func (l *consumeLoad) settle(t *testing.T, c *client.Client) int {
	t.Helper()
	l.mu.Lock()
	type job struct {
		id   string
		want *bool // the acknowledged decision, nil when ambiguous
	}
	var jobs []job
	for id, allowed := range l.acked {
		jobs = append(jobs, job{id: id, want: &allowed})
	}
	for id := range l.ambiguous {
		jobs = append(jobs, job{id: id})
	}
	l.mu.Unlock()

	var allowed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				resp, err := c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{
					Tenant: l.tenant, BudgetId: l.budget, Amount: l.amount, RequestId: j.id}))
				cancel()
				switch {
				case err != nil:
					errs <- fmt.Errorf("settling %s: %v", j.id, err)
					return
				case j.want != nil && resp.Msg.Allowed != *j.want:
					errs <- fmt.Errorf("request %s was acknowledged allowed=%v, its replay says %v", j.id, *j.want, resp.Msg.Allowed)
					return
				case j.want != nil && resp.Header().Get("Tollgate-Idempotent-Replay") != "true":
					errs <- fmt.Errorf("request %s was acknowledged but its retry was applied again", j.id)
					return
				}
				if resp.Msg.Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return int(allowed.Load())
}

func mustClient(t *testing.T, addrs []string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(addrs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// clientAs is a single-try client of n that sends token (none when empty)
// with the other options.
func clientAs(t *testing.T, n *procs.Node, token string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithoutRetries()}, opts...)
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return mustClient(t, []string{n.APIAddr}, opts...)
}

func createBudget(t *testing.T, c *client.Client, tenant, id, amount string) {
	t.Helper()
	_, err := c.Budgets.CreateBudget(context.Background(), connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Tenant: tenant, Budget: &tollgatev1.Budget{Id: id, Amount: amount, Currency: "USD"}}))
	if err != nil {
		t.Fatal(err)
	}
}

func getBudget(t *testing.T, c *client.Client, tenant, id string) *tollgatev1.GetBudgetResponse {
	t.Helper()
	resp, err := c.Budgets.GetBudget(context.Background(), connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: tenant, BudgetId: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

// termLeaders records, from polling every node, which leader each node
// reports per term; two leaders in one term is a split brain.
type termLeaders struct {
	mu     sync.Mutex
	byTerm map[uint64]string
	broken []string
	stop   chan struct{}
	done   chan struct{}
}

func watchTerms(c *procs.Cluster) *termLeaders {
	w := &termLeaders{byTerm: map[uint64]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			for _, n := range c.NodeList() {
				if !n.Running() {
					continue
				}
				st, err := c.Status(n, false, false)
				if err != nil || st.State != "Leader" {
					continue
				}
				w.mu.Lock()
				if prev, ok := w.byTerm[st.Term]; ok && prev != st.NodeId {
					w.broken = append(w.broken, fmt.Sprintf("term %d: %s and %s", st.Term, prev, st.NodeId))
				}
				w.byTerm[st.Term] = st.NodeId
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *termLeaders) check(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.broken) > 0 {
		t.Fatalf("two leaders in one term: %v", w.broken)
	}
	t.Logf("leaders by term: %v", w.byTerm)
}

// metric reads an unlabelled Prometheus sample (e.g. a histogram's _sum or
// _count) from a node's /metrics.
func metric(t *testing.T, n *procs.Node, name string) float64 {
	t.Helper()
	return metricTB(t, n, name)
}

func metricTB(t testing.TB, n *procs.Node, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not found on %s", name, n.ID)
	return 0
}
