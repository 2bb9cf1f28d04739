package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/tollgatetest"
)

// The client commands run in-process against a real node. The node's clock
// is frozen at cliNow, so timestamps, periods, hold expiries and rate-limit
// refills are exact.

var cliNow = time.Date(2030, 1, 15, 10, 30, 0, 0, time.UTC)

// cliResult is what a user of the binary sees.
type cliResult struct {
	code   int
	stdout string
	stderr string
}

// runCLI runs the root command with args and returns what main would print
// and exit with.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	root := newRootCommand()
	var stdout, stderr bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	code, msg := exitStatus(root.Execute())
	if msg != "" {
		stderr.WriteString(msg + "\n")
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// TestCLI runs every client test against one node, one tenant per test so
// that their objects never meet. They run one after another: each asserts
// exact log indexes, counted from its first write.
func TestCLI(t *testing.T) {
	s := tollgatetest.StartServer(t, tollgatetest.Options{Clock: func() time.Time { return cliNow }})
	for _, tc := range []struct {
		tenant string
		test   func(*testing.T, *cliNode)
	}{
		{"consume-until-denied", testBudgetConsumeUntilDenied},
		{"reserve-commit-release", testBudgetReserveCommitRelease},
		{"list-pages", testBudgetListPages},
		{"update-only-given-fields", testBudgetUpdateOnlyGivenFields},
		{"request-id", testConsumeRequestIDIsIdempotent},
		{"token-bucket", testLimitTokenBucket},
		{"limit-list-update-delete", testLimitListUpdateDelete},
		{"status", testStatus},
		{"bad-input", testBadInput},
		{"tenant-from-environment", testTenantFromEnvironment},
		{"cost-record-report", testCostRecordAndReport},
		{"quota", testQuota},
	} {
		t.Run(tc.tenant, func(t *testing.T) {
			tc.test(t, &cliNode{t: t, addr: s.APIAddr(), tenant: tc.tenant})
		})
	}
}

// cliNode is the running node, and the tenant of one test.
type cliNode struct {
	t      *testing.T
	addr   string
	tenant string
}

// budget runs `tollgate budget args... --addr A --tenant T`.
func (n *cliNode) budget(args ...string) cliResult {
	n.t.Helper()
	return runCLI(n.t, append(append([]string{"budget"}, args...), "--addr", n.addr, "--tenant", n.tenant)...)
}

// limit runs `tollgate limit args... --addr A --tenant T`.
func (n *cliNode) limit(args ...string) cliResult {
	n.t.Helper()
	return runCLI(n.t, append(append([]string{"limit"}, args...), "--addr", n.addr, "--tenant", n.tenant)...)
}

// wantCLI fails unless r has the exit code and stdout, and nothing on stderr.
func wantCLI(t *testing.T, r cliResult, code int, stdout string) {
	t.Helper()
	if r.code != code || r.stdout != stdout || r.stderr != "" {
		t.Fatalf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d\nstdout:\n%s", r.code, r.stdout, r.stderr, code, stdout)
	}
}

// wantCLIError fails unless r failed with code, printed nothing on stdout and
// printed stderr (exactly, or as a prefix when prefix is set).
func wantCLIError(t *testing.T, r cliResult, code int, stderr string, prefix bool) {
	t.Helper()
	ok := r.stderr == stderr || (prefix && strings.HasPrefix(r.stderr, stderr))
	if r.code != code || r.stdout != "" || !ok {
		t.Fatalf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d, stderr:\n%s", r.code, r.stdout, r.stderr, code, stderr)
	}
}

// decodeCLIJSON parses stdout as the API's JSON of msg, rejecting unknown fields.
func decodeCLIJSON(t *testing.T, r cliResult, msg proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(r.stdout), msg); err != nil {
		t.Fatalf("stdout is not a %T: %v\n%s\nstderr: %s", msg, err, r.stdout, r.stderr)
	}
}

func testBudgetConsumeUntilDenied(t *testing.T, n *cliNode) {

	r := n.budget("create", "llm", "--amount", "10.00", "--currency", "USD", "--period", "month",
		"--timezone", "Europe/Berlin", "--thresholds", "50,80,100", "--output", "json")
	var created tollgatev1.CreateBudgetResponse
	decodeCLIJSON(t, r, &created)
	if r.code != 0 || created.State.Budget.Amount != "10.00" || created.State.Remaining != "10.00" ||
		created.State.Budget.Period != tollgatev1.Period_PERIOD_MONTH ||
		created.State.Budget.Enforcement != tollgatev1.Enforcement_ENFORCEMENT_HARD ||
		!created.State.Budget.CreatedAt.AsTime().Equal(cliNow) || created.LogIndex == 0 {
		t.Fatalf("create: exit %d, %v", r.code, &created)
	}
	base := created.LogIndex

	wantCLI(t, n.budget("get", "llm"), 0, fmt.Sprintf(`id            llm
amount        10.00
currency      USD
spent         0.00
held          0.00
remaining     10.00
period        month
timezone      Europe/Berlin
period start  2029-12-31T23:00:00Z
period end    2030-01-31T23:00:00Z
enforcement   hard
thresholds    50,80,100
allowed       0
denied        0
would deny    0
active holds  0
version       1
created       2030-01-15T10:30:00Z
updated       2030-01-15T10:30:00Z
read          linearizable at index %d on test-node
`, base))

	// A check is a dry run: it says what would remain and charges nothing.
	wantCLI(t, n.budget("check", "llm", "--amount", "2.50"), 0, fmt.Sprintf(`ALLOWED
budget     llm
remaining  7.50
read       linearizable at index %d on test-node
`, base))

	steps := []struct{ remaining, spent, crossed string }{
		{"7.50", "2.50", ""},
		{"5.00", "5.00", "\ncrossed    50"},
		{"2.50", "7.50", ""},
		{"0.00", "10.00", "\ncrossed    80,100"},
	}
	for i, s := range steps {
		wantCLI(t, n.budget("consume", "llm", "--amount", "2.50"), 0, fmt.Sprintf(`ALLOWED
budget     llm
remaining  %s
spent      %s%s
log index  %d
receipt    %[4]d/0
`, s.remaining, s.spent, s.crossed, base+uint64(i)+1))
	}
	wantCLI(t, n.budget("consume", "llm", "--amount", "0.01"), exitDenied, fmt.Sprintf(`DENIED
budget     llm
remaining  0.00
spent      10.00
reason     budget-exceeded
denied by  llm
log index  %d
receipt    %[1]d/0
`, base+5))
	wantCLI(t, n.budget("check", "llm", "--amount", "0.01"), exitDenied, fmt.Sprintf(`DENIED
budget     llm
remaining  0.00
reason     budget-exceeded
denied by  llm
read       linearizable at index %d on test-node
`, base+5))

	r = n.budget("get", "llm", "--output", "json")
	var got tollgatev1.GetBudgetResponse
	decodeCLIJSON(t, r, &got)
	crossed := []uint32{}
	for _, c := range got.ThresholdsCrossed {
		crossed = append(crossed, c.Percent)
	}
	if got.Spent != "10.00" || got.Remaining != "0.00" || got.AllowedCount != 4 || got.DeniedCount != 1 ||
		fmt.Sprint(crossed) != "[50 80 100]" || got.ReadInfo.GetAppliedIndex() != base+5 {
		t.Fatalf("get after spending: %v", &got)
	}

	for _, level := range []struct {
		args []string
		want tollgatev1.Consistency
	}{
		{[]string{"--consistency", "leader"}, tollgatev1.Consistency_CONSISTENCY_LEADER},
		{[]string{"--consistency", "stale", "--max-staleness", "2s"}, tollgatev1.Consistency_CONSISTENCY_STALE},
	} {
		r := n.budget(append([]string{"get", "llm", "--output", "json"}, level.args...)...)
		var read tollgatev1.GetBudgetResponse
		decodeCLIJSON(t, r, &read)
		if r.code != 0 || read.ReadInfo.GetConsistency() != level.want || read.Spent != "10.00" {
			t.Fatalf("get %v: exit %d, %v", level.args, r.code, &read)
		}
	}
}

// cliHoldLine finds the hold id in a reserve decision's table.
var cliHoldLine = regexp.MustCompile(`(?m)^hold +(\S+)$`)

func testBudgetReserveCommitRelease(t *testing.T, n *cliNode) {
	var created tollgatev1.CreateBudgetResponse
	decodeCLIJSON(t, n.budget("create", "jobs", "--amount", "5", "--currency", "USD", "--output", "json"), &created)
	base := created.LogIndex

	r := n.budget("reserve", "jobs", "--amount", "2.00", "--ttl", "30s")
	m := cliHoldLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("reserve printed no hold id: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	hold := m[1]
	wantCLI(t, r, 0, fmt.Sprintf(`ALLOWED
hold       %s
budget     jobs
remaining  3.00
expires    2030-01-15T10:30:30Z
log index  %d
receipt    %[2]d/0
`, hold, base+1))

	// Committing less than the hold releases the rest.
	wantCLI(t, n.budget("commit", hold, "--amount", "1.50"), 0, fmt.Sprintf(`ALLOWED
budget     jobs
remaining  3.50
spent      1.50
log index  %d
receipt    %[1]d/0
`, base+2))

	r = n.budget("reserve", "jobs", "--amount", "1", "--ttl", "1m", "--output", "json")
	var reserved tollgatev1.ReserveResponse
	decodeCLIJSON(t, r, &reserved)
	if r.code != 0 || !reserved.Allowed || reserved.Remaining != "2.50" || reserved.HoldId == "" ||
		!reserved.ExpiresAt.AsTime().Equal(cliNow.Add(time.Minute)) {
		t.Fatalf("second reserve: exit %d, %v", r.code, &reserved)
	}
	wantCLI(t, n.budget("release", reserved.HoldId), 0, fmt.Sprintf(`budget     jobs
released   1.00
remaining  3.50
log index  %d
receipt    %[1]d/0
`, base+4))

	// A released hold can no longer be committed: a decision, not an error.
	wantCLI(t, n.budget("commit", reserved.HoldId, "--amount", "1"), exitDenied, fmt.Sprintf(`DENIED
reason     hold-not-active
log index  %d
receipt    %[1]d/0
`, base+5))
	wantCLI(t, n.budget("reserve", "jobs", "--amount", "3.51", "--ttl", "30s"), exitDenied, fmt.Sprintf(`DENIED
budget     jobs
remaining  3.50
reason     budget-exceeded
denied by  jobs
log index  %d
receipt    %[1]d/0
`, base+6))
	wantCLIError(t, n.budget("release", reserved.HoldId), exitFailure,
		fmt.Sprintf("error: not_found: hold %q is not active in tenant %q (expired, committed, released or never made)\n", reserved.HoldId, n.tenant), false)
}

func testBudgetListPages(t *testing.T, n *cliNode) {
	for i := 1; i <= 5; i++ {
		r := n.budget("create", fmt.Sprintf("b%d", i), "--amount", fmt.Sprintf("%d.00", i), "--currency", "EUR", "--period", "day")
		if r.code != 0 {
			t.Fatalf("create b%d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	const header = "ID  AMOUNT  CURRENCY  SPENT  HELD  REMAINING  PERIOD  ENFORCEMENT  PARENT\n"
	row := func(i int) string {
		return fmt.Sprintf("b%d  %d.00    EUR       0.00   0.00  %d.00       day     hard         -\n", i, i, i)
	}
	nextHint := regexp.MustCompile(`^next page: --page-token (\S+)\n$`)

	// Page by page, following the token printed on stderr.
	token := ""
	for page, rows := range [][]int{{1, 2}, {3, 4}, {5}} {
		args := []string{"list", "--page-size", "2"}
		if token != "" {
			args = append(args, "--page-token", token)
		}
		r := n.budget(args...)
		wantOut := header
		for _, i := range rows {
			wantOut += row(i)
		}
		if r.code != 0 || r.stdout != wantOut {
			t.Fatalf("page %d: exit %d\n%s%s\nwant\n%s", page, r.code, r.stdout, r.stderr, wantOut)
		}
		m := nextHint.FindStringSubmatch(r.stderr)
		switch {
		case page < 2 && m == nil:
			t.Fatalf("page %d: no next page hint on stderr: %q", page, r.stderr)
		case page == 2 && r.stderr != "":
			t.Fatalf("last page: stderr %q, want nothing", r.stderr)
		}
		if m != nil {
			token = m[1]
		}
	}

	wantCLI(t, n.budget("list", "--page-size", "2", "--all"), 0, header+row(1)+row(2)+row(3)+row(4)+row(5))

	r := n.budget("list", "--page-size", "2", "--all", "--output", "json")
	var list tollgatev1.ListBudgetsResponse
	decodeCLIJSON(t, r, &list)
	var ids []string
	for _, b := range list.Budgets {
		ids = append(ids, b.Budget.Id)
	}
	if r.code != 0 || strings.Join(ids, ",") != "b1,b2,b3,b4,b5" || list.NextPageToken != "" || list.ReadInfo == nil {
		t.Fatalf("list --all json: exit %d, %v", r.code, &list)
	}
}

func testBudgetUpdateOnlyGivenFields(t *testing.T, n *cliNode) {
	if r := n.budget("create", "u", "--amount", "10", "--currency", "USD", "--enforcement", "soft", "--thresholds", "50"); r.code != 0 {
		t.Fatalf("create: exit %d: %s", r.code, r.stderr)
	}
	update := func(args ...string) *tollgatev1.Budget {
		t.Helper()
		r := n.budget(append([]string{"update", "u", "--output", "json"}, args...)...)
		var resp tollgatev1.UpdateBudgetResponse
		decodeCLIJSON(t, r, &resp)
		if r.code != 0 {
			t.Fatalf("update %v: exit %d: %s", args, r.code, r.stderr)
		}
		return resp.State.Budget
	}
	// Only --amount is in the mask: enforcement and thresholds stay.
	b := update("--amount", "20")
	if b.Amount != "20.00" || b.Enforcement != tollgatev1.Enforcement_ENFORCEMENT_SOFT || fmt.Sprint(b.ThresholdsPercent) != "[50]" || b.Version != 2 {
		t.Fatalf("after --amount 20: %v", b)
	}
	// An empty --thresholds clears them; the amount stays.
	b = update("--thresholds", "")
	if b.Amount != "20.00" || len(b.ThresholdsPercent) != 0 || b.Enforcement != tollgatev1.Enforcement_ENFORCEMENT_SOFT {
		t.Fatalf("after --thresholds \"\": %v", b)
	}
	b = update("--enforcement", "shadow")
	if b.Enforcement != tollgatev1.Enforcement_ENFORCEMENT_SHADOW || b.Amount != "20.00" {
		t.Fatalf("after --enforcement shadow: %v", b)
	}

	r := n.budget("delete", "u")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "deleted         u\nreleased holds  0\nlog index       ") {
		t.Fatalf("delete: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	wantCLIError(t, n.budget("get", "u"), exitFailure, fmt.Sprintf("error: not_found: budget \"u\" not found in tenant %q\n", n.tenant), false)
}

func testConsumeRequestIDIsIdempotent(t *testing.T, n *cliNode) {
	if r := n.budget("create", "idem", "--amount", "10", "--currency", "USD"); r.code != 0 {
		t.Fatalf("create: exit %d: %s", r.code, r.stderr)
	}
	first := n.budget("consume", "idem", "--amount", "1", "--request-id", "job-1")
	again := n.budget("consume", "idem", "--amount", "1", "--request-id", "job-1")
	if first.code != 0 || !strings.Contains(first.stdout, "remaining  9.00\n") {
		t.Fatalf("first consume: exit %d\n%s%s", first.code, first.stdout, first.stderr)
	}
	// The retry is answered from the first decision: same log index, charged once.
	wantCLI(t, again, 0, first.stdout)
	var got tollgatev1.GetBudgetResponse
	decodeCLIJSON(t, n.budget("get", "idem", "--output", "json"), &got)
	if got.Spent != "1.00" || got.AllowedCount != 1 {
		t.Fatalf("after a repeated request id: spent %s, allowed %d; want 1.00, 1", got.Spent, got.AllowedCount)
	}
}

func testLimitTokenBucket(t *testing.T, n *cliNode) {
	var created tollgatev1.CreatePolicyResponse
	r := n.limit("create", "api", "--algorithm", "token-bucket", "--limit", "2", "--window", "1s", "--output", "json")
	decodeCLIJSON(t, r, &created)
	if r.code != 0 || created.Policy.Algorithm != tollgatev1.Algorithm_ALGORITHM_TOKEN_BUCKET || created.Policy.Burst != 2 {
		t.Fatalf("create: exit %d, %v", r.code, &created)
	}
	base := created.LogIndex

	wantCLI(t, n.limit("get", "api"), 0, fmt.Sprintf(`id           api
algorithm    token-bucket
limit        2
window       1s
burst        2
version      1
created      2030-01-15T10:30:00Z
updated      2030-01-15T10:30:00Z
active keys  0
read         linearizable at index %d on test-node
`, base))

	// The clock is frozen, so no token comes back between checks.
	wantCLI(t, n.limit("check", "api", "--key", "user-1"), 0, fmt.Sprintf(`ALLOWED
policy       api
key          user-1
remaining    1
limit        2
reset after  500ms
log index    %d
receipt      %[1]d/0
`, base+1))
	wantCLI(t, n.limit("check", "api", "--key", "user-1"), 0, fmt.Sprintf(`ALLOWED
policy       api
key          user-1
remaining    0
limit        2
reset after  1s
log index    %d
receipt      %[1]d/0
`, base+2))
	wantCLI(t, n.limit("check", "api", "--key", "user-1"), exitDenied, fmt.Sprintf(`DENIED
policy       api
key          user-1
remaining    0
limit        2
reset after  1s
retry after  500ms
reason       rate-limited
log index    %d
receipt      %[1]d/0
`, base+3))

	// A denial in JSON is still the response, and still exit code 3.
	r = n.limit("check", "api", "--key", "user-1", "--output", "json")
	var denied tollgatev1.RateLimitServiceCheckResponse
	decodeCLIJSON(t, r, &denied)
	if r.code != exitDenied || denied.Allowed || denied.Reason != tollgatev1.DenyReason_DENY_REASON_RATE_LIMITED ||
		denied.RetryAfter.AsDuration() != 500*time.Millisecond || denied.LogIndex != base+4 {
		t.Fatalf("denied check in json: exit %d, %v", r.code, &denied)
	}

	// Another key has its own counter; a cost above the burst can never fit.
	r = n.limit("check", "api", "--key", "user-2", "--cost", "3")
	if r.code != exitDenied || !strings.HasPrefix(r.stdout, "DENIED\n") || !strings.Contains(r.stdout, "reason       cost-exceeds-limit\n") ||
		strings.Contains(r.stdout, "retry after") {
		t.Fatalf("cost above burst: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func testLimitListUpdateDelete(t *testing.T, n *cliNode) {
	for _, args := range [][]string{
		{"create", "a", "--algorithm", "gcra", "--limit", "100", "--window", "1m", "--burst", "10", "--priority-scale", "1=50", "--priority-scale", "2=80"},
		{"create", "b", "--algorithm", "sliding-window-log", "--limit", "5", "--window", "1h"},
	} {
		if r := n.limit(args...); r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
	}
	wantCLI(t, n.limit("list"), 0, `ID  ALGORITHM           LIMIT  WINDOW  BURST  PRIORITY SCALES
a   gcra                100    1m0s    10     1=50,2=80
b   sliding-window-log  5      1h0m0s  5      -
`)

	// Only --limit is in the mask: window, burst and scales stay.
	r := n.limit("update", "a", "--limit", "200", "--output", "json")
	var updated tollgatev1.UpdatePolicyResponse
	decodeCLIJSON(t, r, &updated)
	p := updated.Policy
	if r.code != 0 || p.Limit != 200 || p.Window != "1m0s" || p.Burst != 10 || len(p.PriorityScales) != 2 || p.Version != 2 {
		t.Fatalf("update --limit: exit %d, %v", r.code, p)
	}
	// An empty --priority-scale removes the scales.
	decodeCLIJSON(t, n.limit("update", "a", "--priority-scale", "", "--output", "json"), &updated)
	if len(updated.Policy.PriorityScales) != 0 || updated.Policy.Limit != 200 {
		t.Fatalf("update --priority-scale \"\": %v", updated.Policy)
	}

	if r := n.limit("check", "b", "--key", "k"); r.code != 0 {
		t.Fatalf("check b: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = n.limit("delete", "b")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "deleted       b\nremoved keys  1\nlog index     ") {
		t.Fatalf("delete: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	wantCLIError(t, n.limit("check", "b", "--key", "k"), exitFailure, "error: not_found: ", true)
}

func testStatus(t *testing.T, n *cliNode) {
	r := runCLI(t, "status", "--addr", n.addr, "--output", "json")
	var st tollgatev1.StatusResponse
	decodeCLIJSON(t, r, &st)
	if r.code != 0 || st.NodeId != "test-node" || st.State != "Leader" || st.LeaderId != "test-node" ||
		len(st.Members) != 1 || !st.Members[0].Leader || st.AppliedIndex == 0 || st.StateHash != "" {
		t.Fatalf("status json: exit %d, %v", r.code, &st)
	}

	// Nothing is written in between, so the table shows the same numbers.
	lastApplied := ""
	if st.LastAppliedLogTimeMs != 0 {
		lastApplied = fmt.Sprintf("last applied at   %s\n", time.UnixMilli(st.LastAppliedLogTimeMs).UTC().Format(time.RFC3339Nano))
	}
	raft := st.Members[0].RaftAddr
	wantCLI(t, runCLI(t, "status", "--addr", n.addr), 0, fmt.Sprintf(`node              test-node
state             Leader
version           test
api addr          %s
leader            test-node
leader raft addr  %s
term              %d
commit index      %d
applied index     %d
last log index    %d
%s
MEMBER     RAFT ADDR%s  SUFFRAGE  LEADER
test-node  %s  Voter     true
`, st.ApiAddr, raft, st.Term, st.CommitIndex, st.AppliedIndex, st.LastLogIndex, lastApplied,
		strings.Repeat(" ", len(raft)-len("RAFT ADDR")), raft))

	r = runCLI(t, "status", "--addr", n.addr, "--state-hash", "--output", "json")
	decodeCLIJSON(t, r, &st)
	if r.code != 0 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(st.StateHash) {
		t.Fatalf("status --state-hash: exit %d, state hash %q", r.code, st.StateHash)
	}
}

func testBadInput(t *testing.T, n *cliNode) {
	if r := n.budget("create", "llm", "--amount", "10", "--currency", "USD"); r.code != 0 {
		t.Fatalf("create: exit %d: %s", r.code, r.stderr)
	}
	if r := n.limit("create", "api", "--algorithm", "fixed-window", "--limit", "10", "--window", "1s"); r.code != 0 {
		t.Fatalf("create limit: exit %d: %s", r.code, r.stderr)
	}
	for _, tc := range []struct {
		name   string
		run    func() cliResult
		code   int
		stderr string
		// prefix: stderr must start with stderr (usage errors end with a help hint).
		prefix bool
	}{
		// Refused by the server: exit 1 with its code and its message, which names the field.
		{"consume amount not a number", func() cliResult { return n.budget("consume", "llm", "--amount", "abc") },
			exitFailure, "error: invalid_argument: amount \"abc\" is not a decimal number\n", false},
		{"create amount not a number", func() cliResult { return n.budget("create", "x", "--amount", "abc", "--currency", "USD") },
			exitFailure, "error: invalid_argument: budget.amount \"abc\" is not a decimal number\n", false},
		{"ttl out of range", func() cliResult { return n.budget("reserve", "llm", "--amount", "1", "--ttl", "48h") },
			exitFailure, "error: invalid_argument: ttl \"48h\" is out of range [1s, 24h0m0s]\n", false},
		{"cost zero", func() cliResult { return n.limit("check", "api", "--key", "k", "--cost", "0") },
			exitFailure, "error: invalid_argument: cost must be between 1 and 1000000000000\n", false},
		{"unknown budget", func() cliResult { return n.budget("get", "missing") },
			exitFailure, fmt.Sprintf("error: not_found: budget \"missing\" not found in tenant %q\n", n.tenant), false},
		{"duplicate budget", func() cliResult { return n.budget("create", "llm", "--amount", "1", "--currency", "USD") },
			exitFailure, "error: already_exists: ", true},

		// Wrong command lines: exit 2, nothing sent.
		{"unknown period", func() cliResult {
			return n.budget("create", "x", "--amount", "1", "--currency", "USD", "--period", "fortnight")
		},
			exitUsage, "error: invalid argument \"fortnight\" for \"--period\" flag: want one of none, day, week, month, quarter, year, custom\n" +
				"Run 'tollgate budget create --help' for usage.\n", false},
		{"unknown algorithm", func() cliResult {
			return n.limit("create", "x", "--algorithm", "magic", "--limit", "1", "--window", "1s")
		},
			exitUsage, "error: invalid argument \"magic\" for \"--algorithm\" flag: want one of token-bucket, leaky-bucket, fixed-window, sliding-window-log, sliding-window-counter, gcra\n", true},
		{"unknown consistency", func() cliResult { return n.budget("get", "llm", "--consistency", "eventual") },
			exitUsage, "error: invalid argument \"eventual\" for \"--consistency\" flag: want one of linearizable, leader, stale\n", true},
		{"unknown output", func() cliResult { return n.budget("get", "llm", "--output", "yaml") },
			exitUsage, "error: invalid argument \"yaml\" for \"--output\" flag: want one of table, json, csv\n", true},
		{"missing amount", func() cliResult { return n.budget("consume", "llm") },
			exitUsage, "error: required flag(s) --amount not set\nRun 'tollgate budget consume --help' for usage.\n", false},
		{"missing limit flags", func() cliResult { return n.limit("create", "x", "--algorithm", "gcra") },
			exitUsage, "error: required flag(s) --limit, --window not set\n", true},
		{"missing id", func() cliResult { return n.budget("get") },
			exitUsage, "error: \"tollgate budget get\" takes ID; got 0 argument(s)\n", true},
		{"extra argument", func() cliResult { return runCLI(t, "status", "now", "--addr", n.addr) },
			exitUsage, "error: \"tollgate status\" takes no arguments; got [\"now\"]\n", true},
		{"unknown subcommand", func() cliResult { return n.budget("consum") },
			exitUsage, "error: unknown command \"consum\" for \"tollgate budget\"; did you mean consume?\n", true},
		{"unknown flag", func() cliResult { return n.budget("get", "llm", "--colour") },
			exitUsage, "error: unknown flag: --colour\n", true},
		{"update without flags", func() cliResult { return n.budget("update", "llm") },
			exitUsage, "error: nothing to update: give at least one of --amount, --enforcement, --thresholds, --select, --no-select\n", true},
		{"bad thresholds", func() cliResult { return n.budget("update", "llm", "--thresholds", "50,x") },
			exitUsage, "error: invalid argument \"50,x\" for \"--thresholds\" flag: \"x\" is not a whole number; want a list such as 50,80,100\n", true},
		{"bad priority scale", func() cliResult { return n.limit("update", "api", "--priority-scale", "1:50") },
			exitUsage, "error: invalid argument \"1:50\" for \"--priority-scale\" flag: want PRIORITY=PERCENT such as 1=50\n", true},
		{"bad ttl", func() cliResult { return n.budget("reserve", "llm", "--amount", "1", "--ttl", "soon") },
			exitUsage, "error: invalid argument \"soon\" for \"--ttl\" flag: want a Go duration such as \"250ms\", \"30s\" or \"36h\"\n", true},
		{"zero timeout", func() cliResult { return n.budget("get", "llm", "--timeout", "0s") },
			exitUsage, "error: --timeout 0s: must be positive\n", true},
		{"bad addr", func() cliResult { return runCLI(t, "status", "--addr", "nowhere") },
			exitUsage, "error: --addr \"nowhere\": want HOST:PORT\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCLIError(t, tc.run(), tc.code, tc.stderr, tc.prefix)
		})
	}
}

// testTenantFromEnvironment sets the environment the root command reads,
// so neither it nor TestCLI may run in parallel.
func testTenantFromEnvironment(t *testing.T, n *cliNode) {
	t.Setenv("TOLLGATE_ADDR", n.addr)
	t.Setenv("TOLLGATE_TENANT", "from-env")
	if r := runCLI(t, "budget", "create", "e", "--amount", "1", "--currency", "USD"); r.code != 0 {
		t.Fatalf("create with the tenant from the environment: exit %d: %s", r.code, r.stderr)
	}
	r := runCLI(t, "budget", "get", "e", "--output", "json")
	var got tollgatev1.GetBudgetResponse
	decodeCLIJSON(t, r, &got)
	if r.code != 0 || got.Budget.Id != "e" {
		t.Fatalf("get with the tenant from the environment: exit %d, %v", r.code, &got)
	}
	// A flag on the command line wins over the environment.
	wantCLIError(t, runCLI(t, "budget", "get", "e", "--tenant", "other"), exitFailure,
		"error: not_found: budget \"e\" not found in tenant \"other\"\n", false)

	t.Setenv("TOLLGATE_TENANT", "")
	wantCLIError(t, runCLI(t, "budget", "list"), exitUsage,
		"error: --tenant is required (or set TOLLGATE_TENANT)\nRun 'tollgate budget list --help' for usage.\n", false)
}
