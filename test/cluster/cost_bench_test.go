package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// BenchmarkCostRecords ([cost] acceptance 3) records b.N cost records on one
// real node (a tollgate process, Raft log and receipts on disk) in batches of
// 1000 from 8 callers, spread over the 30 days before now with 10 teams x 6
// models x 2 currencies, and reports the node's resident memory after every
// fifth of the records (anonymous memory, which holds the state, apart from
// file-backed pages of the memory-mapped stores) and the latency of a report
// over the whole month grouped by team and model per day.
//
//	go test -run XXX -bench CostRecords -benchtime 5000000x -timeout 60m ./test/cluster/
func BenchmarkCostRecords(b *testing.B) {
	var extra []string
	if profileDir() != "" {
		extra = append([]string{"--pprof"}, strings.Fields(os.Getenv("TOLLGATE_BENCH_FLAGS"))...)
	}
	c := procs.NewCluster(b, 1, procs.Options{Extra: extra})
	c.StartAll()
	n := c.WaitLeader(30 * time.Second)
	ctx := context.Background()
	admin, err := client.New([]string{n.APIAddr})
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Costs.SetExchangeRates(ctx, connect.NewRequest(&tollgatev1.SetExchangeRatesRequest{
		Rates: []*tollgatev1.ExchangeRate{{From: "EUR", To: "USD", Rate: "1.0837"}}})); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	const batch, callers = 1000, 8
	batches := (b.N + batch - 1) / batch
	var next atomic.Int64
	var done atomic.Int64
	var wg sync.WaitGroup
	var rssMu sync.Mutex
	var marks []string
	markEvery := int64(max(batches/5, 1))
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < callers; w++ {
		cl, err := client.New([]string{n.APIAddr})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(batches) {
					return
				}
				req := &tollgatev1.RecordCostBatchRequest{Tenant: tenant}
				for j := 0; j < batch && int(i)*batch+j < b.N; j++ {
					k := int(i)*batch + j
					cur := "USD"
					if k%2 == 1 {
						cur = "EUR"
					}
					req.Records = append(req.Records, &tollgatev1.CostRecord{
						Amount: fmt.Sprintf("0.%06d", k%999_999+1), Currency: cur, Resource: "llm",
						Labels:     map[string]string{"team": "team-" + strconv.Itoa(k%10), "model": "model-" + strconv.Itoa(k%6)},
						OccurredAt: timestamppb.New(now.Add(-time.Duration(k%(30*24*60)) * time.Minute)),
					})
				}
				if _, err := cl.Costs.RecordCostBatch(ctx, connect.NewRequest(req)); err != nil {
					b.Error(err)
					return
				}
				if d := done.Add(1); d%markEvery == 0 {
					anon, file := rssKiB(b, n.Pid())
					rssMu.Lock()
					marks = append(marks, fmt.Sprintf("%d records: anon %d MiB, file %d MiB", min(d*batch, int64(b.N)), anon/1024, file/1024))
					rssMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	anon, file := rssKiB(b, n.Pid())
	b.ReportMetric(float64(anon)/1024, "anon-MiB")
	b.ReportMetric(float64(file)/1024, "file-MiB")
	sort.Strings(marks)
	for _, m := range marks {
		b.Log(m)
	}
	if dir := profileDir(); dir != "" {
		saveHeapProfile(b, n, filepath.Join(dir, "cost-records-heap.pprof"))
	}

	var lat []time.Duration
	var rows int
	for i := 0; i < 20; i++ {
		t0 := time.Now()
		resp, err := admin.Costs.Report(ctx, connect.NewRequest(&tollgatev1.ReportRequest{Tenant: tenant,
			From: timestamppb.New(now.Add(-31 * 24 * time.Hour)), To: timestamppb.New(now.Add(time.Hour)),
			GroupBy: []string{"team", "model"}, Bucket: tollgatev1.Bucket_BUCKET_DAY, Currency: "USD"}))
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		var count uint64
		for _, r := range resp.Msg.Rows {
			count += r.Count
		}
		if count != uint64(b.N) {
			b.Fatalf("report counts %d records, want %d", count, b.N)
		}
		rows = len(resp.Msg.Rows)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "report-p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "report-max-ms")
	b.ReportMetric(float64(rows), "report-rows")
}

// saveHeapProfile writes the node's heap profile (TOLLGATE_BENCH_PPROF).
func saveHeapProfile(b *testing.B, n *procs.Node, path string) {
	resp, err := http.Get("http://" + n.APIAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		b.Logf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("heap profile: %v", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

// rssKiB reads a process's anonymous and file-backed resident memory.
func rssKiB(b *testing.B, pid int) (anon, file int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "RssAnon:":
			anon = v
		case "RssFile:":
			file = v
		}
	}
	return anon, file
}
