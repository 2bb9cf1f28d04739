package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// BenchmarkClusterConsume measures linearizable budget decisions on a real
// 3-node cluster (3 processes on loopback, bbolt fsync per log write), one
// decision per RPC through the Go SDK, closed loop at 1, 16, 64 and 256
// concurrent clients. Besides ns/op it reports decisions/s, p50/p99 latency,
// log entries per fsync and commands per entry on the leader.
//
//	go test -run XXX -bench ClusterConsume -benchtime 20000x ./test/cluster/
func BenchmarkClusterConsume(b *testing.B) {
	c, leader := startBenchCluster(b, nil)
	for _, clients := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchConsume(b, c, leader, clients)
		})
	}
}

// startBenchCluster starts 3 nodes with extra serve flags and creates the
// budget "bench" that the benchmarks consume from.
func startBenchCluster(b *testing.B, extra []string) (*procs.Cluster, *procs.Node) {
	c := procs.NewCluster(b, 3, procs.Options{Extra: extra})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	admin, err := client.New([]string{leader.APIAddr})
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Budgets.CreateBudget(context.Background(), connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Tenant: tenant, Budget: &tollgatev1.Budget{Id: "bench", Amount: "1000000000000", Currency: "USD"}})); err != nil {
		b.Fatal(err)
	}
	return c, leader
}

// callersPerClient: callers share SDK clients (one h2c connection each), at
// most this many per connection.
const callersPerClient = 32

func benchConsume(b *testing.B, c *procs.Cluster, leader *procs.Node, callers int) {
	var clients []*client.Client
	for i := 0; i < (callers+callersPerClient-1)/callersPerClient; i++ {
		cl, err := client.New([]string{leader.APIAddr})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	entriesSum0, entriesCount0 := metricB(b, leader, "tollgate_log_entries_per_fsync_sum"), metricB(b, leader, "tollgate_log_entries_per_fsync_count")
	cmdsSum0, cmdsCount0 := metricB(b, leader, "tollgate_commands_per_entry_sum"), metricB(b, leader, "tollgate_commands_per_entry_count")

	stopProfile := profileLeader(b, leader)
	defer stopProfile()
	hist := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	var histMu sync.Mutex
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < callers; w++ {
		cl := clients[w%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				resp, err := cl.Budgets.Consume(context.Background(), connect.NewRequest(&tollgatev1.ConsumeRequest{
					Tenant: tenant, BudgetId: "bench", Amount: "0.0125"}))
				local.RecordValue(time.Since(t0).Microseconds())
				if err != nil || !resp.Msg.Allowed {
					failed.Add(1)
				}
			}
			histMu.Lock()
			hist.Merge(local)
			histMu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d consumes failed or were denied", f, b.N)
	}
	entriesPerFsync := (metricB(b, leader, "tollgate_log_entries_per_fsync_sum") - entriesSum0) /
		(metricB(b, leader, "tollgate_log_entries_per_fsync_count") - entriesCount0)
	commandsPerEntry := (metricB(b, leader, "tollgate_commands_per_entry_sum") - cmdsSum0) /
		(metricB(b, leader, "tollgate_commands_per_entry_count") - cmdsCount0)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
	b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
	b.ReportMetric(entriesPerFsync, "entries/fsync")
	b.ReportMetric(commandsPerEntry, "decisions/entry")
}

func metricB(b *testing.B, n *procs.Node, name string) float64 {
	b.Helper()
	return metricTB(b, n, name)
}

// BenchmarkClusterConsumeReceipts measures what receipts cost: the same
// closed-loop consume load as BenchmarkClusterConsume on a fresh 3-node
// cluster with receipts on (the default) and off (--bench-no-receipts), at 1
// and 64 concurrent clients.
//
//	go test -run XXX -bench ClusterConsumeReceipts -benchtime 10000x ./test/cluster/
func BenchmarkClusterConsumeReceipts(b *testing.B) {
	for _, mode := range []string{"on", "off"} {
		b.Run("receipts="+mode, func(b *testing.B) {
			var extra []string
			if mode == "off" {
				extra = []string{"--bench-no-receipts"}
			}
			if profileDir() != "" {
				extra = append(extra, "--pprof")
			}
			c, leader := startBenchCluster(b, extra)
			for _, clients := range []int{1, 64} {
				b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
					benchConsume(b, c, leader, clients)
				})
			}
		})
	}
}

// profileDir is where benchmarks save CPU profiles of the leader
// (TOLLGATE_BENCH_PPROF=DIR; the nodes then run with --pprof).
func profileDir() string { return os.Getenv("TOLLGATE_BENCH_PPROF") }

// profileLeader takes a 4-second CPU profile of the leader process from the
// start of the benchmark run (make the run longer than that) and writes it
// to DIR/<benchmark name>.pprof when the returned func is called. Without
// TOLLGATE_BENCH_PPROF it does nothing.
func profileLeader(b *testing.B, leader *procs.Node) func() {
	dir := profileDir()
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get("http://" + leader.APIAddr + "/debug/pprof/profile?seconds=4")
		if err != nil {
			b.Logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		name := filepath.Join(dir, strings.NewReplacer("/", "_", "=", "-").Replace(b.Name())+".pprof")
		f, err := os.Create(name)
		if err != nil {
			b.Logf("profile: %v", err)
			return
		}
		io.Copy(f, resp.Body)
		f.Close()
	}()
	return func() { <-done }
}
