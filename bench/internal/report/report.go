package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tollgate/tollgate/bench/internal/load"
)

// Names the report looks for in load.Result. The goals are stated in terms
// of these; anything else is reported in the tables but not in the goals.
const (
	sysTollgate      = "tollgate"
	sysEtcd          = "etcd"
	sysRedisAlways   = "redis-always"
	sysRedisEverysec = "redis-everysec"
	sysGubernator    = "gubernator"

	wlTokenBucket = "token-bucket"
	wlBudget      = "budget"

	distUniform = "uniform"

	loopClosed = "closed"
	loopOpen   = "open"

	// refConcurrency is the concurrency the goals and the CPU column use.
	refConcurrency = 64
)

// File names Write produces besides the plots.
const (
	JSONFile     = "results.json"
	MarkdownFile = "results.md"
)

// Write writes r into dir (created if needed): results.json (the Run,
// indented), results.md (Markdown(r)) and the PNG plots of Charts(r). It
// returns the first error; files written before it are left in place.
func Write(dir string, r *Run) error {
	if r == nil {
		return fmt.Errorf("report: nil run")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := WriteJSON(filepath.Join(dir, JSONFile), r); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, MarkdownFile), []byte(Markdown(r)), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if _, err := WritePlots(dir, r); err != nil {
		return err
	}
	return nil
}

// WriteJSON writes r as indented JSON to path.
func WriteJSON(path string, r *Run) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: encoding %s: %w", path, err)
	}
	b = append(b, '\n')
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// ReadJSON reads a Run written by WriteJSON (e.g. to regenerate the
// markdown and plots of an earlier run with Write).
func ReadJSON(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report: decoding %s: %w", path, err)
	}
	return &r, nil
}

// isOpen reports whether res is an open-loop run. A result with no Loop
// label is open if it has a target rate.
func isOpen(res *load.Result) bool {
	switch res.Loop {
	case loopOpen:
		return true
	case loopClosed:
		return false
	}
	return res.TargetRate > 0
}

// closed returns the closed-loop result for the given coordinates. When a
// run holds several (repeats), the last one wins.
func (r *Run) closed(system, workload, dist, mode string, conc int) (load.Result, bool) {
	for i := len(r.Results) - 1; i >= 0; i-- {
		res := &r.Results[i]
		if !isOpen(res) && res.System == system && res.Workload == workload &&
			res.Distribution == dist && res.Mode == mode && res.Concurrency == conc {
			return *res, true
		}
	}
	return load.Result{}, false
}

// closedSeries returns the closed-loop results of one system+mode on one
// workload and distribution, one per concurrency (the last of repeats),
// sorted by concurrency.
func (r *Run) closedSeries(system, workload, dist, mode string) []load.Result {
	byConc := map[int]load.Result{}
	for _, res := range r.Results {
		if !isOpen(&res) && res.System == system && res.Workload == workload &&
			res.Distribution == dist && res.Mode == mode {
			byConc[res.Concurrency] = res
		}
	}
	out := make([]load.Result, 0, len(byConc))
	for _, res := range byConc {
		out = append(out, res)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Concurrency < out[j].Concurrency })
	return out
}

// best returns the closed-loop result with the highest decisions/s of one
// system+mode on one workload and distribution.
func (r *Run) best(system, workload, dist, mode string) (load.Result, bool) {
	var out load.Result
	found := false
	for _, res := range r.closedSeries(system, workload, dist, mode) {
		if !found || res.PerSecond > out.PerSecond {
			out, found = res, true
		}
	}
	return out, found
}

// atRefOrBest returns the result at refConcurrency if present, else the
// best concurrency.
func (r *Run) atRefOrBest(system, workload, dist, mode string) (load.Result, bool) {
	if res, ok := r.closed(system, workload, dist, mode, refConcurrency); ok {
		return res, true
	}
	return r.best(system, workload, dist, mode)
}

// open returns the open-loop results for the given coordinates, in run
// order.
func (r *Run) open(system, workload, dist, mode string) []load.Result {
	var out []load.Result
	for _, res := range r.Results {
		if isOpen(&res) && res.System == system && res.Workload == workload &&
			res.Distribution == dist && res.Mode == mode {
			out = append(out, res)
		}
	}
	return out
}

// Ordering: known names first in a fixed order, others alphabetically.

var (
	systemRank   = rankOf(sysTollgate, sysEtcd, sysRedisAlways, sysRedisEverysec, sysGubernator)
	modeRank     = rankOf(string(load.Linearizable), string(load.Batch16), string(load.Stale))
	workloadRank = rankOf(wlTokenBucket, "deny-heavy", wlBudget)
	distRank     = rankOf(distUniform, "zipf")
)

func rankOf(names ...string) map[string]int {
	m := make(map[string]int, len(names))
	for i, n := range names {
		m[n] = i
	}
	return m
}

// less orders a before b by rank, then by name.
func less(rank map[string]int, a, b string) bool {
	ra, oka := rank[a]
	rb, okb := rank[b]
	switch {
	case oka && okb:
		return ra < rb
	case oka != okb:
		return oka
	}
	return a < b
}

func sortedBy(rank map[string]int, set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return less(rank, out[i], out[j]) })
	return out
}

// fileSafe turns a name into something safe in a file name.
func fileSafe(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "unnamed"
	}
	return b.String()
}

// valid reports whether x is a usable measurement.
func valid(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
