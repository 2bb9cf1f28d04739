// Command tgbench runs tollgate and the systems people use instead (etcd,
// Redis, gubernator) through the same workloads on this machine, measures
// the physical floors in the same run, and writes a report (JSON, markdown,
// PNG plots). `make bench-quick` and `make bench` run it.
//
//	tgbench run [--quick] [--out DIR] [--tollgate PATH] [--systems a,b,...]
//	tgbench child etcd|gubernator|noop ARGS...   (server processes it starts)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/bench/internal/floors"
	"github.com/tollgate/tollgate/bench/internal/load"
	"github.com/tollgate/tollgate/bench/internal/proc"
	"github.com/tollgate/tollgate/bench/internal/report"
	"github.com/tollgate/tollgate/bench/internal/systems/etcd"
	"github.com/tollgate/tollgate/bench/internal/systems/gubernator"
	"github.com/tollgate/tollgate/bench/internal/systems/redis"
	"github.com/tollgate/tollgate/bench/internal/systems/tollgate"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "child":
		err = child(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "tgbench: unknown command %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tgbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  tgbench run [flags]      run the benchmark and write the report (run -h for flags)
  tgbench child SYSTEM ... a server process tgbench starts itself (etcd, gubernator, noop)
`)
	os.Exit(2)
}

func child(args []string) error {
	if len(args) == 0 {
		return errors.New("child: which system?")
	}
	switch args[0] {
	case "etcd":
		return etcd.ChildMain(args[1:])
	case "gubernator":
		return gubernator.ChildMain(args[1:])
	case "noop":
		return floors.NoopChildMain(args[1:])
	}
	return fmt.Errorf("child: unknown system %q", args[0])
}

// plan is what one run measures.
type plan struct {
	workloads   []load.Workload
	concurrency []int
	duration    time.Duration
	systems     []string
}

var allSystems = []string{"tollgate", "etcd", "redis-always", "redis-everysec", "gubernator"}

func tokenBucket(zipf bool) load.Workload {
	w := load.Workload{Name: "token-bucket", Kind: load.TokenBucket, Keys: 10_000, Capacity: 1000, RatePerSec: 1000}
	if zipf {
		w.Zipf, w.ZipfS = true, 1.1
	}
	return w
}

func newPlan(quick bool) plan {
	denyHeavy := load.Workload{Name: "deny-heavy", Kind: load.TokenBucket, Keys: 10_000, Capacity: 10, RatePerSec: 10, Zipf: true, ZipfS: 1.1}
	budget := load.Workload{Name: "budget", Kind: load.Budget, Keys: 10_000, BudgetAmount: "0.50", Cost: "0.0125"}
	if quick {
		return plan{workloads: []load.Workload{tokenBucket(false), budget}, concurrency: []int{1, 64},
			duration: 1500 * time.Millisecond, systems: []string{"tollgate", "etcd", "redis-always", "gubernator"}}
	}
	return plan{workloads: []load.Workload{tokenBucket(false), tokenBucket(true), denyHeavy, budget},
		concurrency: []int{1, 16, 64, 256}, duration: 4 * time.Second, systems: allSystems}
}

// narrow applies the experiment flags: a subset of the workloads, other
// concurrencies, another run length.
func (p *plan) narrow(workloads, concurrency string, d time.Duration) error {
	if workloads != "" {
		want := strings.Split(workloads, ",")
		var keep []load.Workload
		for _, name := range want {
			found := false
			for _, w := range p.workloads {
				if w.Name == name {
					keep, found = append(keep, w), true
				}
			}
			if !found {
				return fmt.Errorf("--workloads: %q is not in this plan (token-bucket, deny-heavy, budget; deny-heavy only in full runs)", name)
			}
		}
		p.workloads = keep
	}
	if concurrency != "" {
		p.concurrency = nil
		for _, f := range strings.Split(concurrency, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 4096 {
				return fmt.Errorf("--concurrency: %q is not a whole number from 1 to 4096", f)
			}
			p.concurrency = append(p.concurrency, n)
		}
	}
	if d < 0 || (d > 0 && d < 100*time.Millisecond) || d > 10*time.Minute {
		return fmt.Errorf("--duration: %s is outside 100ms..10m", d)
	}
	if d > 0 {
		p.duration = d
	}
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	quick := fs.Bool("quick", false, "a short run: fewer workloads, systems and concurrencies (under 3 minutes)")
	out := fs.String("out", "", "directory for results.json, results.md and the plots (default results/<date>-quick|full)")
	tollgateBin := fs.String("tollgate", "", "path of the tollgate binary (required)")
	systemsFlag := fs.String("systems", "", "comma-separated systems to run (default: the plan's): "+strings.Join(allSystems, ","))
	serverCPUs := fs.String("server-cpus", "1", "CPU list (taskset) the servers run on; empty: no pinning")
	clientCPUs := fs.String("client-cpus", "0", "CPU list (taskset) the load generator runs on; empty: no pinning")
	dataDir := fs.String("data-dir", "results/tmp", "where the systems keep their data (the disk under test)")
	workloadsFlag := fs.String("workloads", "", "comma-separated workloads to run (default: the plan's): token-bucket,deny-heavy,budget")
	concFlag := fs.String("concurrency", "", "comma-separated closed-loop concurrencies (default: the plan's; quick 1,64, full 1,16,64,256)")
	durFlag := fs.Duration("duration", 0, "length of each measured run (default: the plan's; quick 1.5s, full 4s)")
	fs.Parse(args)
	if *tollgateBin == "" {
		return errors.New("--tollgate PATH is required (make bench builds it)")
	}
	if *clientCPUs != "" && os.Getenv("TGBENCH_PINNED") == "" {
		// Re-run pinned: every thread of this process on the client CPUs.
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.Command("taskset", append([]string{"-c", *clientCPUs, self, "run"}, args...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "TGBENCH_PINNED=1")
		return cmd.Run()
	}

	p := newPlan(*quick)
	if *systemsFlag != "" {
		p.systems = strings.Split(*systemsFlag, ",")
		for _, s := range p.systems {
			if !slices.Contains(allSystems, s) {
				return fmt.Errorf("unknown system %q (have %s)", s, strings.Join(allSystems, ","))
			}
		}
	}
	if err := p.narrow(*workloadsFlag, *concFlag, *durFlag); err != nil {
		return err
	}
	kind := "full"
	if *quick {
		kind = "quick"
	}
	if *out == "" {
		*out = filepath.Join("results", time.Now().UTC().Format("20060102-150405")+"-"+kind)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tg, err := filepath.Abs(*tollgateBin)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return err
	}
	base, err := os.MkdirTemp(*dataDir, "run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	rep := &report.Run{Started: started.UTC(), Quick: *quick, Machine: machine(*dataDir, *serverCPUs, *clientCPUs)}
	logf("tgbench %s run: systems %s, concurrency %v, %s per run; servers on CPUs %q, load generator on %q; results in %s",
		kind, strings.Join(p.systems, ","), p.concurrency, p.duration, *serverCPUs, *clientCPUs, *out)

	opts := proc.Options{Self: self, Tollgate: tg, ServerCPUs: *serverCPUs}
	if rep.Floors, err = measureFloors(ctx, opts, base); err != nil {
		return fmt.Errorf("floors: %w", err)
	}
	runN := 0
	for _, name := range p.systems {
		o := opts
		o.Dir = filepath.Join(base, name)
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return err
		}
		logf("starting %s", name)
		sys, err := startSystem(ctx, name, o)
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		results, err := measureSystem(ctx, sys, p, &runN)
		sys.Close()
		rep.Results = append(rep.Results, results...)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	rep.Duration = time.Since(started)
	if err := report.Write(*out, rep); err != nil {
		return err
	}
	logf("done in %s: %s/results.md", rep.Duration.Round(time.Second), *out)
	return nil
}

func startSystem(ctx context.Context, name string, o proc.Options) (load.System, error) {
	switch name {
	case "tollgate":
		return tollgate.Start(ctx, o)
	case "etcd":
		return etcd.Start(ctx, o)
	case "redis-always":
		return redis.Start(ctx, o, "always")
	case "redis-everysec":
		return redis.Start(ctx, o, "everysec")
	case "gubernator":
		return gubernator.Start(ctx, o)
	}
	return nil, fmt.Errorf("unknown system %q", name)
}

// measureSystem runs every workload, mode and concurrency the system
// supports, then one open-loop run at half of the highest closed-loop rate
// of its one-decision-per-call token-bucket mode.
func measureSystem(ctx context.Context, sys load.System, p plan, runN *int) ([]load.Result, error) {
	var out []load.Result
	for _, w := range p.workloads {
		for _, m := range sys.Modes(w) {
			for _, c := range p.concurrency {
				*runN++
				r := load.Run{Workload: w, Mode: m, Concurrency: c, Duration: p.duration, Seed: uint64(*runN)}
				res, err := load.Measure(ctx, sys, r, "r"+strconv.Itoa(*runN))
				if err != nil {
					return out, err
				}
				logResult(res)
				out = append(out, res)
			}
		}
	}
	// Open loop at half the best closed-loop rate (token bucket, uniform,
	// one decision per call), where the latency goal is judged.
	var best float64
	for _, r := range out {
		if r.Workload == "token-bucket" && r.Distribution == "uniform" && r.Mode == string(load.Linearizable) {
			best = max(best, r.PerSecond)
		}
	}
	if best > 0 {
		*runN++
		r := load.Run{Workload: tokenBucket(false), Mode: load.Linearizable, Concurrency: 256, Duration: p.duration,
			Rate: best / 2, Seed: uint64(*runN)}
		res, err := load.Measure(ctx, sys, r, "r"+strconv.Itoa(*runN))
		if err != nil {
			return out, err
		}
		logResult(res)
		out = append(out, res)
	}
	return out, nil
}

func logResult(r load.Result) {
	loop := fmt.Sprintf("c=%d", r.Concurrency)
	if r.Loop == "open" {
		loop = fmt.Sprintf("open %.0f/s", r.TargetRate)
	}
	logf("%-14s %-12s %-7s %-12s %-11s %9.0f/s  p50 %7.2f ms  p99 %7.2f ms  cpu %.3f s/1k  errors %d  overspend %d",
		r.System, r.Workload, r.Distribution, r.Mode, loop, r.PerSecond, r.P50us/1000, r.P99us/1000, r.CPUPer1000, r.Errors, r.Overspend)
}

func measureFloors(ctx context.Context, o proc.Options, dir string) (report.Floors, error) {
	var f report.Floors
	fs, err := floors.Fsync(dir, 500)
	if err != nil {
		return f, err
	}
	rtt, err := floors.LoopbackRTT(20_000)
	if err != nil {
		return f, err
	}
	p50, rps, err := floors.NoopRPC(ctx, o, 64, 3*time.Second)
	if err != nil {
		return f, err
	}
	f = report.Floors{FsyncP50us: fs.P50us, FsyncP99us: fs.P99us, RTTP50us: rtt.P50us, RTTP99us: rtt.P99us,
		NoopRPCPerSecond: rps, NoopRPCP50us: p50}
	logf("floors: fdatasync p50 %.0f µs p99 %.0f µs; loopback RTT p50 %.0f µs p99 %.0f µs; no-op RPC p50 %.0f µs, %.0f/s at 64 clients",
		f.FsyncP50us, f.FsyncP99us, f.RTTP50us, f.RTTP99us, f.NoopRPCP50us, f.NoopRPCPerSecond)
	return f, nil
}

func machine(dataDir, serverCPUs, clientCPUs string) report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), ServerCPUs: serverCPUs, ClientCPUs: clientCPUs}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		// The machine's CPUs, not this (pinned) process's share of them.
		m.CPUs = 0
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			switch {
			case !ok:
			case strings.TrimSpace(k) == "processor":
				m.CPUs++
			case strings.TrimSpace(k) == "model name" && m.CPUModel == "":
				m.CPUModel = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%g", &kb)
		m.MemoryGiB = kb / (1 << 20)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.DataDisk = filesystemOf(dataDir)
	return m
}

// filesystemOf names the mount (device, type) holding dir.
func filesystemOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	best, bestLen := "", -1
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if (abs == f[1] || strings.HasPrefix(abs, strings.TrimSuffix(f[1], "/")+"/")) && len(f[1]) > bestLen {
			best, bestLen = f[0]+" ("+f[2]+") at "+f[1], len(f[1])
		}
	}
	return best
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
